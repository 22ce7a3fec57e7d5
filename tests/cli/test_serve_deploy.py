"""`modelcache serve` deployment: startup banner (masked), shared-SQL warning, --workers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from modelcache.cli import app
from modelcache.server.factory import ENV_VAR, app_from_env


@pytest.fixture
def captured_run(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    """Replace uvicorn.run: record what serve would run instead of serving forever."""
    import uvicorn

    calls: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append((target, kw)))
    for var in ("MODELCACHE_API_KEYS", "MODELCACHE_SQL_URL", "MODELCACHE_CHROMA_URL", ENV_VAR):
        monkeypatch.delenv(var, raising=False)
    return calls


@pytest.mark.postgres
def test_banner_names_real_backends_with_the_password_masked(
    postgres_url: str,
    tmp_path: Path,
    captured_run: list[tuple[Any, dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # trust authentication ignores the password, so a URL carrying one still connects
    user, _, rest = postgres_url.partition("@")
    monkeypatch.setenv("MODELCACHE_SQL_URL", f"{user}:hunter2@{rest}")
    result = CliRunner().invoke(
        app, ["--path", str(tmp_path), "--embedder", "fake", "serve", "--port", "8123"]
    )
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output
    assert ":***@127.0.0.1:5432" in result.output
    assert "embedded Chroma in" in result.output  # the real vector backend
    assert "other processes sharing this database" in result.output  # no chroma_url: warned
    assert "local-only" in result.output
    target, options = captured_run[0]
    assert options["port"] == 8123 and options["proxy_headers"] is False
    assert not isinstance(target, str)  # one worker: the app object itself


def test_workers_need_shared_backends(
    tmp_path: Path, captured_run: list[tuple[Any, dict[str, Any]]]
) -> None:
    result = CliRunner().invoke(
        app, ["--path", str(tmp_path), "--embedder", "fake", "serve", "--workers", "2"]
    )
    assert result.exit_code == 1 and "sql_url and chroma_url" in result.stderr
    assert captured_run == []


def test_workers_start_the_app_factory(
    tmp_path: Path, captured_run: list[tuple[Any, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELCACHE_SQL_URL", f"sqlite:///{tmp_path / 'shared.db'}")
    monkeypatch.setenv("MODELCACHE_CHROMA_URL", "http://127.0.0.1:9")
    args = ["--path", str(tmp_path), "--embedder", "fake", "serve", "--workers", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "3 workers" in result.output and "Chroma server http://127.0.0.1:9" in result.output
    target, options = captured_run[0]
    assert target == "modelcache.server.factory:app_from_env"
    assert options["factory"] is True and options["workers"] == 3
    spec = json.loads(__import__("os").environ[ENV_VAR])
    assert spec["cache"]["embedder"] == "fake"


def test_factory_builds_a_working_app_and_closes_its_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("MODELCACHE_SQL_URL", "MODELCACHE_CHROMA_URL", "MODELCACHE_API_KEYS"):
        monkeypatch.delenv(var, raising=False)
    spec = {"config_file": None, "cache": {"path": str(tmp_path), "embedder": "fake"}}
    monkeypatch.setenv(ENV_VAR, json.dumps(spec))
    application = app_from_env()
    cache = application.state.cache
    with TestClient(application) as client:
        body = {"type": "insert", "scope": {"model": "m"},
                "chat_info": [{"query": "hello there", "answer": "hi"}]}  # fmt: skip
        assert client.post("/modelcache", json=body).json()["writeStatus"] == "success"
        query = {"type": "query", "scope": {"model": "m"}, "query": "hello there"}
        assert client.post("/modelcache", json=query).json()["cacheHit"] is True
    assert cache._closed
