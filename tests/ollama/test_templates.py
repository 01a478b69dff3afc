"""Golden tests: the Ollama TEMPLATE (rendered by Go's text/template) and the GGUF's Jinja chat template
(rendered by transformers) produce exactly the text LLaMA-Factory trains on.

For each representative conversation and each format (qwen3 with and without thinking, qwen3_nothink)
the expected training text is written out by hand below, as (prompt, response) pairs; the tests check
that LLaMA-Factory's own template encodes the exported dataset to exactly that (token ids decoded with
the real Qwen3 tokenizer), and that both serving templates render every generation prompt, and the
whole conversation, to the same characters.
"""

from __future__ import annotations

import json
from copy import deepcopy

import pytest
from gotemplate.runner import build

from orchestrator.chat_templates import canonical_arguments, canonical_tools, jinja_chat_template
from orchestrator.conversations import Conversation, Message, ToolCall
from orchestrator.errors import UsageError
from orchestrator.ollama.templates import default_parameters, merge_parameters, ollama_template
from orchestrator.prepare import repair, to_sharegpt

CONFIGS = {"think": ("qwen3", True), "no-think": ("qwen3", False), "nothink": ("qwen3_nothink", False)}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}
CONVERT = {
    "type": "function",
    "function": {
        "name": "convert",
        "description": "Convert a length",
        "parameters": {
            "type": "object",
            "properties": {"unit": {"type": "string", "enum": ["km", "mi"]}, "value": {"type": "number"}},
            "required": ["value", "unit"],
        },
    },
}

CONVERSATIONS = {
    "brief": Conversation(
        "brief",
        [
            Message("system", "Be brief."),
            Message("user", "Hi"),
            Message("assistant", "Hello!"),
            Message("user", "2+2?"),
            Message("assistant", "4", thinking="add"),
        ],
    ),
    "german": Conversation(
        "german",
        [
            Message("system", "Be kind."),
            Message("system", "Answer in German."),
            Message("user", "Grüß dich 👋"),
            Message("user", "Wie geht's?"),
            Message("assistant", "Gut, danke!"),
            Message("user", "Und dir?"),
            Message("assistant", "Auch gut.", thinking="Polite reply."),
        ],
    ),
    "weather": Conversation(
        "weather",
        [
            Message("system", "You are a weather bot."),
            Message("user", "Weather in Paris and Lyon?"),
            Message(
                "assistant",
                "",
                thinking="Two cities, two calls.",
                tool_calls=[ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_weather", {"city": "Lyon"})],
            ),
            Message("tool", "18°C", tool_name="get_weather"),
            Message("tool", "20°C", tool_name="get_weather"),
            Message("assistant", "Paris: 18°C, Lyon: 20°C."),
        ],
        tools=[WEATHER],
    ),
    "convert": Conversation(
        "convert",
        [
            Message("user", "Convert 3 km to miles."),
            Message("assistant", "Let me convert that.", tool_calls=[ToolCall("convert", {"unit": "mi", "value": 3})]),
            Message("tool", '{"result": 1.86}', tool_name="convert"),
            Message("assistant", "About 1.86 miles."),
        ],
        tools=[CONVERT],
    ),
}

# ---- the training text, written out by hand ----------------------------------------------------------

TOOLS_HEAD = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
)
TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)
WEATHER_JSON = (
    '{"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, '
    '"required": ["city"]}}}'
)
CONVERT_JSON = (
    '{"type": "function", "function": {"name": "convert", "description": "Convert a length", "parameters": '
    '{"type": "object", "properties": {"unit": {"type": "string", "enum": ["km", "mi"]}, "value": '
    '{"type": "number"}}, "required": ["value", "unit"]}}}'
)
EMPTY = "<think>\n\n</think>\n\n"
WEATHER_CALLS = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lyon"}}\n</tool_call>'
)
CONVERT_CALL = '<tool_call>\n{"name": "convert", "arguments": {"unit": "mi", "value": 3}}\n</tool_call>'

EXPECTED = {
    ("brief", "think"): [
        (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            "<think>\n\n</think>\n\nHello!<|im_end|>\n",
        ),
        ("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", "<think>\nadd\n</think>\n\n4<|im_end|>\n"),
    ],
    ("brief", "no-think"): [
        (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            "<think>\n\n</think>\n\n",
            "Hello!<|im_end|>\n",
        ),
        ("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n", "4<|im_end|>\n"),
    ],
    ("brief", "nothink"): [
        (
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            "Hello!<|im_end|>\n",
        ),
        ("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", "4<|im_end|>\n"),
    ],
    ("german", "think"): [
        (
            "<|im_start|>system\nBe kind.\n\nAnswer in German.<|im_end|>\n"
            "<|im_start|>user\nGrüß dich 👋\n\nWie geht's?<|im_end|>\n<|im_start|>assistant\n",
            "<think>\n\n</think>\n\nGut, danke!<|im_end|>\n",
        ),
        (
            "<|im_start|>user\nUnd dir?<|im_end|>\n<|im_start|>assistant\n",
            "<think>\nPolite reply.\n</think>\n\nAuch gut.<|im_end|>\n",
        ),
    ],
    ("german", "no-think"): [
        (
            "<|im_start|>system\nBe kind.\n\nAnswer in German.<|im_end|>\n"
            "<|im_start|>user\nGrüß dich 👋\n\nWie geht's?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            "Gut, danke!<|im_end|>\n",
        ),
        (
            "<|im_start|>user\nUnd dir?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            "Auch gut.<|im_end|>\n",
        ),
    ],
    ("german", "nothink"): [
        (
            "<|im_start|>system\nBe kind.\n\nAnswer in German.<|im_end|>\n"
            "<|im_start|>user\nGrüß dich 👋\n\nWie geht's?<|im_end|>\n<|im_start|>assistant\n",
            "Gut, danke!<|im_end|>\n",
        ),
        ("<|im_start|>user\nUnd dir?<|im_end|>\n<|im_start|>assistant\n", "Auch gut.<|im_end|>\n"),
    ],
    ("weather", "think"): [
        (
            "<|im_start|>system\nYou are a weather bot." + TOOLS_HEAD + WEATHER_JSON + TOOLS_TAIL + "<|im_end|>\n"
            "<|im_start|>user\nWeather in Paris and Lyon?<|im_end|>\n<|im_start|>assistant\n",
            "<think>\nTwo cities, two calls.\n</think>\n\n" + WEATHER_CALLS + "<|im_end|>\n",
        ),
        (
            "<|im_start|>user\n<tool_response>\n18°C\n</tool_response>\n<tool_response>\n20°C\n</tool_response>"
            "<|im_end|>\n<|im_start|>assistant\n",
            "<think>\n\n</think>\n\nParis: 18°C, Lyon: 20°C.<|im_end|>\n",
        ),
    ],
    ("weather", "no-think"): [
        (
            "<|im_start|>system\nYou are a weather bot." + TOOLS_HEAD + WEATHER_JSON + TOOLS_TAIL + "<|im_end|>\n"
            "<|im_start|>user\nWeather in Paris and Lyon?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            WEATHER_CALLS + "<|im_end|>\n",
        ),
        (
            "<|im_start|>user\n<tool_response>\n18°C\n</tool_response>\n<tool_response>\n20°C\n</tool_response>"
            "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            "Paris: 18°C, Lyon: 20°C.<|im_end|>\n",
        ),
    ],
    ("weather", "nothink"): [
        (
            "<|im_start|>system\nYou are a weather bot." + TOOLS_HEAD + WEATHER_JSON + TOOLS_TAIL + "<|im_end|>\n"
            "<|im_start|>user\nWeather in Paris and Lyon?<|im_end|>\n<|im_start|>assistant\n",
            WEATHER_CALLS + "<|im_end|>\n",
        ),
        (
            "<|im_start|>user\n<tool_response>\n18°C\n</tool_response>\n<tool_response>\n20°C\n</tool_response>"
            "<|im_end|>\n<|im_start|>assistant\n",
            "Paris: 18°C, Lyon: 20°C.<|im_end|>\n",
        ),
    ],
    ("convert", "think"): [
        (
            "<|im_start|>system\n" + TOOLS_HEAD + CONVERT_JSON + TOOLS_TAIL + "<|im_end|>\n"
            "<|im_start|>user\nConvert 3 km to miles.<|im_end|>\n<|im_start|>assistant\n",
            "<think>\n\n</think>\n\nLet me convert that.\n" + CONVERT_CALL + "<|im_end|>\n",
        ),
        (
            '<|im_start|>user\n<tool_response>\n{"result": 1.86}\n</tool_response><|im_end|>\n<|im_start|>assistant\n',
            "<think>\n\n</think>\n\nAbout 1.86 miles.<|im_end|>\n",
        ),
    ],
    ("convert", "no-think"): [
        (
            "<|im_start|>system\n" + TOOLS_HEAD + CONVERT_JSON + TOOLS_TAIL + "<|im_end|>\n"
            "<|im_start|>user\nConvert 3 km to miles.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
            "Let me convert that.\n" + CONVERT_CALL + "<|im_end|>\n",
        ),
        (
            '<|im_start|>user\n<tool_response>\n{"result": 1.86}\n</tool_response><|im_end|>\n<|im_start|>assistant\n'
            "<think>\n\n</think>\n\n",
            "About 1.86 miles.<|im_end|>\n",
        ),
    ],
    ("convert", "nothink"): [
        (
            "<|im_start|>system\n" + TOOLS_HEAD + CONVERT_JSON + TOOLS_TAIL + "<|im_end|>\n"
            "<|im_start|>user\nConvert 3 km to miles.<|im_end|>\n<|im_start|>assistant\n",
            "Let me convert that.\n" + CONVERT_CALL + "<|im_end|>\n",
        ),
        (
            '<|im_start|>user\n<tool_response>\n{"result": 1.86}\n</tool_response><|im_end|>\n<|im_start|>assistant\n',
            "About 1.86 miles.<|im_end|>\n",
        ),
    ],
}
CASES = sorted(EXPECTED)


# ---- fixtures and helpers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def go(tmp_path_factory):
    try:
        return build(tmp_path_factory.mktemp("gotemplate"))
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from orchestrator.tiny import tokenizer_dir

    return AutoTokenizer.from_pretrained(str(tokenizer_dir()))


LF_ROLES = {"human": "user", "gpt": "assistant", "function_call": "function", "observation": "observation"}


def llamafactory_pairs(tokenizer, conv: Conversation, config: str) -> list[tuple[str, str]]:
    """What LLaMA-Factory trains on: our dataset export, encoded by its own template, decoded."""
    from llamafactory.data.template import TEMPLATES

    name, enable_thinking = CONFIGS[config]
    turns, system, _ = repair(conv, keep_thinking=name == "qwen3" and enable_thinking)
    record = to_sharegpt(turns, system, conv.tools)
    messages = [{"role": LF_ROLES[m["from"]], "content": m["value"]} for m in record["conversations"]]
    template = deepcopy(TEMPLATES[name])
    template.enable_thinking = enable_thinking
    pairs = template.encode_multiturn(tokenizer, messages, record["system"], record["tools"] or None)
    return [(tokenizer.decode(p), tokenizer.decode(r)) for p, r in pairs]


def assistant_positions(conv: Conversation) -> list[int]:
    """Index of each assistant turn that starts a new answer (a run of assistant messages counts once)."""
    out = []
    for i, m in enumerate(conv.messages):
        if m.role == "assistant" and (i == 0 or conv.messages[i - 1].role != "assistant"):
            out.append(i)
    return out


def hf_message(m: Message) -> dict:
    out: dict = {"role": m.role, "content": m.content}
    if m.thinking:
        out["reasoning_content"] = m.thinking
    if m.tool_calls:
        out["tool_calls"] = [
            {"type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in m.tool_calls
        ]
    return out


def jinja_render(tokenizer, config: str, messages: list[Message], tools, **kwargs) -> str:
    name, enable_thinking = CONFIGS[config]
    return tokenizer.apply_chat_template(
        [hf_message(m) for m in messages],
        tools=tools or None,
        chat_template=jinja_chat_template(name, enable_thinking),
        tokenize=False,
        **kwargs,
    )


def merge_user_runs(messages: list[Message]) -> list[Message]:
    """Consecutive user turns as one, as Ollama and the dataset export merge them (a Jinja template does not)."""
    out: list[Message] = []
    for m in messages:
        if out and m.role == out[-1].role == "user":
            out[-1] = Message("user", out[-1].content + "\n\n" + m.content)
        else:
            out.append(m)
    return out


def prompts(pairs: list[tuple[str, str]]) -> list[str]:
    """The text before each response: everything trained so far plus that turn's prompt."""
    out, text = [], ""
    for prompt, response in pairs:
        out.append(text + prompt)
        text += prompt + response
    return out


# ---- LLaMA-Factory trains on the hand-written text ----------------------------------------------------


@pytest.mark.parametrize(("conv", "config"), CASES)
def test_llamafactory_trains_on_the_expected_text(tokenizer, conv, config):
    assert llamafactory_pairs(tokenizer, CONVERSATIONS[conv], config) == EXPECTED[conv, config]


# ---- the Ollama TEMPLATE renders it -----------------------------------------------------------------------


@pytest.mark.parametrize(("conv", "config"), CASES)
def test_go_template_renders_every_training_prompt(go, conv, config):
    conversation = CONVERSATIONS[conv]
    template = ollama_template(*CONFIGS[config])
    for position, expected in zip(assistant_positions(conversation), prompts(EXPECTED[conv, config]), strict=True):
        history = [m.to_ollama() for m in conversation.messages[:position]]
        assert go.prompt(template, history, tools=conversation.tools or None) == expected


@pytest.mark.parametrize(("conv", "config"), CASES)
def test_go_template_renders_the_whole_conversation(go, conv, config):
    conversation = CONVERSATIONS[conv]
    messages = [m.to_ollama() for m in conversation.messages]
    rendered = go.prompt(ollama_template(*CONFIGS[config]), messages, tools=conversation.tools or None)
    # the last assistant turn is left open: Ollama continues a conversation that ends with the model
    assert rendered + "<|im_end|>\n" == "".join(p + r for p, r in EXPECTED[conv, config])


def test_think_off_puts_the_empty_block_in_the_prompt(go):
    template = ollama_template("qwen3", True)
    messages = [{"role": "user", "content": "Hi"}]
    base = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert go.prompt(template, messages, think=False) == base + EMPTY
    assert go.prompt(template, messages, think=True) == base
    assert go.prompt(template, messages) == base  # a thinking model thinks unless told not to
    assert go.prompt(template, messages, think="high") == base


@pytest.mark.parametrize("config", ["no-think", "nothink"])
def test_formats_trained_without_thinking_refuse_think(go, config):
    template = ollama_template(*CONFIGS[config])
    result = go.render(template, [{"role": "user", "content": "Hi"}], think=True)
    assert "does not support thinking" in result["error"]
    prompt = go.prompt(template, [{"role": "user", "content": "Hi"}], think=False)
    assert prompt.endswith("<|im_start|>assistant\n" + (EMPTY if config == "no-think" else ""))


@pytest.mark.parametrize("config", list(CONFIGS))
def test_ollama_reads_the_capabilities_and_tags_it_needs(go, config):
    info = go.parse(ollama_template(*CONFIGS[config]))
    assert not info.get("error")
    thinking = config == "think"
    assert set(info["capabilities"]) == {"completion", "tools"} | ({"thinking"} if thinking else set())
    assert info["thinking_tags"] == (["<think>", "</think>"] if thinking else ["", ""])
    assert info["tool_tag"] == "<tool_call>"
    assert info["tool_round_trip"] is True


def ollama_jinja_capabilities(text: str) -> set[str]:
    """The capabilities Ollama reads from a GGUF's Jinja template (reference/ollama-api.md)."""
    caps = set()
    if "tools" in text or "tool_call" in text:
        caps.add("tools")
    if "<think>" in text and "</think>" in text:
        caps.add("thinking")
    return caps


@pytest.mark.parametrize("config", list(CONFIGS))
def test_jinja_template_is_not_more_capable_than_the_go_template(go, config):
    go_caps = set(go.parse(ollama_template(*CONFIGS[config]))["capabilities"]) - {"completion"}
    assert ollama_jinja_capabilities(jinja_chat_template(*CONFIGS[config])) == go_caps


def test_a_prefilled_answer_is_continued(go):
    template = ollama_template("qwen3", True)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel", "thinking": "greet"}]
    expected = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\ngreet\n</think>\n\nHel"
    assert go.prompt(template, messages) == expected


# ---- the Jinja chat template renders it -------------------------------------------------------------------


@pytest.mark.parametrize(("conv", "config"), CASES)
def test_jinja_template_renders_every_training_prompt(tokenizer, conv, config):
    conversation = CONVERSATIONS[conv]
    for position, expected in zip(assistant_positions(conversation), prompts(EXPECTED[conv, config]), strict=True):
        history = merge_user_runs(conversation.messages[:position])
        rendered = jinja_render(tokenizer, config, history, conversation.tools, add_generation_prompt=True)
        assert rendered == expected


@pytest.mark.parametrize(("conv", "config"), CASES)
def test_jinja_template_renders_the_whole_conversation(tokenizer, conv, config):
    conversation = CONVERSATIONS[conv]
    rendered = jinja_render(tokenizer, config, merge_user_runs(conversation.messages), conversation.tools)
    assert rendered == "".join(p + r for p, r in EXPECTED[conv, config])


def test_jinja_template_honours_enable_thinking_and_inline_think_blocks(tokenizer):
    messages = [Message("user", "Hi")]
    rendered = jinja_render(tokenizer, "think", messages, None, add_generation_prompt=True, enable_thinking=False)
    assert rendered == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n" + EMPTY
    inline = [Message("user", "Hi"), Message("assistant", "<think>\nwave\n</think>\n\nHello")]
    assert jinja_render(tokenizer, "think", inline, None).endswith("<think>\nwave\n</think>\n\nHello<|im_end|>\n")
    assert jinja_render(tokenizer, "no-think", inline, None).endswith("assistant\n" + EMPTY + "Hello<|im_end|>\n")


def test_unknown_template_is_refused():
    with pytest.raises(UsageError, match="qwen3"):
        ollama_template("llama3", True)
    with pytest.raises(UsageError, match="qwen3"):
        jinja_chat_template("chatml", False)


# ---- JSON inside the templates prints as Python's json.dumps ---------------------------------------------

ODD_ARGUMENTS = {
    "text": 'say "hi" \\ now\nnext\ttab',
    "html": "<b>a & b</b>",
    "unicode": "Grüße, 東京 🌧",
    "n": 3,
    "x": 2.5,
    "big": 12345678,
    "whole": 2.0,
    "tiny": 1e-7,
    "small": -0.00015,
    "smaller": 2.5e-5,
    "flag": False,
    "none": None,
    "list": [1, "two", [3], {"z": 1, "a": None}],
    "nested": {"b": {"d": 1, "c": 2}, "a": []},
}


def test_tool_call_arguments_print_as_json_dumps_of_the_canonical_form(go):
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": ODD_ARGUMENTS}}]},
        {"role": "tool", "content": "ok"},
    ]
    rendered = go.prompt(ollama_template("qwen3_nothink", False), messages)
    expected_call = json.dumps({"name": "f", "arguments": canonical_arguments(ODD_ARGUMENTS)}, ensure_ascii=False)
    assert f"<tool_call>\n{expected_call}\n</tool_call>" in rendered


def test_canonical_tools_match_what_the_go_template_prints(go):
    messy = {
        "type": "function",
        "function": {
            "parameters": {
                "required": ["q"],
                "properties": {
                    "q": {"description": 'Query "text" <b>', "type": "string", "default": "x"},
                    "limit": {"type": ["integer", "null"], "minimum": 1},
                    "mode": {"enum": ["a", "b"], "type": "string"},
                    "filters": {
                        "type": "object",
                        "properties": {"tag": {"type": "string"}, "after": {"type": "string", "format": "date"}},
                        "required": ["tag"],
                    },
                    "ids": {"type": "array", "items": {"type": "integer", "maximum": 9}},
                    "either": {"anyOf": [{"type": "string"}, {"type": "number"}]},
                },
                "type": "object",
            },
            "description": "Search the notes",
            "name": "search",
        },
    }
    plain = {"type": "function", "function": {"name": "ping"}}
    rendered = go.prompt(ollama_template("qwen3", True), [{"role": "user", "content": "x"}], tools=[messy, plain])
    lines = [json.dumps(tool, ensure_ascii=False) for tool in canonical_tools([messy, plain])]
    assert "<tools>\n" + "\n".join(lines) + "\n</tools>" in rendered
    assert lines[1] == '{"type": "function", "function": {"name": "ping"}}'


def test_canonical_tools_wrap_a_bare_function_as_llamafactory_does():
    bare = {"name": "ping", "description": "", "parameters": {"type": "object", "properties": {}}}
    assert canonical_tools([bare]) == [
        {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}
    ]


# ---- parameters --------------------------------------------------------------------------------------------


def test_default_parameters_follow_qwen_and_the_recipe():
    assert default_parameters("qwen3", True, 8192) == {
        "stop": ["<|im_end|>", "<|im_start|>"],
        "temperature": 0.6,
        "top_p": 0.95,
        "top_k": 20,
        "num_ctx": 8192,
    }
    assert default_parameters("qwen3", False, None) == {
        "stop": ["<|im_end|>", "<|im_start|>"],
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
    }
    assert default_parameters("qwen3_nothink", True, None)["temperature"] == 0.7
    merged = merge_parameters(default_parameters("qwen3", True, None), {"temperature": 0.2, "stop": "END"})
    assert merged["temperature"] == 0.2 and merged["stop"] == ["<|im_end|>", "<|im_start|>", "END"]
