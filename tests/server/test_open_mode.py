"""Open mode for trusted networks, trusted proxies, and per-tenant keys beside them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from modelcache import Cache, ConfigError
from modelcache.server import ServerSettings, create_app
from modelcache.server.settings import client_address

INSERT = {
    "type": "insert",
    "scope": {"model": "CODEGPT-1008"},
    "chat_info": [{"query": [{"role": "user", "content": "who are you?"}], "answer": "a bot"}],
}
QUERY = {
    "type": "query",
    "scope": {"model": "CODEGPT-1008"},
    "query": [{"role": "user", "content": "who are you?"}],
}


def _client(cache: Cache, address: str, **settings: object) -> TestClient:
    app = create_app(cache, ServerSettings.create(**settings))
    return TestClient(app, client=(address, 40000))


def _legacy_roundtrip(client: TestClient) -> None:
    """Exactly what a CodeFuse-ModelCache client sends: no key header, a JSON string body."""
    r = client.post("/modelcache", json=json.dumps(INSERT))
    assert r.status_code == 200 and r.json()["writeStatus"] == "success", r.text
    r = client.post("/modelcache", json=json.dumps(QUERY))
    assert r.status_code == 200 and r.json()["cacheHit"] is True


def test_remote_client_is_refused_without_keys_or_open_mode(cache: Cache) -> None:
    r = _client(cache, "10.1.2.3").post("/modelcache", json=json.dumps(QUERY))
    assert r.status_code == 403


def test_existing_client_on_another_host_works_in_open_mode(cache: Cache) -> None:
    settings = {"open_mode": True, "allowed_clients": ("10.0.0.0/8",)}
    _legacy_roundtrip(_client(cache, "10.1.2.3", **settings))
    r = _client(cache, "192.168.1.9", **settings).post("/modelcache", json=json.dumps(QUERY))
    assert r.status_code == 403 and r.json()["errorCode"] == 104


def test_open_mode_with_keys_serves_both(cache: Cache) -> None:
    settings = {
        "open_mode": True,
        "allowed_clients": ("10.0.0.0/8",),
        "api_keys": {"key-a": "tenantA"},
    }
    _legacy_roundtrip(_client(cache, "10.9.9.9", **settings))
    outside = _client(cache, "203.0.113.7", **settings)
    assert outside.post("/modelcache", json=json.dumps(QUERY)).status_code == 401
    keyed = outside.post(
        "/v1/entries",
        json={"query": "q", "answer": 1, "tenant": "tenantB"},
        headers={"Authorization": "Bearer key-a"},
    )
    assert keyed.status_code == 403  # a key stays confined to its tenant
    r = outside.post(
        "/v1/entries", json={"query": "q", "answer": 1}, headers={"X-API-Key": "key-a"}
    )
    assert r.status_code == 201 and r.json()["tenant"] == "tenantA"


def test_reverse_proxy_is_believed_only_when_trusted(cache: Cache) -> None:
    headers = {"X-Forwarded-For": "10.1.2.3"}
    open_10 = {"open_mode": True, "allowed_clients": ("10.0.0.0/8",)}
    plain = _client(cache, "192.168.1.1", **open_10)
    # an untrusted peer's X-Forwarded-For is ignored: the peer itself is not in 10/8
    assert plain.post("/modelcache", json=json.dumps(QUERY), headers=headers).status_code == 403
    proxied = _client(cache, "192.168.1.1", **open_10, trusted_proxies=("192.168.1.1/32",))
    r = proxied.post("/modelcache", json=json.dumps(QUERY), headers=headers)
    assert r.status_code == 200
    spoofed = {"X-Forwarded-For": "10.1.2.3, 198.51.100.4"}  # client prepended a fake hop
    assert proxied.post("/modelcache", json=json.dumps(QUERY), headers=spoofed).status_code == 403


def test_local_only_mode_behind_a_local_proxy(cache: Cache) -> None:
    """A loopback reverse proxy forwarding a loopback client is served in local-only mode."""
    client = _client(cache, "127.0.0.1", trusted_proxies=("127.0.0.1/32",))
    r = client.post("/modelcache", json=json.dumps(QUERY), headers={"X-Forwarded-For": "::1"})
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        ("10.0.0.1", "1.2.3.4", (), "10.0.0.1"),
        ("10.0.0.1", "1.2.3.4", ("10.0.0.0/8",), "1.2.3.4"),
        ("10.0.0.1", "1.2.3.4, 10.0.0.2", ("10.0.0.0/8",), "1.2.3.4"),
        ("10.0.0.1", "9.9.9.9, 1.2.3.4", ("10.0.0.0/8",), "1.2.3.4"),
        ("10.0.0.1", None, ("10.0.0.0/8",), "10.0.0.1"),
    ],
)
def test_client_address(
    peer: str, xff: str | None, trusted: tuple[str, ...], expected: str
) -> None:
    assert client_address(peer, xff, trusted) == expected


def test_open_mode_settings_are_explicit() -> None:
    with pytest.raises(ConfigError, match="allowed_clients"):
        ServerSettings.create(open_mode=True)
    with pytest.raises(ConfigError, match="open_mode"):
        ServerSettings.create(allowed_clients=("10.0.0.0/8",))
    with pytest.raises(ConfigError, match="not an IP network"):
        ServerSettings.create(open_mode=True, allowed_clients=("office",))
    with pytest.raises(ConfigError, match="refusing to bind"):
        ServerSettings.create().check_bind("0.0.0.0")
    ServerSettings.create(open_mode=True, allowed_clients=("10.0.0.0/8",)).check_bind("0.0.0.0")
    env = {"MODELCACHE_OPEN_MODE": "1", "MODELCACHE_ALLOWED_CLIENTS": "10.0.0.0/8, 192.168.0.0/16"}
    loaded = ServerSettings.load(environ=env)
    assert loaded.open_mode and loaded.allowed_clients == ("10.0.0.0/8", "192.168.0.0/16")


@pytest.fixture
def open_everywhere(cache: Cache) -> Iterator[TestClient]:
    with _client(cache, "2001:db8::7", open_mode=True, allowed_clients=("::/0",)) as c:
        yield c


def test_ipv6_clients(open_everywhere: TestClient) -> None:
    _legacy_roundtrip(open_everywhere)
