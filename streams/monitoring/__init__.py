"""Monitoring of the scoring pipeline: label join and online quality, drift, signals.

Modules: ``signals`` (the signals record), ``drift`` and ``quality`` (pure statistics),
``feedback`` (the label join as Faust table + agents), ``monitor`` (the hook the scoring
pipeline calls per batch, served-feature log, consumer lag), ``status`` (terminal view),
``runner`` (a worker running only the feedback loop).
"""
