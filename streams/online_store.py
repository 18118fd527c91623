"""Settings to the online store's configuration: the one mapping, free of Faust so the
bench's Quix environment uses it too.

In: :class:`Settings` (store kind, Redis URL, ACL user, password, TLS CA). Out: a
:class:`features.store.OnlineStoreConfig`.
"""

from __future__ import annotations

from features.store import OnlineStoreConfig
from streams.settings import Settings


def online_store_config(settings: Settings) -> OnlineStoreConfig:
    if settings.online_store == "redis":
        return OnlineStoreConfig(
            kind="redis",
            redis_url=settings.redis_url,
            username=settings.redis_username,
            password=(
                settings.redis_password.get_secret_value() if settings.redis_password else None
            ),
            ssl_ca_certs=settings.redis_ssl_cafile,
            ssl_check_hostname=settings.ssl_check_hostname,
        )
    if settings.online_store == "sqlite":
        return OnlineStoreConfig(kind="sqlite", sqlite_path=settings.data_dir / "online_store.db")
    # The one rule (README, "Online store"): ``sqlite`` or ``redis`` overrides the repo's
    # ``online_store``; unset (``repo``) the YAML decides.
    return OnlineStoreConfig(kind="repo")
