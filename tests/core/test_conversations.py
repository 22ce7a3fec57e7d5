"""Conversations with the fake embedder: recall of the right conversation, standalone rules."""

from __future__ import annotations

from collections.abc import Callable

from modelcache import Cache, Message, Request
from modelcache.acceptance import _context_conflict, _self_contained
from modelcache.guard import Guard
from modelcache.vectors.recall import query_part, recall_vector

TOPICS = [
    "Roman Empire",
    "Ottoman Empire",
    "Ming dynasty",
    "Aztec Empire",
    "Mughal Empire",
    "Inca Empire",
    "Byzantine Empire",
    "Mongol Empire",
    "Tang dynasty",
    "Maya civilisation",
    "Hanseatic League",
    "Venetian Republic",
    "Carolingian Empire",
    "Khmer Empire",
    "Mali Empire",
    "Songhai Empire",
    "Persian Empire",
    "Qing dynasty",
    "Han dynasty",
    "Gupta Empire",
    "Maurya Empire",
    "Zulu Kingdom",
    "Kingdom of Aksum",
    "Habsburg monarchy",
    "Holy Roman Empire",
    "Viking Age",
    "Bronze Age",
    "Iron Age",
]


def conversation(topic: str, reply: str) -> tuple[Message, ...]:
    return (Message("user", f"Tell me about the {topic}."), Message("assistant", reply))


def test_a_generic_follow_up_stored_in_many_conversations_recalls_the_right_one(
    make_cache: Callable[..., Cache],
) -> None:
    """Recall by query + context: the same "when did it begin" in 28 conversations does not
    crowd the right one out of the top 5, even with the reply generated afresh."""
    cache = make_cache(top_k=5, lookup_timeout=None)  # recall is tested here, not the deadline
    cache.insert_many(
        [
            (Request("when did it begin", history=conversation(t, f"The {t} was vast.")), t)
            for t in TOPICS
        ]
    )
    for topic in ("Mali Empire", "Iron Age", "Roman Empire"):
        asked = conversation(topic, f"The {topic} was very vast.")  # the model said it anew
        hit = cache.lookup(Request("when did it begin", history=asked))
        assert hit is not None and hit.answer == topic and hit.kind == "semantic"


def test_the_query_part_of_a_recall_vector_is_exact(make_cache: Callable[..., Cache]) -> None:
    cache = make_cache()
    q, c = cache.embedder.embed(["when did it begin", "Tell me about the Roman Empire."])
    derived = query_part(recall_vector(q, c), c)
    assert float(derived @ q) > 0.9999
    assert recall_vector(q, None) is q and query_part(q, None) is q


def test_only_self_contained_questions_may_skip_the_history() -> None:
    assert _self_contained("How do I reset the password of my home router?")
    for dependent in (
        "how long will the new setting take to apply",  # a relative word points back
        "can I still return it",
        "am I entitled to compensation",  # too short to name what it is about
        "And what is the refund policy for online orders?",
        "如何重置我的路由器密码？这个问题很长很长",  # other scripts: never judged standalone
    ):
        assert not _self_contained(dependent), dependent


def test_a_standalone_question_skips_unrelated_history_at_the_short_threshold(
    make_cache: Callable[..., Cache],
) -> None:
    cache = make_cache(lookup_timeout=None)
    cache.insert(Request("How do I export my contacts from the email app?"), "Settings > Export")
    chatter = (Message("user", "Tell me a joke."), Message("assistant", "Knock knock."))
    hit = cache.lookup(Request("How do I export my contacts from the email app?", history=chatter))
    assert hit is not None and hit.answer == "Settings > Export"
    follow = Request("how do I export them from the email app", history=chatter)
    assert cache.lookup(follow) is None, "points back: the history matters"


def test_a_detail_added_in_an_extra_turn_blocks_the_hit(make_cache: Callable[..., Cache]) -> None:
    """Small talk added on one side is harmless; a turn that adds a conflicting detail is not."""
    cache = make_cache(lookup_timeout=None)
    base = (
        Message("user", "My CSV file is about 2 GB and reading it is slow."),
        Message("assistant", "Read it in chunks with pandas."),
    )
    cache.insert(Request("do I need chunks for it", history=base), "yes")
    chatter = (*base, Message("user", "Thanks!"), Message("assistant", "You're welcome!"))
    hit = cache.lookup(Request("do I need chunks for it", history=chatter))
    assert hit is not None and hit.answer == "yes"
    bigger = (*base, Message("user", "Actually it is 20 GB."), Message("assistant", "I see."))
    assert cache.lookup(Request("do I need chunks for it", history=bigger)) is None


def test_small_talk_is_checked_for_details_only() -> None:
    """A turn only one side has is compared with the whole other conversation, whose many words
    hold the antonym of almost anything: only named details (numbers, names, codes) count."""
    stored = [
        "My team keeps losing finals, and reading the 2 GB CSV of its stats is very slow.",
        "Sorry about the final. Read the CSV in chunks.",
    ]
    chatter = ["Wow, so much faster! Maybe we win next year.", "Fingers crossed!"]
    guard = Guard()
    assert _context_conflict(guard, [*stored, *chatter], stored) is None
    assert _context_conflict(guard, stored, [*stored, *chatter]) is None
    detail = ["Actually the file is 20 GB.", "Noted."]
    assert _context_conflict(guard, [*stored, *detail], stored) is not None


def test_a_conversation_with_the_same_replies_answers_its_follow_ups(
    make_cache: Callable[..., Cache],
) -> None:
    """Two stored conversations on one subject: a follow-up after the very replies of one is
    answered from that one, even when the other's follow-up is worded more like it."""
    cache = make_cache(lookup_timeout=None)
    asked = "Tell me about photosynthesis in plants."
    replies = {
        "x": "Plants turn light, water and carbon dioxide into sugar and release oxygen.",
        "y": "Plants use light to turn water and carbon dioxide into sugar, giving off oxygen.",
    }
    history = {k: (Message("user", asked), Message("assistant", r)) for k, r in replies.items()}
    cache.insert(Request("which gas do plants release", history=history["x"]), "x")
    cache.insert(
        Request("which gas do plants give off during this process", history=history["y"]), "y"
    )
    hit = cache.lookup(Request("which gas do plants give off", history=history["x"]))
    assert hit is not None and hit.answer == "x"
    hit = cache.lookup(Request("which gas do plants give off", history=history["y"]))
    assert hit is not None and hit.answer == "y"


def test_a_question_about_the_user_after_they_spoke_of_themselves_is_no_standalone(
    make_cache: Callable[..., Cache],
) -> None:
    """A self-contained question about "I" after "I'm pregnant." was judged standalone and
    served the generic answer (and the personal answer went to other users the other way)."""
    cache = make_cache(lookup_timeout=None)
    question = "How much caffeine can I safely drink every single day?"
    cache.insert(Request(question), "Up to 400 mg a day is safe for most adults.")
    told = (Message("user", "I'm pregnant."), Message("assistant", "Congratulations!"))
    assert cache.lookup(Request(question, history=told)) is None
    cache.insert(Request(question, history=told), "Up to 200 mg a day in pregnancy.")
    hit = cache.lookup(Request(question))
    assert hit is not None and hit.answer == "Up to 400 mg a day is safe for most adults."
    cache.clear()
    cache.insert(Request(question, history=told), "Up to 200 mg a day in pregnancy.")
    assert cache.lookup(Request(question)) is None, "the personal answer stays with its context"
    chatter = (Message("user", "Tell me a joke."), Message("assistant", "Knock knock."))
    cache.insert(Request(question), "Up to 400 mg a day is safe for most adults.")
    hit = cache.lookup(Request(question, history=chatter))  # nothing said about the user
    assert hit is not None and hit.answer == "Up to 400 mg a day is safe for most adults."
    steps = "How do I export my contacts from the email app?"
    cache.insert(Request(steps), "python -m venv .venv")
    trip = (
        Message("user", "I'm planning a trip to Japan in April."),
        Message("assistant", "Nice!"),
    )
    hit = cache.lookup(Request(steps, history=trip))  # asks for steps, not what the user may do
    assert hit is not None and hit.answer == "python -m venv .venv"


def test_tool_results_must_be_the_same_data(make_cache: Callable[..., Cache]) -> None:
    """A follow-up after a tool returned "Heavy rain all day" was served the answer stored
    after "Sunny and dry all day": tool output is data, not chat that may be reworded."""
    cache = make_cache(lookup_timeout=None)

    def after(weather: str) -> Request:
        return Request.from_messages(
            [
                {"role": "user", "content": "What is the weather in Oslo today?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "w1",
                            "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "w1", "content": weather},
                {"role": "user", "content": "Should I bring an umbrella?"},
            ]
        )

    cache.insert(after("Sunny and dry all day, 18 degrees."), "No umbrella needed.")
    assert cache.lookup(after("Heavy rain all day, 18 degrees.")) is None
    hit = cache.lookup(after("Sunny and dry all day, 18 degrees."))
    assert hit is not None and hit.answer == "No umbrella needed."


def test_tool_results_also_bind_a_question_that_looks_standalone(
    make_cache: Callable[..., Cache],
) -> None:
    """The tool-results rule ran only for follow-ups: a self-contained question after a tool
    call took the standalone path and the answer stored after other tool output."""
    cache = make_cache(lookup_timeout=None)
    question = "Can I watch movies in 4K resolution on a smart TV at home?"

    def after(plan: str) -> Request:
        return Request.from_messages(
            [
                {"role": "user", "content": "Check my account please."},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [{"id": "a", "function": {"name": "account"}}],
                },
                {"role": "tool", "tool_call_id": "a", "content": f'{{"plan": "{plan}"}}'},
                {"role": "user", "content": question},
            ]
        )

    cache.insert(after("Premium"), "Yes, Premium includes 4K.")
    assert cache.lookup(after("Basic")) is None
    assert cache.lookup(Request(question)) is None  # no tool said anything: not the same either
    hit = cache.lookup(after("Premium"))
    assert hit is not None and hit.answer == "Yes, Premium includes 4K."
