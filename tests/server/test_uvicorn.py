"""`python -m modelcache serve` as a real uvicorn process on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from process_support import free_port, stop, wait_ready


def test_modelcache_client_against_real_server(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MODELCACHE_API_KEYS"}
    cmd = [sys.executable, "-m", "modelcache", "--path", str(tmp_path), "--embedder", "fake"]
    cmd += ["serve", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{url}/healthz", proc)
        # exactly what ModelCache's README does: requests.post(url, json=json.dumps(data))
        insert = {
            "type": "insert",
            "scope": {"model": "CODEGPT-1008"},
            "chat_info": [
                {
                    "query": [
                        {"role": "system", "content": "You are an AI code assistant."},
                        {"role": "user", "content": "你是谁?"},
                    ],
                    "answer": "Hello, I am an intelligent assistant. How can I assist you?",
                }
            ],
        }
        r = httpx.post(f"{url}/modelcache", json=json.dumps(insert), timeout=10)
        assert r.status_code == 200 and r.json()["writeStatus"] == "success"
        query = {"type": "query", "scope": {"model": "CODEGPT-1008"},
                 "query": insert["chat_info"][0]["query"]}  # fmt: skip
        r = httpx.post(f"{url}/modelcache", json=json.dumps(query), timeout=10)
        assert r.json()["cacheHit"] is True and r.json()["answer"].startswith("Hello")
        remove = {"type": "remove", "scope": {"model": "CODEGPT-1008"},
                  "remove_type": "truncate_by_model"}  # fmt: skip
        r = httpx.post(f"{url}/modelcache", json=json.dumps(remove), timeout=10)
        assert r.json()["response"]["delete_count"] == 1
        r = httpx.post(f"{url}/modelcache", content=b"{oops", timeout=10)
        assert r.status_code == 400 and r.json()["errorCode"] == 101
        assert "modelcache_hits_total" in httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        stop(proc, sig=signal.SIGINT)
