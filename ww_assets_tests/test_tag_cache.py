"""The Redis tag-list cache, against a real redis-server process."""

from __future__ import annotations

import json

import pytest
import redis

from ww_assets.tag_cache import CACHE_KEY, TagCache
from ww_assets_tests.conftest import Pipeline, RedisServer, free_port
from ww_assets_tests.plant_fixtures import COPIED_TAGS, build_trap_plant


def test_put_sets_the_key_with_its_ttl_and_odd_names_survive(redis_server: RedisServer) -> None:
    cache = TagCache(redis_server.url, ttl_s=1800)
    tags = ["a,b", "Operator's;--Note", "Kühlwasser"]
    assert cache.put(tags)
    client = redis.Redis.from_url(redis_server.url)
    assert 1790 <= client.ttl(CACHE_KEY) <= 1800
    assert json.loads(client.get(CACHE_KEY)) == tags
    assert cache.get() == tags


def test_unreachable_redis_means_no_cache_and_one_warning() -> None:
    warnings: list[str] = []
    cache = TagCache(f"redis://127.0.0.1:{free_port()}/0", ttl_s=60, warn=warnings.append)
    assert cache.get() is None
    assert cache.put(["a"]) is False
    assert cache.get() is None
    assert len(warnings) == 1 and "working without the tag cache" in warnings[0]


def test_no_url_means_no_cache_and_no_warning() -> None:
    warnings: list[str] = []
    cache = TagCache(None, ttl_s=60, warn=warnings.append)
    assert cache.get() is None and cache.put(["a"]) is False and warnings == []


def test_catalog_refresh_fills_the_cache(
    pipeline: Pipeline, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("WONDERWARE_PIPELINE_TAG_CACHE_TTL", "120")

    pipeline.reload()
    build_trap_plant(pipeline.settings.historian_sqlite)
    result = pipeline.materialize_tags()
    assert result.success
    client = redis.Redis.from_url(redis_server.url)
    assert json.loads(client.get(CACHE_KEY)) == COPIED_TAGS
    assert 0 < client.ttl(CACHE_KEY) <= 120
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["tag_cache_refreshed"].value is True


def test_catalog_refresh_succeeds_with_redis_stopped(
    pipeline: Pipeline, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)

    pipeline.reload()
    build_trap_plant(pipeline.settings.historian_sqlite)
    redis_server.stop()
    result = pipeline.materialize_tags()
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["tag_cache_refreshed"].value is False
