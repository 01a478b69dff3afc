"""Modelfile rendering and parsing: Ollama's grammar, round trips, and values that cannot be written."""

from __future__ import annotations

import pytest

from orchestrator.errors import UsageError
from orchestrator.ollama.modelfile import Modelfile
from orchestrator.ollama.templates import default_parameters, ollama_template


def test_render_writes_every_command_in_ollama_form():
    mf = Modelfile(
        from_="./gguf/model-q8_0.gguf",
        template="{{ .System }}\n{{ range .Messages }}{{ .Content }}{{ end }}",
        system="Be brief.\nAlways.",
        parameters={"stop": ["<|im_end|>", "<|im_start|>"], "temperature": 0.6, "top_k": 20, "use_mmap": False},
        messages=[("user", "Hi"), ("assistant", "Hello!")],
        license=["MIT"],
    )
    assert mf.render() == (
        "FROM ./gguf/model-q8_0.gguf\n"
        'TEMPLATE """{{ .System }}\n{{ range .Messages }}{{ .Content }}{{ end }}"""\n'
        'SYSTEM """Be brief.\nAlways."""\n'
        'PARAMETER stop "<|im_end|>"\n'
        'PARAMETER stop "<|im_start|>"\n'
        "PARAMETER temperature 0.6\n"
        "PARAMETER top_k 20\n"
        "PARAMETER use_mmap false\n"
        'MESSAGE user """Hi"""\n'
        'MESSAGE assistant """Hello!"""\n'
        'LICENSE """MIT"""\n'
    )


def test_adapter_route_renders_from_a_model_name_and_an_adapter():
    text = Modelfile(from_="qwen3:0.6b", adapters=["./gguf/adapter.gguf"]).render()
    assert text == "FROM qwen3:0.6b\nADAPTER ./gguf/adapter.gguf\n"


@pytest.mark.parametrize(("template", "thinking"), [("qwen3", True), ("qwen3", False), ("qwen3_nothink", False)])
def test_the_project_templates_round_trip(template, thinking):
    mf = Modelfile(
        from_="./gguf/my model.gguf",
        template=ollama_template(template, thinking),
        system="  Réponds en français.\n\n# not a comment\n  ",
        parameters=default_parameters(template, thinking, 4096),
    )
    assert Modelfile.parse(mf.render()) == mf


def test_round_trip_of_awkward_values():
    mf = Modelfile(
        from_='"quoted" start.gguf',
        adapters=["./a.gguf"],
        template='ends with a quote"',
        system='"starts with a quote',
        parameters={"stop": ["\n\n", '"', 'say "x"', "  spaced  "], "num_ctx": 8192, "min_p": 0.0, "use_mmap": True},
        messages=[("system", "s"), ("user", "multi\nline"), ("assistant", "")],
        license=["A", "B\nC"],
        requires="0.12.0",
    )
    assert Modelfile.parse(mf.render()) == mf


def test_parse_reads_what_people_write():
    text = (
        "# a comment\n"
        "from ./model.gguf\n"
        "\n"
        "Parameter temperature 0.7\n"
        "PARAMETER\tstop <|im_end|>\n"
        'PARAMETER stop "<|im_start|>"\n'
        'TEMPLATE """\n'
        "{{ .Prompt }}\n"
        '"""\n'
        "SYSTEM You are terse.\n"
        "PARAMETER use_mmap True\n"
    )
    mf = Modelfile.parse(text)
    assert mf.from_ == "./model.gguf"
    assert mf.template == "\n{{ .Prompt }}\n"
    assert mf.system == "You are terse."
    assert mf.parameters == {"temperature": 0.7, "stop": ["<|im_end|>", "<|im_start|>"], "use_mmap": True}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PARAMETER temperature 0.1\n", "no FROM"),
        ("FROM x\nPARAMETER temperatur 0.1\n", "line 2: unknown parameter 'temperatur'"),
        ("FROM x\nPARAMETER top_k many\n", "line 2: invalid value"),
        ("FROM x\nMESSAGE tool hi\n", "MESSAGE role"),
        ('FROM x\nTEMPLATE """never closed\n', "never closed"),
        ("FROM x\nFROB y\n", "unknown command"),
    ],
)
def test_parse_rejects_what_ollama_rejects(text, message):
    with pytest.raises(UsageError, match=message):
        Modelfile.parse(text)


@pytest.mark.parametrize(
    ("modelfile", "message"),
    [
        (Modelfile("m.gguf", template='say """hi"""'), 'TEMPLATE value contains """'),
        (Modelfile("m.gguf", system="a\u00a0b"), "U\\+00A0"),
        (Modelfile("m.gguf", system="zero\u200dwidth"), "U\\+200D"),
        (Modelfile("m.gguf", template="nul\x00"), "U\\+0000"),
        (Modelfile("m.gguf", parameters={"temprature": 0.5}), "unknown PARAMETER 'temprature'"),
        (Modelfile("m.gguf", parameters={"temperature": "hot"}), "must be a number"),
        (Modelfile("m.gguf", parameters={"num_ctx": 10.5}), "whole number"),
        (Modelfile("m.gguf", parameters={"use_mmap": "yes"}), "true or false"),
        (Modelfile("m.gguf", parameters={"stop": [1]}), "list of strings"),
        (Modelfile("m.gguf", messages=[("tool", "x")]), "MESSAGE role"),
        (Modelfile("line\nbreak.gguf"), "single line"),
        (Modelfile(" "), "FROM needs"),
    ],
)
def test_values_that_cannot_be_written_are_refused(modelfile, message):
    with pytest.raises(UsageError, match=message):
        modelfile.render()


def test_a_lone_stop_string_is_one_line():
    assert Modelfile("m.gguf", parameters={"stop": "END"}).render() == 'FROM m.gguf\nPARAMETER stop "END"\n'
