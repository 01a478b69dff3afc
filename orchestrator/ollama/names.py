"""Ollama's model names, checked by the rules of its ``types/model/name.go`` (``ParseName`` + ``IsValid``).

A name is ``[host/][namespace/]model[:tag]``; missing parts take the defaults ``registry.ollama.ai``,
``library`` and ``latest``. A separator with nothing after it (``model:``, ``ns/``) makes the name
invalid. Each part starts with a letter, digit or ``_`` and goes on with those, ``-`` and ``.`` (no ``.``
in a namespace; ``:`` only in a host, for a port); a host has at most 350 characters, the others 80.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import UsageError

DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
_MISSING = "!MISSING!"  # name.go's MissingPart: a part promised by a separator but empty (never valid)
_LIMITS = {"host": 350, "namespace": 80, "model": 80, "tag": 80}


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    def __str__(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"


def parse_model_name(name: str) -> ModelName:
    """``name`` split into its parts, defaults filled in (Ollama's ``ParseName``); parts are not checked."""
    host = namespace = tag = ""
    rest = name
    if rest.rfind(":") > rest.rfind("/"):  # "/" cannot be in a tag, so a ":" after the last "/" starts one
        rest, tag, _ = _cut_last(rest, ":")
    rest, model, promised = _cut_last(rest, "/")
    if not promised:
        model = rest
    else:
        rest, namespace, promised = _cut_last(rest, "/")
        if not promised:
            namespace = rest
        else:
            scheme, sep, after = rest.partition("://")
            host = after if sep else scheme
    return ModelName(host or DEFAULT_REGISTRY, namespace or DEFAULT_NAMESPACE, model, tag or DEFAULT_TAG)


def is_valid_model_name(name: str) -> bool:
    parsed = parse_model_name(name)
    return all(_valid_part(kind, getattr(parsed, kind)) for kind in _LIMITS)


def check_model_name(name: str) -> str:
    """``name`` when Ollama accepts it as a model name; raises UsageError (exit 2) saying what is allowed."""
    if not is_valid_model_name(name):
        raise UsageError(
            f"'{name}' is not a valid Ollama model name; use [namespace/]model[:tag], each part starting with a "
            "letter, digit or '_' and going on with those, '-' and '.' (no '.' in a namespace), at most 80 "
            "characters, with nothing empty after a '/' or ':'"
        )
    return name


def _cut_last(text: str, sep: str) -> tuple[str, str, bool]:
    """name.go's ``cutPromised``: split at the last ``sep``; an empty side becomes the missing marker."""
    i = text.rfind(sep)
    if i < 0:
        return text, "", False
    return text[:i] or _MISSING, text[i + len(sep) :] or _MISSING, True


def _valid_part(kind: str, part: str) -> bool:
    if not 1 <= len(part) <= _LIMITS[kind] or not _word_char(part[0]):
        return False
    for char in part[1:]:
        if char in "_-" or _word_char(char):
            continue
        if char == "." and kind != "namespace":
            continue
        if char == ":" and kind == "host":
            continue
        return False
    return True


def _word_char(char: str) -> bool:
    return char.isascii() and (char.isalnum() or char == "_")
