# ruff: noqa: E402
# %% [markdown]
# # Accuracy: serve a cached answer only when it is the right answer
#
# Semantic similarity is not answer equality. "How do I read a JSON file in Python?" and
# "... in Go?" differ by one word and need different answers, yet embedding models often score
# such pairs as high as true paraphrases, so no cosine threshold separates them. This notebook
# shows the problem on real pairs, the guard that rejects answer-determining differences, the
# verifier hook, and precision / recall against the threshold on a sample of Quora question
# pairs.
#
# The labelled pairs are read by path from the evaluation data folder (`../../shared/data`
# next to the repository, or `MODELCACHE_DATA`); they are not part of the package.

# %%
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TQDM_DISABLE", "1")

import json
import random
import tempfile
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", message="IProgress not found")

from modelcache import (
    Cache,
    CacheConfig,
    MultilingualEmbedder,
    Request,
    SentenceTransformerEmbedder,
)
from modelcache.guard import Guard

DATA = Path(os.environ.get("MODELCACHE_DATA", "../../shared/data"))
workdir = Path(tempfile.mkdtemp(prefix="modelcache-nb04-"))

hard_pairs = [json.loads(line) for line in (DATA / "hard_pairs_dev.jsonl").open(encoding="utf-8")]
minilm = SentenceTransformerEmbedder()  # the default embedder (English)
use = MultilingualEmbedder()  # the `multilingual` embedder (Universal Sentence Encoder v3)
# CacheConfig leaves the thresholds unset: each embedder carries its calibrated ones
print(f"{len(hard_pairs)} hard pairs")
print("MiniLM thresholds:", minilm.thresholds)
print("USE thresholds:   ", use.thresholds)

# %% [markdown]
# ## The problem: one word differs
#
# `hard_pairs_dev` holds paraphrases (same answer) and traps (one word differs, the answer
# differs), in English and Chinese. Cosine similarity of each pair under the shipped MiniLM and
# under the multilingual model, and what the guard says:

# %%
guard = Guard()


def cosine(embedder, a: str, b: str) -> float:
    va, vb = embedder.embed([a, b])
    return float(va @ vb)


print(f"{'kind':10} {'lang':4} {'MiniLM':>6} {'USE':>6}  {'guard':28} pair")
for row in sorted(hard_pairs, key=lambda r: (r["lang"], r["kind"])):
    kind = "paraphrase" if row["same_answer"] else "trap"
    verdict = guard.conflict(row["a"], row["b"]) or "-"
    print(
        f"{kind:10} {row['lang']:4} {cosine(minilm, row['a'], row['b']):6.3f} "
        f"{cosine(use, row['a'], row['b']):6.3f}  {verdict:28} {row['a']} | {row['b']}"
    )

# %% [markdown]
# Traps such as "World War I / II" or "highest / lowest salary" score 0.86-0.89 under MiniLM,
# above paraphrases such as "learn guitar" (0.81). MiniLM cannot read Chinese at all: "读取" (read)
# and "写入" (write) a CSV file score 1.000, which is why Chinese users should set
# `embedder="multilingual"`. The guard names the difference that decides the answer: a number,
# a programming language, an entity, an antonym, or one content word swapped in an otherwise
# identical question ("raw eggs / raw chicken").
#
# ## The guard inside the cache
#
# The cache-level protocol: insert every `a` once, look up every `b`. A paraphrase hit is
# correct; a trap hit is a false hit. English runs on MiniLM, Chinese on the multilingual model,
# each with the guard on and off (`CacheConfig(guard=...)`), at the default thresholds.


# %%
def run_pairs(rows: list[dict], embedder, **settings) -> tuple[int, int, int, int]:
    """(paraphrase hits, paraphrases, trap hits, traps) for one configuration."""
    folder = tempfile.mkdtemp(dir=workdir)
    with Cache(CacheConfig(path=folder, **settings), embedder=embedder) as cache:
        cache.insert_many([(Request.from_text(r["a"]), r["a"]) for r in rows])
        good = bad = 0
        for r in rows:
            hit = cache.lookup(Request.from_text(r["b"]))
            good += bool(hit and r["same_answer"] and hit.answer == r["a"])
            bad += bool(hit and not r["same_answer"])
    paraphrases = sum(r["same_answer"] for r in rows)
    return good, paraphrases, bad, len(rows) - paraphrases


print(f"{'pairs':18} {'guard':6} {'paraphrases served':>19} {'traps served':>13}")
for lang, label, embedder in (("en", "MiniLM", minilm), ("zh", "multilingual", use)):
    rows = [r for r in hard_pairs if r["lang"] == lang]
    for on in (False, True):
        good, pos, bad, neg = run_pairs(rows, embedder, guard=on)
        print(f"{lang + ', ' + label:18} {on!s:6} {f'{good} of {pos}':>19} {f'{bad} of {neg}':>13}")

# %% [markdown]
# ## The verifier hook
#
# The verifier is an optional second stage: a sentence-transformers `CrossEncoder` read from a
# local directory (`CacheConfig(verifier="path/to/dir")`, trained with `modelcache finetune`),
# or any callable that scores `(request, candidate)` pairs. It runs only on candidates that
# passed the threshold and the guard, and only inside the grey band
# `[threshold, threshold + verifier_band)`; a score below `verifier_threshold` rejects the
# candidate. A cross-encoder reads both questions together, which is what a reworded trap
# needs: "Is raw chicken safe to eat?" is not word for word "Is it safe to eat raw eggs?", so
# the guard lets it through. Here a stand-in callable shows where the hook sits: it records what
# it is asked and rejects candidates whose food differs. With a threshold of 0.70 and a band of
# 0.20, candidates at 0.90 or above are accepted without asking it.

# %%
asked: list[tuple[str, str]] = []
FOODS = {"eggs", "chicken", "fish", "pork", "beef", "milk"}


def food_verifier(pairs: list[tuple[str, str]]) -> list[float]:
    """A stand-in for a trained cross-encoder: 0 when the two questions name different foods."""
    asked.extend(pairs)
    words = [
        ({w.strip("?.").lower() for w in a.split()}, {w.strip("?.").lower() for w in b.split()})
        for a, b in pairs
    ]
    return [0.0 if (wa & FOODS) != (wb & FOODS) else 1.0 for wa, wb in words]


settings = dict(similarity_threshold=0.70, verifier_band=0.20)
with Cache(
    CacheConfig(path=tempfile.mkdtemp(dir=workdir), **settings),
    embedder=minilm,
    verifier=food_verifier,
) as cache:
    cache.insert(Request.from_text("Is it safe to eat raw eggs?"), "Only pasteurised ones.")
    for q in ("Is raw chicken safe to eat?", "Are raw eggs safe to eat?"):
        hit = cache.lookup(Request.from_text(q))
        print(f"{q!r:32} -> {f'{hit.answer} ({hit.similarity:.2f})' if hit else 'miss'}")
print("the verifier was asked:", asked)

# %% [markdown]
# ## Precision and recall against the threshold (Quora question pairs)
#
# A sample of 400 rows of `qqp_dev` (real user questions, labelled duplicates). Every distinct
# `a` is inserted; every `b` is looked up. A hit is correct when the returned entry is a known
# duplicate of the question (same duplicate cluster). Precision = correct hits / hits; recall =
# correct hits / lookups that have a correct entry; false-hit rate = hits on lookups that have
# none / those lookups.
#
# The acceptance stages look at candidates best-first and take the first that passes, so one
# lookup with the threshold at its minimum (-1) gives the whole sweep: at threshold `t` the
# cache serves that same candidate when its similarity is at least `t`, and nothing otherwise.
# The texts are embedded once, in one batch, and both configurations reuse the vectors.


# %%
class Precomputed:
    """Embedder wrapper that serves vectors computed once in a batch (a notebook speed-up)."""

    def __init__(self, inner, texts: list[str]) -> None:
        self.inner, self.name, self.dimension = inner, inner.name, inner.dimension
        self.table = dict(zip(texts, inner.embed(texts), strict=True))

    def embed(self, texts):
        missing = [t for t in texts if t not in self.table]
        if missing:
            self.table.update(zip(missing, self.inner.embed(missing), strict=True))
        return np.stack([self.table[t] for t in texts])

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


qqp = [json.loads(line) for line in (DATA / "qqp_dev.jsonl").open(encoding="utf-8")]
sample = random.Random(0).sample(qqp, 400)
answers = {r["a"]: r["a_cluster"] for r in sample}  # distinct questions -> their cluster
texts = {Request.from_text(t).query_text for t in set(answers) | {r["b"] for r in sample}}
embedder = Precomputed(minilm, sorted(texts))  # keyed by the normalised text the cache embeds
in_cache = set(answers.values())


def sweep(guard_on: bool) -> list[tuple[bool, float, bool]]:
    """Per lookup: (a correct entry exists, similarity of the served candidate, it is correct)."""
    folder = tempfile.mkdtemp(dir=workdir)
    out = []
    with Cache(CacheConfig(path=folder, guard=guard_on), embedder=embedder) as cache:
        cache.insert_many([(Request.from_text(a), {"cluster": c}) for a, c in answers.items()])
        for r in sample:
            hit = cache.lookup(Request.from_text(r["b"]), threshold=-1.0)
            similarity = hit.similarity if hit else -2.0
            correct = bool(hit and hit.answer["cluster"] == r["b_cluster"])
            out.append((r["b_cluster"] in in_cache, similarity, correct))
    return out


def scores(results, t: float) -> tuple[float, float, float]:
    """Precision, recall and false-hit rate at threshold t."""
    hits = [(has, ok) for has, sim, ok in results if sim >= t]
    correct = sum(ok for _, ok in hits)
    answerable = sum(has for has, _, _ in results)
    false_hits = sum(1 for has, _ in hits if not has)
    precision = correct / len(hits) if hits else 1.0
    return precision, correct / answerable, false_hits / (len(results) - answerable)


results = {"cosine only": sweep(False), "cosine + guard": sweep(True)}
thresholds = np.round(np.arange(0.70, 0.99, 0.01), 2)
curves = {name: np.array([scores(res, t) for t in thresholds]) for name, res in results.items()}
print(f"{'threshold':>9} " + " ".join(f"{n + ' P/R/FH':>26}" for n in curves))
for i, t in enumerate(thresholds):
    if round(t * 100) % 5 == 0:
        print(
            f"{t:9.2f} "
            + " ".join("{:>26}".format("/".join(f"{v:.2f}" for v in c[i])) for c in curves.values())
        )

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(9, 4))
for (name, curve), style in zip(curves.items(), ("--", "-"), strict=True):
    ax.plot(thresholds, curve[:, 0], style, color="tab:blue", label=f"precision, {name}")
    ax.plot(thresholds, curve[:, 1], style, color="tab:orange", label=f"recall, {name}")
    ax.plot(thresholds, curve[:, 2], style, color="tab:red", label=f"false-hit rate, {name}")
ax.axvline(minilm.thresholds.short, color="grey", lw=0.8)
ax.text(minilm.thresholds.short + 0.003, 0.02, "default", color="grey")
ax.set_xlabel("similarity_threshold (cosine)")
ax.set_ylim(0, 1)
ax.set_title(f"qqp_dev sample ({len(sample)} lookups), MiniLM")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Calibration
#
# Calibration picks the loosest thresholds that still reach a target precision and reports the
# recall they keep. Read off the cache-level curves above:

# %%
for target in (0.80, 0.85, 0.90):
    line = [f"target precision {target:.2f}:"]
    for name, curve in curves.items():
        ok = np.flatnonzero(curve[:, 0] >= target)
        if ok.size:
            i = ok[0]
            line.append(f"{name}: threshold {thresholds[i]:.2f}, recall {curve[i, 1]:.2f}")
        else:
            line.append(f"{name}: not reached")
    print("  ".join(line))

# %% [markdown]
# `modelcache.lab.calibration.calibrate` does it pairwise (each labelled pair scored alone, the
# guard's verdict included), with separate thresholds for short and long queries, and returns
# the `CacheConfig` values to use. The command line does the same on a file and can save the
# result into a TOML config:
# `modelcache calibrate pairs.jsonl --target-precision 0.95 --save modelcache.toml`.

# %%
import contextlib
import io

from modelcache.lab.calibration import calibrate
from modelcache.lab.finetune import Pair

pairs = [Pair(r["a"], r["b"], r["same_answer"]) for r in sample]
for target in (0.85, 0.90):
    with contextlib.redirect_stderr(io.StringIO()):  # no progress bar in the output
        cal = calibrate(pairs, embedder, target, guard=guard)
    print(
        f"target {target:.2f}: {cal.config_values()}  pairwise precision "
        f"{cal.overall_precision:.2f}, recall {cal.overall_recall:.2f}"
    )
for note in cal.notes:
    print("note:", note)
calibrated = CacheConfig(path=str(workdir / "calibrated"), **cal.config_values())
print("similarity_threshold now", calibrated.similarity_threshold)

# %% [markdown]
# On these Quora questions the shipped model reaches high precision only by giving up most of
# the recall; the fine-tuned embedder and the verifier measured by `benchmarks/accuracy.py` move
# that trade-off. 400 pairs make a noisy estimate. Calibrate on your own traffic: with
# `query_log=True` the cache records every lookup, `Cache.export_log()` yields the rows to
# label, and `modelcache finetune` trains an embedder or a verifier on the labelled pairs. The
# full benchmark over every data set is `benchmarks/accuracy.py` (see `docs/benchmarks.md`).
