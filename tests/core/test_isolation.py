"""Isolation: an entry in one partition is never returned for another, exact or semantic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from core_support import CountingEmbedder

from modelcache import Cache, Request

Q = "How do I reset my password?"
PARAPHRASE = "How do I reset my password please?"
HOME: dict[str, Any] = {
    "tenant": "acme",
    "env": "prod",
    "model": "gpt-4o",
    "params": {"temperature": 0},
    "system": "You are helpful",
}
NEIGHBOURS = [
    ("tenant", "globex"),
    ("tenant", "ACME"),  # case matters: tenants are identifiers
    ("env", "dev"),
    ("model", "gpt-4o-mini"),
    ("params", {"temperature": 0.7}),
    ("params", {"temperature": 0, "tools": ["search"]}),
    ("system", "You are a pirate"),
    ("system", None),
]


def at(text: str, **changes: Any) -> Request:
    """A request in the HOME partition, or in a neighbour with some fields changed."""
    return Request.from_text(text, **{**HOME, **changes})


@pytest.mark.parametrize("field, value", NEIGHBOURS)
def test_exact_path_is_isolated(
    make_cache: Callable[..., Cache],
    counting_embedder: CountingEmbedder,
    field: str,
    value: Any,
) -> None:
    cache = make_cache(embedder=counting_embedder)
    cache.insert(at(Q), "home answer")
    assert cache.lookup(at(Q)) is not None
    calls = counting_embedder.calls
    assert cache.lookup(at(Q, **{field: value})) is None
    assert counting_embedder.calls == calls + 1, "no exact hit: the semantic path ran, and missed"


@pytest.mark.parametrize("field, value", NEIGHBOURS)
def test_semantic_path_is_isolated(cache: Cache, field: str, value: Any) -> None:
    cache.insert(at(Q), "home answer")
    hit = cache.lookup(at(PARAPHRASE))
    assert hit is not None and hit.kind == "semantic", "control: the paraphrase hits at home"
    assert cache.lookup(at(PARAPHRASE, **{field: value})) is None
    assert cache.lookup(at(PARAPHRASE, **{field: value}), threshold=-1.0) is None


@pytest.mark.parametrize("field, value", NEIGHBOURS)
def test_neighbour_entries_do_not_leak_home(cache: Cache, field: str, value: Any) -> None:
    """The other direction, with both partitions populated: each gets its own answer."""
    cache.insert_many([(at(Q), "home"), (at(Q, **{field: value}), "neighbour")])
    for text in (Q, PARAPHRASE):
        home = cache.lookup(at(text))
        away = cache.lookup(at(text, **{field: value}))
        assert home is not None and home.answer == "home"
        assert away is not None and away.answer == "neighbour"


def test_isolation_is_a_prefilter_not_a_post_filter_on_top_k(
    make_cache: Callable[..., Cache],
) -> None:
    """A crowded neighbour with closer vectors must not push the home entry out of top-k."""
    cache = make_cache(top_k=1, similarity_threshold=0.3)
    cache.insert(at("How can one reset a forgotten password?"), "home")
    cache.insert_many(
        [(at(f"How do I reset my password please? v{i}", tenant="crowd"), i) for i in range(40)]
    )
    hit = cache.lookup(at(PARAPHRASE))
    assert hit is not None and hit.answer == "home"
    crowd = cache.lookup(at(PARAPHRASE, tenant="crowd"))
    assert crowd is not None and crowd.similarity > hit.similarity, "the crowd really is closer"


def test_remove_and_clear_respect_partitions(cache: Cache) -> None:
    home_id = cache.insert(at(Q), "home")
    cache.insert(at(Q, tenant="globex"), "globex")
    assert cache.clear(tenant="globex") == 1
    assert cache.lookup(at(Q)) is not None
    cache.insert(at(Q, tenant="globex"), "globex")
    assert cache.remove([home_id]) == 1
    hit = cache.lookup(at(Q, tenant="globex"))
    assert hit is not None and hit.answer == "globex"
    assert cache.check().ok
