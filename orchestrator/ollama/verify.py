"""Checks after ``create``: ``show`` must report what was sent, and a short chat must answer and stop."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from orchestrator.errors import StageError
from orchestrator.ollama.results import Emit, RegisterProgress, RegisterResult

if TYPE_CHECKING:
    from orchestrator.ollama.client import OllamaClient
    from orchestrator.ollama.register import RegisterPlan

VERIFY_PROMPT = "Say hello in one short sentence."
VERIFY_NUM_PREDICT = 512


def verify(client: OllamaClient, plan: RegisterPlan, result: RegisterResult, emit: Emit, chat: bool) -> None:
    """Fill ``result`` from ``show`` (and the chat) and raise StageError for anything that is not as sent."""
    emit(RegisterProgress("verify", f"checking {plan.name} with /api/show"))
    shown = client.show(plan.name)
    result.details = dict(shown.get("details") or {})
    result.capabilities = list(shown.get("capabilities") or [])
    result.parameters = parse_show_parameters(str(shown.get("parameters") or ""))
    where = f"{plan.name} on {client.base_url}"
    _expect(where, "family", plan.expected_family, result.details.get("family"))
    _expect(where, "quantization level", plan.expected_quantization, result.details.get("quantization_level"))
    if shown.get("template") != plan.modelfile.template:
        raise StageError(f"{where} does not use the TEMPLATE sent: Ollama kept another one; run `{plan.command}`")
    if plan.modelfile.system is not None:
        _expect(where, "system prompt", plan.modelfile.system, shown.get("system"))
    for key, wanted in plan.modelfile.parameters.items():
        got = result.parameters.get(key)
        same = set(wanted) <= set(got or []) if key == "stop" else _same_number(wanted, got)
        if not same:
            raise StageError(f"{where} has parameter {key} = {got!r}, expected {wanted!r}; run `{plan.command}`")
    needed = {"completion", "tools"} | ({"thinking"} if plan.thinks else set())
    if not needed <= set(result.capabilities) or (not plan.thinks and "thinking" in result.capabilities):
        raise StageError(
            f"{where} reports capabilities {sorted(result.capabilities)}, expected {sorted(needed)}: Ollama is not "
            "using the TEMPLATE (a GGUF chat template may have won); check the GGUF's tokenizer.chat_template"
        )
    if chat:
        _verify_chat(client, plan, result, emit)


def _expect(where: str, what: str, wanted: Any, got: Any) -> None:
    if wanted is not None and got != wanted:
        raise StageError(f"{where} reports {what} {got!r}, expected {wanted!r}; check the GGUF and register again")


def _same_number(wanted: Any, got: Any) -> bool:
    try:
        return abs(float(wanted) - float(got)) < 1e-6
    except (TypeError, ValueError):
        return wanted == got


def _verify_chat(client: OllamaClient, plan: RegisterPlan, result: RegisterResult, emit: Emit) -> None:
    emit(RegisterProgress("verify", f"asking {plan.name}: {VERIFY_PROMPT}"))
    content, final = [], {}
    messages = [{"role": "user", "content": VERIFY_PROMPT}]
    for chunk in client.chat(plan.name, messages, think=False, options={"num_predict": VERIFY_NUM_PREDICT}):
        content.append((chunk.get("message") or {}).get("content") or "")
        final = chunk
    result.answer = "".join(content).strip()
    result.done_reason = str(final.get("done_reason") or "")
    where = f"{plan.name} on {client.base_url}"
    if not result.answer:
        raise StageError(f"{where} answered nothing to a short chat; check the training data and the TEMPLATE")
    if result.done_reason != "stop":
        raise StageError(
            f"{where} did not stop (done_reason {result.done_reason or 'missing'} after {VERIFY_NUM_PREDICT} tokens): "
            "check the stop parameters and that the TEMPLATE matches the training format"
        )


def parse_show_parameters(text: str) -> dict[str, Any]:
    """``show``'s ``parameters`` text (``name value`` lines, values in Go syntax) as a dict; ``stop`` is a list."""
    params: dict[str, Any] = {}
    for line in text.splitlines():
        key, _, raw = line.strip().partition(" ")
        raw = raw.strip()
        if not key:
            continue
        value: Any
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw.strip('"')
        if key == "stop":
            params.setdefault("stop", []).append(value)
        else:
            params[key] = value
    return params
