"""Guard: answer-determining differences are caught, paraphrases pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelcache.guard import Guard, GuardWords

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "hard_pairs_dev.jsonl"


@pytest.fixture(scope="module")
def guard() -> Guard:
    return Guard()


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [
        ("从1遍历到1000,找出所有能被13和23整除的数字,用Python实现",
         "从1遍历到1000,找出所有能被13和23整除的数字,用Java实现", "language"),
        ("How do I sort a dict by value in Python?", "How do I sort a dict by value in Ruby?",
         "language"),
        ("How do I enable SSH on Ubuntu?", "How do I disable SSH on Ubuntu?", "antonym"),
        ("Sort the table in ascending order", "Sort the table in descending order", "antonym"),
        ("How to create a table in MySQL", "How to drop a table in MySQL", "antonym"),
        ("What is the max value of an int32?", "What is the min value of an int32?", "antonym"),
        ("如何开启防火墙?", "如何关闭防火墙?", "antonym"),
        ("如何升级 Python 版本?", "如何降级 Python 版本?", "antonym"),
        ("Convert 10 km to miles", "Convert 16 km to miles", "number"),
        ("What is 12 squared?", "What is twenty squared?", "number"),
        ("Who won the 2014 World Cup?", "Who won the 2018 World Cup?", "number"),
        ("计算二十五的平方根", "计算三十六的平方根", "number"),
        ("Convert 5 kg to pounds", "Convert 5 lbs to pounds", "unit"),
        ("What is the capital of Austria?", "What is the capital of Australia?", "entity"),
        ("Best restaurants in Paris", "Best restaurants in Berlin", "entity"),
        ("Did Picasso paint Guernica?", "Did Monet paint Guernica?", "entity"),
        ("介绍一下鲁迅的作品", "介绍一下老舍的作品", "substitution"),
        ("Is it safe to drink tap water in Mexico?", "Is it not safe to drink tap water in Mexico?",
         "negation"),
        ("Rocky II cast", "Rocky IV cast", "number"),
        ("Is it safe to eat raw eggs?", "Is it safe to eat raw fish?", "substitution"),
        ("when did it begin", "who developed it", "question kind"),
        ("start year of the revolution", "where did it begin", "question kind"),
        ("Why is the sky blue?", "When is the sky blue?", "question kind"),
        ("它是什么时候建成的?", "它在哪里?", "question kind"),
    ],
)  # fmt: skip
def test_conflicts_are_caught(guard: Guard, a: str, b: str, kind: str) -> None:
    reason = guard.conflict(a, b)
    assert reason is not None and reason.startswith(kind), reason
    assert guard.conflict(b, a) is not None  # symmetric


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I merge two branches in git?", "Git: how to merge 2 branches?"),
        ("What's the capital of France?", "Which city is the capital of France?"),
        ("How can I learn Python fast?", "What is the quickest way to learn python?"),
        ("Is Daniel Tosh funny? Why or why not?", "Is Daniel Tosh funny?"),
        ("What now that Trump is president?", "What happens now that Donald Trump won?"),
        ("Why is the U.S. in the South China Sea?", "Why is the united states in the SCS?"),
        ("What is the best laptop under 30,000 rupees?", "Best laptop under 30k rupees?"),
        ("Why is Hilary Clinton corrupt?", "Why is Hillary Clinton so corrupt?"),
        ("What are the ML tasks?", "What are the machine learning tasks?"),
        ("怎么用Python读取CSV文件?", "Python 如何读取 csv 文件?"),
        ("如何提高睡眠质量?", "怎样才能睡得更好?"),
        ("How do I go to the airport from downtown?", "What's the best way to get to the airport?"),
        ("Can I get a visa for India online?", "How to apply for an Indian visa online?"),
        ("initial location of the revolution", "Where did this period of change begin?"),
        ("What should I do when I feel lost?", "Why do I feel lost?"),
        ("When is the universe thought to have begun?", "how old is the universe"),
        ("电话是谁发明的?", "谁发明了电话?"),
    ],
)  # fmt: skip
def test_paraphrases_pass(guard: Guard, a: str, b: str) -> None:
    assert guard.conflict(a, b) is None
    assert guard.conflict(b, a) is None


def test_word_lists_are_package_data() -> None:
    words = GuardWords.load()
    assert words.tech["golang"] == "go" and "go" in words.tech_ambiguous
    assert ("enable", "disable") in words.antonyms and ("升级", "降级") in words.antonyms
    assert words.antonym_forms["stopped"] == "stop"
    assert "not" in words.negations and "why not" in words.negation_idioms
    assert words.units["km"] == "kilometer"
    assert words.answer_heads["when"] == "time" and words.answer_types["what_year"] == "time"


def test_ambiguous_technology_needs_context(guard: Guard) -> None:
    assert not guard._features("Where should I go tonight?").tech
    assert "go" in guard._features("Parse a JSON file in Go").tech
    assert set(guard._features("how to write a for loop in go").tech) == {"go"}
    reason = guard.conflict("Parse a JSON file in Go", "Parse a JSON file in Swift")
    assert reason == "language go vs swift"


def test_synonyms_and_word_forms_are_no_substitution(guard: Guard) -> None:
    assert guard.conflict("How can I lose weight fast?", "How can I lose weight quickly?") is None
    assert guard.conflict("Best books on history", "Best book on history") is None


@pytest.mark.skipif(not SHARED.exists(), reason="shared eval data not present")
def test_hard_pairs_dev(guard: Guard) -> None:
    rows = [json.loads(line) for line in SHARED.read_text(encoding="utf-8").splitlines() if line]
    traps = [r for r in rows if not r["same_answer"]]
    paraphrases = [r for r in rows if r["same_answer"]]
    caught = sum(guard.conflict(r["a"], r["b"]) is not None for r in traps)
    passed = sum(guard.conflict(r["a"], r["b"]) is None for r in paraphrases)
    assert passed == len(paraphrases)
    assert caught >= len(traps) - 1  # "raw eggs / raw chicken" is a plain noun swap


def test_warm_loads_the_word_lists_and_jieba_waits_for_chinese() -> None:
    fresh = Guard()
    fresh.warm()
    assert fresh._words is not None
    assert fresh.conflict("如何开启蓝牙?", "如何关闭蓝牙?") == "antonym 开启/关闭"
    window = Guard.jieba_window()
    assert window is not None and window[1] is not None and window[0] <= window[1]


def test_english_traffic_never_loads_jieba(tmp_path: Path) -> None:
    """Inserts and lookups of English text leave jieba (about 70 MiB) unloaded; the first
    Chinese text loads it and the Chinese rules work."""
    code = (
        "import sys, time\n"
        "from modelcache import Cache, CacheConfig, FakeEmbedder, Request\n"
        f"cache = Cache(CacheConfig(path={str(tmp_path)!r}), embedder=FakeEmbedder())\n"
        "cache.insert(Request('How do I enable bluetooth?'), 'settings')\n"
        "cache.insert(Request('How do I disable bluetooth?'), 'settings, off')\n"
        "cache.lookup(Request('How can I enable bluetooth?'))\n"
        "cache.lookup(Request('How do I turn off bluetooth?'))\n"
        "started = time.monotonic()\n"
        "warm = cache._acceptor.warm_up_windows\n"
        "while warm()[0][1] is None and time.monotonic() - started < 30:\n"
        "    time.sleep(0.05)\n"
        "english = 'jieba' in sys.modules\n"
        "reason = cache._acceptor._guard.conflict('如何开启蓝牙?', '如何关闭蓝牙?')\n"
        "chinese = 'jieba' in sys.modules and len(cache._acceptor.warm_up_windows()) == 2\n"
        "cache.close()\n"
        "print(english, chinese, reason)\n"
        "sys.exit(0 if not english and chinese else 1)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert done.stdout.split()[-1] == "开启/关闭"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("My account email is maria.lopez@example.com and I can't sign in.",
         "My account email is mario.lopez@example.com and I can't sign in."),
        ("Is https://shop.example.com/returns down?", "Is https://shop.example.org/returns down?"),
        ("Why does example.com redirect to www.example.com?",
         "Why does example.net redirect to www.example.net?"),
        ("Where is the nginx config, /etc/nginx/nginx.conf?",
         "Where is the nginx config, /etc/nginx/sites-enabled/default?"),
        ("Open src/app/main.py and run it", "Open src/app/views.py and run it"),
        ("Please check order AB-7731-XQ for me", "Please check order AB-7731-XR for me"),
        ("What is the status of ticket INC0042?", "What is the status of ticket INC0043?"),
    ],
)  # fmt: skip
def test_differing_identifiers_conflict(guard: Guard, a: str, b: str) -> None:
    """E-mail addresses, URLs, domains, paths and codes name the thing the answer is about."""
    reason = guard.conflict(a, b)
    assert reason is not None and reason.startswith(("identifier", "number")), reason
    assert guard.conflict(b, a) is not None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("My e-mail is maria.lopez@example.com, is it locked?",
         "Is the account maria.lopez@example.com locked?"),
        ("Does https://example.com/docs load for you?", "Does https://example.com/docs/ load?"),
        ("Is it ok to use and/or in a contract?", "Can a contract use and/or?"),
        ("Where does the file /etc/hosts live?", "What is /etc/hosts for?"),
    ],
)  # fmt: skip
def test_same_identifiers_pass(guard: Guard, a: str, b: str) -> None:
    assert guard.conflict(a, b) is None
    assert guard.conflict(b, a) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("which is the cheapest area to stay in Kyoto",
         "which is the most expensive area to stay in Kyoto"),
        ("which is the least expensive area to stay in Kyoto",
         "which is the most expensive area to stay in Kyoto"),
        ("what's the earliest departure to Rome", "what's the latest train to Rome"),
        ("Is a smaller screen better for reading?", "Is a larger display better for reading?"),
        ("Which city is hotter in July, Rome or Madrid?",
         "Which city is colder in July, Rome or Madrid?"),
        ("Who is the youngest player on the team?", "Who is the oldest player in the team?"),
        ("How do I make the image less large?", "How do I make the image bigger?"),
    ],
)  # fmt: skip
def test_degrees_of_antonyms_conflict(guard: Guard, a: str, b: str) -> None:
    """Comparatives and superlatives (X-er, X-est, more/most X, less/least X) of listed antonyms."""
    reason = guard.conflict(a, b)
    assert reason is not None and reason.startswith("antonym"), reason
    assert guard.conflict(b, a) is not None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("which is the cheapest area to stay in Kyoto",
         "which is the least expensive area in Kyoto"),
        ("Which phone is the most expensive?", "What is the most expensive phone?"),
        ("How do I make the image less large?", "How do I make the image smaller?"),
        ("What's the biggest animal?", "Which animal is the largest?"),
        ("How can I save money on groceries?", "What are ways to spend less on groceries?"),
    ],
)  # fmt: skip
def test_equal_degrees_pass(guard: Guard, a: str, b: str) -> None:
    assert guard.conflict(a, b) is None
    assert guard.conflict(b, a) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("how do I switch my subscription to monthly", "how do I switch my subscription to yearly"),
        ("Is the report sent weekly?", "Is the report sent daily?"),
    ],
)  # fmt: skip
def test_recurring_periods_conflict(guard: Guard, a: str, b: str) -> None:
    """Monthly / yearly / daily name a period as surely as "this month" does."""
    reason = guard.conflict(a, b)
    assert reason is not None and reason.startswith("time"), reason


def test_article_before_a_swapped_word_is_one_substitution(guard: Guard) -> None:
    """Article and noun change together ("an aisle seat" / "a window seat"): one word swapped."""
    reason = guard.conflict("can I move to an aisle seat", "can I move to a window seat")
    assert reason == "substitution aisle vs window", reason


def test_a_lookup_while_another_loads_jieba_is_no_timeout(tmp_path: Path) -> None:
    """Loading jieba at the first Chinese text holds the GIL for about a second: an English
    lookup waiting on its vector store meanwhile is not cut at its deadline into a miss.

    A real cache with the default ``lookup_timeout``, in a fresh process; the load is made to
    hold the GIL for about 1.5 s in one call, starting while the lookup waits on its store.
    """
    code = (
        "import sys, threading, time\n"
        "from modelcache import Cache, CacheConfig, FakeEmbedder, Request\n"
        "from modelcache import guard\n"
        "go = threading.Event()\n"
        "started = time.perf_counter()\n"
        "sum(range(1_000_000))\n"
        "size = int(1_000_000 * 1.5 / (time.perf_counter() - started))\n"
        "original = guard._load_jieba\n"
        "def slow_load():\n"
        "    sum(range(size))  # one C call: the GIL is held throughout\n"
        "    original()\n"
        "guard._load_jieba = slow_load\n"
        f"config = CacheConfig(path={str(tmp_path)!r})\n"
        "assert config.lookup_timeout == 0.5\n"
        "cache = Cache(config, embedder=FakeEmbedder())\n"
        "cache.insert(Request('How do I reset my router?'), 'hold the button')\n"
        "started = time.monotonic()\n"
        "warm = cache._acceptor.warm_up_windows\n"
        "while warm()[0][1] is None and time.monotonic() - started < 30:\n"
        "    time.sleep(0.05)\n"
        "def chinese():\n"
        "    go.wait()\n"
        "    guard.Guard().conflict('如何开启蓝牙?', '如何关闭蓝牙?')\n"
        "loader = threading.Thread(target=chinese)\n"
        "loader.start()\n"
        "query = cache._vectors.query_vectors\n"
        "def stalled(*args, **kwargs):\n"
        "    go.set()\n"
        "    time.sleep(0.05)  # the store's I/O: the jieba load takes the GIL meanwhile\n"
        "    return query(*args, **kwargs)\n"
        "cache._vectors.query_vectors = stalled\n"
        "cache.lookup(Request('How can I reset the router?'))\n"
        "loader.join()\n"
        "timeouts = cache.stats()['timeouts']\n"
        "cache.close()\n"
        "print(f'{timeouts} timeouts')\n"
        "sys.exit(0 if timeouts == 0 else 1)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_a_lookup_during_the_guard_warm_up_is_no_timeout(tmp_path: Path) -> None:
    """The warm-up is CPU work that holds the GIL: a lookup stalled by it in the stores is not
    cut at its deadline into a miss.

    A real cache with the default ``lookup_timeout``, in a fresh process; the warm-up holds the
    GIL for about 1.5 s in one call, starting while a lookup waits on its vector store.
    """
    code = (
        "import sys, threading, time\n"
        "from modelcache import Cache, CacheConfig, FakeEmbedder, Request\n"
        "from modelcache.guard import Guard\n"
        "go = threading.Event()\n"
        "started = time.perf_counter()\n"
        "sum(range(1_000_000))\n"
        "size = int(1_000_000 * 1.5 / (time.perf_counter() - started))\n"
        "original = Guard.warm\n"
        "def slow_warm(self):\n"
        "    go.wait()\n"
        "    sum(range(size))  # one C call: the GIL is held throughout\n"
        "    original(self)\n"
        "Guard.warm = slow_warm\n"
        f"config = CacheConfig(path={str(tmp_path)!r})\n"
        "assert config.lookup_timeout == 0.5\n"
        "cache = Cache(config, embedder=FakeEmbedder())\n"
        "cache.insert(Request('How do I reset my router?'), 'hold the button')\n"
        "query = cache._vectors.query_vectors\n"
        "def stalled(*args, **kwargs):\n"
        "    go.set()\n"
        "    time.sleep(0.05)  # the store's I/O: the warm-up takes the GIL meanwhile\n"
        "    return query(*args, **kwargs)\n"
        "cache._vectors.query_vectors = stalled\n"
        "cache.lookup(Request('How can I reset the router?'))\n"
        "timeouts = cache.stats()['timeouts']\n"
        "cache.close()\n"
        "print(f'{timeouts} timeouts')\n"
        "sys.exit(0 if timeouts == 0 else 1)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]


def test_contractions_without_the_apostrophe_are_negations(guard: Guard) -> None:
    """Users type "dont" for "don't": the same negation, not a missing one."""
    reason = guard.conflict("Why do parrots like mirrors?", "Why dont parrots like mirrors?")
    assert reason is not None and reason.startswith("negation"), reason
    assert guard.conflict("Why don't owls like mirrors?", "Why dont owls like mirrors?") is None
    assert guard.conflict("Is it safe or isnt it?", "Is it safe?") is None
