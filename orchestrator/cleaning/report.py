"""The export report's lines on what the cleaning steps did: redactions, duplicates, token counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.cleaning.tokens import KEEP_SHARE

if TYPE_CHECKING:
    from orchestrator.dataset import ExportReport


def cleaning_lines(report: ExportReport) -> list[str]:
    """The report's lines on redaction, duplicates and token counts."""
    out = [f"  redacted {count:>4}  <{kind}>" for kind, count in sorted(report.redacted.items())]
    if not report.redact:
        out.append("  redaction off (data.redact: false): secrets are written as they are")
    if report.near_threshold is None:
        near = "near duplicates not looked for (data.near_duplicates: null)"
    else:
        near = f"{report.near_duplicates} near (MinHash similarity >= {report.near_threshold})"
    out.append(f"  duplicates  {report.exact_duplicates} exact, {near}")
    if report.tokens_unavailable:
        return [*out, f"  tokens      not measured: {report.tokens_unavailable}"]
    if not report.tokens or not report.tokens["conversations"]:
        return out
    t = report.tokens
    figures = ", ".join(f"{k} {'~' if k in t.get('estimated', ()) else ''}{t[k]:,}" for k in ("p50", "p95", "max"))
    sampled = f"; ~ from a sample of {t['sample']:,}" if t.get("estimated") else ""
    out.append(f"  tokens      {figures} per conversation ({report.template}{sampled})")
    if t["cutoff_len"] is not None:
        over, cutoff = t["over_cutoff"], t["cutoff_len"]
        out.append(f"  over cutoff {over} of {t['conversations']} longer than cutoff_len {cutoff:,}")
        if over > (1 - KEEP_SHARE) * t["conversations"]:
            out.append(
                f"  warning: {over / t['conversations']:.0%} are cut at cutoff_len {cutoff:,}; "
                f"cutoff_len {t['cutoff_len_for_95']:,} keeps 95% whole"
            )
    return out
