"""A hub base model: its download's progress read from the Hugging Face cache, a killed download's partial
files swept, the offline cache used as it is, and a hub that cannot be reached named in one line.

No hub is reachable here (and none is emulated): the download itself is huggingface_hub's. What is ours
is tested on the real cache layout and, for an unreachable hub, through the real huggingface_hub."""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from orchestrator import hub

REPO_ID = "someone/Qwen3-Tiny"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_is_hub_id_tells_a_hub_id_from_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "mine").mkdir(parents=True)
    assert hub.is_hub_id("Qwen/Qwen3-4B")
    assert not hub.is_hub_id("models/mine")  # exists here
    assert not hub.is_hub_id("./Qwen/Qwen3-4B") and not hub.is_hub_id("/abs/path") and not hub.is_hub_id("a/b/c")


def test_on_disk_counts_whole_blobs_and_what_partial_ones_hold(hf_cache):
    blobs = hub.cache_folder(REPO_ID) / "blobs"
    blobs.mkdir(parents=True)
    expected = {"aaa": 100, "bbb": 50, "ccc": 10}
    (blobs / "aaa").write_bytes(b"x" * 100)
    (blobs / "bbb.1f2e3d4c.incomplete").write_bytes(b"x" * 20)
    (blobs / "bbb.incomplete").write_bytes(b"x" * 5)  # an older huggingface_hub's name: the larger one counts
    (blobs / "zzz").write_bytes(b"x" * 999)  # another revision's blob is not this download's
    assert hub.on_disk(blobs, expected) == 120
    assert hub.on_disk(blobs.parent / "missing", expected) == 0


def test_watch_reports_the_bytes_as_a_download_writes_them(hf_cache, monkeypatch):
    monkeypatch.setattr(hub, "POLL_S", 0.02)
    blobs = hub.cache_folder(REPO_ID) / "blobs"
    blobs.mkdir(parents=True)
    expected = {"weights": 4000, "config": 100}

    def download():  # writes the way huggingface_hub does: a partial file, renamed to the blob when whole
        part = blobs / "weights.0a1b2c3d.incomplete"
        with part.open("wb") as handle:
            for _ in range(4):
                handle.write(b"w" * 1000)
                handle.flush()
                time.sleep(0.1)
        part.rename(blobs / "weights")
        (blobs / "config").write_bytes(b"c" * 100)

    seen: list[int] = []
    worker = threading.Thread(target=download)
    worker.start()
    hub.watch(worker, blobs, expected, seen.append)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)  # growing, each figure once
    assert len(seen) >= 3 and 0 < seen[1] < 4100  # partial figures came before the end
    assert seen[-1] == 4100


def test_a_dead_download_s_partial_files_are_swept_a_live_one_s_kept(hf_cache):
    from huggingface_hub.file_download import repo_folder_name

    blobs = hub.cache_folder(REPO_ID) / "blobs"
    blobs.mkdir(parents=True)
    dead, live, other = blobs / "dead.11111111.incomplete", blobs / "live.22222222.incomplete", blobs / "x.incomplete"
    for path in (dead, live, other):
        path.write_bytes(b"partial")
    locks = hf_cache / ".locks" / repo_folder_name(repo_id=REPO_ID, repo_type="model")
    locks.mkdir(parents=True)
    holder = subprocess.Popen(  # another process downloading "live" holds its lock, as huggingface_hub does
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock\n"
            f"with FileLock({str(locks / 'live.lock')!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert hub.sweep(REPO_ID, {"dead": 7, "live": 7}) == 1
    finally:
        holder.kill()
        holder.wait()
    assert not dead.exists() and live.exists() and other.exists()  # "x" is not this model's


def _cached_snapshot(cache: Path, commit: str = "0" * 40) -> Path:
    """A model in the cache laid out as huggingface_hub leaves it: refs/main names the snapshot."""
    from huggingface_hub.file_download import repo_folder_name

    folder = cache / repo_folder_name(repo_id=REPO_ID, repo_type="model")
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    return snapshot


def test_offline_a_cached_model_is_used_as_it_is_and_a_missing_one_named(hf_cache, monkeypatch):
    from orchestrator.errors import StageError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    calls = []
    with pytest.raises(StageError) as missing:
        hub.ensure(REPO_ID, on_transfer=lambda *a: calls.append(a), on_info=calls.append)
    assert str(missing.value).startswith(f"base model {REPO_ID} is not in the Hugging Face cache")
    assert "\n" not in str(missing.value) and "model.name_or_path" in str(missing.value)
    snapshot = _cached_snapshot(hf_cache)
    assert hub.ensure(REPO_ID, on_transfer=lambda *a: calls.append(a), on_info=calls.append) == snapshot
    assert calls == []  # nothing to download, nothing shown


def _hub_recipe(workdir: Path) -> Path:
    recipe = {
        "name": "from-hub",
        "model": {"name_or_path": REPO_ID},
        "data": {"sources": [{"type": "file", "path": "data/samples/conversations.jsonl"}]},
        "train": {"max_steps": 1},
        "stages": ["data", "train"],
    }
    path = workdir / "from-hub.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_an_unreachable_hub_stops_the_run_in_one_line_with_the_fix(workdir, tmp_path):
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    recipe = _hub_recipe(workdir)
    env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_CACHE=str(tmp_path / "hf-cache"))
    env.pop("HF_HUB_OFFLINE", None)
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(recipe), "--only", "train"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if f"base model {REPO_ID}" in line]
    assert len(lines) == 1, out.stderr
    assert "could not be downloaded from the Hugging Face hub (ConnectError)" in lines[0]
    assert "model.name_or_path" in lines[0]
