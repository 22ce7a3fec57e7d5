"""Acceptance of recalled candidates: threshold, context match, guard, optional verifier.

Semantic similarity is not answer equality, so a candidate must pass every stage, best
similarity first; the first one that does is the hit. A follow-up's context (every earlier
turn) is compared by meaning and checked by the guard, so a reply generated afresh in other
words is the same conversation and one detail changed in an earlier turn is another.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import CacheConfig
from .crowding import crowding_threshold
from .embedding.base import Thresholds, thresholds_of
from .longtext import LongTextCheck, by_edit_overlap, part_threshold
from .request import Request, normalize_text
from .storage.rows import Entry
from .verifier import Verifier, VerifierSpec, load_verifier

if TYPE_CHECKING:
    from .embedding.base import Embedder

__all__ = [
    "Acceptor",
    "Candidate",
    "ConversationVectors",
    "resolve_thresholds",
]

log = logging.getLogger("modelcache")


def resolve_thresholds(config: CacheConfig, embedder: Embedder) -> Thresholds:
    """The thresholds in force: each config field that is set, else the embedder's value."""
    base = thresholds_of(embedder)
    return Thresholds(
        short=_pick(config.similarity_threshold, base.short),
        long=_pick(config.similarity_threshold_long, base.long),
        followup=_pick(config.similarity_threshold_followup, base.followup),
        context=_pick(config.context_threshold, base.context),
    )


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


# words that point back into the conversation: a question holding one is never standalone
_BACK_REFERENCES = frozenset({
    "it", "its", "itself", "that", "this", "these", "those", "they", "them", "their", "theirs",
    "there", "then", "he", "him", "his", "she", "her", "hers", "one", "ones", "same", "also",
    "too", "else", "more", "again", "instead", "above", "previous", "earlier", "former",
    "latter", "such", "other", "another", "both", "either", "neither",
    # relative words: "the new setting", "the next step", "the first option" point back too
    "new", "old", "current", "next", "last", "first", "second", "third", "latest", "below",
    "mentioned", "said",
})  # fmt: skip
# A question of what the user may or should do ("can I ...", "should I ...", "do I need ...")
# rests on what the user said of their own state earlier ("I'm pregnant.", "I have an ulcer",
# "my card is Basic"); "how do I ..." asks for steps, and small talk states nothing.
_ASKS_FOR_SELF = re.compile(
    r"\b(?:can|could|may|might|should|must|shall|am)\s+(?:i|we)\b"
    r"|\b(?:do|would)\s+(?:i|we)\s+need\b|\bfor\s+(?:me|us)\b"
)
_STATES_SELF = re.compile(
    r"\b(?:i|we)\s*(?:'\s*m|'\s*re|'\s*ve|am|are|have|was|were|got)\b"
    r"|\b(?:my|our)\s+\w+(?:\s+\w+)?\s+(?:is|are|was|were|has|have)\b"
)
_TOOL_ROLES = frozenset({"tool", "function"})
_PUNCTUATION = ".,;:!?¿¡()"  # around a word of prose
_CODE_MARKS = re.compile(r"[(){}\[\];=<>]")  # a line holding one reads as code
_LITERAL_MARKS = "'\"`“”‘’«»[]{}<>"  # a word that opens or closes with one is a literal
_CONTINUATIONS = ("and", "but", "so", "or", "also", "what about", "how about", "then")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_STANDALONE_MIN_WORDS = 7  # shorter questions ("am I entitled to compensation") leave out
# what they are about
_CLARIFYING_MAX_WORDS = 20  # longer replies that end in "?" answered, then offered more help
# a standalone question's cosine to its own conversation stays below this on both sides (MiniLM:
# unrelated chat scores under 0.10, a follow-up that leaves its subject implicit, such as "what
# gas is released as a byproduct" after photosynthesis, 0.24 and up; see
# benchmarks/results/conversations.md)
_STANDALONE_MAX_RELATEDNESS = 0.15
_TOKEN_COUNTS = 512  # texts whose token count is remembered (queries and stored questions)
_STORED_BATCH = 64  # insert batches up to this size have their long texts' last sentences
# embedded too (the long-text check keeps 2,048 part vectors)


def _self_contained(text: str) -> bool:
    """True when a question names what it is about instead of pointing back (English only).

    Conservative on purpose: any back-reference word, a continuation opener or a short
    question makes it depend on the conversation; other scripts are never judged standalone.
    """
    lowered = text.casefold()
    if not lowered.isascii():
        return False
    words = _WORD.findall(lowered)
    if len(words) < _STANDALONE_MIN_WORDS or any(w in _BACK_REFERENCES for w in words):
        return False
    return not any(lowered.startswith(c + " ") for c in _CONTINUATIONS)


def _rests_on_self(query: str, users: Sequence[str]) -> bool:
    """Whether a question asks what its user may or should do after an earlier user turn
    stated something of the user (see ``_ASKS_FOR_SELF``)."""
    if not _ASKS_FOR_SELF.search(query.casefold()):
        return False
    return any(_STATES_SELF.search(turn.casefold().replace("\u2019", "'")) for turn in users)


def _tool_results(turns: Sequence[tuple[str, str]]) -> list[str]:
    """What tools returned in a conversation, in order: data, compared word for word."""
    return [text for role, text in turns if role in _TOOL_ROLES]


def _surface_conflict(asked: str, stored: str) -> str | None:
    """Two texts with the same words up to case and spacing that still differ in meaning:
    their indentation (code), or the case of a word beyond its first letter (``CO`` / ``Co``,
    ``'AbC'`` / ``'abc'``) when neither text is written in one case throughout. The
    embedding cannot tell them apart (the model lower-cases and ignores spacing)."""
    if asked == stored:
        return None
    words, other = asked.split(), stored.split()
    if [w.casefold() for w in words] != [w.casefold() for w in other]:
        return None  # other words: for the guard
    if _indents(asked) != _indents(stored):
        return "indentation differs"
    # "what is ai" typed in lower case asks what "What is AI?" asks; a literal ('AbC', [A-Z])
    # keeps its case whatever the rest of the text does
    one_case = any(t in (t.lower(), t.upper()) for t in (asked, stored))
    code = [a or b for a, b in zip(_in_code(asked), _in_code(stored), strict=True)]
    for x, y, literal in zip(words, other, code, strict=True):
        if x == y:
            continue
        if not literal and _plain(x) and (one_case or x[1:] == y[1:]):
            continue
        return "case differs"
    return None


def _in_code(text: str) -> list[bool]:
    """For each word of a text, whether it is code, where case always counts (``None`` /
    ``none``, ``return X`` / ``return x``): inside a backtick span, or on a line that is
    indented or holds code punctuation."""
    flags: list[bool] = []
    quoted = False
    for line in text.split("\n"):
        code_line = line[:1].isspace() or bool(_CODE_MARKS.search(line))
        for word in line.split():
            ticks = word.count("`")
            flags.append(code_line or quoted or ticks > 0)
            quoted ^= ticks % 2 == 1
    return flags


def _plain(word: str) -> bool:
    """A word of prose (what's, COVID-19, Paris?), not a literal: quoted, bracketed or code."""
    core = word.strip(_PUNCTUATION)
    if not core or core[0] in _LITERAL_MARKS or core[-1] in _LITERAL_MARKS:
        return False
    return core.replace("'", "").replace("\u2019", "").replace("-", "").isalnum()


def _indents(text: str) -> list[int]:
    """The indentation of the line of each word of a text."""
    return [len(line) - len(line.lstrip()) for line in text.split("\n") for _ in line.split()]


def _clarifying(turns: Sequence[tuple[str, str]]) -> bool:
    """The last reply is short and ends in a question: the model asked instead of answering."""
    reply = next((text for role, text in reversed(turns) if role != "user"), "")
    return reply.endswith(("?", "？")) and len(reply.split()) <= _CLARIFYING_MAX_WORDS


def _context_conflict(guard: Any, asked: list[str], stored: list[str]) -> str | None:
    """The guard over the turns in which two conversations differ, aligned turn by turn.

    Turns both share are skipped; a turn said differently ("10 days ago" / "40 days ago", a
    reworded reply) is compared with its counterpart rather than the whole conversation with
    the other; a turn only one side has (small talk, or "actually the file is 20 GB") is
    compared with the other whole conversation, where it can only conflict with a detail.
    """
    matcher = difflib.SequenceMatcher(a=asked, b=stored, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        left, right = asked[i1:i2], stored[j1:j2]
        if tag == "insert":
            left = asked
        elif tag == "delete":
            right = stored
        aligned = tag == "replace" and len(left) == len(right)
        pairs = zip(left, right, strict=True) if aligned else [("\n".join(left), "\n".join(right))]
        for x, y in pairs:
            # against a whole conversation only details count: its many words hold antonyms
            # and negations of any small talk ("so much faster!" after "it's very slow")
            reason = guard.conflict(x, y, details_only=tag in ("insert", "delete"))
            if reason is not None:
                return reason
    return None


def _replies(turns: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """The assistant's replies of a conversation, in order."""
    return tuple(text for role, text in turns if role == "assistant")


def _stored_replies(row: Entry) -> tuple[str, ...] | None:
    """The replies of a stored follow-up's conversation; None for a standalone or corrupt row."""
    if row.history_json in ("", "[]"):
        return None
    try:
        turns = [(str(t[0]), normalize_text(str(t[1] or ""))) for t in json.loads(row.history_json)]
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return _replies(turns)


def _rank(cand: Candidate, conversation: ConversationVectors) -> float:
    """Order of candidates: the query's similarity, plus for a follow-up its context's, so
    that of two stored conversations on one subject, whose contexts both pass the context
    threshold, the nearer one is tried first."""
    if conversation.context is None or cand.row.context_vector is None:
        return cand.similarity
    return cand.similarity + float(np.dot(conversation.context, cand.row.context_vector))


def _ranked(
    request: Request, candidates: Sequence[Candidate], conversation: ConversationVectors
) -> list[Candidate]:
    """Candidates best first; for a follow-up whose earlier replies a stored conversation has
    word for word, only that conversation's entries.

    Identical replies mean the earlier turns were served from that conversation's entries: the
    request continues it, and a conversation on the same subject with other replies is not
    asked in its place (in ``multiturn_dev``: "which molecule is given off during this
    process" was answered by the other photosynthesis conversation's "what is produced during
    this process").
    """
    ranked = sorted(candidates, key=lambda c: -_rank(c, conversation))
    replies = _replies([(m.role, normalize_text(m.content)) for m in request.history])
    if replies and not conversation.standalone:  # a standalone question ignores its history
        own = [c for c in ranked if _stored_replies(c.row) == replies]
        if own:
            return own
    return ranked


@dataclass(frozen=True)
class ConversationVectors:
    """A request's embedded query and earlier turns, for the context checks."""

    query: np.ndarray
    context: np.ndarray | None = None  # None: standalone request or a history without text
    standalone: bool = False  # a self-contained question after unrelated earlier turns


@dataclass(frozen=True)
class Candidate:
    """A recalled live entry with its cosine similarity to the request's query."""

    row: Entry
    similarity: float


class Acceptor:
    """Decides which candidate, if any, answers a request."""

    def __init__(
        self,
        config: CacheConfig,
        embedder: Embedder,
        verifier: VerifierSpec | None = None,
    ) -> None:
        self._config = config
        self._embedder = embedder
        # a lookup asks the query's token count up to three times (threshold, crowding, long-text
        # check) and a candidate's once: tokenizing costs about 0.1 ms a time
        self._count_tokens = functools.lru_cache(maxsize=_TOKEN_COUNTS)(embedder.count_tokens)
        self._warm_window: tuple[float, float | None] | None = None
        self.thresholds = resolve_thresholds(config, embedder)
        self._guard: Any | None = None
        if config.guard:
            from .guard import Guard

            self._guard = Guard()
            # the word lists take a fraction of a second: load them now, off the caller's
            # thread, instead of inside the first lookup (jieba waits for Chinese text)
            started = time.monotonic()
            self._warm_window = (started, None)
            threading.Thread(
                target=self._warm,
                args=(self._guard, started),
                name="modelcache-guard-warm",
                daemon=True,
            ).start()
        if verifier is None and config.verifier is not None:
            verifier = config.verifier
        self._verifier: Verifier | None = None
        if verifier is not None:
            self._verifier = load_verifier(verifier)
        self._longtext = LongTextCheck(
            embedder.embed,
            self._count_tokens,
            long_tokens=config.long_query_tokens,
            threshold=part_threshold(self.thresholds.short),
            conflict=self._guard.conflict if self._guard is not None else None,
        )

    def _warm(self, guard: Any, started: float) -> None:
        """Warm the guard up, then close the window that lookup deadlines leave uncounted."""
        try:
            guard.warm()
        finally:
            self._warm_window = (started, time.monotonic())

    def warm_up_windows(self) -> list[tuple[float, float | None]]:
        """When the guard warmed up its word lists and loaded jieba (monotonic start, end or
        None while it runs): CPU work that holds the GIL, which a lookup deadline must not count."""
        windows = [self._warm_window] if self._warm_window is not None else []
        jieba = self._guard.jieba_window() if self._guard is not None else None
        return [*windows, jieba] if jieba is not None else windows

    def threshold_for(self, request: Request, override: float | None) -> float:
        """Per-call override, else the long, follow-up or short threshold of the query."""
        if override is not None:
            return override
        if self.is_long(request.query_text):
            return self.thresholds.long
        if request.history:
            return self.thresholds.followup
        return self.thresholds.short

    def is_standalone(self, request: Request, query: np.ndarray, context: np.ndarray) -> bool:
        """A self-contained question whose earlier turns are about something else, and that
        does not ask what the user may do after the user spoke of their own state."""
        users = [normalize_text(m.content) for m in request.history if m.role == "user"]
        return (
            _self_contained(request.query_text)
            and not _rests_on_self(request.query_text, users)
            and float(np.dot(query, context)) < _STANDALONE_MAX_RELATEDNESS
        )

    def _context_matches(
        self, request: Request, conv: ConversationVectors, cand: Candidate, threshold: float
    ) -> bool:
        """Both standalone; or similar earlier turns without a conflicting detail; or, at the
        short threshold, a standalone question on both sides whatever came before."""
        row = cand.row
        row_followup = row.history_json not in ("", "[]")
        if not request.history and not row_followup:
            return True
        try:  # the stored conversation, read once for every check below
            turns = json.loads(row.history_json) if row_followup else []
            stored = [(str(t[0]), normalize_text(str(t[1] or ""))) for t in turns]
        except (TypeError, ValueError, IndexError, KeyError):
            return False  # a corrupt row: a miss
        asked = [(m.role, normalize_text(m.content)) for m in request.history]
        if _tool_results(asked) != _tool_results(stored):
            return False  # data a tool returned ("heavy rain" / "sunny") is not reworded chat
        if request.history and row_followup and self._same_context(conv, row, asked, stored):
            return True
        if request.history and not conv.standalone:
            return False
        if row_followup and not self._row_standalone(row, conv.query, stored):
            return False
        return cand.similarity >= max(threshold, self.thresholds.short)

    def _row_standalone(
        self, row: Entry, query: np.ndarray, stored: Sequence[tuple[str, str]]
    ) -> bool:
        """The stored question is self-contained and off its own conversation's topic (the
        request's query vector stands in for the stored one: they passed the threshold);
        ``stored`` is its conversation's turns, normalised."""
        if row.context_vector is None or not _self_contained(row.query):
            return False
        if _rests_on_self(row.query, [text for role, text in stored if role == "user"]):
            return False
        relatedness = float(np.dot(query, row.context_vector))
        return relatedness < _STANDALONE_MAX_RELATEDNESS

    def _same_context(
        self,
        conv: ConversationVectors,
        row: Entry,
        asked: Sequence[tuple[str, str]],
        stored: Sequence[tuple[str, str]],
    ) -> bool:
        """Earlier turns that mean the same (cosine) and differ in no answer-determining detail
        (the guard over both conversations); ``asked`` and ``stored`` are the two
        conversations' turns, normalised."""
        if conv.context is None or row.context_vector is None:
            return conv.context is None and row.context_vector is None
        similarity = float(np.dot(conv.context, row.context_vector))
        if similarity < self.thresholds.context:
            return False
        if _clarifying(asked) != _clarifying(stored):
            return False  # "which country do you mean?" is not an answer the follow-up builds on
        if self._guard is None:
            return True
        reason = _context_conflict(
            self._guard, [t for _, t in asked if t], [t for _, t in stored if t]
        )
        if reason is not None:
            log.debug("guard rejected the context of %s: %s", row.id, reason)
            return False
        return True

    def is_long(self, text: str) -> bool:
        """Whether a text is long enough for the long-text rules (``long_query_tokens``)."""
        return self._count_tokens(text) >= self._config.long_query_tokens

    def estimate(self, query: str) -> np.ndarray | None:
        """A long query's vector from its memoised chunks (see ``embed_long``), or None when
        the embedder keeps none for it or the query is short."""
        estimate = getattr(self._embedder, "memoised_vector", None)
        if estimate is None or not self.is_long(query):
            return None
        vector: np.ndarray | None = estimate(query)
        return vector

    def unknown_chunks(self, texts: Sequence[str]) -> list[str]:
        """Chunks of the long texts among ``texts`` that this process holds no vector of: a
        store may have them (see ``stored_vectors``)."""
        unknown = getattr(self._embedder, "unknown_chunks", None)
        if unknown is None:
            return []
        return list(dict.fromkeys(c for t in texts if self.is_long(t) for c in unknown(t)))

    def remember_chunks(self, vectors: dict[str, np.ndarray]) -> None:
        """Hand chunk vectors read from a store to the embedder (see ``unknown_chunks``)."""
        remember = getattr(self._embedder, "remember_chunks", None)
        if remember is not None and vectors:
            remember(vectors)

    def stored_vectors(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors a store keeps for long texts just embedded for storing: their chunks and
        the parts the long-text check compares, so a process that embedded neither (another
        worker, a restart) looks up a prompt over the same context as cheaply as this one."""
        chunks = getattr(self._embedder, "chunk_vectors", None)
        found: dict[str, np.ndarray] = {}
        for text in texts:
            if text and self.is_long(text):
                found.update(self._longtext.part_vectors(text))
                if chunks is not None:  # a chunk computed here wins over a part of that text
                    found.update(chunks(text))
        return found

    def embed_stored(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of queries being stored. A long one's last sentences (where a prompt over
        the same context will differ: its question) go to the model in the same call and are
        kept for the long-text check, so a later lookup embeds only its own side. A bulk load
        is embedded alone: the check keeps too few part vectors for it."""
        parts: list[str] = []
        if len(texts) <= _STORED_BATCH:
            long = (t for t in texts if self.is_long(t))
            parts = list(dict.fromkeys(p for t in long for p in self._longtext.stored_parts(t)))
        vectors = self._embedder.embed([*texts, *parts])
        if not parts or len(vectors) != len(texts) + len(parts):
            return vectors  # the engine checks the shape of what the embedder returned
        self._remember_parts(parts, np.asarray(vectors[len(texts) :]))
        return np.asarray(vectors[: len(texts)])

    def _remember_parts(self, parts: list[str], vectors: np.ndarray) -> None:
        """Give the long-text check part vectors just embedded, marking those the embedder took
        from a chunk read from a store, so they are never stored for another partition."""
        borrowed = getattr(self._embedder, "borrowed", None)
        taken = borrowed(parts) if borrowed is not None and parts else set()
        for loaded in (False, True):
            rows = [i for i, p in enumerate(parts) if (p in taken) == loaded]
            if rows:
                self._longtext.remember([parts[i] for i in rows], vectors[rows], loaded=loaded)

    def long_parts(
        self,
        query: str,
        stored: Sequence[str],
        load: Callable[[list[str]], dict[str, np.ndarray]] | None = None,
    ) -> list[str]:
        """The parts the long-text check will compare against the likeliest of the first
        ``top_k`` stored texts (the one whose edit shares the most words: the estimate cannot
        rank entries that differ only in the chunk it lacks, such as other questions over the
        same context) and has no vector of; ``load`` reads those a store keeps (the stored
        side's question) first."""
        likely = [t for t in stored[: self._config.top_k] if self._longtext.applies(query, t)]
        for text in by_edit_overlap(query, likely):
            parts = self._longtext.pending(query, text)
            if parts and load is not None:
                found = load(parts)
                if found:
                    self._longtext.remember(
                        list(found), np.stack(list(found.values())), loaded=True
                    )
                    parts = [p for p in parts if p not in found]
            if parts:
                return parts
        return []

    def embed_long(self, query: str, parts: list[str]) -> np.ndarray:
        """The query's vector, embedded in one model call with ``parts`` (see ``long_parts``),
        whose vectors the long-text check keeps."""
        vectors = np.asarray(self._embedder.embed([query, *parts]))
        self._remember_parts(parts, vectors[1:])
        return vectors[0]

    def _long_parts_differ(self, query: str, row: Entry) -> bool:
        """Long texts (RAG prompts) must also agree where they differ: see ``longtext``."""
        reason = self._longtext.reason(query, row.query)
        if reason is not None:
            log.debug("long-text check rejected %s: %s", row.id, reason)
        return reason is not None

    def choose(
        self,
        request: Request,
        candidates: Sequence[Candidate],
        threshold: float,
        conversation: ConversationVectors,
    ) -> Candidate | None:
        """The best candidate passing threshold, context, guard and verifier, or None."""
        margin = self._config.crowding_margin
        if margin is not None and not request.history and not self.is_long(request.query_text):
            # a short standalone query must also stand out from its runner-up
            threshold = crowding_threshold(
                [c.similarity for c in candidates],
                threshold,
                margin,
                self._config.crowding_rank,
            )
        passing: list[Candidate] = []
        for cand in _ranked(request, candidates, conversation):
            if cand.similarity < threshold:
                continue
            if cand.row.attachments != request.attachment_digest or not self._context_matches(
                request, conversation, cand, threshold
            ):
                continue
            surface = _surface_conflict(request.query_text, cand.row.query)
            if surface is not None:
                log.debug("rejected %s: %s", cand.row.id, surface)
                continue
            # long texts get the guard over the parts that differ, in the long-text check
            long = self._longtext.applies(request.query_text, cand.row.query)
            if self._guard is not None and not long:
                reason = self._guard.conflict(request.query_text, cand.row.query)
                if reason is not None:
                    log.debug("guard rejected %s: %s", cand.row.id, reason)
                    continue
            if long and self._long_parts_differ(request.query_text, cand.row):
                continue
            if self._verifier is None:
                return cand  # the best passing one: the rest need not be checked
            passing.append(cand)
        if self._verifier is None or not passing:
            return None
        band = threshold + self._config.verifier_band
        unsure = [c for c in passing if c.similarity < band]
        scores = dict(
            zip(
                (c.row.id for c in unsure),
                self._verifier.score([(request.query_text, c.row.query) for c in unsure]),
                strict=True,
            )
        )
        for cand in passing:
            score = scores.get(cand.row.id)
            if score is None or score >= self._config.verifier_threshold:
                return cand
        return None
