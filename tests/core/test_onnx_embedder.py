"""The ONNX Runtime embedding path: same vectors as torch, no torch when serving, fallback."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from modelcache import Cache, CacheConfig, Request, SentenceTransformerEmbedder
from modelcache.embedding import OnnxSentenceEmbedder, build_embedder

pytestmark = pytest.mark.model

# the shared data folder beside the checkout (or beside the folder of worktrees)
DATA = next(
    (
        p / "shared" / "data" / "qqp_dev.jsonl"
        for p in Path(__file__).resolve().parents[3:5]
        if (p / "shared" / "data" / "qqp_dev.jsonl").is_file()
    ),
    Path("qqp_dev.jsonl"),
)
PASTA = "Boil the pasta in salted water for nine minutes, then drain it and add the sauce. "
STARS = "Neutron stars form when massive stars collapse at the end of their lives. "
HEAVY = ("torch", "transformers", "sentence_transformers")


def _texts() -> list[str]:
    """A test set: real user questions, look-alike traps, CJK, and texts longer than a window."""
    texts = [
        "How do I reset my password?",
        "How do I disable two-factor authentication?",
        "Write a Java function that finds all numbers divisible by 13 and 23.",
        "找出所有能被13和23整除的数字,用Python实现",
        "Héllo wörld — can't, won't; ?!",
        "a",
        PASTA * 12 + STARS * 20,
        STARS * 40,
    ]
    if DATA.is_file():
        with DATA.open(encoding="utf-8") as fh:
            for line, _ in zip(fh, range(60), strict=False):
                row = json.loads(line)
                texts += [row["a"], row["b"]]
    return texts


def test_onnx_vectors_equal_the_torch_vectors(
    minilm: OnnxSentenceEmbedder, minilm_torch: SentenceTransformerEmbedder
) -> None:
    texts = _texts()
    assert minilm.backend == "onnx"
    assert minilm.name == minilm_torch.name and minilm.dimension == minilm_torch.dimension
    onnx, torch = minilm.embed(texts), minilm_torch.embed(texts)
    cosines = np.sum(onnx * torch, axis=1)
    assert cosines.min() >= 0.9999, f"worst cosine {cosines.min():.6f}: {texts[cosines.argmin()]}"
    # the same tokenizer: token counts (short/long threshold) and windows agree
    for text in texts[:20]:
        assert minilm.count_tokens(text) == minilm_torch.count_tokens(text)
        assert minilm._windows(text) == minilm_torch._windows(text)
    assert minilm.max_tokens == minilm_torch.max_tokens
    # padding within a batch does not move a vector
    alone = np.vstack([minilm.embed([t]) for t in texts[:12]])
    assert np.sum(alone * onnx[:12], axis=1).min() >= 0.9999


def test_the_default_config_embeds_with_onnx_and_reads_a_torch_written_cache(
    tmp_path: Path, minilm_torch: SentenceTransformerEmbedder
) -> None:
    config = CacheConfig(path=str(tmp_path / "c"))
    with Cache(config, embedder=minilm_torch) as cache:
        cache.insert(Request.from_text("How do I reset my password?"), "Use 'Forgot password'.")
    with Cache(config) as cache:  # default: ONNX Runtime, same embedder name, same vectors
        assert isinstance(cache.embedder, OnnxSentenceEmbedder)
        hit = cache.lookup(Request.from_text("How can I reset my password?"))
        assert cache.embedder.backend == "onnx"
    assert hit is not None and hit.kind == "semantic"
    assert hit.similarity == pytest.approx(
        float(np.dot(*minilm_torch.embed(["How can I reset my password?", hit.matched_query]))),
        abs=1e-4,
    )


def test_a_folder_saved_by_sentence_transformers_6_runs_under_onnx(
    tmp_path: Path, minilm: OnnxSentenceEmbedder
) -> None:
    """Any sentence-transformers folder: here the layout sentence-transformers 6 writes (what
    `modelcache finetune` saves), with the shipped weights linked in."""
    from modelcache.embedding import shipped_model_path

    shipped = Path(shipped_model_path())
    folder = tmp_path / "my-model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "2_Normalize").mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        (folder / name).symlink_to(shipped / name)
    tok_config = json.loads((shipped / "tokenizer_config.json").read_text(encoding="utf-8"))
    files = {
        "modules.json": [
            {
                "idx": 0,
                "name": "0",
                "path": "",
                "type": "sentence_transformers.base.modules.transformer.Transformer",
            },
            {
                "idx": 1,
                "name": "1",
                "path": "1_Pooling",
                "type": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
            },
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.base.modules.normalize.Normalize",
            },
        ],
        "1_Pooling/config.json": {
            "embedding_dimension": 384,
            "pooling_mode": "mean",
            "include_prompt": True,
        },
        "sentence_bert_config.json": {"transformer_task": "feature-extraction"},
        "tokenizer_config.json": {**tok_config, "model_max_length": 256},
    }
    for name, value in files.items():
        (folder / name).write_text(json.dumps(value), encoding="utf-8")
    embedder = OnnxSentenceEmbedder(str(folder), cache_dir=tmp_path / "onnx")
    assert (embedder.name, embedder.dimension) == ("st:my-model", 384)
    texts = ["How do I reset my password?", PASTA * 12 + STARS * 20]
    vectors = embedder.embed(texts)
    assert embedder.backend == "onnx" and embedder.onnx_path.is_file()
    assert embedder.max_tokens == minilm.max_tokens
    assert np.sum(vectors * minilm.embed(texts), axis=1).min() >= 0.9999


def test_the_torch_backend_stays_selectable() -> None:
    embedder = build_embedder("minilm", backend="torch")
    assert isinstance(embedder, SentenceTransformerEmbedder)
    assert embedder.name == "st:all-MiniLM-L6-v2"
    assert CacheConfig(embedder_backend="torch").embedder_backend == "torch"


def test_a_failed_export_falls_back_to_torch_with_a_warning(
    tmp_path: Path, minilm: OnnxSentenceEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("the export cannot create its folder here", encoding="utf-8")
    embedder = OnnxSentenceEmbedder(cache_dir=blocker)
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        vectors = embedder.embed(["How do I reset my password?"])
    assert embedder.backend == "torch"
    assert "using torch" in caplog.text
    assert float(vectors[0] @ minilm.embed(["How do I reset my password?"])[0]) >= 0.9999
    with pytest.raises(OSError):
        OnnxSentenceEmbedder(cache_dir=blocker, fallback=False).embed(["x"])


def _run(code: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def test_a_serving_process_never_imports_torch(
    tmp_path: Path, minilm: OnnxSentenceEmbedder
) -> None:
    assert minilm.onnx_path.is_file()  # exported by the session fixture
    code = f"""
        import sys
        from modelcache import Cache, CacheConfig, Request
        with Cache(CacheConfig(path={str(tmp_path / "c")!r})) as cache:
            cache.insert(Request.from_text("How do I reset my password?"), "Use the link.")
            hit = cache.lookup(Request.from_text("How can I reset my password?"))
            assert hit is not None and hit.kind == "semantic", hit
            assert cache.embedder.backend == "onnx"
        print("loaded:" + ",".join(m for m in {HEAVY!r} if m in sys.modules))
    """
    assert _run(code, tmp_path) == "loaded:", "torch or transformers was imported"


def test_cache_and_model_free_cli_commands_load_no_model(tmp_path: Path) -> None:
    """Opening a cache loads no model; `stats`, `export` and `clear` never embed."""
    heavy = (*HEAVY, "onnxruntime", "tokenizers")
    code = f"""
        import sys
        from modelcache import Cache, CacheConfig
        from modelcache.cli import app
        path = {str(tmp_path / "c")!r}
        with Cache(CacheConfig(path=path)) as cache:
            cache.stats()
        for args in (["stats", "--json"], ["export"]):
            app(["--path", path, *args], standalone_mode=False)
        chroma = "chromadb" in sys.modules  # stats and export read SQL only
        app(["--path", path, "clear", "--yes"], standalone_mode=False)
        print(f"chroma:{{chroma}} loaded:" + ",".join(m for m in {heavy!r} if m in sys.modules))
    """
    assert _run(code, tmp_path) == "chroma:False loaded:"


def test_cached_embedder_is_not_loaded_by_name_or_dimension() -> None:
    embedder = OnnxSentenceEmbedder()
    assert (embedder.name, embedder.dimension) == ("st:all-MiniLM-L6-v2", 384)
    assert embedder._runtime is None and embedder._torch is None


def test_a_missing_model_folder_is_a_config_error(tmp_path: Path) -> None:
    from modelcache import ConfigError

    with pytest.raises(ConfigError):
        OnnxSentenceEmbedder(str(tmp_path / "missing"))


def test_import_modelcache_loads_no_backend(tmp_path: Path) -> None:
    """Cold start: the public names load on first use, so a bare import stays cheap."""
    code = """
        import sys, modelcache
        heavy = ("sqlalchemy", "pydantic", "numpy", "chromadb", "onnxruntime", "torch", "jieba")
        before = [m for m in heavy if m in sys.modules]
        assert modelcache.Request is not None
        print("loaded:" + ",".join(before))
    """
    assert _run(code, tmp_path) == "loaded:"


def test_a_slow_model_load_at_the_first_lookup_is_not_cut_by_the_deadline(
    tmp_path: Path, minilm: OnnxSentenceEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model loads on first use (0.2-1 s on a busy machine): that one-time cost is no stuck
    store, so the first semantic lookup of a fresh embedder still hits under a short deadline."""
    import time

    folder = str(tmp_path / "c")
    with Cache(CacheConfig(path=folder), embedder=minilm) as cache:
        cache.insert(Request.from_text("How do I reset my password?"), "Use the link.")
    fresh = OnnxSentenceEmbedder()
    opened = fresh._open_onnx

    def slow_open() -> object:
        time.sleep(0.6)  # longer than the deadline below
        return opened()

    monkeypatch.setattr(fresh, "_open_onnx", slow_open)
    with Cache(CacheConfig(path=folder, lookup_timeout=0.2), embedder=fresh) as cache:
        hit = cache.lookup(Request.from_text("How can I reset my password?"))
        assert hit is not None and hit.kind == "semantic", hit
        assert cache.stats()["timeouts"] == 0


def test_a_model_that_cannot_load_makes_the_first_lookups_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first lookup's background load fails quietly; the lookup that needs the model loads
    again, fails, and is a logged miss, as every later one is."""
    broken = OnnxSentenceEmbedder(fallback=False)

    def fail() -> object:
        raise RuntimeError("no model here")

    monkeypatch.setattr(broken, "_open_onnx", fail)
    with Cache(CacheConfig(path=str(tmp_path / "c")), embedder=broken) as cache:
        with caplog.at_level(logging.WARNING, logger="modelcache"):
            assert cache.lookup(Request.from_text("How do I reset my password?")) is None
            assert cache.lookup(Request.from_text("How do I change my password?")) is None
        assert cache.stats()["errors"] == 2
    assert sum("lookup failed" in r.getMessage() for r in caplog.records) == 2
