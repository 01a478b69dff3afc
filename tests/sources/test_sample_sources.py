"""The sample exports shipped in data/samples/ for the other chat formats read through the real
`data export`: every chat read and written, the kept branch, thinking and preference pairs."""

import json

from source_helpers import file_states
from support import REPO

SAMPLES = REPO / "data" / "samples"


def test_the_open_webui_sample(tmp_path, export):
    path = SAMPLES / "open-webui-chat-export.json"
    before = file_states(path)

    result = export("--source", f"open_webui:{path}", "--preferences")

    assert result.rc == 0, result.err
    assert "dataset chats: 4 conversations read, 4 written, 0 skipped" in result.out
    assert "2 preference pairs" in result.out
    by_title = {r["conversations"][0]["value"]: r for r in result.records}
    eggs = by_title["How long should I boil an egg for a runny yolk?"]["conversations"]
    assert [t["from"] for t in eggs] == ["human", "gpt", "human", "gpt"]
    assert eggs[1]["value"].startswith("About 6 minutes.")  # the regenerated answer, kept and rated up
    water = by_title["Roughly how heavy is a 4 litre jug of water?"]["conversations"]
    assert water[1]["value"].startswith("<think>\nA litre of water weighs") and water[1]["value"].endswith(
        "jug itself."
    )
    assert by_title["How do I add a prefix to every .jpg file in a folder with bash?"]["system"].startswith("You are")
    pairs = [json.loads(line) for line in (tmp_path / "out" / "chats_pref.jsonl").read_text().splitlines()]
    chosen = {p["conversations"][0]["value"]: p["chosen"]["value"] for p in pairs}
    assert chosen["How long should I boil an egg for a runny yolk?"].startswith("About 6 minutes.")  # rated
    assert chosen["Write a haiku about autumn leaves."].startswith("Red maple")  # the one kept
    assert file_states(path) == before


def test_the_chatgpt_sample(export):
    path = SAMPLES / "chatgpt-conversations.json"

    result = export("--source", f"chatgpt:{path}")

    assert result.rc == 0, result.err
    assert "dataset chats: 3 conversations read, 3 written, 0 skipped" in result.out
    firsts = {r["conversations"][0]["value"]: r["conversations"] for r in result.records}
    cactus = firsts["How often should I water a cactus indoors?"]
    assert len(cactus) == 2 and cactus[1]["value"].startswith("Water it thoroughly")  # current_node's branch
    bread = firsts["My sourdough loaf comes out dense. What is the most likely cause?"]
    assert bread[1]["value"].startswith("<think>\nDense crumb") and "under-proofed" in bread[1]["value"]
    assert len(firsts["What should I pack for a one-night hike in spring?"]) == 4
