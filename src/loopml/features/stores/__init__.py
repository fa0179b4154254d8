"""Online store backends (chosen by ``features.online_store.type``)."""

from loopml.features.stores import redis_store, sqlite_store

__all__ = ["redis_store", "sqlite_store"]
