"""``OllamaChat``: chat with a model served by Ollama and record every turn in the memory store.

Recording rule: the user's turn is stored *before* the request is sent, in its own transaction, and the
assistant's turn once its answer has streamed in completely. So a failed request (server down, an error
mid-stream, Ctrl-C) never loses what the user typed: the turn stays in the store and in ``history``,
the error says so, and ``chat()`` without text asks the model again. A partial answer is not stored;
the session is marked failed (``orchestrator sessions`` shows it) until an answer is recorded.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

from orchestrator.conversations import MalformedError, Message, ToolCall
from orchestrator.errors import OllamaError, OrchestratorError, UsageError
from orchestrator.memory import DEFAULT_DB, MemoryStore, new_session_id
from orchestrator.ollama.client import OllamaClient

log = logging.getLogger(__name__)

# Ollama's ``think``: a bool, or one of these levels (api/types.go ThinkValue; reference/ollama-api.md).
THINK_LEVELS = ("high", "medium", "low")

Callback = Callable[[str], object]


def check_think(think: bool | str | None) -> bool | str | None:
    """``think`` as Ollama takes it: None (the model decides), True, False or a level; else a UsageError."""
    if think is None or isinstance(think, bool) or think in THINK_LEVELS:
        return think
    raise UsageError(f"think must be true, false, 'high', 'medium' or 'low', not {think!r}")


class OllamaChat:
    """A chat session with one Ollama model, recorded turn by turn into a ``MemoryStore``.

    Args:
        model: the Ollama model (``qwen3:4b``); may be left out when resuming a session that names one.
        session_id: resume this session (its history is loaded) or start it under this id; a new id
            is generated when left out.
        host: the Ollama server (``--host`` / ``OLLAMA_HOST`` rules, see ``resolve_host``).
        db: a ``MemoryStore``, or the path of its database (default ``data/ollama_memory.db``).
        system: a system prompt, recorded as the first turn of a new session.
        think: Ollama's ``think`` (True, False, "low", "medium", "high"); None lets the model decide.
        tools: tool definitions offered to the model (Ollama's ``tools``), stored with the session.
        options: Ollama model options (``temperature``, ``num_ctx``, ...).
        client: an ``OllamaClient`` to use instead of one built from ``host``.
    """

    def __init__(
        self,
        model: str | None = None,
        session_id: str | None = None,
        host: str | None = None,
        db: str | os.PathLike[str] | MemoryStore | None = None,
        system: str | None = None,
        think: bool | str | None = None,
        tools: list[dict[str, Any]] | None = None,
        options: dict[str, Any] | None = None,
        *,
        title: str | None = None,
        client: OllamaClient | None = None,
    ):
        check_think(think)
        self._owns_store = not isinstance(db, MemoryStore)
        self.store = db if isinstance(db, MemoryStore) else MemoryStore(DEFAULT_DB if db is None else db)
        self._owns_client = client is None
        self.client = client or OllamaClient(host)
        self.think, self.tools, self.options, self.title = think, tools, options, title
        self.last_response: dict[str, Any] | None = None
        self._pending: list[Message] = []  # turns not stored yet: a new session's system prompt
        self._session_saved = False

        info = self.store.session(session_id) if session_id is not None else None
        self.session_id = session_id if session_id is not None else new_session_id()
        self.resumed = info is not None
        self.history: list[Message] = self.store.messages(self.session_id) if info else []
        self.model = model or (info.model if info else None)
        if not self.model:
            self.close()
            raise UsageError(f"no model for session {self.session_id!r}: pass a model (--model qwen3:4b)")
        if system:
            self._set_system(system)

    def __repr__(self) -> str:
        return f"OllamaChat(model={self.model!r}, session_id={self.session_id!r}, turns={len(self.history)})"

    def __enter__(self) -> OllamaChat:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_client:
            self.client.close()
        if self._owns_store:
            self.store.close()

    def _set_system(self, system: str) -> None:
        if not self.history:
            message = Message("system", system)
            self.history.append(message)
            self._pending.append(message)
            return
        current = "\n\n".join(m.content for m in self.history if m.role == "system")
        if current != system:
            log.warning("session %r already has its history; the new system prompt is ignored", self.session_id)

    def _record(self, messages: list[Message]) -> None:
        batch = [*self._pending, *messages]
        if not self._session_saved:
            title = self.title or _title_from(batch)
            self.store.create_session(self.session_id, model=self.model, title=title, tools=self.tools)
            self._session_saved = True
        self.store.add_messages(self.session_id, batch, model=self.model)
        self._pending = []

    def chat(
        self, text: str | None = None, *, on_content: Callback | None = None, on_thinking: Callback | None = None
    ) -> Message:
        """Send ``text`` as the next user turn (or, with None, answer the history as it stands: after
        tool results or a failed request) and return the assistant's turn, streaming its deltas to
        ``on_content`` and ``on_thinking`` as they arrive. Both turns are recorded.
        """
        if text is not None:
            user = Message("user", text)
            self._record([user])
            self.history.append(user)
        elif not self.history or self.history[-1].role not in ("user", "tool"):
            raise UsageError("nothing to answer: the last turn is not a user or tool turn; pass text")
        try:
            reply = self._stream(on_content, on_thinking)
        except OllamaError as exc:
            self._mark_failed(str(exc))
            raise OllamaError(
                f"{exc} (the last turn is saved in session {self.session_id!r} and gets its answer on retry)"
            ) from exc
        except BaseException:  # Ctrl-C, a failing callback
            self._mark_failed("interrupted")
            raise
        self._record([reply])
        self.history.append(reply)
        return reply

    def _mark_failed(self, reason: str) -> None:
        try:
            self.store.mark_failed(self.session_id, reason[:300])
        except OrchestratorError as exc:  # the request's own error is the one to report
            log.warning("could not mark session %r as failed: %s", self.session_id, exc)

    def _stream(self, on_content: Callback | None, on_thinking: Callback | None) -> Message:
        content: list[str] = []
        thinking: list[str] = []
        calls: list[ToolCall] = []
        final: dict[str, Any] | None = None
        chunks = self.client.chat(
            self.model, self.history, tools=self.tools or None, think=self.think, options=self.options
        )
        try:
            for chunk in chunks:
                message = chunk.get("message") or {}
                if message.get("thinking"):
                    thinking.append(message["thinking"])
                    if on_thinking:
                        on_thinking(message["thinking"])
                if message.get("content"):
                    content.append(message["content"])
                    if on_content:
                        on_content(message["content"])
                calls.extend(self._tool_calls(message))
                if chunk.get("done"):
                    final = chunk
        finally:
            chunks.close()  # on Ctrl-C or a callback error: hang up now, so the server stops generating
        if final is None:
            raise OllamaError(f"the answer from Ollama at {self.client.base_url} ended before it was done")
        if final.get("done_reason") == "length":
            log.warning("the answer was cut at the length limit (num_predict / num_ctx)")
        self.last_response = final
        return Message("assistant", "".join(content), thinking="".join(thinking) or None, tool_calls=calls)

    def _tool_calls(self, message: dict[str, Any]) -> list[ToolCall]:
        try:
            calls = message.get("tool_calls") or []
            if not isinstance(calls, list):
                raise MalformedError("tool_calls is not a list")
            return [ToolCall.from_ollama(call) for call in calls]
        except MalformedError as exc:
            raise OllamaError(
                f"Ollama at {self.client.base_url} sent a tool call that cannot be recorded ({exc})"
            ) from None

    def add_tool_result(self, name: str, content: Any) -> Message:
        """Record the result of tool ``name`` as a ``tool`` turn; ``chat()`` without text then goes on."""
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        message = Message("tool", text, tool_name=name)
        self._record([message])
        self.history.append(message)
        return message


def _title_from(messages: list[Message]) -> str | None:
    """The first line of the first user turn, cut to 60 characters."""
    for message in messages:
        if message.role == "user" and message.content.strip():
            line = message.content.strip().splitlines()[0]
            return line if len(line) <= 60 else line[:59] + "…"
    return None
