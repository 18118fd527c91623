"""The feature side: example data, the Feast boundary and online lookups.

Modules: ``fraud_data`` (seeded example data and demo events), ``store`` (open,
apply and materialize the Feast repo with SQLite or Redis online), ``online``
(``OnlineFeatureSource`` and its Feast implementation), ``errors``. Nothing here
imports ``streams``, Faust or Kafka; import the submodules directly (Feast is
slow to import, so this package does not do it eagerly).
"""
