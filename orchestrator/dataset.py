"""Write conversations as a LLaMA-Factory ShareGPT dataset, with a report: each chunk prepared
(``prepare``: repaired, redacted, serialized; by worker processes for a large JSONL file), then
deduplicated, split for evaluation and written here, in input order.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import export_pool
from orchestrator.cleaning.dedupe import NearDuplicates
from orchestrator.cleaning.redact import check_available
from orchestrator.cleaning.split import EVAL_SUFFIX, Splitter
from orchestrator.cleaning.tokens import TokenCounter
from orchestrator.conversations import Conversation, SkippedRecord
from orchestrator.dataset_info import (
    INFO_FILE,
    LOCK_FILE,
    check_name,
    dataset_entry,
    ranking_entry,
    read_dataset_info,
)
from orchestrator.errors import UsageError
from orchestrator.export_report import NEAR_DUPLICATES, ExportReport
from orchestrator.fsutil import atomic_path, file_lock, write_json
from orchestrator.prepare import CHUNK, Options, PreparedChunk, part_items, prepare_chunk
from orchestrator.recipe import DataSpec, TrainSpec
from orchestrator.sources import Sources

REPORT_SUFFIX = ".report.json"  # NAME.report.json, beside NAME.jsonl
# The recipe's defaults, so an export from Python or `orchestrator data export` cleans as a run does.
REDACT = DataSpec.model_fields["redact"].default
CUTOFF_LEN = TrainSpec.model_fields["cutoff_len"].default
EVAL_SPLIT = DataSpec.model_fields["eval_split"].default


def export_dataset(
    items: Iterable[Conversation | SkippedRecord],
    name: str,
    dataset_dir: str | Path = "data",
    *,
    keep_thinking: bool = True,
    redact: bool = REDACT,
    near_duplicates: float | None = NEAR_DUPLICATES,
    cutoff_len: int | None = CUTOFF_LEN,
    template: str = "qwen3",
    enable_thinking: bool | None = None,
    eval_split: float = EVAL_SPLIT,
    preferences: bool = False,
) -> ExportReport:
    """Write ``<dataset_dir>/<name>.jsonl``, its dataset_info.json entry and ``<name>.report.json``.

    Secrets are replaced by placeholders (``redact``), exact and near duplicates (MinHash similarity at
    least ``near_duplicates``; None: off) dropped, and the written conversations measured in Qwen3 tokens
    as ``template`` renders them (``enable_thinking``: default ``keep_thinking``) against ``cutoff_len``.
    ``eval_split`` (a share in (0, 1) or a count) holds conversations out in ``<name>_eval.jsonl``, its own
    dataset_info.json entry, chosen by the hash of each conversation's id (see ``cleaning.split``).
    ``preferences`` also writes the conversations' preference pairs as the ranking dataset ``<name>_pref``.

    A dataset_info.json that is not a JSON object of datasets stops the export before anything is
    replaced: it is checked before the sources are read and again, under its lock, before NAME.jsonl
    replaces the old file. Both files are replaced while that lock is held, so parallel exports into
    one folder keep each other's entries.
    """
    check_name(name)
    dataset_dir = Path(dataset_dir)
    info_path = dataset_dir / INFO_FILE
    read_dataset_info(info_path)  # fail before the (possibly long) read of the sources
    if redact:
        check_available()
    thinking = keep_thinking if enable_thinking is None else enable_thinking
    near = NearDuplicates(near_duplicates) if near_duplicates is not None else None
    tokens = TokenCounter(template, thinking, cutoff_len)
    options = Options(
        redact,
        keep_thinking,
        (near.bands, near.rows) if near else None,
        cutoff_len,
        (template, thinking) if tokens.enabled else None,
    )
    steps = _Steps(options, near, tokens)
    # Sources are read by parts (see prepare_part), in worker processes when their JSONL files are large;
    # any other iterable (and an export with preference pairs, which need each Conversation) as it is.
    by_parts = isinstance(items, Sources) and not preferences
    workers = _workers_for(items) if by_parts else 0
    with export_pool.PreparePool(workers) if workers else contextlib.nullcontext() as steps.pool:
        if by_parts:
            steps.parts = items.parts(export_pool.PART_BYTES)  # type: ignore[attr-defined]
            if steps.parts and not steps.parts[0][0]:  # the first source fails before any folder is made
                steps.parts[0] = (False, _peeked(steps.parts[0][1]))
        else:
            items = _peeked(items)
        from orchestrator.preferences import PREF_SUFFIX, PairWriter

        eval_name, pref_name = f"{name}{EVAL_SUFFIX}", f"{name}{PREF_SUFFIX}"
        wanted = [name] + [eval_name] * bool(eval_split) + [pref_name] * preferences
        targets = {entry: dataset_dir / f"{entry}.jsonl" for entry in wanted}
        report = ExportReport(name=name, redact=redact, near_threshold=near_duplicates, template=template)
        with contextlib.ExitStack() as locked:
            with contextlib.ExitStack() as files:
                handles = {entry: _open_target(files, target) for entry, target in targets.items()}
                steps.splitter = Splitter(eval_split, handles[name], handles.get(eval_name))
                if preferences:
                    steps.pairs = PairWriter(handles[pref_name], redact=redact, keep_thinking=keep_thinking)
                _write_records(items, report, steps)
                steps.splitter.finish()
                report.eval_written = steps.splitter.eval_written
                if steps.pairs:
                    report.pairs, report.pairs_skipped = steps.pairs.written, steps.pairs.skipped
                for handle in handles.values():
                    handle.flush()
                    os.fsync(handle.fileno())
                _check_written(name, report, eval_split, preferences)
                # Exports into one folder read, change and write dataset_info.json one at a time, so none loses
                # another's entry; held until it is written. The lock file stays (removing it would race).
                locked.enter_context(file_lock(dataset_dir / LOCK_FILE, what=str(info_path)))
                info = read_dataset_info(info_path)
            for entry, target in targets.items():  # every file is in place: register them
                info[entry] = ranking_entry(target.name) if entry == pref_name else dataset_entry(target.name)
            write_json(info_path, info)
    report.dataset_path, report.info_path = targets[name], info_path
    report.eval_path, report.pref_path = targets.get(eval_name), targets.get(pref_name)
    report.tokens = steps.tokens.summary()  # loads the tokenizer, if nothing did: then it may turn out unusable
    report.tokens_unavailable = steps.tokens.unavailable
    report.report_path = dataset_dir / f"{name}{REPORT_SUFFIX}"
    write_json(report.report_path, report.to_dict())
    return report


@dataclass
class _Steps:
    """What the export does to each conversation besides repairing it, and where it reads them."""

    options: Options
    near: NearDuplicates | None
    tokens: TokenCounter
    seen: set[bytes] = field(default_factory=set)
    splitter: Splitter | None = None
    pairs: Any = None  # a preferences.PairWriter when preference pairs are exported
    parts: list | None = None  # Sources.parts, when worker processes read the large JSONL files
    pool: Any = None  # their export_pool.PreparePool


def _workers_for(items: Any) -> int:
    """How many worker processes to prepare ``items`` with: none unless it holds large JSONL files
    (a ``Sources`` whose files add up to PARALLEL_BYTES) and this process may use several CPUs."""
    if not isinstance(items, Sources) or items.file_bytes() < export_pool.PARALLEL_BYTES:
        return 0
    workers = export_pool.worker_count()
    return workers if workers > 1 else 0


def _peeked(items: Iterable[Conversation | SkippedRecord]) -> Iterator[Conversation | SkippedRecord]:
    """``items``, its first one read now: a source that cannot be read at all fails here."""
    items = iter(items)
    first = next(items, None)
    return itertools.chain([] if first is None else [first], items)


def _open_target(files: contextlib.ExitStack, target: Path) -> Any:
    """A binary handle on ``target``'s temporary name; renamed into place when ``files`` closes cleanly."""
    tmp = files.enter_context(atomic_path(target))
    return files.enter_context(open(tmp, "wb"))


def _check_written(name: str, report: ExportReport, eval_split: float, preferences: bool) -> None:
    if report.written == 0:
        raise UsageError(_nothing_written(name, report))
    if preferences and not report.pairs:
        raise UsageError(
            f"data.preferences: none of the {report.read} conversations read holds a usable preference pair "
            "(rate answers up or down, or regenerate them, in Open WebUI); nothing was written"
        )
    if not eval_split:
        return
    if report.eval_written == 0:
        raise UsageError(
            f"data.eval_split: {eval_split} holds out none of the {report.written} conversations written; "
            "give a count instead (e.g. eval_split: 1); nothing was written"
        )
    if report.eval_written == report.written:
        raise UsageError(
            f"data.eval_split: {eval_split} holds out all {report.written} conversations written, leaving "
            "none to train on; hold out fewer; nothing was written"
        )


def _write_records(items: Iterable[Conversation | SkippedRecord], report: ExportReport, steps: _Steps) -> None:
    # The export keeps hundreds of thousands of objects alive (digests, sketches, the token sample) and
    # makes no reference cycles, so the cyclic collector would only walk them again and again (a fifth
    # of an export with near duplicates); it is paused meanwhile.
    collecting = gc.isenabled()
    gc.disable()
    try:
        parts = steps.parts
        if parts is None:
            _prepare_here(items, report, steps)
        else:
            for pooled, part in parts:
                if pooled and steps.pool:  # the parts of a large JSONL file, read by the worker processes
                    # the tokenizer the summary needs is loaded while they work on the first parts
                    for chunk in steps.pool.prepare(part, steps.options, steps.tokens.bound, steps.tokens.load):
                        _commit(chunk, report, steps)
                elif pooled:  # the same, here
                    for source_part in part:
                        for chunk in export_pool.batched(part_items(source_part), CHUNK):
                            _commit(prepare_chunk(chunk, steps.options, steps.tokens.bound()), report, steps)
                else:
                    _prepare_here(part, report, steps)
    finally:
        if collecting:
            gc.enable()


def _prepare_here(items: Iterable[Conversation | SkippedRecord], report: ExportReport, steps: _Steps) -> None:
    for chunk in export_pool.batched(items, CHUNK):
        if steps.pairs:
            for item in chunk:
                if isinstance(item, Conversation):
                    steps.pairs.add(item)
        _commit(prepare_chunk(chunk, steps.options, steps.tokens.bound()), report, steps)


def _commit(chunk: PreparedChunk, report: ExportReport, steps: _Steps) -> None:
    """Deduplicate a prepared chunk against everything written before it, and write it, in order."""
    digests = chunk.digest_list()
    report.read += len(digests) + len(chunk.skips)
    if not chunk.skips and steps.seen.isdisjoint(digests) and len(set(digests)) == len(digests):
        steps.seen.update(digests)  # the common chunk: nothing skipped, no exact duplicate
        chosen = list(range(len(digests)))
    else:
        chosen = _unique(chunk, digests, report, steps.seen)
    near = steps.near.seen_signed(chunk.signed, chosen) if steps.near else None
    if near is not None and any(near):
        for index in itertools.compress(chosen, near):
            report.near_duplicates += 1
            report.skip("near-duplicate conversation", chunk.where(index))
        chosen = list(itertools.compress(chosen, [not duplicate for duplicate in near]))
    kept = set(chosen) if len(chosen) < len(digests) else None  # None: every line
    for column, into in ((chunk.fixes, report.repaired), (chunk.redacted, report.redacted)):
        for index, counts in column.items():
            if kept is None or index in kept:
                into.update(counts)
    report.long_messages += sum(1 for index in chunk.long_messages if kept is None or index in kept)
    steps.splitter.write_lines(chunk.id, chunk.blob, chunk.ends, None if kept is None else chosen)
    report.written += len(chosen)
    steps.tokens.add_chunk(chosen, digests, chunk.exact, chunk.samples)


def _unique(chunk: PreparedChunk, digests: list[bytes], report: ExportReport, seen: set[bytes]) -> list[int]:
    """The indexes of the chunk's lines that are no exact duplicate, reporting the skips in input order."""
    skips = iter(chunk.skips)
    skip = next(skips, None)
    chosen = []
    for index, digest in enumerate([*digests, None]):
        while skip is not None and skip[0] == index:
            report.skip(skip[1], skip[2])
            skip = next(skips, None)
        if digest is None:
            break
        if digest in seen:
            report.exact_duplicates += 1
            report.skip("duplicate conversation", chunk.where(index))
            continue
        seen.add(digest)
        chosen.append(index)
    return chosen


def _nothing_written(name: str, report: ExportReport) -> str:
    which = (
        "the 1 conversation read cannot" if report.read == 1 else f"none of the {report.read} conversations read can"
    )
    return f"dataset {name}: {which} be trained on ({_reasons(report)}); nothing was written"


def _reasons(report: ExportReport) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in report.skipped.most_common()) or "no input"
