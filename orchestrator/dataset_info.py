"""``dataset_info.json``: its entries, reading it safely, and the dataset names allowed in it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from orchestrator.conversations import json_type
from orchestrator.errors import UsageError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# NAME_pref.jsonl and its temporary name (".NAME_pref.jsonl.<pid>.tmp") must fit the 255-byte file name limit.
MAX_NAME_LENGTH = 200
INFO_FILE = "dataset_info.json"
LOCK_FILE = ".dataset_info.json.lock"


def dataset_entry(file_name: str) -> dict[str, Any]:
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
    }


def read_dataset_info(info_path: Path) -> dict[str, Any]:
    """The datasets of ``dataset_info.json`` (empty when it does not exist); anything but a JSON object of
    datasets is a UsageError, raised before the export changes anything."""
    try:
        text = info_path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return {}  # a folder still to create (or a path that cannot be one: the write says so)
    except OSError as exc:
        raise UsageError(f"cannot read {info_path}: {exc.strerror}; nothing was changed") from None
    try:
        info = json.loads(text.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UsageError(f"{info_path}: not valid JSON ({exc}); fix or remove it, nothing was changed") from None
    if not isinstance(info, dict):
        raise UsageError(
            f"{info_path}: expected a JSON object of datasets, got {json_type(info)}; fix or remove it, "
            "nothing was changed"
        )
    return info


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise UsageError(f"dataset name '{name}' is not allowed; use letters, digits, '_', '-' and '.'")
    if len(name) > MAX_NAME_LENGTH:
        raise UsageError(
            f"dataset name '{name[:20]}...' is too long ({len(name)} characters); use at most {MAX_NAME_LENGTH}"
        )
    return name


def ranking_entry(file_name: str) -> dict[str, Any]:
    """A LLaMA-Factory preference (ranking) dataset: a ShareGPT prompt ending on a user turn, and the
    chosen and rejected answers as one ``{"from": "gpt", "value"}`` turn each."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {
            "messages": "conversations",
            "system": "system",
            "tools": "tools",
            "chosen": "chosen",
            "rejected": "rejected",
        },
    }
