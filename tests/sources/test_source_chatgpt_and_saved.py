"""A ChatGPT data export, and sessions saved with /save in `ollama run` (through the Ollama emulator)."""

import json

import pytest
from ollama_emulator import OllamaEmulator
from source_helpers import file_states

from orchestrator.cli import main


def node(nid, parent, children, role=None, parts=None, **extra):
    if role is None:
        return {"id": nid, "message": None, "parent": parent, "children": children}
    content = extra.pop("content", None) or {"content_type": "text", "parts": parts}
    message = {
        "id": nid,
        "author": {"role": role, "name": extra.pop("name", None), "metadata": {}},
        "create_time": 1_700_000_000.5,
        "content": content,
        "status": "finished_successfully",
        "weight": 1.0,
        "metadata": extra.pop("metadata", {}),
        "recipient": extra.pop("recipient", "all"),
    }
    return {"id": nid, "message": message, "parent": parent, "children": children}


def conversation():
    """root -> hidden system -> user (image + text) -> (assistant old | thoughts -> assistant kept) -> ..."""
    mapping = [
        node("root", None, ["sys"]),
        node("sys", "root", ["u1"], "system", [""], metadata={"is_visually_hidden_from_conversation": True}),
        node(
            "u1",
            "sys",
            ["a_old", "th"],
            "user",
            content={
                "content_type": "multimodal_text",
                "parts": [{"content_type": "image_asset_pointer", "asset_pointer": "file-service://x"}, "What is it?"],
            },
        ),
        node("a_old", "u1", [], "assistant", ["A dog."], metadata={"model_slug": "gpt-4o"}),
        node(
            "th",
            "u1",
            ["call"],
            "assistant",
            content={"content_type": "thoughts", "thoughts": [{"summary": "s", "content": "Looks feline."}]},
        ),
        node(
            "call",
            "th",
            ["out"],
            "assistant",
            content={"content_type": "code", "text": "search('cat')"},
            recipient="web",
        ),
        node("out", "call", ["a"], "tool", ["results"], name="web"),
        node("a", "out", [], "assistant", ["A cat."], metadata={"model_slug": "o3"}),
    ]
    return {
        "title": "picture",
        "create_time": 1_700_000_000.5,
        "update_time": 1_700_000_100.0,
        "mapping": {n["id"]: n for n in mapping},
        "current_node": "a",
        "conversation_id": "conv-1",
        "id": "conv-1",
    }


def test_chatgpt_export(tmp_path, export):
    cyclic = {
        "title": "loop",
        "mapping": {"p": node("p", "q", [], "user", ["P"]), "q": node("q", "p", [], "user", ["Q"])},
        "current_node": "p",
        "id": "loop",
    }
    empty = {"title": "empty", "mapping": {"root": node("root", None, [])}, "current_node": "root", "id": "empty"}
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps([conversation(), cyclic, empty]))
    before = file_states(path)

    result = export("--source", f"chatgpt:{path}")

    assert result.rc == 0, result.err
    assert result.turns(0) == [("human", "What is it?"), ("gpt", "<think>\nLooks feline.\n</think>\n\nA cat.")]
    assert result.records[0]["system"] == ""
    assert result.skipped("attachment (not text)") == 1
    assert result.skipped("message tree has a cycle") == 1
    assert result.skipped("empty chat") == 1
    assert file_states(path) == before

    assert export("--source", f"chatgpt:{path}", "--model", "o3").records == result.records
    assert export("--source", f"chatgpt:{path}", "--since", "2023-11-15").rc == 2  # nothing left: one line


def test_chatgpt_wrong_file(tmp_path, capsys):
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps({"messages": []}))
    rc = main(["data", "export", "--name", "x", "--dataset-dir", str(tmp_path), "--source", f"chatgpt:{path}"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a ChatGPT conversations.json" in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def ollama():
    with OllamaEmulator() as server:
        yield server


def test_ollama_saved_sessions(ollama, export):
    saved = ollama.add_model("mysession")
    saved.messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, friend."}]
    saved.details = {"format": "gguf", "family": "qwen3", "parent_model": "qwen3:4b"}
    ollama.add_model("qwen3:4b")  # a plain model: no messages, not a session

    result = export("--source", f"ollama_saved:{ollama.url}")

    assert result.rc == 0, result.err
    assert [r["conversations"] for r in result.records] == [
        [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello, friend."}]
    ]
    assert "1 conversation read" in result.out
    assert export("--source", f"ollama_saved:{ollama.url}", "--model", "qwen3:*").records == result.records


def test_ollama_saved_unknown_name(ollama, monkeypatch, capsys):
    from orchestrator.errors import UsageError
    from orchestrator.recipe import OllamaSavedSource
    from orchestrator.sources import read_sources

    monkeypatch.setenv("OLLAMA_HOST", ollama.url)
    with pytest.raises(UsageError, match="no model 'nothere'"):
        list(read_sources([OllamaSavedSource(type="ollama_saved", names=["nothere"])]))
    rc = main(["data", "export", "--name", "x", "--source", "ollama_saved:"])  # the default host: OLLAMA_HOST
    err = capsys.readouterr().err
    assert rc == 2 and "nothing was written" in err and len(err.strip().splitlines()) == 1
