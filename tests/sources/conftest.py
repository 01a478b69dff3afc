"""Helpers for the source tests: run the real `orchestrator data export` and read back what it wrote."""

import json

import pytest

from orchestrator.cli import main


class Exported:
    def __init__(self, rc: int, out: str, err: str, records: list[dict]):
        self.rc, self.out, self.err, self.records = rc, out, err, records

    def turns(self, index: int) -> list[tuple[str, str]]:
        return [(t["from"], t["value"]) for t in self.records[index]["conversations"]]

    def skipped(self, reason: str) -> int:
        """The count the report prints for a skip reason (0 when it has no line)."""
        for line in self.out.splitlines():
            line = line.strip()
            if line.startswith("skipped") and line.split(None, 2)[2].startswith(reason + " (e.g."):
                return int(line.split()[1])
        return 0


@pytest.fixture
def export(tmp_path, capsys):
    """export(*args) runs `orchestrator data export --name chats --dataset-dir OUT *args`."""

    def run(*args: str) -> Exported:
        out_dir = tmp_path / "out"
        rc = main(["data", "export", "--name", "chats", "--dataset-dir", str(out_dir), *args])
        captured = capsys.readouterr()
        target = out_dir / "chats.jsonl"
        records = [json.loads(line) for line in target.read_text().splitlines()] if rc == 0 else []
        if rc == 0:
            target.unlink()
        return Exported(rc, captured.out, captured.err, records)

    return run
