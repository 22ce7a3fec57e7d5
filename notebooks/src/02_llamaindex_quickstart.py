# ruff: noqa: E402, F704
# %% [markdown]
# # LlamaIndex quickstart
#
# One line puts ModelCache in front of every LLM call LlamaIndex makes:
#
# ```python
# Settings.llm = wrap_llm(my_llm, Cache(CacheConfig(path="modelcache_data")))
# ```
#
# The wrapper is an `LLM` itself, so query engines (plain and streaming), chat engines and
# agents use it unchanged. This notebook builds a small index, queries it plainly and in
# streaming mode, runs an agent twice, and measures the time saved.
#
# It runs offline: the cache on the embedded default (a Chroma folder and SQLite in a temporary
# directory, the shipped MiniLM model), the index with a small local word-hash embedding (no
# model download), and a simulated LLM that takes one second per answer. With `OPENAI_API_KEY`
# set (and `llama-index-llms-openai` installed) it uses OpenAI instead.

# %%
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the Hugging Face Hub
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in the outputs

import re
import tempfile
import time
import warnings
import zlib
from typing import Any

warnings.filterwarnings("ignore", message="IProgress not found")

from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.bridge.pydantic import Field
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.mock import MockFunctionCallingLLM

from modelcache import Cache, CacheConfig
from modelcache_llamaindex import wrap_llm


class SlowLLM(CustomLLM):
    """A simulated completion model: one second per answer, streamed word by word."""

    model: str = "sim-llm"
    temperature: float = 0.0
    latency_s: float = Field(default=1.0, exclude=True)  # excluded: not part of the partition

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model)

    def _answer(self, prompt: str) -> str:
        time.sleep(self.latency_s)
        question = prompt.rsplit("Query:", 1)[-1].replace("Answer:", "").strip()
        return f"Based on the documents, here is the answer to {question!r}."

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._answer(prompt))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        text = self._answer(prompt)

        def chunks():
            sofar = ""
            for piece in re.findall(r"\S+\s*", text):
                sofar += piece
                yield CompletionResponse(text=sofar, delta=piece)

        return chunks()


class SlowToolLLM(MockFunctionCallingLLM):
    """A simulated function-calling model: calls `get_weather`, then answers from its result."""

    latency_s: float = Field(default=1.0, exclude=True)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="sim-tools", is_function_calling_model=True)

    def _get_response_generator(self):
        def generate(messages, **kwargs):
            time.sleep(self.latency_s)
            results = [m for m in messages if m.role == MessageRole.TOOL]
            if results:
                return ChatMessage(
                    role="assistant", content=f"The tool says: {results[-1].content}"
                )
            city = messages[-1].content.rstrip("?").split()[-1]
            call = ToolCallBlock(
                tool_call_id="call-1", tool_name="get_weather", tool_kwargs={"city": city}
            )
            return ChatMessage(role="assistant", blocks=[call])

        return generate


class WordHashEmbedding(BaseEmbedding):
    """The index's embedding: hashed word counts. Local and deterministic, no model download."""

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * 128
        for word in re.findall(r"\w+", text.lower()):
            vector[zlib.crc32(word.encode()) % 128] += 1.0
        return vector

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)


if os.environ.get("OPENAI_API_KEY"):  # a real provider when its key is set
    from llama_index.llms.openai import OpenAI

    llm = agent_llm = OpenAI(model="gpt-4o-mini", temperature=0)
else:
    llm, agent_llm = SlowLLM(), SlowToolLLM()

workdir = tempfile.mkdtemp(prefix="modelcache-nb02-")
cache = Cache(CacheConfig(path=workdir))  # the embedded default: Chroma + SQLite + MiniLM
print(type(llm).__name__, type(agent_llm).__name__)

# %% [markdown]
# ## The one-liner
#
# `wrap_llm(llm, cache, tenant=..., env=...)` returns a `CachedLLM` (or a
# `CachedFunctionCallingLLM` for a function-calling model, so agents keep working). Every
# component that takes its LLM from `Settings` now goes through the cache.

# %%
Settings.llm = wrap_llm(llm, cache, tenant="quickstart", env="dev")
Settings.embed_model = WordHashEmbedding()  # retrieval only; the cache uses MiniLM

documents = [
    "ModelCache stores each answer as JSON in SQL and the question's vector in Chroma.",
    "A cached answer is scoped by tenant, environment, model, parameters and system prompt.",
    "An exact repeat is answered from SQL without computing an embedding.",
    "A paraphrase is matched by cosine similarity, then checked by a guard for words such as "
    "numbers, languages and antonyms that change the answer.",
]
index = VectorStoreIndex.from_documents([Document(text=t) for t in documents])

timings: list[tuple[str, str, float]] = []  # (what, miss or hit, seconds)


def served_by(before: dict) -> str:
    """What the last call was: an exact hit, a semantic hit or a miss (from the stats)."""
    after = cache.stats()
    if after["exact_hits"] > before["exact_hits"]:
        return "exact hit"
    if after["semantic_hits"] > before["semantic_hits"]:
        return "semantic hit"
    return "miss"


def query(engine, question: str) -> None:
    before, started = cache.stats(), time.perf_counter()
    response = engine.query(question)
    # a streaming response is consumed token by token, as a UI would
    streamed = hasattr(response, "response_gen")
    text = "".join(response.response_gen) if streamed else str(response)
    seconds = time.perf_counter() - started
    how = served_by(before)
    timings.append(("query", how, seconds))
    print(f"{how:13} {seconds * 1000:8.1f} ms  {question!r}\n{'':25}-> {text}")


# %% [markdown]
# ## A query engine
#
# The query engine retrieves chunks and sends the LLM a prompt built from them and the
# question. The wrapper caches that call: the repeat is an exact hit, a paraphrase a semantic
# hit, a different question a miss.

# %%
engine = index.as_query_engine()
query(engine, "Where does ModelCache keep its answers?")
query(engine, "Where does ModelCache keep its answers?")
query(engine, "Where are ModelCache's answers kept?")
query(engine, "How is a cached answer scoped?")

# %% [markdown]
# ## Streaming
#
# With `streaming=True`, a miss passes the model's chunks through as they arrive and is stored
# when the stream ends; a hit is replayed as a stream. Streamed and plain calls share entries.

# %%
streaming = index.as_query_engine(streaming=True)
query(streaming, "Where does ModelCache keep its answers?")  # stored by the plain engine above
query(streaming, "What does the guard check?")
query(streaming, "What does the guard check?")

# %% [markdown]
# ## An agent
#
# A `FunctionAgent` calls the model twice per run: once to choose a tool, once to answer from
# the tool's result. Run twice, both model turns come from the cache; the tool itself still
# runs, since only the model is cached. Turns that follow a tool result are answered only from
# exact repeats, since their answer depends on that result.

# %%
tool_runs: list[str] = []


def get_weather(city: str) -> str:
    """The weather in a city."""
    tool_runs.append(city)
    return f"Sunny and 21 °C in {city}."


agent = FunctionAgent(
    tools=[get_weather],
    llm=wrap_llm(agent_llm, cache, tenant="quickstart", env="dev"),
    system_prompt="Answer weather questions with the get_weather tool.",
)
for attempt in (1, 2):
    before, started = cache.stats(), time.perf_counter()
    result = await agent.run(user_msg="What is the weather in Paris?")
    seconds = time.perf_counter() - started
    after = cache.stats()
    hits = after["hits"] - before["hits"]
    timings.append(("agent run", "hit" if hits else "miss", seconds))
    print(f"run {attempt}: {seconds:5.2f} s, {hits} model turns from the cache -> {result}")
print("tool runs:", tool_runs)

# %% [markdown]
# ## Time saved

# %%
stats = cache.stats()
spent = sum(seconds for _, _, seconds in timings)
without = 0.0
for what, how, seconds in timings:  # a hit would have cost what a miss of its kind cost
    misses = [sec for w, h, sec in timings if w == what and h == "miss"]
    without += sum(misses) / len(misses) if how != "miss" else seconds
served = sum(how != "miss" for _, how, _ in timings)
print(f"{served} of {len(timings)} requests answered from the cache")
print(f"time spent: {spent:.1f} s; without the cache about {without:.1f} s")
print(
    f"lookups: {stats['lookups']}, exact hits: {stats['exact_hits']}, "
    f"semantic hits: {stats['semantic_hits']}, misses: {stats['misses']}"
)
for p in stats["partitions"]:
    print(f"  {p['model']:24} entries {p['entries']}, hits {p['hits']}")

# %%
cache.close()
