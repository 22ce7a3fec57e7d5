# %% [markdown]
# # ModelCache as a service
#
# `modelcache serve` runs the cache as an HTTP service that any language can call. It speaks
# CodeFuse-ModelCache's `POST /modelcache` envelope (`type` = `insert` / `query` / `remove` /
# `register`), so existing ModelCache clients only change the URL, plus a REST API under `/v1`,
# `/healthz` and Prometheus `/metrics`.
#
# This notebook starts the service in a subprocess on a free loopback port (local-only mode,
# no API keys) with the embedded default in a temporary folder, calls it with httpx the way a
# ModelCache client does, reads the metrics, and stops it. The "LLM" behind the client is
# simulated (one second per answer); with `OPENAI_API_KEY` set, OpenAI's chat completions
# endpoint is called instead.

# %%
import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

workdir = tempfile.mkdtemp(prefix="modelcache-nb05-")

with socket.socket() as s:  # a free port on the loopback interface
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
base = f"http://127.0.0.1:{port}"

env = {**os.environ, "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", "TQDM_DISABLE": "1"}
exe = Path(sys.executable).with_name("modelcache")  # the CLI installed with the package
modelcache = str(exe) if exe.exists() else shutil.which("modelcache")
log_path = Path(workdir) / "server.log"
with log_path.open("w") as log:  # the child keeps its own handle on the log
    server = subprocess.Popen(
        [modelcache, "--path", workdir, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
atexit.register(server.terminate)  # never leave the service running

client = httpx.Client(base_url=base, timeout=30)
deadline = time.monotonic() + 90
while True:  # the service is ready once /healthz answers (loading the model takes a while)
    try:
        print(client.get("/healthz").json())
        break
    except httpx.TransportError:
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(log_path.read_text()) from None
        time.sleep(0.3)

# %% [markdown]
# ## A ModelCache-style client
#
# CodeFuse-ModelCache's documented clients send the envelope as a JSON string
# (`requests.post(url, json=json.dumps(data))`); a plain JSON object works too. `query` is a
# chat message list: the system prompt is part of the partition, the last message is the
# question.


# %%
def modelcache_call(data: dict) -> dict:
    """POST the envelope the way ModelCache's own clients do: a JSON-encoded string."""
    return client.post("/modelcache", json=json.dumps(data)).json()


def call_llm(messages: list[dict]) -> str:
    """The application's LLM: OpenAI when its key is set, else a simulated 1 s answer."""
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        reply = httpx.post(
            "https://api.openai.com/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": messages, "temperature": 0},
            timeout=60,
        )
        return reply.json()["choices"][0]["message"]["content"]
    time.sleep(1.0)
    return f"(simulated answer to: {messages[-1]['content']})"


SYSTEM = {"role": "system", "content": "You are a helpful support assistant."}
SCOPE = {"model": "gpt-4o-mini"}


def ask(question: str) -> None:
    """Query the service; on a miss call the LLM and insert its answer."""
    messages = [SYSTEM, {"role": "user", "content": question}]
    started = time.perf_counter()
    found = modelcache_call({"type": "query", "scope": SCOPE, "query": messages})
    if found["cacheHit"]:
        answer = found["answer"]
        how = f"{found['hit_kind']} hit ({found['similarity']:.3f})"
    else:
        answer = call_llm(messages)
        stored = modelcache_call(
            {"type": "insert", "scope": SCOPE, "chat_info": [{"query": messages, "answer": answer}]}
        )
        how = f"miss, insert {stored['writeStatus']}"
    ms = (time.perf_counter() - started) * 1000
    print(f"{how:28} {ms:8.1f} ms  {question!r}\n{'':39}-> {answer}")


ask("How do I reset my password?")
ask("How do I reset my password?")
ask("How can I reset my password?")
ask("How do I change my email address?")

# %% [markdown]
# The raw answer of a query, with ModelCache's fields (`errorCode`, `cacheHit`, `delta_time`,
# `hit_query`, `answer`) and the extensions old clients ignore (`similarity`, `hit_kind`, `id`):

# %%
print(
    json.dumps(
        modelcache_call(
            {
                "type": "query",
                "scope": SCOPE,
                "query": [SYSTEM, {"role": "user", "content": "how can i reset my password"}],
            }
        ),
        indent=2,
        ensure_ascii=False,
    )
)

# %% [markdown]
# ## Errors keep ModelCache's codes
#
# A malformed request gets a 4xx status with the matching `errorCode`, never a 500, and
# nothing is written.

# %%
for body in (
    {"type": "upsert", "scope": SCOPE},
    {"type": "query", "scope": {}, "query": [{"role": "user", "content": "hi"}]},
    {"type": "query", "scope": SCOPE, "query": []},
):
    reply = client.post("/modelcache", json=body)
    print(reply.status_code, reply.json()["errorCode"], reply.json()["errorDesc"])

# %% [markdown]
# ## The REST API
#
# Beside the envelope, `/v1` offers a plain REST API with an OpenAPI schema (`/docs`): tenant,
# environment, model and parameters in the body; hit kind and similarity in the answer.

# %%
client.post(
    "/v1/entries",
    json={
        "tenant": "acme",
        "model": "gpt-4o",
        "query": "What are your opening hours?",
        "answer": "9:00-17:00, Monday to Friday.",
    },
)
print(
    client.post(
        "/v1/lookup",
        json={"tenant": "acme", "model": "gpt-4o", "query": "Which hours are you open?"},
    ).json()
)
print(
    client.post(
        "/v1/lookup",
        json={"tenant": "globex", "model": "gpt-4o", "query": "What are your opening hours?"},
    ).json()["hit"]
)

# %% [markdown]
# ## Metrics
#
# `/metrics` is in Prometheus' text format: hits by kind, misses, inserts, error codes, a
# latency histogram per operation, and entries read from the store.

# %%
metrics = client.get("/metrics").text
for line in metrics.splitlines():
    if line.startswith(
        (
            "modelcache_hits_total",
            "modelcache_misses_total",
            "modelcache_inserts_total",
            "modelcache_request_errors_total",
            "modelcache_entries",
            "modelcache_request_latency_seconds_count",
        )
    ):
        print(line)

# %% [markdown]
# ## Remove and stop
#
# `truncate_by_model` clears a model's entries (`delete_by_id` with an `id_list` removes single
# entries). Then the service is stopped.

# %%
print(modelcache_call({"type": "remove", "scope": SCOPE, "remove_type": "truncate_by_model"}))
ask("How do I reset my password?")  # a miss again

# %%
client.close()
server.terminate()
server.wait(timeout=30)
print("\n".join(log_path.read_text().splitlines()[-3:]))  # uvicorn's graceful shutdown
