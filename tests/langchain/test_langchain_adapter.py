"""The adapter's own contract: parsing, partitions, values, clearing, faults and construction."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.load import dumps
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, Generation
from loop_support import SlowEmbedder, ticks_during

import modelcache_langchain
from modelcache import (
    Cache,
    CacheConfig,
    ConfigError,
    FakeEmbedder,
    LangChainEmbedder,
    Request,
)
from modelcache_langchain import ModelCache
from modelcache_langchain._convert import model_name, parse_prompt

LLM = "[('_type', 'openai-chat'), ('model_name', 'gpt-4o'), ('stop', None), ('temperature', 0)]"
OTHER_LLM = LLM.replace("('temperature', 0)", "('temperature', 0.7)")
MARKERS = {"cache_hit", "cache_kind", "cache_similarity", "cache_entry_id"}


def plain(generations: list[Generation] | None) -> list[Generation] | None:
    """Generations without the hit markers a lookup adds, to compare with what was stored."""
    if generations is None:
        return None
    result = []
    for generation in generations:
        assert generation.generation_info is not None
        assert generation.generation_info["cache_hit"] is True
        info = {k: v for k, v in generation.generation_info.items() if k not in MARKERS}
        update: dict[str, Any] = {"generation_info": info or None}
        if isinstance(generation, ChatGeneration):
            metadata = generation.message.response_metadata
            assert metadata["cache_hit"] is True
            clean = {k: v for k, v in metadata.items() if k not in MARKERS}
            update["message"] = generation.message.model_copy(update={"response_metadata": clean})
        result.append(generation.model_copy(update=update))
    return result


def test_public_api() -> None:
    assert modelcache_langchain.__all__ == ["ModelCache"]


# ---- prompt parsing -----------------------------------------------------------------------------
def test_plain_prompt_is_the_query() -> None:
    parsed = parse_prompt("What is WAL?")
    assert (parsed.query, parsed.system, parsed.history, parsed.exact_only) == (
        "What is WAL?",
        None,
        (),
        False,
    )


def test_chat_prompt_splits_system_history_and_question() -> None:
    prompt = dumps(
        [
            SystemMessage("You are terse."),
            HumanMessage("hi"),
            AIMessage("", tool_calls=[{"name": "lookup", "args": {"q": "x"}, "id": "1"}]),
            ToolMessage("found x", tool_call_id="1"),
            AIMessage("hello"),
            HumanMessage(content=[{"type": "text", "text": "What is WAL?"}]),
        ]
    )
    parsed = parse_prompt(prompt)
    assert parsed.query == "What is WAL?"
    assert parsed.system == "You are terse."
    assert [(m.role, m.content) for m in parsed.history] == [
        ("user", "hi"),
        ("assistant", '[tool_call lookup {"q": "x"}]'),
        ("tool", "found x"),
        ("assistant", "hello"),
    ]
    assert not parsed.exact_only


def test_legacy_chat_and_function_messages_are_read() -> None:
    prompt = dumps(
        [
            ChatMessage(role="developer", content="Be brief."),
            FunctionMessage(name="f", content="42"),
            ChatMessage(role="user", content="And now?"),
        ]
    )
    parsed = parse_prompt(prompt)
    assert parsed.system == "Be brief."
    assert [(m.role, m.content) for m in parsed.history] == [("function", "42")]
    assert parsed.history[0].attachments  # no function call names "f": its name is keyed
    assert parsed.query == "And now?"


def test_media_in_user_content_is_exact_only() -> None:
    def ask(url: str) -> str:
        return dumps(
            [
                HumanMessage(
                    content=[
                        {"type": "text", "text": "What is in this picture?"},
                        {"type": "image_url", "image_url": {"url": url}},
                    ]
                )
            ]
        )

    cat, dog = parse_prompt(ask("https://x/cat.png")), parse_prompt(ask("https://x/dog.png"))
    assert cat.exact_only and dog.exact_only
    assert "What is in this picture?" in cat.query
    assert cat.query != dog.query


def test_unrevivable_chat_prompt_is_an_error_not_text() -> None:
    blob = '[{"lc": 1, "type": "constructor", "id": ["evil", "Thing"], "kwargs": {}}]'
    with pytest.raises(ValueError):
        parse_prompt(blob)


def test_json_that_is_not_a_chat_prompt_is_text() -> None:
    assert parse_prompt('[1, 2, "three"]').query == '[1, 2, "three"]'


def test_model_name_from_both_llm_string_formats() -> None:
    assert model_name(LLM) == "gpt-4o"
    serialised = '{"id": ["x", "ChatOpenAI"], "kwargs": {"model_name": "gpt-4o"}}'
    assert model_name(serialised + "---[('stop', None)]") == "gpt-4o"
    assert model_name(serialised + "---[('model', 'gpt-4o-mini'), ('stop', None)]") == (
        "gpt-4o-mini"
    )
    assert model_name("[('_type', 'fake-list'), ('stop', None)]") == "unknown"


# ---- the adapter against the engine -------------------------------------------------------------
def test_the_json_blob_is_never_what_is_stored(lc_cache: ModelCache) -> None:
    prompt = dumps([SystemMessage("sys"), HumanMessage("What is WAL?")])
    lc_cache.update(prompt, LLM, [Generation(text="write-ahead logging")])
    [entry] = lc_cache.engine.export()
    assert entry["query"] == "What is WAL?"
    assert entry["model"] == "gpt-4o"
    assert set(entry["params"]) == {"llm_string"} and len(entry["params"]["llm_string"]) == 64
    assert entry["answer"]["text"] == "write-ahead logging"


def test_lookup_returns_a_list_and_generations_round_trip(lc_cache: ModelCache) -> None:
    value = [
        ChatGeneration(
            message=AIMessage(
                "",
                tool_calls=[{"name": "f", "args": {"a": [1, 2]}, "id": "c1"}],
                usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
            ),
            generation_info={"finish_reason": "tool_calls", "logprobs": None},
        ),
        ChatGeneration(message=AIMessage("second")),
    ]
    prompt = dumps([HumanMessage("call f")])
    lc_cache.update(prompt, LLM, value)
    restored = lc_cache.lookup(prompt, LLM)
    assert isinstance(restored, list)
    assert plain(restored) == value


def test_partition_is_the_llm_string(lc_cache: ModelCache) -> None:
    lc_cache.update("What is WAL?", LLM, [Generation(text="a")])
    assert lc_cache.lookup("What is WAL?", OTHER_LLM) is None
    assert plain(lc_cache.lookup("what is  WAL?", LLM)) == [Generation(text="a")]


def test_clear_one_llm_string(lc_cache: ModelCache) -> None:
    lc_cache.update("q", LLM, [Generation(text="a")])
    lc_cache.update("q", OTHER_LLM, [Generation(text="b")])
    lc_cache.clear(llm_string=LLM)
    assert lc_cache.lookup("q", LLM) is None
    assert plain(lc_cache.lookup("q", OTHER_LLM)) == [Generation(text="b")]


async def test_aclear_only_touches_the_adapters_tenant_and_env(engine: Cache) -> None:
    mine, theirs, staging = (
        ModelCache(engine, tenant="acme"),
        ModelCache(engine, tenant="globex"),
        ModelCache(engine, tenant="acme", env="staging"),
    )
    for cache in (mine, theirs, staging):
        await cache.aupdate("q", LLM, [Generation(text=cache.tenant)])
    await mine.aclear()
    assert await mine.alookup("q", LLM) is None
    assert plain(await theirs.alookup("q", LLM)) == [Generation(text="globex")]
    assert plain(await staging.alookup("q", LLM)) == [Generation(text="acme")]
    await staging.aclear(llm_string=LLM)
    assert await staging.alookup("q", LLM) is None


async def test_async_methods_keep_the_event_loop_running(
    make_cache: Callable[..., Cache],
) -> None:
    """BaseCache's alookup / aupdate run ours in a worker thread: a slow embedding leaves the
    loop free (a default calling the sync method on the loop would stop it)."""
    cache = ModelCache(make_cache(embedder=SlowEmbedder()))
    _, ticks, _ = await ticks_during(cache.aupdate("q", LLM, [Generation(text="a")]))
    assert ticks >= 10, f"loop blocked during aupdate: {ticks} ticks"
    _, ticks, _ = await ticks_during(cache.alookup("another question", LLM))
    assert ticks >= 10, f"loop blocked during alookup: {ticks} ticks"
    assert await cache.alookup("q", LLM) is not None


def test_clear_rejects_unknown_arguments(lc_cache: ModelCache) -> None:
    with pytest.raises(TypeError):
        lc_cache.clear(prompt="q")


def test_plain_string_answer_from_another_front_end(lc_cache: ModelCache) -> None:
    request = lc_cache._request("What is WAL?", LLM)
    assert request is not None
    lc_cache.engine.insert(request[0], "write-ahead logging")
    assert plain(lc_cache.lookup("What is WAL?", LLM)) == [Generation(text="write-ahead logging")]


def test_plain_string_answer_to_a_chat_prompt_is_a_marked_chat_generation(
    lc_cache: ModelCache,
) -> None:
    """LangChain turns a plain Generation into a ChatGeneration on a chat hit, without copying
    generation_info into the message: the adapter does it, so the message shows the hit."""
    prompt = dumps([HumanMessage("What is WAL?")])
    request = lc_cache._request(prompt, LLM)
    assert request is not None
    lc_cache.engine.insert(request[0], "write-ahead logging")
    [generation] = lc_cache.lookup(prompt, LLM) or []
    assert isinstance(generation, ChatGeneration)
    assert generation.message.content == "write-ahead logging"
    assert generation.message.response_metadata["cache_kind"] == "exact"
    assert plain([generation]) == [ChatGeneration(message=AIMessage("write-ahead logging"))]


def test_row_that_fails_to_load_is_a_logged_miss(
    lc_cache: ModelCache, caplog: pytest.LogCaptureFixture
) -> None:
    request = lc_cache._request("What is WAL?", LLM)
    assert request is not None
    evil = {"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {}}
    bad = {"format": "langchain-generations/1", "text": "", "generations": [evil]}
    lc_cache.engine.insert(request[0], bad)
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        assert lc_cache.lookup("What is WAL?", LLM) is None
    assert "failed to load" in caplog.text


def test_unserialisable_generations_are_not_cached(
    lc_cache: ModelCache, caplog: pytest.LogCaptureFixture
) -> None:
    value = [Generation(text="a", generation_info={"when": object()})]
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        lc_cache.update("q", LLM, value)
    assert "not serialisable" in caplog.text
    assert list(lc_cache.engine.export()) == []


def test_empty_generations_are_not_cached(lc_cache: ModelCache) -> None:
    lc_cache.update("q", LLM, [])
    assert lc_cache.lookup("q", LLM) is None


def test_uncacheable_prompt_is_a_miss(lc_cache: ModelCache) -> None:
    lc_cache.update("   ", LLM, [Generation(text="a")])
    assert lc_cache.lookup("   ", LLM) is None


class _Broken:
    """An engine whose every call fails."""

    config = CacheConfig(path="unused")

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"{name} is down")

        return fail


async def test_engine_faults_never_reach_the_llm_call(caplog: pytest.LogCaptureFixture) -> None:
    cache = ModelCache(_Broken())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        assert cache.lookup("q", LLM) is None
        cache.update("q", LLM, [Generation(text="a")])
        assert await cache.alookup("q", LLM) is None
        await cache.aupdate("q", LLM, [Generation(text="a")])
    assert caplog.text.count("is down") == 4


def test_exact_only_prompts_do_not_hit_semantically(lc_cache: ModelCache) -> None:
    def image(url: str) -> str:
        parts = [{"type": "text", "text": "Describe it"}, {"type": "image_url", "image_url": url}]
        return dumps([HumanMessage(content=parts)])

    lc_cache.update(image("https://x/a.png"), LLM, [Generation(text="a cat")])
    expected = [ChatGeneration(message=AIMessage("a cat"))]  # a chat prompt's hit
    assert plain(lc_cache.lookup(image("https://x/a.png"), LLM)) == expected
    assert lc_cache.lookup(image("https://x/b.png"), LLM) is None


# ---- construction -------------------------------------------------------------------------------
def test_built_from_settings(tmp_path: Path) -> None:
    with ModelCache(path=str(tmp_path), embedder=FakeEmbedder(), tenant="acme") as cache:
        cache.update("q", LLM, [Generation(text="a")])
        assert cache.engine.config.path == str(tmp_path)
    config = CacheConfig(path=str(tmp_path), embedder="fake")
    with ModelCache(config=config, tenant="acme", similarity_threshold=0.95) as cache:
        assert cache.engine.config.similarity_threshold == 0.95
        assert plain(cache.lookup("q", LLM)) == [Generation(text="a")]


def test_owned_engine_is_closed_and_passed_engine_is_not(engine: Cache) -> None:
    ModelCache(engine).close()
    assert engine.lookup(Request.from_text("still open")) is None


def test_invalid_construction(engine: Cache, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        ModelCache(engine, path=str(tmp_path))
    with pytest.raises(ConfigError):
        ModelCache(engine, env="production")
    with pytest.raises(ConfigError):
        ModelCache(path=str(tmp_path / "never"), env="production")
    assert not (tmp_path / "never").exists()  # rejected before any store is opened
    with pytest.raises(ConfigError):
        ModelCache(engine, tenant="")
    with pytest.raises(ConfigError):
        ModelCache(path=str(tmp_path), similarity_threshold=2.0)


# ---- settings under the names langchain-redis / RedisVL / GPTCache users know -----------------
class _WordEmbeddings(Embeddings):
    """A LangChain ``Embeddings`` over the fake embedder, as a user's own model would be."""

    def __init__(self) -> None:
        self._inner = FakeEmbedder()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._inner.embed(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def test_redis_style_ttl_and_embeddings_are_accepted(tmp_path: Path) -> None:
    with ModelCache(path=str(tmp_path), embeddings=_WordEmbeddings(), ttl=60) as cache:
        assert cache.engine.config.ttl_seconds == 60
        assert isinstance(cache.engine.embedder, LangChainEmbedder)
        cache.update("How do I reset my password?", LLM, [Generation(text="link")])
        hit = plain(cache.lookup("How do I reset my password please?", LLM))
        assert hit == [Generation(text="link")]


def test_a_langchain_embeddings_passed_as_embedder_is_wrapped(tmp_path: Path) -> None:
    with ModelCache(path=str(tmp_path), embedder=_WordEmbeddings()) as cache:
        assert isinstance(cache.engine.embedder, LangChainEmbedder)


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"distance_threshold": 0.2}, ("similarity_threshold", "0.8")),
        ({"score_threshold": 0.1}, ("similarity_threshold", "0.9")),
        ({"redis_url": "redis://localhost:6379"}, ("sql_url", "path")),
        ({"name": "llmcache"}, ("tenant",)),
        ({"ttl": 5, "ttl_seconds": 5}, ("ttl_seconds", "ttl")),
        ({"embeddings": _WordEmbeddings(), "embedder": "minilm"}, ("embeddings", "embedder")),
        ({"embeddings": object()}, ("Embeddings",)),
    ],
)
def test_settings_without_an_exact_meaning_name_the_right_one(
    tmp_path: Path, settings: dict[str, Any], names: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as info:
        ModelCache(path=str(tmp_path / "never"), **settings)
    assert all(name in str(info.value) for name in names)
    assert not (tmp_path / "never").exists()


def test_a_closed_engine_is_a_miss_logged_under_the_modelcache_logger(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Cache(CacheConfig(path=str(tmp_path)), embedder=FakeEmbedder())
    cache = ModelCache(engine)
    cache.update("q", LLM, [Generation(text="a")])
    engine.close()
    with caplog.at_level(logging.WARNING, logger="modelcache"):
        assert cache.lookup("q", LLM) is None
        cache.update("q", LLM, [Generation(text="b")])
    assert {r.name for r in caplog.records} == {"modelcache.langchain"}
    assert caplog.text.count("this Cache is closed") == 2
