"""Multi-process soak: a `chroma run` server, two `modelcache serve` processes (one with two
workers) on MariaDB and then PostgreSQL, and concurrent clients on both.

Every client owns a tenant and checks each acknowledged write through the *other* server:
an acknowledged insert must be found (exact hit with its id), an acknowledged remove or clear
must leave no hit on that id. Two more clients race inserts against clears on one shared
partition. At the end: zero errors, a final clear leaves nothing behind, and ``check()`` finds
the two stores consistent.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from process_support import free_port, stop, wait_ready

from modelcache import Cache, CacheConfig, FakeEmbedder, Request

pytestmark = pytest.mark.soak

CLIENTS = 4
SECONDS = float(os.environ.get("MODELCACHE_SOAK_SECONDS", "8"))
_WORDS = [f"{a}{b}" for a in "bcdfghjklmnpqrstvwz" for b in ("ax", "el", "io", "um", "ry")]


@pytest.fixture
def chroma_url(tmp_path: Path) -> Iterator[str]:
    """A `chroma run` server of this test on a free loopback port."""
    chroma = Path(sys.executable).with_name("chroma")
    port = free_port()
    cmd = [str(chroma), "run", "--path", str(tmp_path / "chroma"), "--host", "127.0.0.1"]
    log = tmp_path / "chroma.log"  # a file, not a pipe: a full pipe would stall the server
    with log.open("wb") as out:
        proc = subprocess.Popen([*cmd, "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/api/v2/heartbeat", proc, timeout=150, log=log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc, sig=signal.SIGINT)


def _serve(
    sql_url: str, chroma: str, workers: int, log: Path
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELCACHE_")}
    env.update(MODELCACHE_SQL_URL=sql_url, MODELCACHE_CHROMA_URL=chroma, MODELCACHE_PATH="none")
    # correctness, not latency, is checked here: a lookup on a loaded CI machine may take
    # longer than the default deadline, and a deadline miss would read as a lost insert
    env["MODELCACHE_LOOKUP_TIMEOUT"] = "20"
    cmd = [sys.executable, "-m", "modelcache", "--embedder", "fake", "serve", "--port", str(port)]
    cmd += ["--workers", str(workers), "--log-level", "warning"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return f"http://127.0.0.1:{port}", proc


@dataclass
class Tally:
    ops: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, op: str) -> None:
        with self.lock:
            self.ops[op] = self.ops.get(op, 0) + 1

    def add(self, kind: str, text: str) -> None:
        with self.lock:
            getattr(self, kind).append(text)


class Client:
    """One tenant's client: writes on one server, verifies on the other (REST and envelope)."""

    def __init__(self, servers: list[str], tenant: str, tally: Tally, seed: int) -> None:
        self.http = httpx.Client(timeout=30)
        self.servers = servers
        self.tenant = tenant
        self.tally = tally
        self.rng = random.Random(seed)
        self.live: dict[str, str] = {}  # query -> entry id, acknowledged and not removed

    def _call(self, method: str, url: str, op: str, **kw: Any) -> Any:
        self.tally.count(op)
        try:
            r = self.http.request(method, url, **kw)
        except httpx.HTTPError as exc:
            self.tally.add("errors", f"{op}: {type(exc).__name__}")
            return None
        if r.status_code >= 300 or r.json().get("errorCode", 0) != 0:
            self.tally.add("errors", f"{op}: {r.status_code} {r.text[:200]}")
            return None
        return r.json()

    def _pair(self) -> tuple[str, str]:
        a, b = self.rng.sample(self.servers, 2)
        return a, b

    def question(self) -> str:
        return " ".join(self.rng.sample(_WORDS, 6))

    def insert(self, server: str, queries: list[str]) -> None:
        if self.rng.random() < 0.5:
            body = {"type": "insert", "scope": {"model": "m", "tenant": self.tenant},
                    "chat_info": [{"query": q, "answer": f"A:{q}"} for q in queries]}  # fmt: skip
            res = self._call("POST", f"{server}/modelcache", "insert", json=body)
            ids = res["id_list"] if res else None
        else:
            ids = []
            for q in queries:
                body = {"query": q, "model": "m", "tenant": self.tenant, "answer": f"A:{q}"}
                res = self._call("POST", f"{server}/v1/entries", "insert", json=body)
                ids.append(res["id"] if res else None)
        for q, i in zip(queries, ids or [None] * len(queries), strict=True):
            if i is not None:
                self.live[q] = i

    def lookup(self, server: str, query: str) -> str | None:
        """Id of the exact hit for a query on a server (None on a miss or an error)."""
        if self.rng.random() < 0.5:
            body = {"type": "query", "scope": {"model": "m", "tenant": self.tenant}, "query": query}
            res = self._call("POST", f"{server}/modelcache", "lookup", json=body)
            return res.get("id") if res and res["cacheHit"] else None
        body = {"query": query, "model": "m", "tenant": self.tenant}
        res = self._call("POST", f"{server}/v1/lookup", "lookup", json=body)
        return res["entry_id"] if res and res["hit"] else None

    def remove(self, server: str, query: str) -> None:
        entry_id = self.live[query]
        if self.rng.random() < 0.5:
            body = {"type": "remove", "scope": {"model": "m", "tenant": self.tenant},
                    "remove_type": "delete_by_id", "id_list": [entry_id]}  # fmt: skip
            ok = self._call("POST", f"{server}/modelcache", "remove", json=body) is not None
        else:
            ok = self._call("DELETE", f"{server}/v1/entries/{entry_id}", "remove") is not None
        if ok:
            del self.live[query]
            if self.lookup(self._other(server), query) == entry_id:
                self.tally.add("stale", f"removed {entry_id}")

    def clear(self, server: str) -> None:
        if self.rng.random() < 0.5:
            body = {"type": "remove", "scope": {"model": "m", "tenant": self.tenant},
                    "remove_type": "truncate_by_model"}  # fmt: skip
            ok = self._call("POST", f"{server}/modelcache", "clear", json=body) is not None
        else:
            ok = self._call("POST", f"{server}/v1/clear", "clear", json={"tenant": self.tenant})
        if ok:
            cleared, self.live = self.live, {}
            other = self._other(server)
            for q, entry_id in list(cleared.items())[:3]:
                if self.lookup(other, q) == entry_id:
                    self.tally.add("stale", f"cleared {entry_id}")

    def _other(self, server: str) -> str:
        return next(s for s in self.servers if s != server)

    def run(self, until: float) -> None:
        while time.monotonic() < until:
            writer, reader = self._pair()
            fresh = [self.question() for _ in range(self.rng.randint(1, 3))]
            self.insert(writer, fresh)
            for q in fresh:
                if q in self.live and self.lookup(reader, q) != self.live[q]:
                    self.tally.add("lost", f"{self.tenant}: {self.live[q]}")
            for q in self.rng.sample(sorted(self.live), min(2, len(self.live))):
                self.lookup(self.rng.choice(self.servers), q)  # hit-count writes
            roll = self.rng.random()
            if roll < 0.35 and self.live:
                self.remove(writer, self.rng.choice(sorted(self.live)))
            elif roll < 0.45:
                self.clear(writer)

    def verify_all(self) -> None:
        for q, entry_id in self.live.items():
            for server in self.servers:
                if self.lookup(server, q) != entry_id:
                    self.tally.add("lost", f"{self.tenant} at the end: {entry_id}")


def _racer(client: Client, until: float, clearing: bool, inserted: list[str]) -> None:
    """Insert into, or clear, one shared partition as fast as possible."""
    while time.monotonic() < until:
        server = client.rng.choice(client.servers)
        if clearing:
            client.clear(server)
        else:
            q = client.question()
            client.insert(server, [q])
            inserted.append(q)


@pytest.mark.parametrize("db", ["mariadb", "postgres"])
def test_two_servers_share_one_cache_without_losing_writes(
    db: str, request: pytest.FixtureRequest, chroma_url: str, tmp_path: Path
) -> None:
    sql_url = request.getfixturevalue(f"{db}_url")
    started = time.monotonic()
    logs = [tmp_path / f"serve{n}.log" for n in range(2)]
    procs = [_serve(sql_url, chroma_url, w, log) for w, log in zip((2, 1), logs, strict=True)]
    servers = [url for url, _ in procs]
    try:
        for (url, proc), log in zip(procs, logs, strict=True):
            wait_ready(f"{url}/healthz", proc, timeout=150, log=log)
        phases = {"startup": time.monotonic() - started}
        tally = Tally()
        run = secrets.token_hex(3)
        clients = [Client(servers, f"soak-{run}-{i}", tally, i) for i in range(CLIENTS)]
        race_tenant = f"soak-{run}-race"
        racers = [Client(servers, race_tenant, tally, 100 + i) for i in range(2)]
        race_inserted: list[str] = []
        until = time.monotonic() + SECONDS
        threads = [threading.Thread(target=c.run, args=(until,)) for c in clients]
        threads += [
            threading.Thread(target=_racer, args=(racers[0], until, False, race_inserted)),
            threading.Thread(target=_racer, args=(racers[1], until, True, race_inserted)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=SECONDS + 120)
        phases["load"] = time.monotonic() - started - phases["startup"]
        for c in clients:
            c.verify_all()
        # after the race: one acknowledged clear must leave nothing of that partition behind
        racers[1].clear(servers[0])
        leftovers = [q for q in race_inserted if racers[0].lookup(servers[1], q) is not None]
        time.sleep(1.0)  # let deferred hit-count writes land before the integrity check
    finally:
        for _, proc in procs:
            stop(proc, sig=signal.SIGINT)
    config = CacheConfig(path=None, sql_url=sql_url, chroma_url=chroma_url, embedder="fake")
    with Cache(config, embedder=FakeEmbedder()) as cache:
        report = cache.check()
        remaining = {p["tenant"]: p["entries"] for p in cache.stats()["partitions"]}
        for c in clients:  # the store holds exactly the acknowledged, unremoved entries
            assert remaining.get(c.tenant, 0) == len(c.live), c.tenant
            for q in list(c.live)[:5]:
                req = Request.from_text(q, tenant=c.tenant, model="m")
                assert cache.lookup(req, exact_only=True) is not None
    summary = {**tally.ops, "errors": len(tally.errors), "lost": len(tally.lost)}
    summary |= {"stale": len(tally.stale), "race_leftovers": len(leftovers)}
    summary |= {f"{k}_s": round(v, 1) for k, v in phases.items()}
    summary["total_s"] = round(time.monotonic() - started, 1)
    print(f"\nsoak {db}: {summary}")
    assert tally.errors == [], tally.errors[:10]
    assert tally.lost == [], tally.lost[:10]
    assert tally.stale == [], tally.stale[:10]
    assert leftovers == [], leftovers[:10]
    assert remaining.get(race_tenant, 0) == 0
    assert report.ok, report
    assert min(tally.ops.get(op, 0) for op in ("insert", "lookup", "clear")) > 0  # it ran
