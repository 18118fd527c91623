"""Bench tier: the integration tier's real broker, real Redis and trained example model
(its fixtures, reused as they are), for the quick benchmark that guards against gross
regressions."""

from tests.integration.conftest import (  # noqa: F401  (pytest finds fixtures by name)
    bootstrap_servers,
    prepared_repo,
    redis_url,
    settings_factory,
)
