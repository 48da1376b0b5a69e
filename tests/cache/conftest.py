"""Fixtures of the cache tests."""
from __future__ import annotations

import uuid

import pytest

from sesscache import SharedMemoryStore


@pytest.fixture
def shm():
    """Makes SharedMemoryStores of 1 MiB (a new segment, or ``name``'s), closed and
    unlinked at the end of the test."""
    stores = []

    def make(name=None, **kwargs):
        store = SharedMemoryStore(name or f"fast-{uuid.uuid4().hex[:12]}", 2**20, **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
        store.unlink()
