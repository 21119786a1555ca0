"""The tag list cached in Redis (`MS:wonderware:tags:list`, the replaced system's key).

The value is a JSON list, so tag names with commas survive (the replaced system joined names
with commas). Redis down or unset: every call answers "no cache" and a single warning says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from ww_assets.config import redacted_url

CACHE_KEY = "MS:wonderware:tags:list"


class TagCache:
    def __init__(
        self, url: str | None, ttl_s: int, warn: Callable[[str], None] | None = None
    ) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self._warn = warn or logging.getLogger(__name__).warning
        self._warned = False
        self._client = None

    def _redis(self):  # type: ignore[no-untyped-def]
        if self.url is None:
            return None
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(
                self.url, socket_connect_timeout=2, socket_timeout=2
            )
        return self._client

    def get(self) -> list[str] | None:
        """The cached tag list, or None on a miss or when Redis cannot be used."""
        client = self._redis()
        if client is None:
            return None
        try:
            raw = client.get(CACHE_KEY)
        except Exception as error:  # any Redis failure means: work without the cache
            self._unavailable(error)
            return None
        return None if raw is None else list(json.loads(raw))

    def put(self, tags: list[str]) -> bool:
        """Cache `tags` for the TTL; False when Redis cannot be used."""
        client = self._redis()
        if client is None:
            return False
        try:
            client.setex(CACHE_KEY, self.ttl_s, json.dumps(tags, ensure_ascii=False))
        except Exception as error:
            self._unavailable(error)
            return False
        return True

    def _unavailable(self, error: Exception) -> None:
        if not self._warned:
            self._warned = True
            where = redacted_url(self.url or "")
            self._warn(f"Redis at {where} unavailable ({error}); working without the tag cache")
