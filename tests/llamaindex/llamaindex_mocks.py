"""Mock models for the LlamaIndex adapter tests (a helper module, not a test file)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM


class RecordingLLM(CustomLLM):
    """Completion mock whose answers number its calls (a hit repeats an old number).

    ``delay`` makes it slow, ``fail_after`` breaks its stream after that many chunks, ``silent``
    answers nothing; they and the call log are excluded fields, outside the cache partition.
    """

    model: str = "recording-1"
    temperature: float = 0.1
    chat_model: bool = False
    api_key: str = "sk-test-secret-123"
    delay: float = Field(default=0.0, exclude=True)
    fail_after: int | None = Field(default=None, exclude=True)
    silent: bool = Field(default=False, exclude=True)
    calls: list[str] = Field(default_factory=list, exclude=True)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model, is_chat_model=self.chat_model)

    def _answer(self, prompt: str) -> str:
        self.calls.append(prompt)
        time.sleep(self.delay)
        if self.silent:
            return ""
        return f"Answer {len(self.calls)}: forty two, said the model about {prompt[-30:]!r}."

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._answer(prompt))

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        text = self._answer(prompt)

        def gen() -> CompletionResponseGen:
            sofar = ""
            for i, piece in enumerate(re.findall(r"\S+\s*", text)):
                if self.fail_after is not None and i >= self.fail_after:
                    raise ConnectionError("stream broke")
                sofar += piece
                yield CompletionResponse(text=sofar, delta=piece)

        return gen()


class TemplatingLLM(RecordingLLM):
    """A local model's shape (LlamaCPP, HuggingFaceLLM): it formats the prompt itself, with
    ``query_wrapper_prompt`` and ``completion_to_prompt``, and records what it was sent."""

    generate_kwargs: dict[str, Any] = Field(default_factory=dict)

    def _answer(self, prompt: str) -> str:
        return super()._answer(prompt) + f" (sent {prompt!r})"

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if not formatted:
            if self.query_wrapper_prompt is not None:
                prompt = self.query_wrapper_prompt.format(query_str=prompt)
            prompt = self.completion_to_prompt(prompt)
        return CompletionResponse(text=self._answer(prompt))


def french_prompt(prompt: str) -> str:
    """A module-level prompt format; the set constant has a hash-seed-dependent order."""
    if prompt.strip().lower() in {"bonjour", "salut", "coucou"}:
        return prompt
    return f"Answer in French. {prompt}"


def prompt_in(language: str) -> Callable[[str], str]:
    """Prompt formats that share their code and differ only in the captured language."""
    return lambda prompt: f"Answer in {language}. {prompt}"


class CountingFunctionLLM(MockFunctionCallingLLM):
    """LlamaIndex's function-calling mock, counting the calls that reach it."""

    calls: int = Field(default=0, exclude=True)

    def _get_response_generator(self) -> Callable[..., Any]:
        inner = super()._get_response_generator()

        def generate(messages: Sequence[ChatMessage], **kwargs: Any) -> Any:
            self.calls += 1
            return inner(messages, **kwargs)

        return generate


class AddressedFormat:
    """A prompt format object whose repr holds its memory address in jinja's form
    (``<AddressedFormat memory:7f…>``), so a key taken from the repr differs per process."""

    __slots__ = ("template",)

    def __init__(self, template: str) -> None:
        self.template = template

    def __call__(self, prompt: str) -> str:
        return self.template.format(prompt)

    def __repr__(self) -> str:
        return f"<AddressedFormat memory:{id(self):x}>"


FRENCH_FORMAT = AddressedFormat("Answer in French. {}")
