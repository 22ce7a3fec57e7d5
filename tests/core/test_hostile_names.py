"""Hostile scope names and text: control characters, look-alikes, lone surrogates, long names.

Distinct scopes must never share a partition id nor an answer; names a backend cannot hold
are refused up front with a ``ValueError`` (``ConfigError``), never a backend error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcache import Cache, CacheConfig, ConfigError, FakeEmbedder, Request, Scope
from modelcache.request import NAME_LIMITS, Message, Partition

# Separators, control characters, look-alikes (Cyrillic a, fullwidth, ligature), zero-width
# and bidi marks, lone surrogates, and plain letters to build near-identical names from.
_ALPHABET = [
    *"acme-prod_gpt4 ./:|",
    "\x00", "\x01", "\t", "\n", "\x1f", "\x7f", "\x85", "\u0430", "\uff41", "\ufb01",
    "\u200b", "\u200d", "\u202e", "\ufeff", "\u00a0", "\ud800", "\udfff", "\U0001f600",
]  # fmt: skip
_names = st.text(alphabet=st.sampled_from(_ALPHABET), min_size=0, max_size=12)
_params = st.dictionaries(_names, st.one_of(st.integers(), _names), max_size=2)


def _scope_or_none(tenant: str, env: str, model: str, params: dict[str, object]) -> Scope | None:
    """The scope, or None when validation refuses it (always with a ValueError)."""
    try:
        return Scope(tenant=tenant, env=env, model=model, params=params)
    except ValueError:
        return None


def _old_partition_id(tenant: str, env: str, model: str, params_json: str) -> str:
    """The partition id as every earlier version computed it (NUL-terminated fields)."""
    h = hashlib.sha256()
    for part in (tenant, env, model, params_json, ""):
        h.update(part.encode("utf-8") + b"\x00")
    return h.hexdigest()[:32]


def test_nul_characters_no_longer_merge_two_scopes() -> None:
    with pytest.raises(ConfigError, match="control characters"):
        Scope(tenant="acme\x00prod", env="dev", model="gpt-4")
    with pytest.raises(ConfigError, match="control characters"):
        Scope(tenant="acme", env="prod", model="dev\x00gpt-4")


@settings(max_examples=300, deadline=None)
@given(a=st.tuples(_names, _names, _names, _params), b=st.tuples(_names, _names, _names, _params))
def test_distinct_scopes_never_share_a_partition_id(a: tuple, b: tuple) -> None:  # type: ignore[type-arg]
    sa, sb = _scope_or_none(*a), _scope_or_none(*b)
    if sa is None or sb is None:
        return
    pa, pb = Partition.of(sa, None), Partition.of(sb, None)
    assert (pa.id == pb.id) == (sa == sb)


@settings(max_examples=200, deadline=None)
@given(tenant=_names, env=_names, model=_names, params=_params)
def test_names_are_valid_or_refused_with_a_value_error(
    tenant: str, env: str, model: str, params: dict[str, object]
) -> None:
    scope = _scope_or_none(tenant, env, model, params)
    if scope is None:
        return
    for name in (scope.tenant, scope.env, scope.model):
        assert name.strip() and not any(c in name for c in "\x00\t\n\x7f\x85\ud800\udfff")
    # every accepted scope is storable: its fields encode and its id is the historical one
    pid = Partition.of(scope, None).id
    assert pid == _old_partition_id(tenant, env, model, scope.params_json)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Cache:
    folder = tmp_path_factory.mktemp("hostile")
    envs = ("prod", "prod\u200b", "pr\u043ed", "prod ")
    cache = Cache(CacheConfig(path=str(folder), environments=envs), embedder=FakeEmbedder())
    yield cache  # type: ignore[misc]
    cache.close()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    a=st.tuples(_names, st.sampled_from(["prod", "prod\u200b", "pr\u043ed", "prod "]), _names),
    b=st.tuples(_names, st.sampled_from(["prod", "prod\u200b", "pr\u043ed", "prod "]), _names),
)
def test_distinct_scopes_never_share_answers(shared_cache: Cache, a: tuple, b: tuple) -> None:  # type: ignore[type-arg]
    sa, sb = _scope_or_none(*a, {}), _scope_or_none(*b, {})
    if sa is None or sb is None or sa == sb:
        return
    question = "what is the capital of france"
    ra, rb = Request(query=question, scope=sa), Request(query=question, scope=sb)
    shared_cache.clear(tenant=sa.tenant)
    shared_cache.clear(tenant=sb.tenant)
    shared_cache.insert(ra, {"scope": "a"})
    assert shared_cache.lookup(rb) is None
    hit = shared_cache.lookup(ra)
    assert hit is not None and hit.answer == {"scope": "a"}


def test_ids_of_ordinary_names_are_unchanged_and_a_store_reopens(tmp_path: Path) -> None:
    """Checking names changed no id: a store written before keeps answering after reopening."""
    scope = Scope(tenant="acme", env="prod", model="gpt-4", params={"temperature": 0})
    request = Request(query="how do I rotate a log file", scope=scope, system="be brief")
    system_hash = hashlib.sha256(b"be brief\x00").hexdigest()[:32]
    h = hashlib.sha256()
    for part in ("acme", "prod", "gpt-4", '{"temperature":0}', system_hash):
        h.update(part.encode() + b"\x00")
    assert request.partition.id == h.hexdigest()[:32]
    with Cache(CacheConfig(path=str(tmp_path)), embedder=FakeEmbedder()) as cache:
        cache.insert(request, "logrotate")
    with Cache(CacheConfig(path=str(tmp_path)), embedder=FakeEmbedder()) as cache:
        hit = cache.lookup(request)
        assert hit is not None and hit.answer == "logrotate"
        assert [p["id"] for p in cache.stats()["partitions"]] == [request.partition.id]


# ---- lone surrogates ------------------------------------------------------------------------
_SURROGATE_REQUESTS: list[Callable[[], object]] = [
    lambda: Request.from_text("what is \ud800 this"),
    lambda: Request.from_text("hello", system="sys \udc00"),
    lambda: Request.from_text("hello", tenant="acme\ud800"),
    lambda: Request.from_text("hello", model="\udfff"),
    lambda: Request.from_text("hello", params={"stop": "\ud800"}),
    lambda: Request.from_text("hello", params={"\ud800": 1}),
    lambda: Request.from_messages([{"role": "user", "content": "a\ud800"}]),
    lambda: Request(query="hi", history=(Message("user", "x\ud800"), Message("assistant", "y"))),
    lambda: Request.from_messages(
        [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "\ud800"}}]}]
    ),
]


@pytest.mark.parametrize("build", _SURROGATE_REQUESTS)
def test_lone_surrogates_are_refused_with_a_value_error(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        build()


def test_lookup_of_odd_but_valid_text_never_raises(cache: Cache) -> None:
    odd = ["\u202eevil", "zero\u200bwidth", "\U0001f600", "\ufeffbom", "a" * 5000]
    for text in odd:
        request = Request.from_text(text, tenant=text[:191], model=text[:191])
        assert cache.lookup(request) is None
        cache.insert(request, "ok")
        hit = cache.lookup(request)
        assert hit is not None and hit.answer == "ok"


# ---- names every backend holds ----------------------------------------------------------------
def test_name_length_limits() -> None:
    Scope(tenant="t" * 191, env="e" * 64, model="m" * 191)
    for field, limit in NAME_LIMITS.items():
        with pytest.raises(ConfigError, match=f"longer than {limit}"):
            Scope(**{field: "x" * (limit + 1)})


@pytest.mark.parametrize("db", ["mariadb", "postgres"])
def test_longest_names_fit_every_sql_backend(
    db: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = request.getfixturevalue(f"{db}_url")
    env = "e" * 64
    config = CacheConfig(path=str(tmp_path), sql_url=url, environments=("prod", env))
    with Cache(config, embedder=FakeEmbedder()) as cache:
        req = Request.from_text("long names", tenant="\u00e9" * 191, env=env, model="m" * 191)
        cache.insert(req, "fits")
        hit = cache.lookup(req)
        assert hit is not None and hit.answer == "fits"
        assert cache.clear(tenant="\u00e9" * 191) == 1


def test_configured_environments_must_fit_the_backends() -> None:
    with pytest.raises(ValueError, match="longer than 64"):
        CacheConfig(environments=("e" * 65,))
    with pytest.raises(ValueError, match="control characters"):
        CacheConfig(environments=("prod\x00",))
