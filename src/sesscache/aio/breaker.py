"""The asyncio prefetching store's breaker: the same :class:`StoreBreaker` that synchronous
servers use through :class:`~sesscache.stores.resilient.ResilientStore` (one implementation,
in :mod:`sesscache.stores.breaker`). Kept so that existing imports keep working.

Only the event loop's thread uses the prefetching store's breaker (lookups and background
writes both run there), on the loop's clock.
"""
from __future__ import annotations

from ..stores.breaker import DEFAULT_RETRY_AFTER, DEFAULT_TRIP_AFTER, StoreBreaker

__all__ = ["StoreBreaker", "DEFAULT_TRIP_AFTER", "DEFAULT_RETRY_AFTER"]
