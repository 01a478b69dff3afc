"""Jinja chat templates that reproduce LLaMA-Factory's training format, and the tool form both
serving templates can print.

The GGUF converter writes ``jinja_chat_template(...)`` into the GGUF as ``tokenizer.chat_template``.
Rendered by transformers' ``apply_chat_template`` (messages with ``role``, ``content``,
``reasoning_content`` or ``thinking``, ``tool_calls``; ``tools``; ``add_generation_prompt``; the
``enable_thinking`` keyword) it gives exactly the text LLaMA-Factory's ``qwen3`` / ``qwen3_nothink``
template trained on (see ``orchestrator.ollama.templates`` for that format).

Ollama compares the GGUF's Jinja template with the Modelfile TEMPLATE by the capabilities it reads from
their text, and prefers the one that shows more: a Jinja template shows ``tools`` when it mentions
"tools" and ``thinking`` when it holds both literal think tags. These templates show exactly what the Go
templates show; the formats trained without thinking build their empty think block from pieces, so
they do not claim a thinking mode the model was not trained for.

``canonical_tools`` / ``canonical_arguments`` put tool definitions and call arguments into the form
Ollama can hand to a TEMPLATE (known JSON-schema keys only, properties and argument keys sorted, in the
key order the Go templates print). Training data written in that form is rendered by the Ollama
TEMPLATE character for character.
"""

from __future__ import annotations

from typing import Any

from orchestrator.errors import UsageError

_SYSTEM = r"""{%- set ns = namespace(system='', seen=false) %}
{%- for message in messages %}
{%- if message.role == 'system' %}
{%- set ns.system = ns.system ~ ('\n\n' if ns.seen else '') ~ message.content %}
{%- set ns.seen = true %}
{%- endif %}
{%- endfor %}
{%- if ns.system or tools %}
{{- '<|im_start|>system\n' ~ ns.system }}
{%- if tools %}
{{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
{%- for tool in tools %}
{%- if tool.type == 'function' %}{{- '\n' ~ (tool | tojson) }}
{%- else %}{{- '\n' ~ ({'type': 'function', 'function': tool} | tojson) }}{%- endif %}
{%- endfor %}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments within ' }}
{{- '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}' }}
{{- '\n</tool_call>' }}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- endif %}
"""

_TURNS = r"""{%- for message in messages %}
{%- if message.role == 'user' %}
{{- '<|im_start|>user\n' ~ message.content ~ '<|im_end|>\n' }}
{%- elif message.role == "tool" %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
{{- '\n<tool_response>\n' ~ message.content ~ '\n</tool_response>' }}
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
{%- elif message.role == 'assistant' %}
{%- set content = message.content if message.content is string else '' %}
@SPLIT@
{%- if message.tool_calls %}{%- set content = content | trim %}{%- endif %}
{{- '<|im_start|>assistant\n' }}@THINK@{{- content }}
{%- for tool_call in message.tool_calls or [] %}
{%- set call = tool_call.function if tool_call.function is defined else tool_call %}
{%- if content or not loop.first %}{{- '\n' }}{%- endif %}
{{- '<tool_call>\n{"name": ' ~ (call.name | tojson) ~ ', "arguments": ' }}
{%- if call.arguments is string %}{{- call.arguments }}{%- else %}{{- call.arguments | tojson }}{%- endif %}
{{- '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\n' }}@PROMPT@
{%- endif %}
"""

# qwen3 with enable_thinking: every assistant turn carries its chain of thought (empty when it has none).
_THINKING_SPLIT = r"""{%- set reasoning = '' %}
{%- if message.reasoning_content is string %}{%- set reasoning = message.reasoning_content %}
{%- elif message.thinking is string %}{%- set reasoning = message.thinking %}
{%- elif '</think>' in content %}
{%- set reasoning = content.split('</think>')[0].split('<think>')[-1] %}
{%- set content = content.split('</think>')[-1].lstrip() %}
{%- endif %}"""
_THINKING_TURN = r"""{{- '<think>\n' ~ (reasoning | trim) ~ '\n</think>\n\n' }}"""
_THINKING_PROMPT = r"""{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}
{%- endif %}"""

# qwen3 without thinking: chains of thought dropped, the empty block in every prompt. The tags are
# built from pieces so that the text holds no literal think tag (see the module docstring).
_EMPTY_BLOCK = r"""'<' ~ 'think>\n\n</' ~ 'think>\n\n'"""
_NO_THINKING_SPLIT = r"""{%- set close_tag = '</' ~ 'think>' %}
{%- if close_tag in content %}{%- set content = content.split(close_tag)[-1].lstrip() %}{%- endif %}"""
_NO_THINKING_TURN = "{{- " + _EMPTY_BLOCK + " }}"


def jinja_chat_template(template: str, enable_thinking: bool) -> str:
    """The Jinja chat template for LLaMA-Factory's ``template`` (``qwen3`` or ``qwen3_nothink``).

    Args:
        template: LLaMA-Factory's template name, as the recipe's ``model.resolved_template``.
        enable_thinking: LLaMA-Factory's ``enable_thinking`` (only ``qwen3`` reads it).

    With ``qwen3`` and thinking on, ``apply_chat_template(..., enable_thinking=False)`` ends the
    generation prompt with the empty think block, as Qwen's own template does.
    """
    if template == "qwen3" and enable_thinking:
        split, turn, prompt = _THINKING_SPLIT, _THINKING_TURN, _THINKING_PROMPT
    elif template == "qwen3":
        split, turn, prompt = _NO_THINKING_SPLIT, _NO_THINKING_TURN, _NO_THINKING_TURN
    elif template == "qwen3_nothink":
        split, turn, prompt = "", "", ""
    else:
        raise UsageError(f"no chat template for LLaMA-Factory template '{template}'; use qwen3 or qwen3_nothink")
    turns = _TURNS.replace("@SPLIT@", split).replace("@THINK@", turn).replace("@PROMPT@", prompt)
    return _SYSTEM + turns


# -- the tool form Ollama can print ----------------------------------------------------------------

_PROPERTY_KEYS = ("type", "description", "enum", "items", "anyOf", "properties", "required")


def canonical_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Tool definitions as Ollama hands them to a TEMPLATE, in the key order our templates print.

    Each becomes ``{"type", "function": {"name", "description"?, "parameters"?: {"type", "properties",
    "required"?, "items"?, "$defs"?}}}``; a property keeps ``type``, ``description``, ``enum``, ``items``,
    ``anyOf``, ``properties`` and ``required`` (Ollama drops other keys such as ``default``), and
    properties are sorted by name. A bare function (``{"name": ...}``) is wrapped as LLaMA-Factory does.
    A definition that is not that shape (a property that is not an object...) raises ``MalformedError``.
    """
    out = []
    for tool in tools or []:
        tool = _object(tool, "a tool")
        function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        fn: dict[str, Any] = {"name": function.get("name", "")}
        if function.get("description"):
            fn["description"] = function["description"]
        params = _object(function.get("parameters") or {}, "a tool's parameters")
        if params.get("type") or params.get("properties"):
            fn["parameters"] = _canonical_parameters(params)
        kind = tool.get("type") if "function" in tool and tool.get("type") else "function"
        out.append({"type": kind, "function": fn})
    return out


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        from orchestrator.conversations import MalformedError, json_type

        raise MalformedError(f"{what} is {json_type(value)}, not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        from orchestrator.conversations import MalformedError, json_type

        raise MalformedError(f"{what} is {json_type(value)}, not a list")
    return value


def _canonical_parameters(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": params.get("type") or "", "properties": _canonical_properties(params)}
    if params.get("required"):
        out["required"] = list(_list(params["required"], "a tool's required"))
    if params.get("items"):
        out["items"] = canonical_arguments(params["items"])
    if params.get("$defs"):
        out["$defs"] = canonical_arguments(params["$defs"])
    return out


def _canonical_properties(schema: dict[str, Any]) -> dict[str, Any]:
    properties = _object(schema.get("properties") or {}, "a tool's properties")
    return {name: _canonical_property(_object(properties[name], "a tool property")) for name in sorted(properties)}


def _canonical_property(prop: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in _PROPERTY_KEYS:
        value = prop.get(key)
        if not value:
            continue
        if key == "type" and isinstance(value, list) and len(value) == 1:
            value = value[0]
        elif key == "anyOf":
            value = [_canonical_property(_object(p, "an anyOf entry")) for p in _list(value, "anyOf")]
        elif key == "properties":
            value = _canonical_properties(prop)
        elif key in ("enum", "items"):
            value = canonical_arguments(value)
        out[key] = value
    return out


def canonical_arguments(value: Any) -> Any:
    """Tool-call arguments (or any JSON value) as Ollama's templates print them: object keys sorted at
    every level, and whole-number floats as integers (Go prints ``2.0`` as ``2``)."""
    if isinstance(value, dict):
        return {key: canonical_arguments(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical_arguments(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value
