"""The JSON files of model and adapter folders, read with one-line refusals naming the file, the key
and the fix: not UTF-8, not JSON, not an object, a value of the wrong kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError

MISSING: Any = object()


def json_kind(value: Any) -> str:
    """How JSON calls the kind of ``value``: object, list, string, number, true/false or null."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    kinds = {dict: "an object", list: "a list", str: "a string", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def read_json_object(path: Path, fix: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``fix`` says what to do when the file is not one."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, not a JSON file; {fix}") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror}); {fix}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text, so not JSON; {fix}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); {fix}"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: holds {json_kind(data)}, not a JSON object; {fix}")
    return data


def count(data: dict[str, Any], key: str, where: Path, fix: str, default: Any = MISSING) -> int:
    """``data[key]`` as a positive whole number (true/false and 2.5 are refused); ``default`` when absent."""
    value = data.get(key)
    if value is None:
        if default is MISSING:
            raise UsageError(f"{where}: {key} is missing; {fix}")
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"{where}: {key} is {json.dumps(value)}, not a positive whole number; {fix}")
    return value


def number(data: dict[str, Any], key: str, where: Path, fix: str, default: Any = MISSING) -> float:
    """``data[key]`` as a positive number; ``default`` when absent."""
    value = data.get(key)
    if value is None:
        if default is MISSING:
            raise UsageError(f"{where}: {key} is missing; {fix}")
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise UsageError(f"{where}: {key} is {json.dumps(value)}, not a positive number; {fix}")
    return float(value)


def flag(data: dict[str, Any], key: str, where: Path, fix: str, default: bool = False) -> bool:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise UsageError(f"{where}: {key} is {json.dumps(value)}, not true or false; {fix}")
    return value


def mapping(data: dict[str, Any], key: str, where: Path, fix: str) -> dict[str, Any]:
    """``data[key]`` as an object ({} when absent or null)."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{where}: {key} is {json_kind(value)}, not a JSON object; {fix}")
    return value
