"""API keys: a key reads and writes only its own tenant; no keys means local-only."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modelcache import Cache, ConfigError
from modelcache.server import ServerSettings, create_app
from modelcache.server.settings import is_loopback, parse_api_keys

A = {"Authorization": "Bearer key-a"}
B = {"X-API-Key": "key-b"}


def envelope(kind: str, **extra: object) -> dict:
    return {"type": kind, "scope": {"model": "gpt"}, **extra}


def test_missing_or_unknown_key_is_401_code_104(keyed_client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": ""}):
        r = keyed_client.post("/v1/lookup", json={"query": "q"}, headers=headers)
        assert (r.status_code, r.json()["errorCode"]) == (401, 104)
        r = keyed_client.post("/modelcache", json=envelope("query", query="q"), headers=headers)
        assert (r.status_code, r.json()["errorCode"]) == (401, 104)
        assert r.json()["cacheHit"] is False
    assert keyed_client.get("/healthz").status_code == 200
    both = {"Authorization": "Bearer key-a", "X-API-Key": "key-b"}  # two tenants: refused
    r = keyed_client.post("/v1/lookup", json={"query": "q"}, headers=both)
    assert (r.status_code, r.json()["errorDesc"]) == (401, "conflicting API keys")


def test_key_confined_to_its_tenant(keyed_client: TestClient, cache: Cache) -> None:
    r = keyed_client.post("/v1/entries", json={"query": "shared q", "answer": "A"}, headers=A)
    assert r.status_code == 201 and r.json()["tenant"] == "tenantA"
    entry_id = r.json()["id"]
    assert keyed_client.post("/v1/lookup", json={"query": "shared q"}, headers=A).json()["hit"]
    assert not keyed_client.post("/v1/lookup", json={"query": "shared q"}, headers=B).json()["hit"]
    # naming another tenant is refused, naming your own is fine
    r = keyed_client.post("/v1/lookup", json={"query": "q", "tenant": "tenantA"}, headers=B)
    assert (r.status_code, r.json()["errorCode"]) == (403, 104)
    r = keyed_client.post("/v1/lookup", json={"query": "q", "tenant": "tenantB"}, headers=B)
    assert r.status_code == 200
    # B cannot delete, clear or see A's entries
    assert keyed_client.delete(f"/v1/entries/{entry_id}", headers=B).status_code == 404
    assert keyed_client.post("/v1/clear", json={}, headers=B).json() == {"deleted": 0}
    r = keyed_client.post("/v1/clear", json={"tenant": "tenantA"}, headers=B)
    assert r.status_code == 403
    stats = keyed_client.get("/v1/stats", headers=B).json()
    assert stats["entries"] == 0 and stats["partitions"] == [] and stats["process"] is None
    assert cache.stats()["entries"] == 1
    assert keyed_client.get("/v1/stats", headers=A).json()["entries"] == 1
    assert keyed_client.delete(f"/v1/entries/{entry_id}", headers=A).status_code == 200


def test_envelope_with_keys(keyed_client: TestClient, cache: Cache) -> None:
    rows = [{"query": [{"role": "user", "content": "envelope q"}], "answer": "ans"}]
    r = keyed_client.post("/modelcache", json=envelope("insert", chat_info=rows), headers=A)
    assert r.json()["writeStatus"] == "success"
    ids = r.json()["id_list"]
    q = envelope("query", query=[{"role": "user", "content": "envelope q"}])
    assert keyed_client.post("/modelcache", json=q, headers=A).json()["cacheHit"] is True
    assert keyed_client.post("/modelcache", json=q, headers=B).json()["cacheHit"] is False
    foreign = {"type": "query", "scope": {"model": "gpt", "tenant": "tenantA"}, "query": "x"}
    r = keyed_client.post("/modelcache", json=foreign, headers=B)
    assert (r.status_code, r.json()["errorCode"]) == (403, 104)
    # B's delete_by_id and truncate never touch A's rows
    rm = envelope("remove", remove_type="delete_by_id", id_list=ids)
    assert (
        keyed_client.post("/modelcache", json=rm, headers=B).json()["response"]["delete_count"] == 0
    )
    tr = envelope("remove", remove_type="truncate_by_model")
    assert (
        keyed_client.post("/modelcache", json=tr, headers=B).json()["response"]["delete_count"] == 0
    )
    assert cache.stats()["entries"] == 1
    assert (
        keyed_client.post("/modelcache", json=rm, headers=A).json()["response"]["delete_count"] == 1
    )


def test_local_only_mode_warns_and_refuses_remote_clients(
    cache: Cache, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="modelcache.server"):
        app = create_app(cache, ServerSettings())
    assert "local-only" in caplog.text
    with TestClient(app, client=("10.1.2.3", 5000)) as remote:
        r = remote.post("/v1/lookup", json={"query": "q"})
        assert (r.status_code, r.json()["errorCode"]) == (403, 104)
    with TestClient(app, client=("127.0.0.1", 5000)) as local:
        assert local.post("/v1/lookup", json={"query": "q"}).status_code == 200


def test_settings_from_env_and_toml(tmp_path: Path) -> None:
    assert parse_api_keys(" k1:tA , k2:tB,") == {"k1": "tA", "k2": "tB"}
    with pytest.raises(ConfigError):
        parse_api_keys("no-tenant")
    toml = tmp_path / "mc.toml"
    toml.write_text(
        '[modelcache]\npath = "x"\n\n[server]\napi_keys = {k1 = "fromfile", k3 = "t3"}\n'
        "max_body_bytes = 1000\n",
        encoding="utf-8",
    )
    s = ServerSettings.load(toml, environ={"MODELCACHE_API_KEYS": "k1:tA,k2:tB"})
    assert s.api_keys == {"k1": "tA", "k2": "tB", "k3": "t3"}
    assert s.max_body_bytes == 1000 and not s.local_only
    s = ServerSettings.load(environ={"MODELCACHE_BLOCKED_MODELS": "a, b"})
    assert s.blocked_models == ("a", "b") and s.local_only
    with pytest.raises(ConfigError):
        ServerSettings.load(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match="environment variable MODELCACHE_PORT = 'not-a-port'"):
        ServerSettings.load(environ={"MODELCACHE_PORT": "not-a-port"})
    with pytest.raises(ConfigError, match="MODELCACHE_OPEN_MODE = 'maybe'"):
        ServerSettings.load(environ={"MODELCACHE_OPEN_MODE": "maybe"})  # was read as False
    toml.write_text("[server]\nmax_body_byte = 10\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"mc\.toml:2 .*did you mean 'max_body_bytes'"):
        ServerSettings.load(toml, environ={})
    toml.write_text("[server]\nport = 1\n", encoding="utf-8")
    assert ServerSettings.load(toml, environ={"MODELCACHE_PORT": "2"}, port=3).port == 3
    assert ServerSettings.load(toml, environ={"MODELCACHE_PORT": "2"}).port == 2
    with pytest.raises(ConfigError, match="argument admin_key = \\*\\*\\*"):
        ServerSettings(admin_key=12345)  # type: ignore[arg-type]


def test_bind_rules() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    ServerSettings().check_bind("127.0.0.1")
    with pytest.raises(ConfigError, match="refusing to bind"):
        ServerSettings().check_bind("0.0.0.0")
    ServerSettings(api_keys={"k": "t"}).check_bind("0.0.0.0")


def test_default_env_must_be_one_of_the_cache_environments(cache: Cache) -> None:
    with pytest.raises(ConfigError, match=r"unknown env 'qa' \(default_env\); allowed: dev, "):
        create_app(cache, ServerSettings(default_env="qa"))


def test_api_keys_layers_add_up_and_a_bad_entry_names_its_source_not_its_secret(
    tmp_path: Path,
) -> None:
    toml = tmp_path / "mc.toml"
    toml.write_text('[server]\napi_keys = ["k1:fromfile", "k3:t3"]\n', encoding="utf-8")
    s = ServerSettings.load(toml, environ={"MODELCACHE_API_KEYS": "k1:tA"})
    assert s.api_keys == {"k1": "tA", "k3": "t3"}
    assert ServerSettings.create(api_keys="k:t").api_keys == {"k": "t"}
    with pytest.raises(ConfigError) as info:
        ServerSettings.load(environ={"MODELCACHE_API_KEYS": "k1:tA,s3cret-no-tenant"})
    assert "environment variable MODELCACHE_API_KEYS" in str(info.value)
    assert "API key entry 2 must look like 'key:tenant'" in str(info.value)
    assert "s3cret" not in str(info.value)


def test_an_empty_variable_leaves_the_files_server_setting(tmp_path: Path) -> None:
    toml = tmp_path / "mc.toml"
    toml.write_text('[server]\nadmin_key = "file-admin"\n', encoding="utf-8")
    s = ServerSettings.load(toml, environ={"MODELCACHE_ADMIN_KEY": "", "MODELCACHE_API_KEYS": ""})
    assert s.admin_key == "file-admin" and s.api_keys == {}


def test_a_key_given_twice_with_different_tenants_is_refused(tmp_path: Path) -> None:
    assert parse_api_keys("k1:acme,k2:globex,k1:acme") == {"k1": "acme", "k2": "globex"}
    with pytest.raises(ConfigError) as info:
        ServerSettings.load(environ={"MODELCACHE_API_KEYS": "s3cret:acme,k2:globex,s3cret:globex"})
    assert "API key entry 3 repeats an earlier key with another tenant" in str(info.value)
    assert "s3cret" not in str(info.value)
    toml = tmp_path / "mc.toml"
    toml.write_text('[server]\napi_keys = ["s3cret:acme", "s3cret:globex"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="repeats an earlier key"):
        ServerSettings.load(toml, environ={})


@pytest.mark.parametrize("tenant", ["bad\x01tenant", "x" * 192, "tab\there"])
def test_a_tenant_that_is_no_valid_scope_name_is_refused_at_load(tenant: str) -> None:
    with pytest.raises(ConfigError) as info:
        ServerSettings.load(environ={"MODELCACHE_API_KEYS": f"k0:ok,s3cret:{tenant}"})
    assert "the tenant of API key 2: scope tenant" in str(info.value)
    assert "s3cret" not in str(info.value)
    with pytest.raises(ConfigError, match="the tenant of API key 1"):
        ServerSettings.create(api_keys={"s3cret": tenant})
