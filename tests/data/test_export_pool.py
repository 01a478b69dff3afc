"""Large JSONL exports run in worker processes: the same files as one process writes, workers that stop
with the export (kill -9 included), and a worker's failure as a one-line error."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator import export_pool
from orchestrator.cleaning import tokens
from orchestrator.dataset import export_dataset
from orchestrator.errors import OrchestratorError, UsageError
from orchestrator.prepare import Options
from orchestrator.recipe import FileSource
from orchestrator.sources import SourcePart, read_sources
from orchestrator.sources import files as file_source
from orchestrator.sources.files import JsonlPart, jsonl_parts, read_file
from orchestrator.sources.filters import Filters

WORDS = "how do I read a file in python with pandas and what does the error mean when it fails".split()


def chats_file(path: Path, count: int) -> Path:
    """JSONL with everything an export counts: bad lines, skips, exact and near duplicates far apart,
    secrets, long conversations, several models, system prompts."""
    rng = random.Random(7)
    lines = []
    for i in range(count):
        words = " ".join(rng.choices(WORDS, k=rng.randint(6, 40)))
        messages = [{"role": "user", "content": f"{words} #{i}"}, {"role": "assistant", "content": f"answer {i}"}]
        record = {"id": f"c{i}", "model": "qwen3:8b" if i % 3 else "llama3:8b", "messages": messages}
        if i % 17 == 0:
            messages.insert(0, {"role": "system", "content": "be brief"})
        if i % 29 == 0:
            messages[1]["content"] += " mail me at someone@example.org or call +1 415 555 0199"
        if i % 31 == 0:
            messages.append({"role": "user", "content": "and more? " + "more words " * 120})
            messages.append({"role": "assistant", "content": "yes " * 200})
        if i % 23 == 0:
            messages.insert(1, {"role": "user", "content": "and also this"})  # repaired: merged
        if i == 400:
            messages[-1]["content"] += " long" * 7000  # a message over LONG_MESSAGE_CHARS
        if i % 37 == 0:
            messages = messages[:1]  # no reply: skipped
            record["messages"] = messages
        lines.append(json.dumps(record))
    for i in range(0, count, 101):  # exact copies and near copies, found in other parts of the file
        lines.append(lines[i])
        near = json.loads(lines[i])
        near["id"] = f"near{i}"
        near["messages"][-1]["content"] += "!"
        lines.append(json.dumps(near))
    lines[5] = "{not json"
    lines[9] = '{"messages": 3}'
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n\n")
    path.with_suffix(".bad").write_bytes(b"")
    return path


@pytest.fixture
def small_parts(monkeypatch):
    """Workers for any size of file, two of them, and parts of a few kilobytes."""
    monkeypatch.setattr(export_pool, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(export_pool, "PART_BYTES", 20_000)
    monkeypatch.setattr(export_pool, "worker_count", lambda: 2)
    monkeypatch.setattr(file_source, "BLOCK", 4096)
    monkeypatch.setattr(tokens, "SAMPLE", 50)  # the sample's bound falls while parts are in flight


def export_both(tmp_path: Path, monkeypatch, **options) -> tuple[Path, Path]:
    source = chats_file(tmp_path / "chats.jsonl", 1500)
    specs = [FileSource(type="file", path=str(source), models=["qwen3:*"])]
    out = {}
    for mode in ("one", "pool"):
        if mode == "one":
            with monkeypatch.context() as m:
                m.setattr(export_pool, "PARALLEL_BYTES", 1 << 62)
                export_dataset(read_sources(specs), "chats", tmp_path / mode, **options)
        else:
            export_dataset(read_sources(specs), "chats", tmp_path / mode, **options)
        out[mode] = tmp_path / mode
    return out["one"], out["pool"]


def same_files(one: Path, pool: Path) -> None:
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in pool.iterdir())
    for name in names:
        a, b = (one / name).read_bytes(), (pool / name).read_bytes()
        if name.endswith(".report.json"):
            a, b = (
                json.loads(x.replace(str(one).encode(), b"DIR").replace(str(pool).encode(), b"DIR")) for x in (a, b)
            )
        assert a == b, name


def test_the_workers_write_what_one_process_writes(tmp_path, monkeypatch, small_parts):
    one, pool = export_both(tmp_path, monkeypatch, cutoff_len=300, eval_split=0.1)
    same_files(one, pool)
    report = json.loads((pool / "chats.report.json").read_text())
    # what the comparison covered: every kind of count is there
    assert report["duplicates"]["exact"] > 0 and report["duplicates"]["near"] > 0
    assert report["redacted"]["EMAIL"] > 0 and report["eval"] > 0 and report["long_messages"] == 1
    assert report["repaired"]["consecutive user turns merged"] > 0
    assert report["tokens"]["over_cutoff"] > 0 and report["tokens"]["sample"] == 50
    assert {"invalid JSON", "no assistant reply", "filtered: model not in models"} <= set(report["skipped"])


def test_a_count_split_and_no_cleaning_match_too(tmp_path, monkeypatch, small_parts):
    one, pool = export_both(tmp_path, monkeypatch, redact=False, near_duplicates=None, eval_split=7)
    same_files(one, pool)
    assert len((pool / "chats_eval.jsonl").read_bytes().splitlines()) == 7


def near_plain_records(count: int) -> list[str]:
    """Records that are plain, or miss being plain by one detail the general path reads otherwise."""
    rng = random.Random(11)
    variants = [
        lambda m: m,
        lambda m: m,
        lambda m: m,
        lambda m: [{"role": "system", "content": "be brief"}, *m],
        lambda m: m + [{"role": "user", "content": "trailing question"}],
        lambda m: [{**m[0], "content": "  " + m[0]["content"]}, *m[1:]],  # leading whitespace
        lambda m: [m[0], {**m[1], "content": "<think>hm</think>" + m[1]["content"]}],  # inline thinking
        lambda m: [m[0], {**m[1], "content": ""}],  # an empty reply
        lambda m: [m[0], {**m[1], "thinking": "hidden"}],  # a third key
        lambda m: [{**m[0], "content": 5}, m[1]],  # not text
        lambda m: [{**m[0], "role": "human"}, m[1]],  # another program's role name
        lambda m: [m[1], m[0]],  # answer first
        lambda m: [m[0], m[0], m[1]],  # two user turns: merged
        lambda m: [m[0], {**m[1], "content": "write to me at person@example.org"}],  # a secret
        lambda m: [m[0], {**m[1], "content": "long " * 8_000}],  # a long message
        lambda m: [{**m[0], "content": "ünïcode — 日本語 🙂"}, m[1]],
    ]
    lines = []
    for i in range(count):
        words = " ".join(rng.choices(WORDS, k=rng.randint(3, 30)))
        messages = [{"role": "user", "content": f"{words} {i}?"}, {"role": "assistant", "content": f"{words}."}]
        record: dict = {"messages": rng.choice(variants)(messages)}
        if i % 5 == 0:
            record["id"] = rng.choice([f"id{i}", i, "", None])
        if i % 7 == 0:
            record["tools"] = None if i % 2 else [{"type": "function", "function": {"name": "f", "parameters": {}}}]
        lines.append(json.dumps(record, ensure_ascii=bool(i % 2)))
    lines += lines[::50]  # exact duplicates of plain and other records
    return lines


def test_plain_records_written_directly_match_the_general_path(tmp_path, monkeypatch, small_parts):
    """Without filters, plain records are written without making Conversations of them, in the workers
    and in one process alike; a list of the same Conversations always goes the general way, so the files
    show that the short cut changes nothing."""
    source = tmp_path / "plain.jsonl"
    source.write_text("\n".join(near_plain_records(2000)) + "\n")
    specs = [FileSource(type="file", path=str(source))]
    for options in ({"cutoff_len": 200, "eval_split": 0.2}, {"redact": False, "near_duplicates": 0.8}):
        general, one, pool = tmp_path / "general", tmp_path / "one", tmp_path / "pool"
        export_dataset(list(read_sources(specs)), "plain", general, **options)
        with monkeypatch.context() as m:
            m.setattr(export_pool, "PARALLEL_BYTES", 1 << 62)
            export_dataset(read_sources(specs), "plain", one, **options)
        export_dataset(read_sources(specs), "plain", pool, **options)
        same_files(general, one)
        same_files(general, pool)
        report = json.loads((pool / "plain.report.json").read_text())
        assert report["written"] > 1000 and report["duplicates"]["exact"] > 0 and len(report["repaired"]) >= 3
        for folder in (general, one, pool):
            for path in folder.iterdir():
                path.unlink()


def test_parts_cut_at_line_ends_read_as_the_whole_file(tmp_path, monkeypatch):
    source = chats_file(tmp_path / "c.jsonl", 300)
    whole = [(getattr(x, "where", None), x) for x in read_file(source)]
    monkeypatch.setattr(file_source, "BLOCK", 1000)
    for size in (1, 999, 5000, 1 << 40):
        parts = list(jsonl_parts(source, size))
        got = [(getattr(x, "where", None), x) for part in parts for x in part.read()]
        assert got == whole and (len(parts) > 1) == (size < 10_000)
    source.write_bytes(source.read_bytes().rstrip(b"\n"))  # no newline at the end
    assert [x for part in jsonl_parts(source, 2000) for x in part.read()] == list(read_file(source))
    assert jsonl_parts(tmp_path / "missing.jsonl", 10) is None and jsonl_parts(source.with_suffix(".bad"), 10) is None


def test_a_killed_worker_is_a_one_line_error(tmp_path):
    source = chats_file(tmp_path / "c.jsonl", 50)
    part = SourcePart(JsonlPart(source, 0, None, 1), Filters())
    options = Options(redact=False, keep_thinking=True, near=None, cutoff_len=None, tokens=None)
    with export_pool.PreparePool(1) as pool:
        pool._workers[0].kill()
        with pytest.raises(
            OrchestratorError, match=r"^an export worker process was killed by signal 9 \(out of memory"
        ):
            list(pool.prepare([part], options, lambda: None, lambda: None))


def test_an_error_in_a_worker_reaches_the_export_as_itself(tmp_path):
    gone = tmp_path / "gone.jsonl"  # removed after the parts were planned
    part = SourcePart(JsonlPart(gone, 0, None, 1), Filters())
    options = Options(redact=False, keep_thinking=True, near=None, cutoff_len=None, tokens=None)
    with export_pool.PreparePool(1) as pool:
        with pytest.raises(UsageError, match=r"gone.jsonl: cannot be read \(No such file or directory\)"):
            list(pool.prepare([part], options, lambda: None, lambda: None))
        assert pool._workers[0].poll() is None  # the worker goes on serving


def test_workers_import_this_orchestrator_whatever_folder_the_export_runs_in(tmp_path, monkeypatch):
    """``python -m`` would put the working folder first on the workers' path: a folder holding another
    ``orchestrator`` (say, an older checkout) would then run in them."""
    other = tmp_path / "orchestrator"
    other.mkdir()
    (other / "__init__.py").write_text("raise SystemExit('the wrong orchestrator was imported')\n")
    monkeypatch.chdir(tmp_path)
    part = SourcePart(JsonlPart(chats_file(tmp_path / "c.jsonl", 50), 0, None, 1), Filters())
    options = Options(redact=False, keep_thinking=True, near=None, cutoff_len=None, tokens=None)
    with export_pool.PreparePool(1) as pool:
        chunks = list(pool.prepare([part], options, lambda: None, lambda: None))
    assert sum(len(chunk.ids) for chunk in chunks) > 40


KILLED_EXPORT = textwrap.dedent(
    """
    import sys
    from orchestrator import export_pool
    from orchestrator.dataset import export_dataset
    from orchestrator.recipe import FileSource
    from orchestrator.sources import read_sources
    export_pool.PARALLEL_BYTES, export_pool.PART_BYTES, export_pool.worker_count = 0, 200_000, lambda: 2
    source = FileSource(type="file", path=sys.argv[1])
    while True:  # until it is killed
        export_dataset(read_sources([source]), "big", sys.argv[2])
    """
)


def workers_of(parent: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def test_kill_9_of_an_export_leaves_no_worker_and_no_temporary_file(tmp_path):
    source = chats_file(tmp_path / "big.jsonl", 6000)
    out = tmp_path / "out"
    script = tmp_path / "export.py"
    script.write_text(KILLED_EXPORT)
    parent = subprocess.Popen([sys.executable, str(script), str(source), str(out)])
    try:
        deadline = time.monotonic() + 60
        while len(workers_of(parent.pid)) < 2 or not any(str(parent.pid) in p.name for p in _entries(out)):
            assert time.monotonic() < deadline and parent.poll() is None, "the export did not start its workers"
            time.sleep(0.05)
        workers = workers_of(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "a worker outlived the export"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
    # what the killed export was writing is a dead writer's temporary file: the next export removes it
    assert any(str(parent.pid) in p.name for p in out.iterdir())
    export_dataset(read_sources([FileSource(type="file", path=str(source))]), "big", out, near_duplicates=None)
    assert sorted(p.name for p in out.iterdir()) == [
        ".dataset_info.json.lock",
        "big.jsonl",
        "big.report.json",
        "dataset_info.json",
    ]


def _entries(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"
