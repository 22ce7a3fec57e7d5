"""Guard: rejects a cached candidate when it differs from the request in answer-determining tokens.

Embeddings score "read a JSON file in Python" and "... in Go" higher than most true paraphrases,
so a cosine threshold alone cannot tell them apart. The guard compares what usually decides the
answer: numbers and units (also written as words: thirty-five, a dozen, fortieth), programming
languages and named technologies, named entities (places, people, products), identifiers (seat
14A, error E42, e-mail addresses, URLs, domain names, file paths), time references (this vs next
weekend, today vs Friday, monthly vs yearly), scope (this folder vs every folder), negations
(also by prefix: safe/unsafe) and antonyms (enable/disable, 升级/降级; also as comparatives and
superlatives: cheapest vs most expensive, where least expensive is cheapest; also as parts of a
compound: best-case vs worst-case), the kind of answer asked for (when vs where vs who), and
two words that trade places around a relation (X faster than Y vs Y faster than X). Chinese is
segmented with jieba, loaded at the first text with CJK characters (its dictionary and tagger
cost about 120 MiB and 2 s, which English-only traffic never pays). The word lists live in
``modelcache/data/guard_*.txt`` so they can be extended without touching the logic.

Rules look for *substitutions*: the two questions conflict when each names something of a kind
that the other does not mention at all (Sweden vs Switzerland, 10 vs 16), not when one merely
adds a detail (Trump vs Donald Trump). Details are counted: "5 times 3" vs "3 times 3" is a
substitution although both name a 3 (a name said fewer times counts only where it stands in place
of another). A negation only counts between questions worded almost alike, because
paraphrases often move it ("unknown hacks" / "hacks that are not known").
Measured on QQP duplicates, each rule is kept only where it blocks far more wrong pairs than
right ones (see ``benchmarks/results/accuracy.md`` and ``hard_pairs.md``).
"""

from __future__ import annotations

import difflib
import itertools
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import TypeVar

__all__ = ["Guard", "GuardWords"]

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# Latin tokens keep the punctuation that is part of technology names: C++, C#, node.js, .NET.
_TOKEN = re.compile(
    r"\.?[A-Za-z0-9_]+(?:['’][A-Za-z]+)?(?:[+#]+|(?:[.\-][A-Za-z0-9_]+)+)?\.?|[$€£¥₹%°]"
)
_DIGITS = re.compile(r"(\d+(?:,\d{3})*(?:\.\d+)?)(\s?[kK]\b)?")
_NEG_CONTRACTION = re.compile(r"n['’]t\b", re.IGNORECASE)
_SENTENCE_START = re.compile(r"(?:^|[.!?。！？:;\n(\"“]\s*)$")
_ROMAN = {"ii": 2, "iii": 3, "iv": 4, "vi": 6, "vii": 7, "viii": 8, "ix": 9}
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
              "七": 7, "八": 8, "九": 9}  # fmt: skip
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10**4, "亿": 10**8}
_CN_NUM = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")
_CN_NUM_SKIP = {"一", "两", "万", "千", "百", "十", "亿"}  # 一下, 千万 (by all means), 十分 (very)
_TECH_CONTEXT = {
    "code", "coding", "program", "programming", "programmer", "language", "function", "method",
    "class", "compile", "compiler", "script", "library", "package", "module", "implement",
    "implementation", "syntax", "variable", "array", "list", "string", "dict", "file", "json",
    "api", "framework", "install", "developer", "loop", "regex", "algorithm", "debug", "import",
}  # fmt: skip
_CJK_ENTITY_FLAGS = {"nr", "nrt", "nrfg", "ns", "nt", "nz", "eng"}
_NEGATION_CLOSENESS = 0.5  # word overlap from which a lone negation changes the question
# most words on each side of a changed stretch in which one name stands in place of another
_FACING_SPAN = 3
# words that join two things without ordering them: "X vs Y", "X or Y", "between X and Y"
_SYMMETRIC = {"and", "or", "nor", "vs", "versus", "v",
              "和", "与", "跟", "或", "或者", "还是", "及", "以及"}  # fmt: skip
_ORDER_SPAN = 6  # most words between two that trade places: "3 to the power of 7"
# number words that combine: "thirty-five", "two hundred", "a dozen"; "one" and the ordinals
# "first"/"second" are too common in other senses ("which one", "for a second") to count alone
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_DOZEN = "dozen"
_ONE = "one"
_ORDINAL_WORDS = {"first": 1.0, "second": 2.0}
_DETERMINERS = {"the", "a", "an", "my", "your", "his", "her", "its", "our", "their"}
_NEG_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non")  # unsafe, incompatible, dislike
# a determiner that picks one thing ("this folder") vs one that takes them all ("every folder")
_SCOPE_ONE = {"this", "these", "current"}  # not "that": mostly a conjunction
_SCOPE_ALL = {"all", "every", "each", "any"}
_IDENT = re.compile(r"(?=.*\d)(?=.*[a-z])|.*-[a-z]$|^[a-z]-")  # 14a, ab-220x, usb-a, x-ray
_QUANTITY = re.compile(r"\d+(?:st|nd|rd|th|[a-z]{2,})")  # 28th, 500rs, 100km: a number and unit
_ALNUM = re.compile(r"[0-9a-z]+")
# addresses that name the thing a question is about: e-mail, URL, file path (absolute, or
# relative with two separators or a file extension); "and/or", "km/h" and "24/7" are no paths
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"\b(?:[a-z][a-z0-9+.-]*://|www\.)[^\s<>\"'`]+", re.IGNORECASE)
_PATH = re.compile(
    r"(?<![\w/.:@])(?:~|\.{1,2}|[a-z]:)?(?:[/\\][\w.@-]+)+[/\\]?"
    r"|\b[\w.-]+(?:[/\\][\w.-]+){2,}|\b[\w.-]+(?:[/\\][\w.-]+)+\.[a-z0-9]{1,5}\b",
    re.IGNORECASE,
)
_ADDRESS_END = ".,;:!?)]}'\"/\\"
# "less"/"least" before an adjective turn it into its opposite: least expensive = cheapest
_DIMINISHERS = {"less", "least"}
_T = TypeVar("_T", bound=Hashable)
_jieba_lock = threading.Lock()
# when jieba loaded its dictionary (monotonic start, end or None while it runs): CPU work that
# holds the GIL for about two seconds, which other lookups' deadlines must not count
_jieba_window: tuple[float, float] | tuple[float, None] | None = None


def _data_lines(name: str) -> list[list[str]]:
    """Non-comment lines of a package data file, split on whitespace."""
    package = resources.files(__package__ or "modelcache")
    text = package.joinpath("data").joinpath(name).read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split())
    return rows


def _inflections(word: str) -> set[str]:
    """Simple English inflections of a base word (stop: stops, stopped, stopping)."""
    forms = {word}
    if not word.isascii() or not word.isalpha() or len(word) < 3:
        return forms
    forms |= {word + "s", word + "es", word + "ed", word + "ing", word + "d"}
    if word.endswith("e"):
        forms |= {word[:-1] + "ing"}
    if word.endswith("y"):
        forms |= {word[:-1] + "ies", word[:-1] + "ied"}
    if word[-1] not in "aeiouywx" and word[-2] in "aeiou":
        forms |= {word + word[-1] + "ed", word + word[-1] + "ing"}
    return forms


def _degrees(word: str) -> set[str]:
    """Comparative and superlative of an English adjective (cheap: cheaper, cheapest; big:
    bigger; late: later; early: earlier)."""
    if not word.isascii() or not word.isalpha() or len(word) < 3:
        return set()
    if word.endswith("e"):
        return {word + "r", word + "st"}
    if word.endswith("y") and word[-2] not in "aeiou":
        return {word[:-1] + "ier", word[:-1] + "iest"}
    stem = word
    if word[-1] not in "aeiouywx" and word[-2] in "aeiou" and word[-3] not in "aeiou":
        stem = word + word[-1]  # big: bigger, hot: hotter
    return {stem + "er", stem + "est"}


def _cn_number(text: str) -> float | None:
    """Value of a Chinese numeral such as 二十五 or 三千; None when it is not one."""
    total, section, digit = 0, 0, None
    for ch in text:
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
        elif ch in _CN_UNITS:
            unit = _CN_UNITS[ch]
            if unit >= 10**4:
                total = (total + section + (digit or 0)) * unit
                section = 0
            else:
                section += (1 if digit is None else digit) * unit
            digit = None
        else:
            return None
    return float(total + section + (digit or 0))


@dataclass
class GuardWords:
    """The word lists of the guard, read from package data (``data/guard_*.txt``)."""

    tech: dict[str, str] = field(default_factory=dict)  # alias (spaces as "_") -> canonical
    tech_ambiguous: set[str] = field(default_factory=set)
    places: dict[str, str] = field(default_factory=dict)
    antonyms: list[tuple[str, str]] = field(default_factory=list)
    antonym_forms: dict[str, str] = field(default_factory=dict)  # inflected form -> base
    antonym_degrees: dict[str, str] = field(default_factory=dict)  # cheaper, cheapest -> cheap
    antonym_partners: dict[str, set[str]] = field(default_factory=dict)  # cheap -> {expensive}
    antonyms_cjk: list[str] = field(default_factory=list)  # Chinese antonyms, found inside words
    negations: set[str] = field(default_factory=set)
    negation_idioms: list[str] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)
    numbers: dict[str, float] = field(default_factory=dict)
    stop_caps: set[str] = field(default_factory=set)
    stopwords: set[str] = field(default_factory=set)
    synonyms: dict[str, int] = field(default_factory=dict)  # word -> synonym group
    answer_types: dict[str, str] = field(default_factory=dict)  # word or phrase -> kind
    answer_heads: dict[str, str] = field(default_factory=dict)  # word -> kind, at a sentence start
    time_modifiers: dict[str, str] = field(default_factory=dict)  # past -> last (week)
    time_periods: set[str] = field(default_factory=set)  # week / month, after a modifier
    time_points: set[str] = field(default_factory=set)  # today / friday / march

    @classmethod
    def load(cls) -> GuardWords:
        """Read every list shipped with the package."""
        words = cls()
        for row in _data_lines("guard_tech.txt"):
            canonical = row[0].lstrip("?")
            for alias in row:
                if alias.startswith("?"):
                    alias = alias[1:]
                    words.tech_ambiguous.add(alias)
                words.tech.setdefault(alias, canonical)
        for row in _data_lines("guard_places.txt"):
            for alias in row:
                words.places.setdefault(alias, row[0])
        for row in _data_lines("guard_antonyms.txt"):
            if len(row) != 2:
                raise ValueError(f"guard_antonyms.txt: expected a pair, got {row!r}")
            words.antonyms.append((row[0], row[1]))
            words.antonym_partners.setdefault(row[0], set()).add(row[1])
            words.antonym_partners.setdefault(row[1], set()).add(row[0])
            for base in row:
                if len(base) >= 2 and _CJK.search(base):
                    words.antonyms_cjk.append(base)
                for form in _inflections(base):
                    words.antonym_forms.setdefault(form, base)
                for form in _degrees(base):
                    words.antonym_degrees.setdefault(form, base)
        for row in _data_lines("guard_negations.txt"):
            if row[0].startswith("!"):
                words.negation_idioms.append(row[0][1:].replace("_", " "))
            else:
                words.negations.add(row[0])
        for row in _data_lines("guard_units.txt"):
            for alias in row:
                words.units.setdefault(alias, row[0])
        words.numbers = {row[0]: float(row[1]) for row in _data_lines("guard_numbers.txt")}
        words.stop_caps = {row[0] for row in _data_lines("guard_stop_caps.txt")}
        words.stopwords = {w for row in _data_lines("guard_stopwords.txt") for w in row}
        for row in _data_lines("guard_answer_types.txt"):
            for phrase in row[1:]:
                if phrase.startswith("^"):
                    words.answer_heads.setdefault(phrase[1:], row[0])
                else:
                    words.answer_types.setdefault(phrase, row[0])
        for row in _data_lines("guard_periods.txt"):
            if row[0] == "modifier":
                words.time_modifiers.update(dict.fromkeys(row[1:], row[1]))
            else:
                (words.time_periods if row[0] == "period" else words.time_points).update(row[1:])
        for group, row in enumerate(_data_lines("guard_synonyms.txt")):
            for word in row:
                words.synonyms.setdefault(word, group)
        return words


@dataclass
class _Features:
    """What the guard extracts from one text; details are counted, so that a value swapped for
    one the text names elsewhere still differs ("5 times 3" / "3 times 3")."""

    numbers: Counter[float]
    units: Counter[str]
    tech: Counter[str]
    entities: Counter[str]
    antonyms: set[str]
    negated: bool
    answer_types: set[str]  # kinds of answer asked for: time, place, person, ...
    words: set[str]  # lowercase words and n-grams, to tell "missing" from "said differently"
    content: set[str]  # content words, for the closeness of the wording
    sequence: list[tuple[str, bool]]  # every word in order, and whether it is a content word
    times: Counter[str] = field(default_factory=Counter)  # time references: next_week, friday
    scopes: dict[str, set[str]] = field(default_factory=dict)  # noun -> "one"/"all" determiners
    idents: Counter[str] = field(default_factory=Counter)  # identifiers: 14a, inv-2023-a, ua837
    joined: set[str] = field(default_factory=set)  # 1-3 adjacent alphanumeric runs, joined


class Guard:
    """Finds answer-determining differences between two questions."""

    def __init__(self) -> None:
        self._words: GuardWords | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, _Features] = {}

    @property
    def words(self) -> GuardWords:
        """The word lists, loaded on first use."""
        if self._words is None:
            with self._lock:
                if self._words is None:
                    self._words = GuardWords.load()
        return self._words

    def warm(self) -> None:
        """Load the word lists now instead of on the first lookup; jieba waits for Chinese text.

        Call it from a background thread at start-up to keep that work off a user's request.
        """
        _ = self.words

    @staticmethod
    def jieba_window() -> tuple[float, float | None] | None:
        """When jieba loaded its dictionary (monotonic start, end or None while it runs), or
        None before the first Chinese text: time a lookup deadline must not count."""
        return _jieba_window

    def conflict(self, a: str, b: str, *, details_only: bool = False) -> str | None:
        """Reason the two questions need different answers, or None when nothing conflicts.

        ``details_only`` keeps the rules about named details (numbers, identifiers, times,
        scope, units, technologies, entities): for a short text against a whole conversation,
        whose many words make antonyms, negations, question kinds and how often a detail is
        repeated meaningless.
        """
        fa, fb = self._features(a), self._features(b)
        counted = not details_only
        only_a = _unmatched(fa.numbers, fb.numbers, counted)
        only_b = _unmatched(fb.numbers, fa.numbers, counted)
        if only_a and only_b:
            return f"number {_fmt(only_a)} vs {_fmt(only_b)}"
        reason = _identifiers(fa, fb, counted) or _times(fa, fb, counted) or _scope(fa, fb)
        if reason:
            return reason
        for kind, xa, xb in (("unit", fa.units, fb.units), ("language", fa.tech, fb.tech)):
            reason = _substitution(kind, xa, xb, fa.words, fb.words, counted)
            if reason:
                return reason
        if details_only:
            return self._entity(fa, fb, counted)
        reason = _prefix_negation(fa, fb)
        if reason:
            return reason
        for x, y in self.words.antonyms if fa.antonyms and fb.antonyms else ():
            for p, q in ((x, y), (y, x)):
                one_way = p in fa.antonyms and q not in fa.antonyms
                if one_way and q in fb.antonyms and p not in fb.antonyms:
                    return f"antonym {p}/{q}"
        if fa.answer_types and fb.answer_types and not fa.answer_types & fb.answer_types:
            kinds = "/".join(sorted(fa.answer_types)), "/".join(sorted(fb.answer_types))
            return f"question kind {kinds[0]} vs {kinds[1]}"
        if fa.negated != fb.negated and _closeness(fa.content, fb.content) >= _NEGATION_CLOSENESS:
            return "negation " + ("in first" if fa.negated else "in second")
        return self._entity(fa, fb) or self._swap(fa, fb) or _order(fa, fb)

    def _entity(self, fa: _Features, fb: _Features, counted: bool = True) -> str | None:
        """Each side names an entity the other does not mention: Paris vs Berlin; or, with
        ``counted``, names one fewer times where it stands in place of another name ("from
        London to Rome" / "from Paris to Rome" beside "London to Paris" on both sides).

        A name said fewer times counts only in place of another: rewordings repeat or drop
        names freely ("Rs 500 and Rs 1000" / "Rs 500 and 1000").
        """
        known = self.words.places
        only_a = _unmatched(fa.entities, fb.entities, False, lambda e: _mentions(e, fa, fb, known))
        only_b = _unmatched(fb.entities, fa.entities, False, lambda e: _mentions(e, fb, fa, known))
        if counted:
            facing_a, facing_b = self._facing_entities(fa, fb)
            only_a |= _more(fa.entities, fb.entities) & facing_a
            only_b |= _more(fb.entities, fa.entities) & facing_b
        if only_a and only_b:
            return f"entity {'/'.join(sorted(only_a))} vs {'/'.join(sorted(only_b))}"
        return None

    def _facing_entities(self, fa: _Features, fb: _Features) -> tuple[set[str], set[str]]:
        """Entities that face another entity across a short changed stretch of the two word
        sequences ("London" / "Paris" in "or from London to Rome" / "or from Paris to Rome"),
        not a form of it (Philippines / Philippine, a typo such as La / Land)."""
        places = self.words.places
        words_a, words_b = [t for t, _ in fa.sequence], [t for t, _ in fb.sequence]
        facing_a: set[str] = set()
        facing_b: set[str] = set()
        matcher = difflib.SequenceMatcher(a=words_a, b=words_b, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag != "replace" or max(i2 - i1, j2 - j1) > _FACING_SPAN:
                continue
            names_a = {places.get(t, t) for t in words_a[i1:i2]} & set(fa.entities)
            names_b = {places.get(t, t) for t in words_b[j1:j2]} & set(fb.entities)
            new_a = {x for x in names_a - names_b if not any(_same_family(x, y) for y in names_b)}
            new_b = {y for y in names_b - names_a if not any(_same_family(y, x) for x in names_a)}
            if new_a and new_b:
                facing_a |= new_a
                facing_b |= new_b
        return facing_a, facing_b

    def _swap(self, fa: _Features, fb: _Features) -> str | None:
        """Word for word the same question except one content word: "raw eggs" / "raw chicken".

        Forms of one word (book / books) and listed synonyms (fast / quickly) are allowed.
        """
        if len(fa.sequence) != len(fb.sequence) or len(fa.sequence) < 3:
            return None
        diffs = [(x, y) for x, y in zip(fa.sequence, fb.sequence, strict=True) if x[0] != y[0]]
        if len(diffs) != 1:
            return None
        (x, x_content), (y, y_content) = diffs[0]
        if not (x_content and y_content) or _same_family(x, y):
            return None
        group = self.words.synonyms.get(x)
        if group is not None and group == self.words.synonyms.get(y):
            return None
        return f"substitution {x} vs {y}"

    # ---- feature extraction ---------------------------------------------------------------
    def _features(self, text: str) -> _Features:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        feats = self._extract(text)
        with self._lock:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[text] = feats
        return feats

    def _extract(self, text: str) -> _Features:
        w = self.words
        has_cjk = bool(_CJK.search(text))
        spans = [(m.group(0).rstrip("."), m.start()) for m in _TOKEN.finditer(text)]
        tokens = [t for t, _ in spans if t]
        starts = [bool(_SENTENCE_START.search(text[:pos])) for t, pos in spans if t]
        lower = [_norm(t) for t in tokens]
        parts = [p for low in lower for p in _compound_parts(low, w.numbers)]
        cjk_words: list[tuple[str, str]] = _segment(text) if has_cjk else []

        # how often each word and n-gram occurs; a Latin word jieba also returns counts once
        gram_counts = Counter(lower)
        for n in (2, 3):
            gram_counts.update("_".join(lower[i : i + n]) for i in range(len(lower) - n + 1))
        gram_counts |= Counter(word.lower() for word, _ in cjk_words)
        grams = set(gram_counts)

        numbers = self._numbers(text, tokens, lower, starts, cjk_words)
        units: Counter[str] = Counter()
        for i, low in enumerate(lower):  # a unit counts only next to a number: 10 km, $ 5
            after = _is_number(lower, i - 1, w)
            if low in w.units and (after or (not low.isalpha() and _is_number(lower, i + 1, w))):
                units[w.units[low]] += 1
        for word, _ in cjk_words:
            if word in w.units and numbers:
                units[w.units[word]] += 1

        tech_context = has_cjk or bool(_TECH_CONTEXT & set(lower))
        tech: Counter[str] = Counter()
        for g, count in gram_counts.items():
            canonical = w.tech.get(g)
            if canonical is None:
                continue
            if g in w.tech_ambiguous and not tech_context:
                positions = [i for i, low in enumerate(lower) if low == g]
                if not any(tokens[i][:1].isupper() and not starts[i] for i in positions):
                    continue
            # two names of one technology in one mention ("Ruby on Rails", "JS (JavaScript)")
            # count once: the most often named of them
            tech[canonical] = max(tech[canonical], count)

        entities = self._entities(tokens, lower, starts, gram_counts, tech, cjk_words)
        part_grams = set(parts) | {f"{x}_{y}" for x, y in itertools.pairwise(parts)}
        antonyms = self._antonyms(parts, grams | part_grams)
        if has_cjk:  # Chinese words also inside longer words: 升级 in 升级到
            antonyms |= {base for base in w.antonyms_cjk if base in text}
        negated = self._negated(text)
        answer_types = {w.answer_types[g] for g in grams if g in w.answer_types}
        answer_types |= {
            w.answer_heads[low]
            for low, start in zip(lower, starts, strict=True)
            if start and low in w.answer_heads
        }
        if has_cjk:  # Chinese question words also inside longer segments: 什么时候, 在哪里
            answer_types |= {k for p, k in w.answer_types.items() if _CJK.match(p) and p in text}
        content = {t for t in parts if t not in w.stopwords and t not in w.negations}
        content |= {word for word, flag in cjk_words if flag[:1] not in "xucpy"}
        content -= w.negations
        if cjk_words:
            sequence = [(wd.lower(), fl[:1] == "n" or fl == "eng") for wd, fl in cjk_words]
            sequence = [(wd, c) for wd, c in sequence if wd.strip("?？,，.。!！、;；:：")]
        else:
            # "an aisle seat" / "a window seat": the article follows the noun
            sequence = [
                ("a" if t == "an" else t, t.isalpha() and t not in w.stopwords) for t in parts
            ]
        return _Features(
            numbers,
            units,
            tech,
            entities,
            antonyms,
            negated,
            answer_types,
            grams,
            content,
            sequence,
            times=self._times(lower),
            scopes=_scopes(lower, w.stopwords),
            idents=_identifiers_of(text, lower, w.tech),
            joined=_joined(text),
        )

    def _antonyms(self, lower: list[str], grams: set[str]) -> set[str]:
        """Listed antonyms, also as comparatives and superlatives, where "less"/"least" before
        one names its opposite: "least expensive" is "cheap", as "cheapest" is."""
        w = self.words
        found = {w.antonym_forms[g] for g in grams if g in w.antonym_forms}
        found |= {w.antonym_degrees[low] for low in lower if low in w.antonym_degrees}
        for prev, low in itertools.pairwise(lower):
            base = w.antonym_degrees.get(low) or w.antonym_forms.get(low)
            # an adjective, not a particle: "spend less on food" is no "off"
            adjective = low not in w.stopwords and len(low) >= 3
            if prev in _DIMINISHERS and adjective and base in w.antonym_partners:
                found -= {base, w.antonym_forms.get(prev, prev)}
                found |= w.antonym_partners[base]
        return found

    def _times(self, lower: list[str]) -> Counter[str]:
        """Time references: "next_week", "today", "friday" (a period noun only after a modifier),
        and recurring periods: "monthly" and "every month" are "every_month"."""
        w = self.words
        refs = Counter(low for low in lower if low in w.time_points)
        for low in lower:
            if low.endswith("ly"):
                base = low[:-2] if low[:-2] in w.time_periods else low[:-3] + "y"
                if base in w.time_periods:
                    refs[f"every_{base}"] += 1  # weekly, monthly, daily
        for prev, low in itertools.pairwise(lower):
            base = low[:-1] if low.endswith("s") and low[:-1] in w.time_periods else low
            if prev in w.time_modifiers and base in w.time_periods:
                refs[f"{w.time_modifiers[prev]}_{base}"] += 1
        return refs

    def _negated(self, text: str) -> bool:
        """Whether the question is negated, ignoring idioms such as "why or why not"."""
        w = self.words
        folded = text.lower().replace("’", "'")
        for idiom in w.negation_idioms:
            folded = folded.replace(idiom, " ")
        if _NEG_CONTRACTION.search(folded):
            return True
        if any(_norm(m.group(0)) in w.negations for m in _TOKEN.finditer(folded)):
            return True
        return _CJK.search(folded) is not None and any(
            word in w.negations for word, _ in _segment(folded)
        )

    def _numbers(
        self,
        text: str,
        tokens: list[str],
        lower: list[str],
        starts: list[bool],
        cjk_words: list[tuple[str, str]],
    ) -> Counter[float]:
        """Numbers in digits (1,000 / 30k), words (twenty), Roman (War II) and Chinese (二十五),
        each counted as often as it occurs."""
        w = self.words
        numbers: Counter[float] = Counter()
        for m in _DIGITS.finditer(text):
            value = float(m.group(1).replace(",", ""))
            numbers[value * 1000 if m.group(2) else value] += 1
        numbers.update(_number_words(lower, w.numbers))
        for i, (tok, low) in enumerate(zip(tokens, lower, strict=True)):
            prev = tokens[i - 1] if i else ""
            after_name = i > 0 and prev[:1].isupper() and prev.lower() not in w.stop_caps
            if low in _ROMAN and tok.isupper() and after_name:
                numbers[float(_ROMAN[low])] += 1  # World War II, Rocky IV
            elif (
                tok == "I"
                and after_name
                and not starts[i - 1]
                and (i + 1 == len(tokens) or starts[i + 1])
            ):
                numbers[1.0] += 1  # "World War I." at the end of a sentence, not "Can I"
        for word, _flag in cjk_words:
            if _CN_NUM.fullmatch(word) and word not in _CN_NUM_SKIP:
                cn_value = _cn_number(word)
                if cn_value is not None:
                    numbers[cn_value] += 1
        return numbers

    def _entities(
        self,
        tokens: list[str],
        lower: list[str],
        starts: list[bool],
        gram_counts: Counter[str],
        tech: Counter[str],
        cjk_words: list[tuple[str, str]],
    ) -> Counter[str]:
        """Named entities: known places, capitalised words mid-sentence, Chinese proper nouns;
        each counted as often as it occurs, once per mention however many names it has."""
        w = self.words
        places: Counter[str] = Counter()
        for g, count in gram_counts.items():
            if g in w.places:
                places[w.places[g]] = max(places[w.places[g]], count)
        capitals: Counter[str] = Counter()
        # Title Case Questions capitalise function words too: then capitals say nothing
        capital_stopwords = sum(
            1
            for t, low, start in zip(tokens, lower, starts, strict=True)
            if not start and t[:1].isupper() and low in w.stopwords and low not in w.stop_caps
        )
        if capital_stopwords < 2:
            for i, tok in enumerate(tokens):
                low = lower[i]
                if starts[i] or not tok[:1].isupper() or low in w.stop_caps:
                    continue
                if low in w.tech or low in w.places or low in w.numbers or low in _ROMAN:
                    continue
                if low in w.stopwords or low in w.antonym_forms or low in w.antonym_degrees:
                    continue
                if len(low) < 2:
                    continue
                capitals[low] += 1
        proper: Counter[str] = Counter()
        for word, flag in cjk_words:
            low = word.lower()
            if flag in _CJK_ENTITY_FLAGS and low not in w.tech and not low.isdigit():
                proper[w.places.get(low, low)] += 1
        # jieba also returns the Latin words of Chinese text: one word, counted once
        entities = places | capitals | proper
        return Counter({e: n for e, n in entities.items() if e not in tech})


def _norm(token: str) -> str:
    """Lowercase, without a possessive and without the dots of an abbreviation (U.S. -> us)."""
    low = token.lower().replace("’", "'")
    if low.endswith("'s"):
        low = low[:-2]
    if "." in low and len(low) <= 6 and low.replace(".", "").isalpha():
        low = low.replace(".", "")
    return low


def _compound_parts(low: str, numbers: dict[str, float]) -> list[str]:
    """The words of a hyphenated compound (best-case: best, case), so that its parts are compared
    as words; the token itself when it is none (INV-2023-A stays an identifier) or a measure
    read as one number ("four-year-old" is no "old", "thirty-five")."""
    parts = low.split("-")
    if len(parts) < 2 or not all(p.isalpha() for p in parts):
        return [low]
    if any(p == _ONE or _cardinal(p, numbers) is not None for p in parts):
        return [low]
    return parts


def _is_number(lower: list[str], i: int, w: GuardWords) -> bool:
    if i < 0 or i >= len(lower):
        return False
    tok = lower[i]
    return bool(_DIGITS.fullmatch(tok)) or tok in w.numbers or tok.rstrip("k").isdigit()


def _fmt(values: Iterable[float]) -> str:
    items = sorted(values)
    return ",".join(str(int(v)) if float(v).is_integer() else str(v) for v in items) or "none"


def _unmatched(
    mine: Counter[_T],
    other: Counter[_T],
    counted: bool,
    mentioned: Callable[[_T], bool] = lambda _: False,
) -> set[_T]:
    """Values this side names that the other lacks (unless ``mentioned`` finds them there said
    otherwise) or, when ``counted``, names fewer times: "3 times 3" has a 3 that "5 times 3"
    lacks, so a value swapped for one named elsewhere in the text is still a substitution."""
    missing = {x for x in mine if not other[x] and not mentioned(x)}
    return missing | _more(mine, other) if counted else missing


def _more(mine: Counter[_T], other: Counter[_T]) -> set[_T]:
    """Values both sides name, this side more often."""
    return {x for x, n in mine.items() if 0 < other[x] < n}


def _substitution(
    kind: str,
    xa: Counter[str],
    xb: Counter[str],
    words_a: set[str],
    words_b: set[str],
    counted: bool,
) -> str | None:
    """Both sides name something of this kind that the other does not mention (as often)."""
    only_a = _unmatched(xa, xb, counted, words_b.__contains__)
    only_b = _unmatched(xb, xa, counted, words_a.__contains__)
    if only_a and only_b:
        return f"{kind} {'/'.join(sorted(only_a))} vs {'/'.join(sorted(only_b))}"
    return None


def _mentions(entity: str, own: _Features, other: _Features, known: dict[str, str]) -> bool:
    """Whether the other question names the entity, allowing typos, demonyms and acronyms."""
    if entity in other.words:
        return True
    if _spelled(entity, other):
        return True  # Wi-Fi / WiFi, G-Wagon / G Wagon
    for gram in own.words:  # Los Angeles / LA: the entity is part of a name abbreviated there
        parts = gram.split("_")
        if len(parts) > 1 and entity in (gram, *parts) and all(p in own.entities for p in parts):
            initials = "".join(p[:1] for p in parts)
            if initials in other.words:
                return True
    for word in other.words:
        if word in known and known[word] != known.get(entity, entity):
            continue  # Austria is no typo of Australia
        if "_" in word:
            initials = "".join(p[:1] for p in word.split("_"))
            if entity.isalpha() and 2 <= len(entity) <= 5 and initials == entity:
                return True  # ML = machine_learning
            continue
        if (
            len(entity) >= 4
            and len(word) >= 4
            and (
                word.startswith(entity[:4]) and (word.startswith(entity) or entity.startswith(word))
            )
        ):
            return True  # India / Indian, Japan / Japanese
        similar = entity.isalpha() and len(entity) >= 5 and len(word) >= 5 and entity[0] == word[0]
        if similar and difflib.SequenceMatcher(None, entity, word).ratio() >= 0.8:
            return True  # Hilary / Hillary
    return False


def _same_family(x: str, y: str) -> bool:
    """Forms of one word: a shared prefix of at least four letters (or the shorter word)."""
    if not (x.isascii() and y.isascii()):
        return x in y or y in x
    common = 0
    for cx, cy in zip(x, y, strict=False):
        if cx != cy:
            break
        common += 1
    return common >= min(4, len(x), len(y)) or difflib.SequenceMatcher(None, x, y).ratio() >= 0.85


def _closeness(a: set[str], b: set[str]) -> float:
    """Jaccard overlap of content words."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _segment(text: str) -> list[tuple[str, str]]:
    """Chinese word segmentation with part-of-speech flags; jieba is imported and initialised
    quietly on the first call, inside a recorded busy window."""
    global _jieba_window
    if _jieba_window is None or _jieba_window[1] is None:
        with _jieba_lock:
            if _jieba_window is None:
                started = time.monotonic()
                _jieba_window = (started, None)
                try:
                    _load_jieba()
                finally:
                    _jieba_window = (started, time.monotonic())
    import jieba.posseg as pseg

    out = []
    for pair in pseg.lcut(text):
        word = pair.word.strip()
        if word:
            out.append((word, pair.flag))
    return out


def _load_jieba() -> None:
    """Import jieba and load its dictionary and tagger (about 2 s), without its log lines."""
    import jieba
    import jieba.posseg  # its tagger loads its own tables on import

    if not jieba.dt.initialized:
        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()


def _cardinal(word: str, known: dict[str, float]) -> float | None:
    """Value of one cardinal or ordinal number word (seven, seventh, twentieth); else None."""
    if word in known:
        return known[word]
    if word.endswith("ieth") and word[:-4] + "y" in known:
        return known[word[:-4] + "y"]  # twentieth -> twenty
    if word.endswith("th") and word[:-2] in known:
        return known[word[:-2]]  # fourteenth -> fourteen
    return None


def _number_words(lower: list[str], known: dict[str, float]) -> list[float]:
    """Numbers written as words: "seven", "thirty-five", "two hundred", "a dozen", "one-day".

    "one" counts only inside a compound ("one-day", "one hundred", "thirty-one"), and
    "first"/"second" only as ordinals between a determiner and a word ("a second offense").
    """
    out: list[float] = []
    total, current, seen = 0.0, 0.0, False

    def flush() -> None:
        nonlocal total, current, seen
        if seen:
            out.append(total + current)
        total, current, seen = 0.0, 0.0, False

    for i, token in enumerate(lower):
        parts = token.split("-")
        values = [_cardinal(p, known) for p in parts]
        numeric = [
            p
            for p, v in zip(parts, values, strict=True)
            if v is not None or p in _SCALES or p == _ONE
        ]
        compound = len(parts) > 1 and bool(numeric) and parts[0] == numeric[0]
        next_word = lower[i + 1] if i + 1 < len(lower) else ""
        for part, value in zip(parts, values, strict=True):
            if part == _ONE and (compound or next_word in _SCALES):
                value = 1.0
            elif compound and part in _ORDINAL_WORDS:
                value = _ORDINAL_WORDS[part]  # twenty-first
            if part in _SCALES:
                current = (current or 1.0) * _SCALES[part]  # "a hundred": 100
                if _SCALES[part] >= 1000:
                    total, current = total + current, 0.0
                seen = True
            elif part == _DOZEN:
                flush()
                out.append(12.0)
            elif value is not None:
                if seen and current % 100 and value >= 10:
                    flush()  # "seven twenty" are two numbers
                current += value
                seen = True
            elif part in _ORDINAL_WORDS and i > 0 and lower[i - 1] in _DETERMINERS and next_word:
                flush()
                out.append(_ORDINAL_WORDS[part])
            elif part != "and" or not seen:
                flush()
                if compound:  # "one-day": the number ends where the word does
                    break
        if compound:
            flush()
    flush()
    return out


def _identifiers_of(text: str, lower: list[str], tech: dict[str, str]) -> Counter[str]:
    """Codes (14a, inv-2023-a), e-mail addresses, URLs, file paths and dotted names (example.com,
    main.py) that are no technology name, each counted as often as it occurs."""
    idents = Counter(
        t
        for t in lower
        if (_IDENT.match(t) or ("." in t.strip(".") and any(c.isalpha() for c in t)))
        and not _DIGITS.fullmatch(t)
        and not _QUANTITY.fullmatch(t)
        and t not in tech
    )
    addresses: Counter[str] = Counter()
    for pattern in (_EMAIL, _URL, _PATH):
        addresses.update(m.group(0).lower().rstrip(_ADDRESS_END) for m in pattern.finditer(text))
    idents |= addresses  # example.com is a token and an address: one identifier
    del idents[""]
    return idents


def _joined(text: str) -> set[str]:
    """Runs of letters and digits, alone and joined two or three at a time (wi fi -> wifi)."""
    runs = _ALNUM.findall(text.lower())
    return {"".join(runs[i : i + n]) for n in (1, 2, 3) for i in range(len(runs) - n + 1)}


def _spelled(token: str, other: _Features) -> bool:
    """Whether the other text writes the token too, split or joined otherwise: WiFi / Wi-Fi."""
    return "".join(_ALNUM.findall(token)) in other.joined


def _identifiers(fa: _Features, fb: _Features, counted: bool) -> str | None:
    """Each side names an identifier the other does not contain (as often): seat 14A vs 14C,
    E42 vs F42."""
    only_a = _unmatched(fa.idents, fb.idents, counted, lambda x: _spelled(x, fb))
    only_b = _unmatched(fb.idents, fa.idents, counted, lambda x: _spelled(x, fa))
    if only_a and only_b:
        return f"identifier {'/'.join(sorted(only_a))} vs {'/'.join(sorted(only_b))}"
    return None


def _times(fa: _Features, fb: _Features, counted: bool) -> str | None:
    """Each side names a time the other does not (as often): this weekend vs next weekend, today
    vs Friday."""
    only_a = _unmatched(fa.times, fb.times, counted)
    only_b = _unmatched(fb.times, fa.times, counted)
    if only_a and only_b:
        return f"time {'/'.join(sorted(only_a))} vs {'/'.join(sorted(only_b))}"
    return None


def _scopes(lower: list[str], stopwords: set[str]) -> dict[str, set[str]]:
    """Nouns after a scope determiner, singular, with the kind: "this folder" -> folder: one."""
    out: dict[str, set[str]] = {}
    for i, det in enumerate(lower[:-1]):
        kind = "one" if det in _SCOPE_ONE else "all" if det in _SCOPE_ALL else None
        if kind is None:
            continue
        noun = next((t for t in lower[i + 1 : i + 3] if t not in stopwords), None)
        if noun and noun.isalpha():
            out.setdefault(noun[:-1] if noun.endswith("s") else noun, set()).add(kind)
    return out


def _scope(fa: _Features, fb: _Features) -> str | None:
    """The same noun taken once on one side and for all on the other: this app vs all apps."""
    for noun, kinds_a in fa.scopes.items():
        kinds_b = fb.scopes.get(noun)
        if kinds_b and len(kinds_a) == 1 and len(kinds_b) == 1 and kinds_a != kinds_b:
            return f"scope {next(iter(kinds_a))} vs {next(iter(kinds_b))} {noun}"
    return None


def _prefix_negation(fa: _Features, fb: _Features) -> str | None:
    """A word on one side negated by a prefix on the other: safe / unsafe, like / dislike."""
    for x, y in ((fa, fb), (fb, fa)):
        for word in x.content - y.words:
            for prefix in _NEG_PREFIXES:
                base = word[len(prefix) :]
                if not word.startswith(prefix) or len(base) < 4 or base not in y.words:
                    continue
                # only between questions worded alike: "unknown facts" / "lesser known facts"
                alike = _closeness(x.content - {word}, y.content - {base}) >= _NEGATION_CLOSENESS
                if alike and base not in x.words and not y.negated:
                    return f"negation {prefix}{base} vs {base}"
    return None


def _order(fa: _Features, fb: _Features) -> str | None:
    """Two words trade places around the same relation: "Is X faster than Y" / "Is Y faster
    than X", "Celsius to Fahrenheit" / "Fahrenheit to Celsius"; not around the symmetric "and",
    "or", "vs".

    Only a true exchange counts: the same words between and around the two on both sides, so a
    phrase moved whole ("In Rust, how do I ..." / "How do I ... in Rust") is no conflict.
    """
    pos_a, pos_b = _unique_items(fa.sequence), _unique_items(fb.sequence)
    words_a, words_b = [t for t, _ in fa.sequence], [t for t, _ in fb.sequence]
    for x, i in pos_a.items():
        k = pos_b.get(x)
        if k is None:
            continue
        for gap in range(2, _ORDER_SPAN + 2):  # x, the words between, then y
            y = words_a[i + gap] if i + gap < len(words_a) else None
            if y is None or pos_a.get(y) != i + gap or pos_b.get(y) != k - gap:
                continue
            between = words_a[i + 1 : i + gap]
            if between != words_b[k - gap + 1 : k] or _SYMMETRIC & set(between):
                continue
            # the words around the pair agree too: "Is X faster than Y?" / "Is Y faster than X?",
            # not two phrases reordered ("MS from X in Y" / "MS in Y in X")
            around_a = _at(words_a, i - 1), _at(words_a, i + gap + 1)
            if around_a == (_at(words_b, k - gap - 1), _at(words_b, k + 1)):
                return f"order {x} {' '.join(between)} {y} vs {y} {' '.join(between)} {x}"
    return None


def _at(words: list[str], i: int) -> str | None:
    """The word at a position, None outside the text (so that two text edges match)."""
    return words[i] if 0 <= i < len(words) else None


def _unique_items(sequence: list[tuple[str, bool]]) -> dict[str, int]:
    """Position of each content word or number that occurs once in the sequence."""
    seen: dict[str, int] = {}
    twice: set[str] = set()
    for i, (word, content) in enumerate(sequence):
        if not (content or any(ch.isdigit() for ch in word)):
            continue
        if word in seen:
            twice.add(word)
        seen[word] = i
    return {word: i for word, i in seen.items() if word not in twice}
