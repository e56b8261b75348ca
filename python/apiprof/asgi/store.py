"""The middleware's captured profiles: bounded rings of gzipped JSON documents."""

from __future__ import annotations

import itertools
import os
from collections import deque
from typing import Any

ON_DEMAND_RING = "<on-demand>"


class ProfileStore:
    """Captured profiles: a ring of ``keep`` per route for slow requests, one ring of
    ``keep`` for on-demand ones, at most ``max_total`` in all (the oldest goes first).
    Each is a metadata record and the profile's JSON document, gzip-compressed."""

    def __init__(self, keep: int, max_total: int) -> None:
        self.keep = keep
        self.max_total = max_total
        self._rings: dict[str, deque[str]] = {}
        self._by_id: dict[str, tuple[dict[str, Any], bytes]] = {}
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        return f"{os.getpid()}-{next(self._ids)}"

    def add(self, ring: str, record: dict[str, Any], document: bytes) -> None:
        q = self._rings.setdefault(ring, deque())
        q.append(record["id"])
        self._by_id[record["id"]] = (record, document)
        if len(q) > self.keep:
            self._by_id.pop(q.popleft(), None)
        while len(self._by_id) > self.max_total:
            oldest = next(iter(self._by_id))
            del self._by_id[oldest]
            for ring_ids in self._rings.values():
                if oldest in ring_ids:
                    ring_ids.remove(oldest)

    def get(self, profile_id: str) -> tuple[dict[str, Any], bytes] | None:
        """The record and gzipped JSON document of a kept profile, or None."""
        return self._by_id.get(profile_id)

    def index(self) -> list[dict[str, Any]]:
        """Metadata of every kept profile, newest first."""
        return [rec for rec, _ in reversed(self._by_id.values())]
