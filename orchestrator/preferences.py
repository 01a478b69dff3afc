"""Preference pairs as LLaMA-Factory ranking records, for ``train.stage: dpo``.

Each pair (``Conversation.preferences``, from a source that keeps sibling answers) is repaired and
redacted as a conversation is, once with each answer; the record is the shared ShareGPT prompt (ending
on the user turn) with the chosen and the rejected answer as one turn each.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

from orchestrator.cleaning.redact import redact_conversation
from orchestrator.conversations import Conversation, PreferencePair
from orchestrator.prepare import Skip, _is_empty, repair, to_sharegpt

PREF_SUFFIX = "_pref"


def pair_record(pair: PreferencePair, tools: list[dict[str, Any]], *, redact: bool, keep_thinking: bool) -> dict:
    """One ranking record; Skip when the pair cannot be trained on."""
    if _is_empty(pair.chosen) or _is_empty(pair.rejected):
        raise Skip("an answer of the pair is empty")
    sides = []
    for answer in (pair.chosen, pair.rejected):
        turns, system, _ = repair(Conversation(id="pair", messages=[*pair.prompt, answer]), keep_thinking=keep_thinking)
        if redact:
            turns, system, _ = redact_conversation(turns, system)
        sides.append(to_sharegpt(turns, system, tools))
    chosen, rejected = sides
    if chosen["conversations"][:-1] != rejected["conversations"][:-1] or chosen["system"] != rejected["system"]:
        raise Skip("the two answers do not share their history")
    if chosen["conversations"][-1] == rejected["conversations"][-1]:
        raise Skip("the two answers are the same")
    return {
        "conversations": chosen["conversations"][:-1],
        "chosen": chosen["conversations"][-1],
        "rejected": rejected["conversations"][-1],
        "system": chosen["system"],
        "tools": chosen["tools"],
    }


class PairWriter:
    """Writes every pair of the conversations it is given, once each, counting what it skips."""

    def __init__(self, handle: Any, *, redact: bool, keep_thinking: bool):
        self.handle, self.redact, self.keep_thinking = handle, redact, keep_thinking
        self.written = 0
        self.skipped: Counter = Counter()
        self.seen: set[str] = set()

    def add(self, conv: Conversation) -> None:
        for pair in conv.preferences:
            try:
                record = pair_record(pair, conv.tools, redact=self.redact, keep_thinking=self.keep_thinking)
                line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
            except Skip as exc:
                self.skipped[str(exc)] += 1
                continue
            except (UnicodeEncodeError, TypeError, ValueError, RecursionError):
                self.skipped["text or values that are not JSON data"] += 1
                continue
            digest = hashlib.sha256(line).hexdigest()
            if digest in self.seen:
                self.skipped["duplicate pair"] += 1
                continue
            self.seen.add(digest)
            self.handle.write(line)
            self.written += 1
