"""Guard: rejects a cached candidate when it differs from the request in answer-determining tokens.

Embeddings score "read a JSON file in Python" and "... in Go" higher than most true paraphrases,
so a cosine threshold alone cannot tell them apart. The guard compares what usually decides the
answer: numbers and units, programming languages and named technologies, named entities (places,
people, products), negations and antonyms (enable/disable, 升级/降级). Chinese is segmented with
jieba. The word lists live in ``modelcache/data/guard_*.txt`` so they can be extended without
touching the logic.

Rules compare *substitutions*: a request and a candidate conflict when each has an item of a kind
that the other lacks (Sweden vs Switzerland), not when one merely adds a detail the other leaves
out (Trump vs Donald Trump). Numbers, negations and antonyms are stricter, since adding one
changes the question.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources

__all__ = ["Guard", "GuardWords"]

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# Latin tokens keep the punctuation that is part of technology names: C++, C#, node.js, .NET.
_TOKEN = re.compile(
    r"\.?[A-Za-z0-9_]+(?:'[A-Za-z]+)?(?:[+#]+|(?:[.\-][A-Za-z0-9_]+)+)?|[$€£¥%°]",
)
_DIGITS = re.compile(r"\d+(?:,\d{3})*(?:\.\d+)?")
_NEG_CONTRACTION = re.compile(r"n't\b|n’t\b", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?。！？:;]\s*$")
_ROMAN = {"ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8, "ix": 9, "x": 10}
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 10**6, "billion": 10**9, "first": 1, "second": 2, "third": 3, "fourth": 4,
    "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10,
    "half": 0.5, "twice": 2, "double": 2, "triple": 3,
}  # fmt: skip
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6,
              "七": 7, "八": 8, "九": 9}  # fmt: skip
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10**4, "亿": 10**8}
_CN_NUM = re.compile(r"[零〇一二两三四五六七八九十百千万亿]+")
_TECH_CONTEXT = {
    "code", "coding", "program", "programming", "programmer", "language", "function", "method",
    "class", "compile", "compiler", "script", "library", "package", "module", "implement",
    "implementation", "syntax", "variable", "array", "list", "string", "dict", "file", "json",
    "api", "framework", "install", "developer", "loop", "regex", "algorithm", "debug", "import",
}  # fmt: skip
_TECH_PREPOSITIONS = {"in", "with", "using", "use", "for", "learn", "vs", "and", "or", "to"}
_CJK_ENTITY_FLAGS = {"nr", "nrt", "nrfg", "ns", "nt", "nz", "eng"}
_jieba_lock = threading.Lock()


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


def _cn_number(text: str) -> float | None:
    """Value of a Chinese numeral such as 二十五 or 三千; None when it is not one."""
    total, section, digit = 0, 0, None
    for ch in text:
        if ch in _CN_DIGITS:
            digit = _CN_DIGITS[ch]
        elif ch in _CN_UNITS:
            unit = _CN_UNITS[ch]
            value = 1 if digit is None else digit
            if unit >= 10**4:
                total = (total + section + (digit or 0)) * unit
                section = 0
            else:
                section += value * unit
            digit = None
        else:
            return None
    return float(total + section + (digit or 0))


@dataclass
class GuardWords:
    """The word lists of the guard, read from package data."""

    tech: dict[str, str] = field(default_factory=dict)  # alias (spaces as "_") -> canonical
    tech_ambiguous: set[str] = field(default_factory=set)
    places: dict[str, str] = field(default_factory=dict)
    antonyms: list[tuple[str, str]] = field(default_factory=list)
    antonym_forms: dict[str, str] = field(default_factory=dict)  # inflected form -> base
    negations: set[str] = field(default_factory=set)
    units: dict[str, str] = field(default_factory=dict)
    stop_caps: set[str] = field(default_factory=set)

    @classmethod
    def load(cls) -> GuardWords:
        """Read every ``guard_*.txt`` list shipped with the package."""
        words = cls()
        for row in _data_lines("guard_tech.txt"):
            canonical = row[0].lstrip("?")
            for alias in row:
                if alias.startswith("?"):
                    words.tech_ambiguous.add(alias[1:])
                    alias = alias[1:]
                words.tech.setdefault(alias, canonical)
        for row in _data_lines("guard_places.txt"):
            for alias in row:
                words.places.setdefault(alias, row[0])
        for row in _data_lines("guard_antonyms.txt"):
            if len(row) != 2:
                raise ValueError(f"guard_antonyms.txt: expected a pair, got {row!r}")
            a, b = row
            words.antonyms.append((a, b))
            for base in (a, b):
                for form in _inflections(base):
                    words.antonym_forms.setdefault(form, base)
        words.negations = {row[0] for row in _data_lines("guard_negations.txt")}
        for row in _data_lines("guard_units.txt"):
            for alias in row:
                words.units.setdefault(alias, row[0])
        words.stop_caps = {row[0] for row in _data_lines("guard_stop_caps.txt")}
        return words


@dataclass
class _Features:
    """What the guard extracts from one text."""

    numbers: set[float]
    units: set[str]
    tech: set[str]
    entities: set[str]
    antonyms: set[str]
    negated: bool
    words: set[str]  # lowercase words and n-grams, to tell "missing" from "said differently"
    text: str


class Guard:
    """Finds answer-determining differences between two questions."""

    def __init__(self) -> None:
        self._words: GuardWords | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, _Features] = {}

    # ---- public -----------------------------------------------------------------------------
    @property
    def words(self) -> GuardWords:
        """The word lists, loaded on first use."""
        if self._words is None:
            with self._lock:
                if self._words is None:
                    self._words = GuardWords.load()
        return self._words

    def conflict(self, a: str, b: str) -> str | None:
        """Reason the two questions need different answers, or None when nothing conflicts."""
        fa, fb = self._features(a), self._features(b)
        if fa.numbers != fb.numbers:
            return f"number {_fmt(fa.numbers)} vs {_fmt(fb.numbers)}"
        reason = _substitution("unit", fa.units, fb.units, fa, fb)
        reason = reason or _substitution("language", fa.tech, fb.tech, fa, fb)
        if reason:
            return reason
        if fa.negated != fb.negated:
            return "negation " + ("in first" if fa.negated else "in second")
        for x, y in self.words.antonyms:
            if (x in fa.antonyms and y in fb.antonyms and y not in fa.antonyms) and (
                x not in fb.antonyms
            ):
                return f"antonym {x}/{y}"
            if (y in fa.antonyms and x in fb.antonyms and x not in fa.antonyms) and (
                y not in fb.antonyms
            ):
                return f"antonym {y}/{x}"
        return _substitution("entity", fa.entities, fb.entities, fa, fb)

    # ---- feature extraction ---------------------------------------------------------------
    def _features(self, text: str) -> _Features:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        feats = self._extract(text)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[text] = feats
        return feats

    def _extract(self, text: str) -> _Features:
        w = self.words
        has_cjk = bool(_CJK.search(text))
        tokens = [m.group(0) for m in _TOKEN.finditer(text)]
        lower = [t.lower() for t in tokens]
        cjk_words: list[tuple[str, str]] = _segment(text) if has_cjk else []

        grams = set(lower)
        for n in (2, 3):
            grams |= {"_".join(lower[i : i + n]) for i in range(len(lower) - n + 1)}
        grams |= {word for word, _ in cjk_words}

        numbers = {_number(d) for d in _DIGITS.findall(text)}
        numbers |= {float(_NUMBER_WORDS[t]) for t in lower if t in _NUMBER_WORDS}
        for i, (tok, low) in enumerate(zip(tokens, lower, strict=True)):
            prev = tokens[i - 1] if i else ""
            if low in _ROMAN and tok.isupper() and prev[:1].isupper() and i > 1:
                numbers.add(float(_ROMAN[low]))  # World War II, Rocky IV
            elif tok == "I" and i > 1 and prev[:1].isupper() and prev.lower() not in w.stop_caps:
                numbers.add(1.0)  # World War I
        for word, _flag in cjk_words:
            if _CN_NUM.fullmatch(word) and word not in ("一", "两", "万", "千", "百"):
                value = _cn_number(word)
                if value is not None:
                    numbers.add(value)

        units = {w.units[g] for g in grams if g in w.units and not _single_letter(g)}
        if numbers:  # single letters ("m", "s") are units only right after a number
            for i, low in enumerate(lower[1:], 1):
                if low in w.units and _single_letter(low) and _DIGITS.fullmatch(lower[i - 1]):
                    units.add(w.units[low])

        tech_context = has_cjk or bool(_TECH_CONTEXT & set(lower))
        tech: set[str] = set()
        for g in grams:
            canonical = w.tech.get(g)
            if canonical is None:
                continue
            if g in w.tech_ambiguous and not self._tech_use(g, tokens, lower, tech_context):
                continue
            tech.add(canonical)

        entities = self._entities(tokens, lower, grams, tech, cjk_words)
        antonyms = {w.antonym_forms[g] for g in grams if g in w.antonym_forms}
        for x, y in w.antonyms:  # Chinese words also inside longer words: 升级 in 升级到
            for base in (x, y):
                if len(base) >= 2 and _CJK.search(base) and base in text:
                    antonyms.add(base)
        negated = bool(_NEG_CONTRACTION.search(text)) or any(t in w.negations for t in lower)
        negated = negated or any(word in w.negations for word, _ in cjk_words)
        return _Features(numbers, units, tech, entities, antonyms, negated, grams, text)

    def _tech_use(self, alias: str, tokens: list[str], lower: list[str], context: bool) -> bool:
        """Whether an ambiguous technology word ("go", "swift") is used as a name here."""
        if context:
            return True
        for i, low in enumerate(lower):
            if low != alias:
                continue
            if i > 0 and tokens[i][:1].isupper():
                return True
            if i > 0 and lower[i - 1] in _TECH_PREPOSITIONS and tokens[i][:1].isupper():
                return True
        return False

    def _entities(
        self,
        tokens: list[str],
        lower: list[str],
        grams: set[str],
        tech: set[str],
        cjk_words: list[tuple[str, str]],
    ) -> set[str]:
        """Named entities: known places, capitalised words mid-sentence, Chinese proper nouns."""
        w = self.words
        entities = {w.places[g] for g in grams if g in w.places}
        alpha = [t for t in tokens if t[:1].isalpha()]
        capitalised = [t for t in alpha if t[:1].isupper()]
        title_case = len(alpha) >= 4 and len(capitalised) / len(alpha) > 0.6
        if not title_case:
            for i, tok in enumerate(tokens):
                low = lower[i]
                if i == 0 or not tok[:1].isupper() or low in w.stop_caps:
                    continue
                if low in w.tech or low in w.places or low in _NUMBER_WORDS or low in _ROMAN:
                    continue
                if low == "i":
                    continue
                entities.add(low)
        for word, flag in cjk_words:
            low = word.lower()
            if flag in _CJK_ENTITY_FLAGS and low not in w.tech and not low.isdigit():
                entities.add(low)
        return entities - tech


def _single_letter(token: str) -> bool:
    return len(token) == 1 and token.isalpha()


def _number(raw: str) -> float:
    return float(raw.replace(",", ""))


def _fmt(values: Iterable[float]) -> str:
    items = sorted(values)
    if not items:
        return "none"
    return ",".join(str(int(v)) if float(v).is_integer() else str(v) for v in items)


def _substitution(
    kind: str, xa: set[str], xb: set[str], fa: _Features, fb: _Features
) -> str | None:
    """Both sides name something of this kind that the other does not mention at all."""
    only_a = {x for x in xa - xb if x not in fb.words}
    only_b = {x for x in xb - xa if x not in fa.words}
    if only_a and only_b:
        return f"{kind} {'/'.join(sorted(only_a))} vs {'/'.join(sorted(only_b))}"
    return None


def _segment(text: str) -> list[tuple[str, str]]:
    """Chinese word segmentation with part-of-speech flags; jieba is initialised quietly."""
    import jieba
    import jieba.posseg as pseg

    if not jieba.dt.initialized:
        with _jieba_lock:
            if not jieba.dt.initialized:
                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
    out = []
    for pair in pseg.lcut(text):
        word = pair.word.strip()
        if word:
            out.append((word, pair.flag))
    return out
