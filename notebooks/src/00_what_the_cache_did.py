# ruff: noqa: E402
# %% [markdown]
# # What the cache did: a day of traffic
#
# Start here to see what ModelCache does for an application. The notebook replays one day of
# questions to a support assistant through a real cache (a Chroma folder, a SQLite file and the
# all-MiniLM-L6-v2 model shipped in a PyPI package, all offline), with the query log on. Then it
# reads the log back, the same way `modelcache export --log` does, and shows hit rate by hour,
# lookup latency and the tokens and time the cache saved. `modelcache report` prints the same
# summary in a terminal; both come from one function, `modelcache.report.summarize`.
#
# The traffic mixes what real users send: popular questions asked again word for word,
# the same questions in other words, and questions nobody asked before. Arrivals follow a
# working day (quiet at night, busy late morning and afternoon). The "LLM" is simulated: its
# answer is instant, and the cache's injected clock moves on by 0.8 to 2.5 s for each call, so
# the log records how long the application waited for it without the notebook waiting too.

# %%
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the Hugging Face Hub
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TQDM_DISABLE", "1")  # no progress bars in the outputs

import json
import random
import subprocess
import sys
import tempfile
import warnings
from datetime import datetime, timezone

warnings.filterwarnings("ignore", message="IProgress not found")

from modelcache import Cache, CacheConfig, Request, SentenceTransformerEmbedder
from modelcache.report import summarize

workdir = tempfile.mkdtemp(prefix="modelcache-nb00-")
rng = random.Random(7)  # the same day on every run

# %% [markdown]
# ## The traffic
#
# Popular questions, each in three phrasings (the first is what most users type), and
# questions that come once.

# %%
POPULAR = [
    ["How do I reset my password?", "I forgot my password, how can I change it?",
     "What are the steps to reset a forgotten password?"],
    ["How can I cancel my subscription?", "I want to cancel my plan, how do I do that?",
     "What is the way to stop my subscription?"],
    ["Where can I download my invoices?", "How do I get a copy of my invoice?",
     "Where are my past invoices?"],
    ["How do I change my email address?", "Can I update the email on my account?",
     "How to switch my account to a different email?"],
    ["Do you offer a student discount?", "Is there a discount for students?",
     "Can students get a cheaper price?"],
    ["How do I enable two-factor authentication?", "How can I turn on 2FA for my account?",
     "Where do I set up two-factor login?"],
    ["What payment methods do you accept?", "Which ways can I pay?",
     "Can I pay with PayPal or a credit card?"],
    ["How do I export my data to CSV?", "Can I download my data as a CSV file?",
     "How to export everything into a spreadsheet?"],
    ["How do I invite a teammate to my workspace?", "How can I add a colleague to my team?",
     "What's the way to invite new members to the workspace?"],
    ["Why was my card declined?", "My payment failed, why?",
     "What does it mean when my card gets declined?"],
    ["How do I delete my account?", "I want to remove my account permanently.",
     "How can I close my account for good?"],
    ["What are your support hours?", "When is customer support available?",
     "At what times can I reach your support team?"],
]  # fmt: skip

ONE_OFF = [
    "Can I use the app offline on a plane?",
    "Does the API support webhooks for new orders?",
    "How do I connect the calendar integration to Outlook?",
    "Is my data stored in the EU?",
    "What is the maximum file size for uploads?",
    "Can I change the language of the interface to German?",
    "Why does the mobile app crash when I open settings?",
    "How do I set a custom domain for my public page?",
    "Is there a dark mode?",
    "Can two people edit the same document at once?",
    "How do I restore a file I deleted last week?",
    "Do you have an on-premise version?",
    "What happens to my data when the trial ends?",
    "Can I transfer ownership of a workspace to someone else?",
    "How do I print a report in landscape format?",
    "Is there a keyboard shortcut to search?",
    "Why are my emails from your service going to spam?",
    "How do I get a refund for a duplicate charge?",
    "Can I schedule a message to be sent later?",
    "Which browsers are supported?",
    "How do I merge two accounts into one?",
    "Are there limits on API requests per minute?",
    "Can I import contacts from Google?",
    "How do I turn off email notifications?",
    "Do you sign a data processing agreement?",
    "How do I embed a form on my website?",
    "Can I pay annually instead of monthly?",
    "What does the error code E42 mean?",
    "How do I rotate my API key?",
    "Is the service accessible with a screen reader?",
    "Can I add a watermark to exported PDFs?",
    "How do I move a project to another folder?",
    "Why can't I see my teammate's comments?",
    "How long do you keep backups?",
    "Can I use single sign-on with Okta?",
    "How do I change the time zone of my account?",
]
WEIGHTS = [1 / rank for rank in range(1, len(POPULAR) + 1)]  # a few questions dominate

# Arrivals per hour over a working day (UTC), quiet at night.
PER_HOUR = [2, 1, 1, 1, 2, 4, 8, 14, 20, 24, 26, 22, 16, 18, 24, 26, 22, 16, 10, 8, 6, 4, 3, 2]
DAY = datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp()

stream = []  # (time, question)
unused = list(ONE_OFF)
rng.shuffle(unused)
for hour, count in enumerate(PER_HOUR):
    for at in sorted(DAY + hour * 3600 + rng.uniform(0, 3600) for _ in range(count)):
        if unused and rng.random() < 0.15:
            question = unused.pop()
        else:
            phrasings = rng.choices(POPULAR, weights=WEIGHTS)[0]
            question = rng.choices(phrasings, weights=[6, 2, 1])[0]
        stream.append((at, question))
print(f"{len(stream)} questions over 24 hours, {len(ONE_OFF) - len(unused)} of them asked once")

# %% [markdown]
# ## Replay it through a cache
#
# The application uses the usual pattern: look up; on a miss call the LLM and store its answer.
# `query_log=True` makes the cache record every lookup and insert (it is off by default).


# %%
class Clock:
    """The cache's injected clock: the replay sets the time of each request."""

    now = DAY

    def __call__(self) -> float:
        return self.now


def llm(question: str) -> str:
    """A simulated LLM: a support answer of a few sentences, and 0.8-2.5 s on the clock."""
    clock.now += rng.uniform(0.8, 2.5)
    return (
        f"Thanks for asking: {question} Here is how it works, step by step. Open the settings "
        "page from the menu in the top right corner, choose the section that matches your "
        "request and follow the instructions shown there. If anything is unclear, reply to this "
        "message and a member of the support team will help you within one business day."
    )


clock = Clock()
config = CacheConfig(path=os.path.join(workdir, "cache"), query_log=True)
cache = Cache(config, embedder=SentenceTransformerEmbedder(), clock=clock)
outcomes = {"exact": 0, "semantic": 0, "miss": 0}
for at, question in stream:
    clock.now = at
    request = Request.from_text(question)
    hit = cache.lookup(request)
    if hit is None:
        cache.insert(request, llm(question))
        outcomes["miss"] += 1
    else:
        outcomes[hit.kind] += 1
print(outcomes)

# %% [markdown]
# ## Export the query log
#
# `Cache.export_log()` yields the rows oldest first; `modelcache export --log -o log.jsonl`
# writes the same rows from a terminal. A hit's row names the stored question it matched and
# how many tokens that stored answer holds.

# %%
log_path = os.path.join(workdir, "log.jsonl")
with open(log_path, "w", encoding="utf-8") as fh:
    for row in cache.export_log():
        fh.write(json.dumps(row) + "\n")
cache.close()

with open(log_path, encoding="utf-8") as fh:
    rows = [json.loads(line) for line in fh]
semantic = [r for r in rows if r["kind"] == "semantic"]
print(f"{len(rows)} log rows; for example a semantic hit:")
example = {k: semantic[0][k] for k in ("query", "matched_query", "similarity", "answer_tokens")}
print(json.dumps(example, indent=2))

# %% [markdown]
# Were the hits right? The replay knows which popular question every phrasing belongs to, so
# each semantic hit can be checked: a hit that matched a different question (or a question
# asked once that matched a popular one) would have served a wrong answer.

# %%
topic_of = {q: i for i, phrasings in enumerate(POPULAR) for q in phrasings}
wrong = [
    r for r in semantic
    if topic_of.get(r["query"]) is None or topic_of[r["query"]] != topic_of.get(r["matched_query"])
]  # fmt: skip
print(f"{len(semantic)} semantic hits, {len(wrong)} of them wrong")
for r in wrong:
    print(f"  {r['query']!r} was answered with the answer to {r['matched_query']!r}")

# %% [markdown]
# ## The summary
#
# `summarize` counts lookups and hits per hour, lookup latency per outcome, the tokens of every
# answer served from the cache, and the time saved: for each hit, the typical LLM call (the
# median gap between a miss and the insert of its answer) less the hit's own lookup time.

# %%
summary = summarize(rows)
print(f"lookups {summary.lookups}, hit rate {summary.hit_rate:.0%} "
      f"({summary.exact_hits} exact, {summary.semantic_hits} semantic)")
for kind, lat in summary.latency.items():
    print(f"{kind:>8}: {lat.count:4d} lookups, p50 {lat.p50_ms:6.1f} ms, p95 {lat.p95_ms:6.1f} ms")
print(f"tokens saved {summary.tokens_saved}; a typical LLM call took {summary.llm_seconds:.2f} s, "
      f"so the hits saved {summary.time_saved_s / 60:.1f} minutes of waiting")  # fmt: skip

# %%
import matplotlib.pyplot as plt

hours = [datetime.fromtimestamp(h.start, tz=timezone.utc).hour for h in summary.hours]
fig, (traffic, latency, saved) = plt.subplots(1, 3, figsize=(14, 4))

traffic.bar(hours, [h.lookups for h in summary.hours], color="#c9d6e3", label="lookups")
traffic.bar(hours, [h.hits for h in summary.hours], color="#3b75af", label="hits")
rate = traffic.twinx()
rate.plot(hours, [h.hit_rate for h in summary.hours], color="#e07b39", marker="o", ms=3)
rate.set_ylim(0, 1)
rate.set_ylabel("hit rate", color="#e07b39")
traffic.set(title="Traffic and hit rate by hour", xlabel="hour (UTC)", ylabel="lookups")
traffic.legend(loc="upper left")

kinds = [k for k, lat in summary.latency.items() if lat.count]
x = range(len(kinds))
latency.bar([i - 0.2 for i in x], [summary.latency[k].p50_ms for k in kinds], 0.4, label="p50")
latency.bar([i + 0.2 for i in x], [summary.latency[k].p95_ms for k in kinds], 0.4, label="p95")
latency.set_xticks(list(x), kinds)
latency.set(title="Lookup latency by outcome", ylabel="ms (log scale)", yscale="log")
latency.legend()

cumulative, total = [], 0
for h in summary.hours:
    total += h.tokens_saved
    cumulative.append(total)
saved.step(hours, cumulative, where="post", color="#3b75af")
saved.set(title="Tokens saved over the day", xlabel="hour (UTC)", ylabel="tokens (cumulative)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The hit rate climbs through the morning as the popular questions get stored; by the evening
# nearly every question has been asked before, in these words or others. A miss costs one
# lookup (tens of milliseconds, most of it computing the embedding) on top of the LLM call; a
# semantic hit costs about the same and saves the call; an exact hit is a SQL read that skips
# the embedding.
#
# ## The same summary in a terminal
#
# `modelcache report` prints it from a cache's query log (`--since 24h` for the last day) or, as
# here, from an exported file. `modelcache stats --since 24h` adds the recent lookups and hit
# rate to the per-partition table.

# %%
result = subprocess.run(
    [sys.executable, "-m", "modelcache", "report", "--log-file", log_path],
    capture_output=True, text=True, check=True,
    env={**os.environ, "TERM": "dumb"},  # plain text: no terminal styles in the notebook
)  # fmt: skip
print(result.stdout)
