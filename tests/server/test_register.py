"""`register` tells a new partition from an existing one."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_register_answers_already_exists_the_second_time(client: TestClient) -> None:
    body = {"type": "register", "scope": {"model": "CODEGPT-1117", "params": {"t": 0}}}
    first = client.post("/modelcache", json=body).json()
    assert first["response"] == "create_success" and first["errorCode"] == 0
    second = client.post("/modelcache", json=body).json()
    assert second == {
        "errorCode": 0,
        "errorDesc": "",
        "response": "already_exists",
        "writeStatus": "success",
    }
    other = {"type": "register", "scope": {"model": "CODEGPT-1117", "params": {"t": 1}}}
    assert client.post("/modelcache", json=other).json()["response"] == "create_success"
