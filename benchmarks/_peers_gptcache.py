"""GPTCache side of ``benchmarks/peers.py``: runs inside GPTCache's own virtualenv.

A child process that answers one JSON command per stdin line with one JSON line on stdout, so
the parent can alternate lookups between the two systems in one run. GPTCache is set up as its
README shows (``get_prompt``, sqlite + faiss, ``SearchDistanceEvaluation``, default threshold)
with its SBERT embedding pointed at the same local MiniLM folder as ModelCache, torch limited
to one thread. Never imported by ModelCache; it needs ``gptcache`` installed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

_OUT = sys.stdout
sys.stdout = sys.stderr  # libraries that print must not corrupt the protocol

import numpy as np  # noqa: E402
from _common import proc_rss  # noqa: E402

# GPTCache's data manager keeps 1,000 entries by default and evicts beyond: room for every size
_MAX_SIZE = 10_000_000


class _Driver:
    """One GPTCache instance over a folder, plus a bare SBERT for the embedding floor."""

    def __init__(self) -> None:
        self.cache: Any = None
        self.encoder: Any = None
        self.marks: dict[str, dict[str, float]] = {}

    def _mark(self, stage: str, started: float) -> None:
        self.marks[stage] = {"s": time.perf_counter() - started, **proc_rss()}

    def _new_cache(self, folder: str) -> Any:
        from gptcache import Cache, Config
        from gptcache.manager import CacheBase, VectorBase, get_data_manager
        from gptcache.processor.pre import get_prompt
        from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

        Path(folder).mkdir(parents=True, exist_ok=True)
        manager = get_data_manager(
            CacheBase("sqlite", sql_url=f"sqlite:///{folder}/sqlite.db"),
            VectorBase(
                "faiss", dimension=self.encoder.dimension, index_path=f"{folder}/faiss.index"
            ),
            max_size=_MAX_SIZE,
        )
        cache = Cache()
        cache.init(
            pre_embedding_func=get_prompt,
            embedding_func=self.encoder.to_embeddings,
            data_manager=manager,
            similarity_evaluation=SearchDistanceEvaluation(),
            config=Config(),
        )
        return cache

    def open(self, folder: str, model: str, threads: int) -> dict[str, Any]:
        started = time.perf_counter()
        import torch

        torch.set_num_threads(threads)
        from gptcache.embedding import SBERT

        self._mark("import gptcache + torch", started)
        self.encoder = SBERT(model)
        self.encoder.to_embeddings("dimension probe")
        self._mark("model loaded", started)
        self.cache = self._new_cache(folder)
        self._mark("cache opened (sqlite + faiss)", started)
        return {"marks": self.marks}

    def fill(self, texts_path: str, vectors_path: str, start: int, stop: int) -> dict[str, Any]:
        with open(texts_path, encoding="utf-8") as fh:
            texts = json.load(fh)[start:stop]
        vectors = np.load(vectors_path, mmap_mode="r")[start:stop]
        t0 = time.perf_counter()
        self.cache.data_manager.import_data(
            texts, texts, [np.array(v) for v in vectors], [None] * len(texts)
        )
        return {"s": time.perf_counter() - t0}

    def lookup(self, text: str, bare: str) -> dict[str, Any]:
        from gptcache.adapter.api import get

        out: dict[str, Any] = {}
        if bare == "before":
            out["bare_ms"] = self._embed(text)
        c0, t0 = time.process_time(), time.perf_counter()
        answer = get(text, cache_obj=self.cache)
        out["ms"] = (time.perf_counter() - t0) * 1000
        out["cpu_ms"] = (time.process_time() - c0) * 1000
        if bare == "after":
            out["bare_ms"] = self._embed(text)
        out["hit"] = answer is not None
        return out

    def _embed(self, text: str) -> float:
        t0 = time.perf_counter()
        self.encoder.to_embeddings(text)
        return (time.perf_counter() - t0) * 1000

    def insert(self, folder: str, texts: list[str]) -> dict[str, Any]:
        """Bulk import with real embedding into a fresh cache (GPTCache's ``import_data``)."""
        cache = self._new_cache(folder)
        t0 = time.perf_counter()
        cache.import_data(texts, texts)
        cache.data_manager.flush()
        return {"s": time.perf_counter() - t0}

    def stats(self) -> dict[str, Any]:
        self.cache.data_manager.flush()
        return {**proc_rss(), "marks": self.marks}


def main() -> int:
    """Serve commands until ``quit`` or end of input."""
    driver = _Driver()
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.pop("op")
        if op == "quit":
            break
        try:
            reply = getattr(driver, op)(**cmd)
        except Exception as exc:  # reported to the parent, which stops the run
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        _OUT.write(json.dumps(reply) + "\n")
        _OUT.flush()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
