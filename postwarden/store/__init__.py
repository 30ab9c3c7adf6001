"""The one store interface: rate-limit buckets, hold reasons, events, listing history.

Two backends pass the same test suite: SQLite (embedded default) and Redis (several
MTAs sharing limits). `open_store` is the only place a backend is chosen.
"""

from __future__ import annotations

from postwarden.store.base import (
    Activity,
    AuditRecord,
    BucketState,
    EventRecord,
    HoldRecord,
    RateResult,
    SelfcheckRun,
    Store,
    StoreError,
)
from postwarden.store.feedback import DeliveryRecord, OutboundRecord

__all__ = ["Activity", "AuditRecord", "BucketState", "DeliveryRecord", "EventRecord",
           "HoldRecord", "OutboundRecord", "RateResult", "SelfcheckRun", "Store", "StoreError",
           "open_store"]


def open_store(cfg: object, create: bool = True, readonly: bool = False) -> Store:
    """Build the configured backend (a StoreConfig). `create=False`: readers, which
    must not make a new empty SQLite file where the milter's was. `readonly` (SQLite)
    never writes the file, for readers such as a monitoring plugin; Redis readers need
    no write."""
    from postwarden.config import StoreConfig

    assert isinstance(cfg, StoreConfig)
    if cfg.backend == "redis":
        from postwarden.store.redis_store import RedisStore

        return RedisStore(cfg.redis_url, prefix=cfg.redis_prefix, timeout=cfg.redis_timeout)
    from postwarden.store.sqlite_store import SqliteStore

    return SqliteStore(cfg.path, create=create, readonly=readonly)
