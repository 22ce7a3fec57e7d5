"""A LangChain cache exports and imports again, into a new cache or into itself, with the
digests of its conversations' message fields (parallel tool calls, names, failed tool
results): every entry keeps its id and still answers its own prompt only."""

from __future__ import annotations

import json
from pathlib import Path

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from typer.testing import CliRunner, Result

from modelcache import Cache, CacheConfig
from modelcache.cli import app
from modelcache_langchain import ModelCache


def cli(path: Path, *args: str) -> Result:
    result = CliRunner().invoke(app, ["--path", str(path), "--embedder", "fake", *args])
    assert result.exit_code == 0, result.output
    return result


def conversations() -> dict[str, list[BaseMessage]]:
    """Prompts whose earlier turns have fields that key them but are not text."""
    ask = HumanMessage("Which is warmer, Paris or London?")
    calls = AIMessage(
        "",
        tool_calls=[
            {"name": "weather", "args": {"c": "Paris"}, "id": "a"},
            {"name": "weather", "args": {"c": "London"}, "id": "b"},
        ],
    )
    return {
        "parallel": [
            ask,
            calls,
            ToolMessage("21C", tool_call_id="a"),
            ToolMessage("9C", tool_call_id="b"),
            HumanMessage("So which one?"),
        ],
        "swapped": [
            ask,
            calls,
            ToolMessage("21C", tool_call_id="b"),
            ToolMessage("9C", tool_call_id="a"),
            HumanMessage("So which one?"),
        ],
        "named": [
            HumanMessage("I booked the room.", name="alice"),
            AIMessage("Noted."),
            HumanMessage("Who booked the room?"),
        ],
        "failed": [
            ask,
            AIMessage("", tool_calls=[{"name": "weather", "args": {"c": "Paris"}, "id": "c"}]),
            ToolMessage("timeout", tool_call_id="c", status="error"),
        ],
    }


def test_export_and_import_keep_message_fields(tmp_path: Path) -> None:
    source, copy = tmp_path / "source", tmp_path / "copy"
    prompts = conversations()
    with Cache(CacheConfig(path=str(source), embedder="fake")) as engine:
        replies = [AIMessage(f"answer {name}") for name in prompts]
        model = FakeMessagesListChatModel(responses=replies, cache=ModelCache(engine))
        for name, messages in prompts.items():
            assert model.invoke(messages).content == f"answer {name}"
    out = tmp_path / "export.jsonl"
    cli(source, "export", "-o", str(out))
    exported = sorted(json.loads(line)["id"] for line in out.read_text("utf-8").splitlines())
    assert len(exported) == len(prompts)

    assert json.loads(cli(copy, "import", str(out), "--json").stdout)["imported"] == len(prompts)
    assert json.loads(cli(source, "import", str(out), "--json").stdout)["skipped"] == len(prompts)
    again = tmp_path / "again.jsonl"
    cli(copy, "export", "-o", str(again))
    assert sorted(json.loads(line)["id"] for line in again.read_text("utf-8").splitlines()) == (
        exported
    )
    with Cache(CacheConfig(path=str(copy), embedder="fake")) as engine:
        model = FakeMessagesListChatModel(responses=[AIMessage("model")], cache=ModelCache(engine))
        for name, messages in prompts.items():
            reply = model.invoke(messages)
            assert (reply.content, reply.response_metadata["cache_kind"]) == (
                f"answer {name}",
                "exact",
            )
