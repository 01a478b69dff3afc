"""Ollama TEMPLATEs (Go text/template) that render exactly the prompt LLaMA-Factory trained on, and the
default PARAMETERs that go with them.

LLaMA-Factory's ``qwen3`` and ``qwen3_nothink`` templates build the training text as::

    [<|im_start|>system\\n{system}{tool prompt}<|im_end|>\\n]            when there is a system prompt or tools
    <|im_start|>user\\n{user}<|im_end|>\\n<|im_start|>assistant\\n       a user turn and the assistant prefix
    <|im_start|>user\\n<tool_response>\\n{result}\\n</tool_response>...  tool results (parallel ones in one turn)
    {think block}{answer}[\\n<tool_call>\\n{call}\\n</tool_call>...]<|im_end|>\\n

With ``qwen3`` and ``enable_thinking: true`` every assistant turn, history included, carries its think
block (``<think>\\n\\n</think>\\n\\n`` when it had none); with ``enable_thinking: false`` the empty block ends
every prompt and chains of thought are dropped; ``qwen3_nothink`` adds nothing. The templates below
reproduce that character for character from what Ollama hands a template (reference/ollama-api.md):

- Tool definitions and call arguments are printed by hand, the way Python's ``json.dumps`` prints them
  (``", "`` and ``": "`` separators, non-ASCII kept), because Ollama's own JSON forms are compact.
  Ollama hands properties and arguments to templates as Go maps, so they come out sorted by name, and it
  keeps only some JSON-schema keys; ``orchestrator.chat_templates.canonical_tools`` /
  ``canonical_arguments`` put training data into that same form.
- The tool-call block starts with the text ``<tool_call>`` inside ``{{ if .ToolCalls }}``, and a tool
  result mentions ``tool_response`` and ``eq .Role "tool"``: that is how Ollama finds the tool-call tag
  and decides the template handles tool round trips (so it keeps it over the GGUF's Jinja template).
- ``.Thinking`` sits inside the range over ``.Messages`` between the literal ``<think>`` and
  ``</think>`` texts: that is how Ollama infers the ``thinking`` capability and its tags.
"""

from __future__ import annotations

from typing import Any

from orchestrator.errors import UsageError

TEMPLATES = ("qwen3", "qwen3_nothink")
STOP = ("<|im_end|>", "<|im_start|>")
# Qwen's recommended sampling for Qwen3 (model card): thinking mode, and non-thinking mode.
THINKING_SAMPLING = {"temperature": 0.6, "top_p": 0.95, "top_k": 20}
NON_THINKING_SAMPLING = {"temperature": 0.7, "top_p": 0.8, "top_k": 20}

# JSON printers, Python style. "str" prints a string as json.dumps(ensure_ascii=False) would: raw when
# Go's json encoder escapes nothing (it escapes <, > and &, which Python keeps), else Go's %q (which
# escapes quotes, backslashes and control characters as JSON does). Numbers print as Go's json does,
# except below 1e-4, where Python switches to an exponent (1e-05) as Go's %v does.
_JSON_DEFINES = r"""
{{- define "str" }}{{ if eq (json .) (printf "\"%s\"" .) }}"{{ . }}"{{ else }}{{ printf "%q" . }}{{ end }}{{ end }}
{{- define "strings" }}[{{ range $i, $s := . }}{{ if $i }}, {{ end }}{{ template "str" $s }}{{ end }}]{{ end }}
{{- define "object" }}{ {{- $first := true }}{{ range $k, $v := . }}{{ if not $first }}, {{ end }}{{ $first = false }}
{{- template "str" $k }}: {{ template "value" $v }}{{ end }}}{{ end }}
{{- define "value" }}{{ $t := printf "%T" . }}
{{- if eq $t "string" }}{{ template "str" . }}
{{- else if eq $t "map[string]interface {}" }}{{ template "object" . }}
{{- else if eq $t "[]interface {}" }}[{{ range $i, $v := . }}{{ if $i }}, {{ end }}{{ template "value" $v }}{{ end }}]
{{- else if eq $t "[]string" }}{{ template "strings" . }}
{{- else if and (eq $t "float64") (lt . 0.0001) (gt . -0.0001) (ne . 0.0) }}{{ printf "%v" . }}
{{- else }}{{ json . }}{{ end }}{{ end }}
{{- define "property" }}{{ $sep := "" }}{
{{- if .Type }}"type": {{ if eq (len .Type) 1 }}{{ template "str" (index .Type 0) }}
{{- else }}{{ template "strings" .Type }}{{ end }}{{ $sep = ", " }}{{ end }}
{{- if .Description }}{{ $sep }}"description": {{ template "str" .Description }}{{ $sep = ", " }}{{ end }}
{{- if .Enum }}{{ $sep }}"enum": {{ template "value" .Enum }}{{ $sep = ", " }}{{ end }}
{{- if .Items }}{{ $sep }}"items": {{ template "value" .Items }}{{ $sep = ", " }}{{ end }}
{{- if .AnyOf }}{{ $sep }}"anyOf": [{{ range $i, $p := .AnyOf }}{{ if $i }}, {{ end }}
{{- template "property" $p }}{{ end }}]
{{- $sep = ", " }}{{ end }}
{{- if .Properties }}{{ $sep }}"properties": {{ template "properties" .Properties.ToMap }}{{ $sep = ", " }}{{ end }}
{{- if .Required }}{{ $sep }}"required": {{ template "strings" .Required }}{{ end }}}{{ end }}
{{- define "properties" }}{ {{- $first := true }}{{ range $name, $p := . }}{{ if not $first }}, {{ end }}
{{- $first = false }}{{ template "str" $name }}: {{ template "property" $p }}{{ end }}}{{ end }}
{{- define "parameters" }}{"type": {{ template "str" .Type }}, "properties": {{ template "properties" .Properties }}
{{- if .Required }}, "required": {{ template "strings" .Required }}{{ end }}
{{- if .Items }}, "items": {{ template "value" .Items }}{{ end }}
{{- if .Defs }}, "$defs": {{ template "value" .Defs }}{{ end }}}{{ end }}
{{- define "tool" }}{"type": {{ if .Type }}{{ template "str" .Type }}{{ else }}"function"{{ end }}
{{- ", " }}"function": {"name": {{ template "str" .Function.Name }}
{{- if .Function.Description }}, "description": {{ template "str" .Function.Description }}{{ end }}
{{- with .Function.Parameters }}{{ if or .Type .Properties }}, "parameters": {{ template "parameters" . }}
{{- end }}{{ end }}}}
{{- end }}
{{- define "call" }}{"name": {{ template "str" .Function.Name }}
{{- ", " }}"arguments": {{ template "object" .Function.Arguments }}}
{{- end }}"""

# The system turn: LLaMA-Factory appends the tool prompt to the system prompt (even an empty one).
_SYSTEM = """
{{- if or .System .Tools }}<|im_start|>system
{{ .System }}
{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{{ template "tool" . }}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}"""

# User turns are closed at once; a run of tool results is one user turn, closed when the next turn
# starts (or at the end). An assistant turn that ends the conversation stays open (a prefill).
_TURNS = """
{{- $prev := "" }}
{{- range $i, $m := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}{{ if eq $prev "tool" }}<|im_end|>
{{ end }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ $prev = "user" }}
{{- else if eq .Role "tool" }}{{ if ne $prev "tool" }}<|im_start|>user{{ end }}
<tool_response>
{{ .Content }}
</tool_response>{{ $prev = "tool" }}
{{- else if eq .Role "assistant" }}{{ if eq $prev "tool" }}<|im_end|>
{{ end }}<|im_start|>assistant
@THINK@{{ if .Content }}{{ .Content }}{{ if $m.ToolCalls }}
{{ end }}{{ end }}
{{- if .ToolCalls }}<tool_call>
{{ template "call" (index .ToolCalls 0) }}
</tool_call>
{{- range (slice .ToolCalls 1) }}
<tool_call>
{{ template "call" . }}
</tool_call>
{{- end }}{{ end }}
{{- if not $last }}<|im_end|>
{{ end }}{{ $prev = "assistant" }}
{{- end }}
{{- end }}
{{- if eq $prev "tool" }}<|im_end|>
{{ end }}
{{- if ne $prev "assistant" }}<|im_start|>assistant
@PROMPT@{{ end }}"""

# What follows "<|im_start|>assistant\n" in a history turn, and at the end of a generation prompt.
_THINKING_TURN = """{{ if .Thinking }}<think>
{{ .Thinking }}
</think>

{{ else }}<think>

</think>

{{ end }}"""
_THINKING_PROMPT = """{{ if and .IsThinkSet (not .Think) }}<think>

</think>

{{ end }}"""
_EMPTY_THINK_GO = """<think>

</think>

"""


def ollama_template(template: str, enable_thinking: bool) -> str:
    """The Go TEMPLATE for a LLaMA-Factory template name (``qwen3`` or ``qwen3_nothink``).

    Args:
        template: LLaMA-Factory's template name, as the recipe's ``model.resolved_template``.
        enable_thinking: LLaMA-Factory's ``enable_thinking`` (only ``qwen3`` reads it).

    With ``qwen3`` and thinking on, the model thinks unless a request sets ``think: false``, which
    puts the empty think block into the prompt (the form every answer without thinking was trained
    in). Every assistant turn of the history shows its ``.Thinking``, as in training.
    """
    turn, prompt = _assistant_parts(template, enable_thinking)
    turns = _TURNS.replace("@THINK@", turn).replace("@PROMPT@", prompt)
    mode = f"{template}, enable_thinking {str(enable_thinking).lower()}" if template == "qwen3" else template
    header = f"{{{{- /* The chat format LLaMA-Factory trained this model on ({mode}), written by orchestrator. */}}}}"
    return header + _JSON_DEFINES + _SYSTEM + turns


def _assistant_parts(template: str, enable_thinking: bool) -> tuple[str, str]:
    if template == "qwen3":
        if enable_thinking:
            return _THINKING_TURN, _THINKING_PROMPT
        return _EMPTY_THINK_GO, _EMPTY_THINK_GO
    if template == "qwen3_nothink":
        return "", ""
    raise UsageError(f"no Ollama template for LLaMA-Factory template '{template}'; use one of: {', '.join(TEMPLATES)}")


def thinks(template: str, enable_thinking: bool) -> bool:
    """Whether a model trained with this template answers in thinking mode by default."""
    return template == "qwen3" and enable_thinking


def default_parameters(template: str, enable_thinking: bool, num_ctx: int | None = None) -> dict[str, Any]:
    """PARAMETERs for a model trained with ``template``: the stop tokens and Qwen's recommended sampling.

    ``stop`` is ``<|im_end|>`` and ``<|im_start|>``; sampling is temperature 0.6, top_p 0.95, top_k 20 for
    a thinking model and 0.7 / 0.8 / 20 otherwise; ``num_ctx`` is added when given. A recipe's
    ``ollama.parameters`` override these (see ``merge_parameters``).
    """
    _assistant_parts(template, enable_thinking)  # validates the name
    params: dict[str, Any] = {"stop": list(STOP)}
    params.update(THINKING_SAMPLING if thinks(template, enable_thinking) else NON_THINKING_SAMPLING)
    if num_ctx is not None:
        params["num_ctx"] = int(num_ctx)
    return params


def merge_parameters(defaults: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """``defaults`` updated with ``overrides``; the stop tokens of the chat format are always kept."""
    merged = dict(defaults)
    for key, value in (overrides or {}).items():
        if key == "stop":
            extra = [value] if isinstance(value, str) else list(value)
            merged["stop"] = list(dict.fromkeys([*STOP, *extra]))
        else:
            merged[key] = value
    return merged
