"""The engine with the FakeEmbedder: exact and semantic paths, writes, clear, register, stats."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from core_support import CountingEmbedder, collections, vector_ids

from modelcache import (
    Cache,
    CacheClosedError,
    CacheConfig,
    CacheStats,
    ConfigError,
    FakeEmbedder,
    Hit,
    Message,
    ModelCacheError,
    PartitionStats,
    Request,
    Scope,
)
from modelcache.embedding import DEFAULT_THRESHOLDS, MultilingualEmbedder, Thresholds
from modelcache.storage.rows import encode_vector

Q = "How do I reset my password?"
PARAPHRASE = "How do I reset my password please?"  # FakeEmbedder cosine 0.90 > 0.86
UNRELATED = "What is the capital of France?"


def rq(text: str = Q, **scope: Any) -> Request:
    """A single-turn request."""
    return Request.from_text(text, **scope)


# ---- exact path --------------------------------------------------------------------------------
def test_exact_hit_is_answered_without_embedding(
    make_cache: Callable[..., Cache], counting_embedder: CountingEmbedder
) -> None:
    cache = make_cache(embedder=counting_embedder)
    entry_id = cache.insert(rq(), {"text": "Click 'forgot password'."}, metadata={"src": "faq"})
    assert counting_embedder.calls == 1
    hit = cache.lookup(rq())
    assert counting_embedder.calls == 1, "the exact path must not compute an embedding"
    assert isinstance(hit, Hit)
    assert hit.answer == {"text": "Click 'forgot password'."}
    assert (hit.kind, hit.exact, hit.similarity) == ("exact", True, 1.0)
    assert hit.entry_id == entry_id == rq().exact_key
    assert hit.matched_query == Q
    assert hit.metadata == {"src": "faq"}


def test_exact_path_ignores_spacing_but_not_case(
    make_cache: Callable[..., Cache], counting_embedder: CountingEmbedder
) -> None:
    cache = make_cache(embedder=counting_embedder)
    cache.insert(rq(), "answer")
    hit = cache.lookup(rq("  How do I reset   my password? "))
    assert hit is not None and hit.exact
    assert counting_embedder.calls == 1
    hit = cache.lookup(rq("how do i reset my password?"))  # case: the semantic path decides
    assert hit is not None and not hit.exact and hit.answer == "answer"


def test_a_miss_embeds_the_query_once(
    make_cache: Callable[..., Cache], counting_embedder: CountingEmbedder
) -> None:
    cache = make_cache(embedder=counting_embedder)
    cache.insert(rq(), "answer")
    assert cache.lookup(rq(UNRELATED)) is None
    assert counting_embedder.calls == 2
    assert counting_embedder.texts[-1] == UNRELATED


@pytest.mark.parametrize(
    "answer",
    [
        "plain text",
        {"generations": [{"text": "hi", "info": None}], "n": 1},
        ["a", 1, 2.5, True, None],
        0,
        -3.25,
        False,
        None,
        {"unicode": "如何重置我的密码 ✓", "nested": {"deep": [[1], [2, {"x": "y"}]]}},
        "x" * 200_000,  # longer than MySQL's TEXT: stored as LONGTEXT
    ],
)
def test_any_json_answer_round_trips(cache: Cache, answer: Any) -> None:
    cache.insert(rq(), answer)
    hit = cache.lookup(rq())
    assert hit is not None and hit.answer == answer


def test_hit_to_dict_is_the_json_of_a_lookup(cache: Cache) -> None:
    cache.insert(rq(), {"text": "a"}, metadata={"source": "faq"})
    hit = cache.lookup(rq())
    assert hit is not None
    fields = hit.to_dict()
    assert fields == {
        "hit": True,
        "kind": "exact",
        "similarity": 1.0,
        "answer": {"text": "a"},
        "entry_id": hit.entry_id,
        "matched_query": Q,
        "metadata": {"source": "faq"},
    }
    assert json.loads(json.dumps(fields)) == fields


def test_invalid_arguments_raise(cache: Cache) -> None:
    with pytest.raises(ConfigError, match="unknown env"):
        cache.lookup(rq(env="qa"))
    with pytest.raises(ConfigError, match="unknown env"):
        cache.insert(rq(env="qa"), "a")
    with pytest.raises(ConfigError, match="unknown env 'qa'; allowed: dev, test"):
        cache.clear(env="qa")  # clear named the env but not the allowed ones
    with pytest.raises(ConfigError):
        cache.lookup("How do I reset my password?")  # type: ignore[arg-type]
    for bad in (1.01, -1.5, 7):
        with pytest.raises(ConfigError, match="threshold"):
            cache.lookup(rq(), threshold=bad)
    with pytest.raises(ConfigError):
        cache.insert(rq(), object())
    with pytest.raises(ConfigError):
        cache.insert(rq(), "a", metadata={"bad": object()})
    for ttl in (0, float("inf"), float("nan")):  # inf was stored, then MariaDB refused it
        with pytest.raises(ConfigError, match="ttl"):
            cache.insert(rq(), "a", ttl=ttl)
    assert cache.stats()["entries"] == 0


def test_custom_environments(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache(environments=("blue", "green"))
    cache.insert(rq(env="blue"), "b")
    assert cache.lookup(rq(env="blue")) is not None
    with pytest.raises(ConfigError):
        cache.lookup(rq(env="prod"))


# ---- semantic path (FakeEmbedder: similarity follows shared words) -----------------------------
def test_semantic_hit_reports_similarity(cache: Cache, fake_embedder: FakeEmbedder) -> None:
    cache.insert(rq(), "answer")
    hit = cache.lookup(rq(PARAPHRASE))
    assert hit is not None
    assert (hit.kind, hit.exact) == ("semantic", False)
    vectors = fake_embedder.embed([PARAPHRASE, Q])
    assert hit.similarity == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-4)
    assert 0.86 <= hit.similarity < 1.0
    assert hit.matched_query == Q
    assert cache.lookup(rq(UNRELATED)) is None


def test_per_call_threshold_overrides_and_zero_keeps_its_meaning(cache: Cache) -> None:
    cache.insert(rq(), "answer")
    weak = rq("reset password how")  # cosine 0.77 under the FakeEmbedder
    assert cache.lookup(weak) is None
    hit = cache.lookup(weak, threshold=0.0)
    assert hit is not None and hit.similarity < 0.86
    assert cache.lookup(rq(PARAPHRASE), threshold=1.0) is None


def test_config_threshold_is_used(make_cache: Callable[..., Cache]) -> None:
    strict = make_cache(similarity_threshold=0.95, similarity_threshold_long=0.95)
    strict.insert(rq(), "answer")
    assert strict.lookup(rq(PARAPHRASE)) is None
    assert strict.lookup(rq(PARAPHRASE), threshold=0.5) is not None


def test_short_and_long_thresholds_by_token_count(make_cache: Callable[..., Cache]) -> None:
    """A query of at least long_query_tokens tokens needs similarity_threshold_long."""
    cache = make_cache(
        similarity_threshold=0.5, similarity_threshold_long=0.99, long_query_tokens=6
    )
    cache.insert(rq("reset my password"), "short")
    cache.insert(rq("how do I reset my old account password"), "long")
    assert cache.lookup(rq("reset my password please")) is not None  # 4 tokens: short
    assert cache.lookup(rq("how do I reset my old account password please")) is None  # 9: long


def test_unset_thresholds_come_from_the_embedder(
    make_cache: Callable[..., Cache], fake_embedder: FakeEmbedder
) -> None:
    assert make_cache().thresholds == DEFAULT_THRESHOLDS  # no calibration of its own

    class Calibrated(FakeEmbedder):
        thresholds = Thresholds(short=0.7, long=0.8, followup=0.4, context=0.6)

    cache = make_cache(embedder=Calibrated(), similarity_threshold_followup=0.55)
    assert cache.thresholds == Thresholds(short=0.7, long=0.8, followup=0.55, context=0.6)
    assert MultilingualEmbedder.thresholds.short < DEFAULT_THRESHOLDS.short


def test_follow_ups_use_the_follow_up_threshold(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache(
        similarity_threshold=0.99, similarity_threshold_followup=0.3, context_threshold=0.5
    )
    turn = (Message("user", "Tell me about tax law"), Message("assistant", "Rules."))
    cache.insert(Request("explain more about it", history=turn), "follow-up")
    cache.insert(rq("explain more about it"), "standalone")
    hit = cache.lookup(Request("please explain it more", history=turn))
    assert hit is not None and hit.answer == "follow-up"
    assert cache.lookup(rq("please explain it more")) is None, "standalone: 0.99 applies"


def test_follow_up_recall_is_not_crowded_out_by_other_conversations(
    make_cache: Callable[..., Cache],
) -> None:
    """The same short follow-up stored in many conversations: top_k still finds this one."""
    cache = make_cache(top_k=2, similarity_threshold_followup=0.3, context_threshold=0.3)
    items = [
        (
            Request(
                "when did it begin",
                history=(Message("user", f"Tell me about topic {i}"), Message("assistant", f"{i}")),
            ),
            i,
        )
        for i in range(30)
    ]
    cache.insert_many(items)
    mine = (Message("user", "Tell me about topic 17 please"), Message("assistant", "17"))
    hit = cache.lookup(Request("when did it start", history=mine))
    assert hit is not None and hit.answer == 17


def test_best_candidate_wins(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache(similarity_threshold=0.3)
    cache.insert(rq("reset my password"), "far")
    cache.insert(rq("How do I reset my password now?"), "near")
    hit = cache.lookup(rq(PARAPHRASE))
    assert hit is not None and hit.answer == "near"


# ---- writes ------------------------------------------------------------------------------------
def test_insert_is_idempotent_and_replaces_the_answer(cache: Cache) -> None:
    first = cache.insert(rq(), "old", metadata={"v": 1})
    second = cache.insert(rq(" How do I reset  my password? "), "new", metadata={"v": 2})
    assert first == second == rq().exact_key
    assert cache.stats()["entries"] == 1
    assert vector_ids(cache, rq().partition.id) == {first}
    hit = cache.lookup(rq())
    assert hit is not None and (hit.answer, hit.metadata) == ("new", {"v": 2})
    semantic = cache.lookup(rq(PARAPHRASE))
    assert semantic is not None and semantic.answer == "new"
    assert cache.check().ok


def test_insert_many(make_cache: Callable[..., Cache], counting_embedder: CountingEmbedder) -> None:
    cache = make_cache(embedder=counting_embedder)
    items = [(rq(f"question number {i} about {w}"), i) for i, w in enumerate("abcdefghij")]
    items.append((rq("question on another model", model="m2"), "m2"))
    items.append((rq("question number 0 about a"), "replaced"))  # duplicate key: last wins
    ids = cache.insert_many(items)
    assert counting_embedder.calls == 1, "queries are embedded in one batch"
    assert ids == [r.exact_key for r, _ in items]
    assert ids[0] == ids[-1]
    assert cache.stats()["entries"] == 11
    hit = cache.lookup(rq("question number 0 about a"))
    assert hit is not None and hit.answer == "replaced"
    hit = cache.lookup(rq("question number 7 about h"))
    assert hit is not None and hit.answer == 7
    assert cache.insert_many([]) == []
    assert cache.check().ok


def test_insert_many_with_history_stores_contexts(cache: Cache) -> None:
    tax = (Message("user", "What is tax law?"), Message("assistant", "Rules."))
    cup = (Message("user", "Who won the football world cup?"), Message("assistant", "Spain."))
    cache.insert_many(
        [
            (Request("explain more", history=tax), "more tax"),
            (Request("explain more", history=cup), "more football"),
        ]
    )
    assert cache.stats()["entries"] == 2
    # other user words, the same reply: no exact key, the context decides
    asked = (Message("user", "Who won the world cup in football?"), cup[1])
    hit = cache.lookup(Request("explain more", history=asked))
    assert hit is not None and hit.kind == "semantic" and hit.answer == "more football"
    # the reply generated afresh in other words: the same conversation
    retold = (cup[0], Message("assistant", "It was Spain."))
    hit = cache.lookup(Request("explain more", history=retold))
    assert hit is not None and hit.answer == "more football"
    # a reply that names another winner: the follow-up is about something else, a miss
    other = (cup[0], Message("assistant", "It was Brazil."))
    assert cache.lookup(Request("explain more", history=other)) is None


def test_remove(cache: Cache) -> None:
    keep = cache.insert(rq(UNRELATED), "Paris")
    gone = cache.insert(rq(), "answer")
    assert cache.remove([gone, "no-such-id"]) == 1
    assert cache.lookup(rq()) is None
    assert cache.lookup(rq(PARAPHRASE)) is None
    assert cache.lookup(rq(UNRELATED)) is not None
    assert vector_ids(cache, rq().partition.id) == {keep}
    assert cache.remove([gone]) == 0
    assert cache.remove([]) == 0
    assert cache.stats()["entries"] == 1
    assert cache.check().ok


# ---- clear and register ------------------------------------------------------------------------
def _fill(cache: Cache) -> dict[str, Request]:
    """One entry in each of several partitions."""
    reqs = {
        "a-prod-m1": rq(Q, tenant="a", env="prod", model="m1"),
        "a-prod-m1-t7": rq(Q, tenant="a", env="prod", model="m1", params={"temperature": 0.7}),
        "a-prod-m1-sys": rq(Q, tenant="a", env="prod", model="m1", system="Be brief"),
        "a-dev-m1": rq(Q, tenant="a", env="dev", model="m1"),
        "a-prod-m2": rq(Q, tenant="a", env="prod", model="m2"),
        "b-prod-m1": rq(Q, tenant="b", env="prod", model="m1"),
    }
    cache.insert_many([(r, name) for name, r in reqs.items()])
    return reqs


def _alive(cache: Cache, reqs: dict[str, Request]) -> set[str]:
    return {name for name, r in reqs.items() if cache.lookup(r) is not None}


@pytest.mark.parametrize(
    "fields, cleared",
    [
        (
            {"tenant": "a", "env": "prod", "model": "m1", "params": {}},
            {"a-prod-m1", "a-prod-m1-sys"},  # clear has no system field: both system prompts go
        ),
        ({"tenant": "a", "env": "prod", "model": "m1", "params": {"temperature": 0.7}},
         {"a-prod-m1-t7"}),
        ({"tenant": "a"}, {"a-prod-m1", "a-prod-m1-t7", "a-prod-m1-sys", "a-dev-m1", "a-prod-m2"}),
        ({"env": "dev"}, {"a-dev-m1"}),
        ({"model": "m2"}, {"a-prod-m2"}),
        ({"tenant": "b", "model": "m1"}, {"b-prod-m1"}),
        ({"tenant": "nobody"}, set()),
    ],
)  # fmt: skip
def test_clear_down_to_one_partition(
    cache: Cache, fields: dict[str, Any], cleared: set[str]
) -> None:
    reqs = _fill(cache)
    before = collections(cache)
    assert cache.clear(**fields) == len(cleared)
    assert _alive(cache, reqs) == set(reqs) - cleared
    dropped = {reqs[name].partition.id for name in cleared}
    assert collections(cache) == before - dropped, "cleared partitions' collections are dropped"
    assert cache.stats()["entries"] == len(reqs) - len(cleared)
    assert cache.check().ok


def test_clear_everything(cache: Cache) -> None:
    reqs = _fill(cache)
    cache.register(Scope("empty", "prod", "m"))
    assert cache.clear() == len(reqs)
    assert _alive(cache, reqs) == set()
    assert collections(cache) == set()
    stats = cache.stats()
    assert stats["entries"] == 0 and stats["partitions"] == []
    assert cache.check().ok
    cache.insert(rq(), "again")  # a cleared partition is recreated on the next write
    assert cache.lookup(rq(PARAPHRASE)) is not None
    assert cache.check().ok


def test_clear_rejects_unknown_env(cache: Cache) -> None:
    with pytest.raises(ConfigError):
        cache.clear(env="qa")


def test_register_creates_the_partition_up_front(cache: Cache) -> None:
    scope = Scope("acme", "prod", "gpt-4o", {"temperature": 0})
    pid = cache.register(scope, system="You are helpful")
    assert pid == Request("x", scope=scope, system="You are helpful").partition.id
    assert pid in collections(cache)
    assert cache.register(scope, system="You are helpful") == pid
    parts = cache.stats()["partitions"]
    assert [(p["id"], p["entries"], p["tenant"], p["params"]) for p in parts] == [
        (pid, 0, "acme", {"temperature": 0})
    ]
    assert cache.lookup(Request("x", scope=scope, system="You are helpful")) is None
    with pytest.raises(ConfigError):
        cache.register(Scope(env="qa"))


# ---- stats -------------------------------------------------------------------------------------
def test_stats_counts_lookups_hits_and_entries(cache: Cache) -> None:
    cache.insert_many([(rq(), "a"), (rq(UNRELATED), "b"), (rq(Q, tenant="t2"), "c")])
    cache.lookup(rq())  # exact
    cache.lookup(rq())  # exact
    cache.lookup(rq(PARAPHRASE))  # semantic
    cache.lookup(rq("Something else entirely"))  # miss
    s = cache.stats()
    assert s["entries"] == 3
    assert (s["lookups"], s["hits"], s["exact_hits"], s["semantic_hits"], s["misses"]) == (
        4,
        3,
        2,
        1,
        1,
    )
    assert s["errors"] == 0
    assert s["inserts"] == 3
    assert s["hit_rate"] == pytest.approx(0.75)
    assert s["embedder"] == "fake-hash-256"
    assert s["latency_ms_p50"] is not None and s["latency_ms_p50"] > 0
    by_id = {p["id"]: p for p in s["partitions"]}
    default = by_id[rq().partition.id]
    assert default["entries"] == 2
    assert by_id[rq(Q, tenant="t2").partition.id]["entries"] == 1
    stored = default.get("stored_hits", default.get("hits"))
    assert stored == 3, "hit counts reach the store once stats() flushes"


def test_stats_is_typed_and_reads_like_its_json(cache: Cache) -> None:
    cache.insert(rq(), "a")
    cache.lookup(rq())
    s = cache.stats()
    assert isinstance(s, CacheStats) and isinstance(s.partitions[0], PartitionStats)
    assert (s.entries, s.hits, s.partitions[0].entries, s.partitions[0].tenant) == (
        1,
        1,
        1,
        "default",
    )
    plain = s.to_dict()
    assert dict(s) == plain and list(s) == list(plain) and s["hits"] == s.hits
    assert list(plain)[:9] == [
        "entries",
        "stored_hits",
        "tokens_saved",
        "cost_saved",
        "embedder",
        "log_written",
        "log_dropped",
        "log_pending",
        "partitions",
    ]
    assert plain["partitions"] == [p.to_dict() for p in s.partitions]
    assert list(plain["partitions"][0])[:5] == ["id", "tenant", "env", "model", "params"]
    assert json.loads(json.dumps(plain)) == plain
    assert json.loads(json.dumps({**s, "partitions": s["partitions"]})) == plain
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.entries = 5  # type: ignore[misc]


def test_fresh_cache_stats(cache: Cache) -> None:
    s = cache.stats()
    assert (s["entries"], s["lookups"], s["hits"], s["hit_rate"]) == (0, 0, 0, 0.0)
    assert s["partitions"] == []


# ---- persistence -------------------------------------------------------------------------------
def test_a_new_cache_on_the_same_folder_finds_the_entries(
    make_cache: Callable[..., Cache], tmp_path: Any
) -> None:
    first = make_cache()
    history = (Message("user", "What is tax law?"), Message("assistant", "Rules."))
    first.insert_many(
        [
            (rq(), "answer"),
            (rq(UNRELATED, model="m2"), "Paris"),
            (Request("more", history=history), 1),
        ]
    )
    first.close()
    second = make_cache(embedder=FakeEmbedder())
    assert second.stats()["entries"] == 3
    hit = second.lookup(rq())
    assert hit is not None and hit.exact and hit.answer == "answer"
    hit = second.lookup(rq(PARAPHRASE))
    assert hit is not None and hit.kind == "semantic"
    assert second.lookup(rq(UNRELATED, model="m2")) is not None
    assert second.lookup(Request("more", history=history)) is not None
    assert second.check().ok


def test_a_schema_2_store_is_upgraded_on_open(make_cache: Callable[..., Cache]) -> None:
    """Version 2 embedded a follow-up's user turns and recalled it by its query alone; opening
    one re-embeds every earlier turn and stores the recall vector (query + context)."""
    old = make_cache()
    history = (Message("user", "What is tax law?"), Message("assistant", "The rules on taxes."))
    follow_up = Request("explain more about it", history=history)
    old.insert(follow_up, "more")
    pid, entry = follow_up.partition.id, follow_up.exact_key
    row = old._sql.get_many([entry], pid)[entry]
    query, user_turns = old.embedder.embed([follow_up.query_text, follow_up.context_text])
    # what version 2 wrote: the user turns' vector, and the query vector for recall
    old._sql.upsert([row.model_copy(update={"context_vector": encode_vector(user_turns)})])
    old._vectors.upsert(pid, [entry], query[None, :])
    old._sql.replace_meta("schema_version", "2")
    paraphrased = Request("please explain it more", history=history)
    assert old.lookup(paraphrased) is None, "a version-2 entry is not understood"
    old.close()
    upgraded = make_cache(embedder=FakeEmbedder(), similarity_threshold_followup=0.3)
    assert upgraded._sql.get_meta()["schema_version"] == "3"
    hit = upgraded.lookup(paraphrased)
    assert hit is not None and hit.answer == "more" and hit.kind == "semantic"
    assert upgraded.check().ok


def test_context_manager_closes(tmp_path: Any, fake_embedder: FakeEmbedder) -> None:
    with Cache(CacheConfig(path=str(tmp_path)), embedder=fake_embedder) as cache:
        cache.insert(rq(), "a")
    cache.close()  # idempotent
    with Cache(CacheConfig(path=str(tmp_path)), embedder=fake_embedder) as again:
        assert again.lookup(rq()) is not None


async def test_a_closed_cache_refuses_every_call(
    tmp_path: Any, fake_embedder: FakeEmbedder
) -> None:
    cache = Cache(CacheConfig(path=str(tmp_path)), embedder=fake_embedder)
    cache.insert(rq(), "a")
    cache.close()
    calls: list[Callable[[], Any]] = [
        lambda: cache.lookup(rq()),
        lambda: cache.insert(rq(), "b"),
        lambda: cache.insert_many([(rq(), "b")]),
        lambda: cache.remove([rq().exact_key]),
        lambda: cache.clear(),
        cache.stats,
        lambda: list(cache.export()),
        lambda: list(cache.export_log()),
        lambda: cache.register(Scope()),
        lambda: cache.has_partition(Scope()),
        cache.flush,
        cache.purge_expired,
        cache.check,
        cache.repair,
    ]
    for call in calls:
        with pytest.raises(CacheClosedError, match="closed"):
            call()
    with pytest.raises(CacheClosedError):
        await cache.alookup(rq())
    assert issubclass(CacheClosedError, ModelCacheError)
    assert cache.ready() == {"ready": False, "sql": "closed", "vectors": "closed"}
    cache.close()  # still harmless


# ---- TTL with the injected clock (no sleeping) -------------------------------------------------
def test_ttl_expires_entries_on_the_injected_clock(cache: Cache, clock: Any) -> None:
    cache.insert(rq(), "short-lived", ttl=10)
    cache.insert(rq(UNRELATED), "forever")
    clock.advance(9)
    assert cache.lookup(rq()) is not None
    clock.advance(2)
    assert cache.lookup(rq()) is None, "expired: no exact hit"
    assert cache.lookup(rq(PARAPHRASE)) is None, "expired: no semantic hit"
    assert cache.lookup(rq(UNRELATED)) is not None


def test_a_recalled_expired_entry_is_no_orphan(
    cache: Cache, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired entry is a miss; its vector goes with its row at the purge, so the lookup
    does not take it for an orphan vector (no existence check, no vector delete)."""
    cache.insert(rq(), "short-lived", ttl=10)
    cache.flush()  # the background pass has run: its next purge is 30 s away
    clock.advance(11)
    located: list[list[str]] = []
    monkeypatch.setattr(cache._sql, "locate", lambda ids: located.append(list(ids)) or [])
    assert cache.lookup(rq(PARAPHRASE)) is None
    assert located == []
    monkeypatch.undo()
    assert cache.purge_expired() == 1
    assert cache.check().ok


def test_default_ttl_from_config(make_cache: Callable[..., Cache], clock: Any) -> None:
    cache = make_cache(ttl_seconds=60)
    cache.insert(rq(), "a")
    clock.advance(59)
    assert cache.lookup(rq()) is not None
    clock.advance(2)
    assert cache.lookup(rq()) is None


# ---- non-text parts and exact-only lookups -----------------------------------------------------
def _with_image(text: str, url: str) -> Request:
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    return Request.from_messages([{"role": "user", "content": parts}])


def test_images_must_match_on_both_paths(cache: Cache) -> None:
    cat, dog = "https://example.com/cat.png", "https://example.com/dog.png"
    cache.insert(_with_image("What is in this picture?", cat), "a cat")
    hit = cache.lookup(_with_image("What is in this picture?", cat))
    assert hit is not None and hit.exact and hit.answer == "a cat"
    hit = cache.lookup(_with_image("What is in this picture please?", cat), threshold=0.5)
    assert hit is not None and hit.kind == "semantic"
    assert cache.lookup(_with_image("What is in this picture?", dog)) is None
    assert cache.lookup(_with_image("What is in this picture please?", dog), threshold=0.5) is None
    assert cache.lookup(rq("What is in this picture?"), threshold=0.5) is None, "text-only"


def test_exact_only_lookup_never_embeds(
    make_cache: Callable[..., Cache], counting_embedder: CountingEmbedder
) -> None:
    cache = make_cache(embedder=counting_embedder)
    cache.insert(rq(), "answer")
    calls = counting_embedder.calls
    hit = cache.lookup(rq(), exact_only=True)
    assert hit is not None and hit.exact
    assert cache.lookup(rq(PARAPHRASE), exact_only=True) is None
    assert counting_embedder.calls == calls
    assert cache.lookup(rq(PARAPHRASE)) is not None


@pytest.mark.parametrize(
    "stored, asked",
    [
        ("What is CO?", "What is Co?"),
        ("Count the uppercase letters in 'AbC'", "Count the uppercase letters in 'abc'"),
        ("is 'AbC' == 'abc' true in python?", "is 'abc' == 'abc' true in python?"),
        ("does the regex [A-Z]+ match abc?", "does the regex [a-z]+ match abc?"),
        ('what is the ascii code of "A"?', 'what is the ascii code of "a"?'),
        (
            "What does this print?\nfor i in range(3):\n    pass\n    print(i)",
            "What does this print?\nfor i in range(3):\n    pass\nprint(i)",
        ),
    ],
)
def test_same_words_in_another_case_or_indentation_are_another_question(
    make_cache: Callable[..., Cache], stored: str, asked: str
) -> None:
    """The embedding lower-cases and ignores spacing, so these scored 1.0 and were served
    each other's answer; a text typed in one case throughout still hits."""
    cache = make_cache(lookup_timeout=None)
    cache.insert(rq(stored), "the stored answer")
    assert cache.lookup(rq(asked)) is None
    if stored != stored.lower():  # a literal keeps its case even in a text typed in one case
        hit = cache.lookup(rq(stored.lower()))
        literal = any(c in stored for c in "'[\"")
        assert (hit is None) if literal else (hit is not None and hit.answer == "the stored answer")


@pytest.mark.parametrize(
    "stored, asked",
    [
        ("What's the capital city of France?", "what's the capital city of France?"),
        ("Don't I need a visa for Japan?", "don't I need a visa for Japan?"),
        ("Is COVID-19 still a pandemic?", "is covid-19 still a pandemic?"),
    ],
)
def test_prose_in_another_case_still_hits(
    make_cache: Callable[..., Cache], stored: str, asked: str
) -> None:
    """Contractions and hyphenated words were taken for literals, so a repeat typed with
    another first letter or in lower case missed."""
    cache = make_cache(lookup_timeout=None)
    cache.insert(rq(stored), "the stored answer")
    hit = cache.lookup(rq(asked))
    assert hit is not None and hit.answer == "the stored answer"


@pytest.mark.parametrize(
    "stored, asked",
    [
        (
            "Why does this fail?\n\ndef f(x):\n    return X",
            "Why does this fail?\n\ndef f(x):\n    return x",
        ),
        (
            "Why is this Python wrong: `if x == None: pass`",
            "Why is this Python wrong: `if x == none: pass`",
        ),
        ("Is Start() exported in Go?", "Is start() exported in Go?"),
    ],
)
def test_code_keeps_the_case_of_its_first_letter(
    make_cache: Callable[..., Cache], stored: str, asked: str
) -> None:
    """A first letter's case passed as sentence capitalisation, also in code, where None /
    none and return X / return x differ: another snippet's answer was served."""
    cache = make_cache(lookup_timeout=None)
    cache.insert(rq(stored), "the stored answer")
    assert cache.lookup(rq(asked)) is None


def test_purging_first_writes_the_hits_that_renew_a_sliding_ttl(
    make_cache: Callable[..., Cache], clock: Any
) -> None:
    """purge_expired deleted by the stored expiry before writing the hits noted since, so an
    entry hit just before it expired was deleted for good."""
    cache = make_cache(sliding_ttl=True, lookup_timeout=None)
    cache._writer.close()  # no background pass: only purge_expired may write the hit
    cache.insert(rq(), "hold the button", ttl=100)
    clock.advance(90)
    assert cache.lookup(rq()) is not None  # renews to 190 once written
    clock.advance(11)
    assert cache.purge_expired() == 0
    hit = cache.lookup(rq())
    assert hit is not None and hit.answer == "hold the button"


def test_a_bulk_load_cut_by_close_stops_with_cache_closed(tmp_path: Path) -> None:
    """A batch written after close() went on into the stores (with a Chroma server, to the
    end); now it stops with CacheClosedError and what was written stays consistent."""
    cache = Cache(CacheConfig(path=str(tmp_path)), embedder=FakeEmbedder())
    items = [(rq(f"How do I reset password number {n}?"), n) for n in range(6)]

    def closing(done: int, _total: int) -> None:
        if done == 2:
            cache.close()

    with pytest.raises(CacheClosedError):
        cache.insert_many(items, batch_size=2, progress=closing)
    with Cache(CacheConfig(path=str(tmp_path)), embedder=FakeEmbedder()) as again:
        assert again.stats()["entries"] == 2 and again.check().ok
