"""``streamscore bench``: the harness (:mod:`streams.bench.harness`), the figures
(:mod:`streams.bench.report`) and one module per subject, each run as its own process:
``ceiling``, ``framework``, ``naive``, ``quix`` (and ``streamscore worker`` itself).
"""
