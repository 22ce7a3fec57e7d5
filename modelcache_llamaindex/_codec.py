"""Answers as JSON and back: ChatResponse / CompletionResponse, hit marks and stream replay.

Nothing is pickled: a chat answer is the message's JSON dump (role, blocks with tool calls,
additional_kwargs) plus its plain role and content for other front ends; a completion is text.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol, TypeVar

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    MessageRole,
    TextBlock,
)

from modelcache import Hit

R = TypeVar("R", ChatResponse, CompletionResponse)
_PIECE = re.compile(r"\S+\s*|\s+")


def hit_marks(hit: Hit) -> dict[str, Any]:
    """What a hit adds to the response's ``additional_kwargs`` (never to the message's).

    Message kwargs travel back to providers in later turns, so marks there would break them.
    """
    return {
        "cache_hit": True,
        "cache_similarity": hit.similarity,
        "cache_kind": hit.kind,
        "cache_entry_id": hit.entry_id,
    }


def _pieces(text: str) -> list[str]:
    """Word-sized pieces whose concatenation is exactly ``text``."""
    return _PIECE.findall(text)


class Codec(Protocol[R]):
    """Converts one response type to a stored answer, back, and into replay chunks."""

    def to_answer(self, response: R) -> Any | None:
        """The JSON answer to store, or None when there is nothing worth caching."""

    def from_answer(self, answer: Any, hit: Hit) -> R:
        """The response for a stored answer, marked as a hit; ValueError if malformed."""

    def chunks(self, response: R) -> list[R]:
        """A hit replayed as stream chunks with cumulative text and deltas."""


class ChatCodec:
    """Codec for chat responses."""

    def to_answer(self, response: ChatResponse) -> Any | None:
        message = response.message
        if not message.content and all(isinstance(b, TextBlock) for b in message.blocks):
            return None
        answer = {
            "kind": "chat",
            "role": getattr(message.role, "value", message.role),
            "content": message.content,
            "message": message.model_dump(mode="json"),
        }
        json.dumps(answer)  # fail here, not inside the engine, if a provider object slipped in
        return answer

    def from_answer(self, answer: Any, hit: Hit) -> ChatResponse:
        if isinstance(answer, str):
            message = ChatMessage(role=MessageRole.ASSISTANT, content=answer)
        elif isinstance(answer, dict) and isinstance(answer.get("message"), dict):
            message = ChatMessage.model_validate(answer["message"])
        elif isinstance(answer, dict) and isinstance(answer.get("content"), str):
            message = ChatMessage(role=answer.get("role", "assistant"), content=answer["content"])
        else:
            raise ValueError(f"not a chat answer: {type(answer).__name__}")
        return ChatResponse(message=message, additional_kwargs=hit_marks(hit))

    def chunks(self, response: ChatResponse) -> list[ChatResponse]:
        pieces = _pieces(response.message.content or "")
        out: list[ChatResponse] = []
        text = ""
        for piece in pieces[:-1]:
            text += piece
            message = ChatMessage(role=response.message.role, content=text)
            out.append(
                ChatResponse(
                    message=message, delta=piece, additional_kwargs=dict(response.additional_kwargs)
                )
            )
        last = pieces[-1] if pieces else ""
        out.append(response.model_copy(update={"delta": last}))
        return out


class CompletionCodec:
    """Codec for completion responses."""

    def to_answer(self, response: CompletionResponse) -> Any | None:
        return {"kind": "complete", "text": response.text} if response.text else None

    def from_answer(self, answer: Any, hit: Hit) -> CompletionResponse:
        if isinstance(answer, str):
            text = answer
        elif isinstance(answer, dict) and isinstance(answer.get("text"), str):
            text = answer["text"]
        elif isinstance(answer, dict) and isinstance(answer.get("content"), str):
            text = answer["content"]
        else:
            raise ValueError(f"not a completion answer: {type(answer).__name__}")
        return CompletionResponse(text=text, additional_kwargs=hit_marks(hit))

    def chunks(self, response: CompletionResponse) -> list[CompletionResponse]:
        out: list[CompletionResponse] = []
        text = ""
        for piece in _pieces(response.text) or [""]:
            text += piece
            out.append(
                CompletionResponse(
                    text=text, delta=piece, additional_kwargs=dict(response.additional_kwargs)
                )
            )
        return out


CHAT = ChatCodec()
COMPLETION = CompletionCodec()
