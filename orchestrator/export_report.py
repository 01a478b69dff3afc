"""What an export did: read, written, held out, skipped and repaired, with examples of where."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.cleaning.report import cleaning_lines
from orchestrator.cleaning.split import EVAL_SUFFIX
from orchestrator.prepare import LONG_MESSAGE_CHARS
from orchestrator.recipe import DataSpec
from orchestrator.text import counted

NEAR_DUPLICATES = DataSpec.model_fields["near_duplicates"].default


@dataclass
class ExportReport:
    name: str
    dataset_path: Path | None = None
    info_path: Path | None = None
    read: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    repaired: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    long_messages: int = 0
    report_path: Path | None = None
    redact: bool = True
    redacted: Counter = field(default_factory=Counter)
    exact_duplicates: int = 0
    near_duplicates: int = 0
    near_threshold: float | None = NEAR_DUPLICATES
    template: str = "qwen3"
    tokens: dict[str, Any] | None = None
    tokens_unavailable: str | None = None
    eval_written: int = 0
    eval_path: Path | None = None
    pairs: int | None = None  # preference pairs written (None: not asked for)
    pairs_skipped: Counter = field(default_factory=Counter)
    pref_path: Path | None = None

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 3:
            self.examples[reason].append(where)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": str(self.dataset_path) if self.dataset_path else None,
            "read": self.read,
            "written": self.written,
            "skipped": dict(self.skipped),
            "repaired": dict(self.repaired),
            "examples": self.examples,
            "long_messages": self.long_messages,
            "report": str(self.report_path) if self.report_path else None,
            "redact": self.redact,
            "redacted": dict(self.redacted),
            "duplicates": {"exact": self.exact_duplicates, "near": self.near_duplicates},
            "near_threshold": self.near_threshold,
            "template": self.template,
            "tokens": self.tokens,
            "tokens_unavailable": self.tokens_unavailable,
            "eval": self.eval_written,
            "eval_dataset": str(self.eval_path) if self.eval_path else None,
            "pairs": self.pairs,
            "pairs_skipped": dict(self.pairs_skipped),
            "pref_dataset": str(self.pref_path) if self.pref_path else None,
        }

    def lines(self) -> list[str]:
        """The report as human-readable lines."""
        skipped = sum(self.skipped.values())
        read = counted(self.read, "conversation")
        out = [f"dataset {self.name}: {read} read, {self.written} written, {skipped} skipped"]
        for reason, count in self.skipped.most_common():
            out.append(f"  skipped {count:>5}  {reason} (e.g. {', '.join(self.examples.get(reason, []))})")
        for kind, count in self.repaired.most_common():
            out.append(f"  repaired {count:>4}  {kind}")
        if self.long_messages:
            out.append(
                f"  note: {counted(self.long_messages, 'conversation')} "
                f"{'holds' if self.long_messages == 1 else 'hold'} a message over {LONG_MESSAGE_CHARS:,} "
                "characters; LLaMA-Factory cuts each example at cutoff_len tokens"
            )
        out += cleaning_lines(self)
        if self.dataset_path:
            out.append(f"  wrote {self.dataset_path} and the '{self.name}' entry of {self.info_path}")
        if self.eval_path:
            held = f"{counted(self.eval_written, 'conversation')} of the {self.written} held out for evaluation"
            out.append(f"  {held}: wrote {self.eval_path} and its '{self.name}{EVAL_SUFFIX}' entry")
        if self.pref_path:
            pairs = counted(self.pairs or 0, "preference pair")
            out.append(f"  {pairs}: wrote {self.pref_path} and its '{self.pref_path.stem}' entry")
        for reason, count in self.pairs_skipped.most_common():
            out.append(f"  pair skipped {count:>3}  {reason}")
        if self.report_path:
            out.append(f"  wrote this report as {self.report_path}")
        return out
