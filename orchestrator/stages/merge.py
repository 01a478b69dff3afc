"""The merge stage: ``llamafactory-cli export`` puts the adapter onto the unquantized base model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import llamafactory as lf
from orchestrator.context import RunContext, StageResult
from orchestrator.errors import StageError
from orchestrator.manifest import file_stat
from orchestrator.manifest import fingerprint as _fingerprint
from orchestrator.stages.train import ADAPTER_FILE, write_yaml

NAME = "merge"


@dataclass
class MergeResult:
    merged_dir: Path
    config_path: Path
    log_path: Path
    shards: list[str]
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"shards": self.shards, "bytes": self.bytes}


def merge(
    config: dict[str, Any],
    run_dir: Path,
    *,
    env: dict[str, str] | None = None,
    on_phase: Callable[[str], None] | None = None,
) -> MergeResult:
    """Write ``run_dir/export.yaml`` from ``config`` (a LLaMA-Factory export config: the adapter goes
    onto ``model_name_or_path`` into ``export_dir``) and run ``llamafactory-cli export``."""
    run_dir = Path(run_dir)
    adapter = Path(config["adapter_name_or_path"])
    if not (adapter / ADAPTER_FILE).is_file():
        raise StageError(f"no adapter in {adapter} to merge; run the train stage first")
    config_path = write_yaml(run_dir / "export.yaml", config)
    log_path = run_dir / "logs" / "export.log"
    merged = Path(config["export_dir"])
    lf.run_cli("export", config_path, log_path, env=env or {}, on_phase=on_phase)
    shards = sorted(p.name for p in merged.glob("*.safetensors"))
    if not shards:
        raise StageError(f"llamafactory-cli export wrote no safetensors in {merged}; see {log_path}")
    # LLaMA-Factory drops a plain-ChatML Modelfile here (no thinking, no tools); the register stage writes
    # one that matches training, so this one would only mislead.
    (merged / "Modelfile").unlink(missing_ok=True)
    size = sum((merged / s).stat().st_size for s in shards)
    return MergeResult(merged, config_path, log_path, shards, size)


def config(run: RunContext) -> dict[str, Any]:
    return lf.export_config(
        run.recipe, model_path=run.model_path, adapter_dir=run.adapter_dir, export_dir=run.merged_dir
    )


def fingerprint(run: RunContext) -> str:
    return _fingerprint(file_stat(run.adapter_dir / ADAPTER_FILE), config(run))


def run(run: RunContext) -> StageResult:
    run.ensure_model()
    run.reporter.info(f"merging the adapter onto {run.model_path}")
    env = run.lf_env()
    result = merge(config(run), run.run_dir, env=env, on_phase=run.reporter.info)
    return StageResult(
        inputs={"export_config": str(result.config_path), "adapter": str(run.adapter_dir)},
        outputs={"merged": str(result.merged_dir), "log": str(result.log_path)},
        details=result.to_dict(),
    )
