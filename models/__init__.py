"""The model side: manifest, registry, input assembly, ONNX scoring and training.

Modules: ``manifest`` (``ModelManifest``), ``registry`` (``ModelRegistry``),
``assembly`` (events + features -> ONNX input columns), ``scoring``
(``OnnxScorer``, ``LoadedModel``), ``training`` (``train_model``,
``bootstrap_example``), ``errors``. ``models`` may import ``features`` (training
reads point-in-time features) but never ``streams``, Faust or Kafka.
"""
