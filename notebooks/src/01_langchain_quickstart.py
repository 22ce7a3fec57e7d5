# ruff: noqa: E402
# %% [markdown]
# # LangChain quickstart
#
# One line puts ModelCache in front of every LangChain chat model or LLM:
#
# ```python
# set_llm_cache(ModelCache(path="modelcache_data", tenant="acme", env="prod"))
# ```
#
# This notebook shows an exact repeat and a paraphrase answered from the cache, a different
# model or temperature that is not, a multi-turn conversation, and the statistics at the end.
#
# It runs offline on the embedded default (a Chroma folder and SQLite in a temporary
# directory, the shipped MiniLM model) with a simulated chat model that takes one second per
# answer. With `OPENAI_API_KEY` set (and `langchain-openai` installed) it uses OpenAI instead.

# %%
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the Hugging Face Hub
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in the outputs

import tempfile
import time
import warnings
from typing import Any

warnings.filterwarnings("ignore", message="IProgress not found")

from langchain_core.globals import set_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from modelcache_langchain import ModelCache

# langchain-core marks `load` (used to restore cached generations) as beta; hide the notice
warnings.filterwarnings("ignore", message="The function `load` is in beta")


class SlowChatModel(BaseChatModel):
    """A simulated chat model: one second per answer, and the answer says what it was asked."""

    model_name: str = "sim-gpt"
    temperature: float = 0.0
    latency_s: float = 1.0

    @property
    def _llm_type(self) -> str:
        return "simulated-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        # What LangChain puts in the llm_string, hence in the cache partition. A custom model
        # that returns nothing here shares one partition across all its settings.
        return {"model_name": self.model_name, "temperature": self.temperature}

    def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        time.sleep(self.latency_s)
        question = messages[-1].content
        text = f"({self.model_name}, t={self.temperature}) Here is my answer to: {question}"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def make_llm(model: str = "gpt-4o-mini", temperature: float = 0.0) -> BaseChatModel:
    """A real OpenAI model when its key is set, else the simulated one."""
    if os.environ.get("OPENAI_API_KEY"):
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(model=model, temperature=temperature)
    return SlowChatModel(model_name=model, temperature=temperature)


workdir = tempfile.mkdtemp(prefix="modelcache-nb01-")
llm = make_llm()
print(type(llm).__name__)

# %% [markdown]
# ## The one-liner
#
# `ModelCache(...)` builds an engine from `CacheConfig` settings (`path`, thresholds,
# `embedder`, ...) or wraps an engine you pass in. `tenant` and `env` scope every entry it
# writes. `set_llm_cache` makes it the global cache of every model that has no `cache=` of its
# own.

# %%
cache = ModelCache(path=workdir, tenant="quickstart", env="dev")
set_llm_cache(cache)

log: list[dict] = []


def ask(model: BaseChatModel, messages) -> None:
    """Invoke the model and report whether the answer came from the cache, and how fast."""
    before = cache.engine.stats()
    started = time.perf_counter()
    reply = model.invoke(messages)
    seconds = time.perf_counter() - started
    after = cache.engine.stats()
    if after["exact_hits"] > before["exact_hits"]:
        how = "exact hit"
    elif after["semantic_hits"] > before["semantic_hits"]:
        how = "semantic hit"
    else:
        how = "miss"
    log.append({"how": how, "seconds": seconds})
    question = messages if isinstance(messages, str) else messages[-1].content
    print(f"{how:13} {seconds * 1000:8.1f} ms  {question!r}\n{'':25}-> {reply.content}")


# %% [markdown]
# ## A miss, an exact repeat, a paraphrase
#
# The first call pays the model. The repeat is answered from SQL without an embedding. The
# paraphrase is embedded (only the last user message, never the serialised chat) and matched by
# cosine similarity within the same partition.

# %%
ask(llm, "How do I reset my password?")
ask(llm, "How do I reset my password?")
ask(llm, "How can I reset my password?")
ask(llm, "How do I delete my account?")  # a different question: a miss

# %% [markdown]
# ## A different model or temperature is a different partition
#
# LangChain hands the cache an `llm_string` describing the model class, model name and every
# generation parameter. The adapter hashes it into the partition, so `gpt-4o` never serves
# `gpt-4o-mini`, and temperature 0.7 never reuses answers generated at temperature 0.

# %%
ask(make_llm(model="gpt-4o"), "How do I reset my password?")
ask(make_llm(temperature=0.7), "How do I reset my password?")
ask(make_llm(), "How do I reset my password?")  # the original configuration still hits

# %% [markdown]
# ## A multi-turn conversation
#
# The system prompt is part of the partition; earlier turns are the *context*. The same
# follow-up after a different first question misses; the same conversation in other words hits.

# %%
system = SystemMessage(content="You are a concise assistant for a tax office.")


def conversation(first: str, follow_up: str) -> list:
    return [
        system,
        HumanMessage(content=first),
        AIMessage(content="(the earlier answer)"),
        HumanMessage(content=follow_up),
    ]


ask(llm, conversation("How is capital gains tax calculated?", "Can you give an example?"))
ask(llm, conversation("When is the income tax return due?", "Can you give an example?"))
ask(llm, conversation("How do you calculate capital gains tax?", "Could you give an example?"))

# %% [markdown]
# ## Statistics
#
# The engine behind the adapter (`cache.engine`) keeps statistics per partition. The model name
# is read from the `llm_string` where possible.

# %%
stats = cache.engine.stats()
print(
    f"lookups {stats['lookups']}, hits {stats['hits']} "
    f"({stats['exact_hits']} exact, {stats['semantic_hits']} semantic), misses {stats['misses']}"
)
print(f"\n{'model':14} {'entries':>7} {'hits':>5} {'misses':>6}  partition")
for p in stats["partitions"]:
    print(f"{p['model']:14} {p['entries']:7} {p['hits']:5} {p['misses']:6}  {p['id'][:12]}")

misses = [e["seconds"] for e in log if e["how"] == "miss"]
hits = [e["seconds"] for e in log if e["how"] != "miss"]
miss_s, hit_s = sum(misses) / len(misses), sum(hits) / len(hits)
print(f"\n{len(hits)} of {len(log)} calls served from the cache")
print(f"a miss took {miss_s:.2f} s on average, a hit {hit_s * 1000:.0f} ms")
print(f"time saved: {len(hits) * (miss_s - hit_s):.1f} s")

# %% [markdown]
# ## Notes
#
# - To cache one model only, pass the cache to it: `ChatOpenAI(..., cache=ModelCache(...))`;
#   `cache=False` keeps a model away from any cache.
# - LangChain consults caches on `invoke` / `batch` / `generate` (and their async forms);
#   `model.stream()` bypasses them. See `docs/langchain.md`.
# - `cache.clear()` drops this adapter's tenant and env; `cache.clear(llm_string=...)` one
#   model configuration.

# %%
set_llm_cache(None)
cache.close()
