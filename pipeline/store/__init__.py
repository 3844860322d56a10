"""Stores: ClickHouse server (clickhouse-driver) or embedded chDB, behind one interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.store.base import QueryResult, Store, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from pipeline.config import Settings

__all__ = ["QueryResult", "Store", "StoreError", "StoreUnavailable", "open_store"]


def open_store(settings: Settings, ensure_schema: bool = True) -> Store:
    """The ClickHouse server if one is configured, else chDB under $GANZHI_HOME/chdb."""
    store: Store
    if settings.clickhouse:
        from pipeline.store.server import ServerStore

        store = ServerStore(settings.clickhouse, retention_days=settings.retention_days)
    else:
        from pipeline.store.embedded import EmbeddedStore

        store = EmbeddedStore(settings.home / "chdb", settings.database, settings.retention_days)
    if ensure_schema:
        store.ensure_schema()
    return store
