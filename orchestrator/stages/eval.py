"""The eval stage: the tuned model beside the base model, on conversations kept out of training.

On the data stage's held-out dataset (``data.eval_split``) four eval-only ``llamafactory-cli train``
launches run, each loading one model: the held-out loss of the base and of the tuned model
(``do_eval``), and their greedy answers to the last user turn of a few held-out conversations
(``do_predict`` with ``predict_with_generate``), which LLaMA-Factory also scores (ROUGE, BLEU) against
the held-out answers. Loss and answers cannot share a launch: LLaMA-Factory 0.9.5 tokenizes a launch's
eval set once, for generation (the prompt alone, the answer as labels the model never sees) whenever
``predict_with_generate`` is on, for the loss otherwise (``data/loader.py``), and ``do_predict``
requires it on (``hparams/parser.py``).

Everything lands in ``eval/results.json``; after registration the register stage asks the served model
the same prompts (``write_served``: ``eval/served.json``). Message texts stay in those files: nothing
here logs them.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import llamafactory as lf
from orchestrator.cleaning.split import EVAL_SUFFIX
from orchestrator.context import Progress, RunContext, StageResult
from orchestrator.dataset_info import INFO_FILE, dataset_entry
from orchestrator.errors import StageError
from orchestrator.fsutil import read_json, write_json, write_text
from orchestrator.manifest import file_digest, file_stat
from orchestrator.manifest import fingerprint as _fingerprint
from orchestrator.stages.train import ADAPTER_FILE, write_yaml

if TYPE_CHECKING:
    from orchestrator.ollama.answers import ServedAnswers

NAME = "eval"
RESULTS_FILE = "results.json"
SERVED_FILE = "served.json"
SAMPLES = "eval_samples"  # the answered conversations' entry in eval/data/dataset_info.json
SIDES = ("base", "tuned")
NO_SPLIT = "no held-out conversations: set data.eval_split (e.g. 4) to evaluate on chats kept out of training"
CPU_WEIGHTS = "on the CPU the models' weights are loaded in float32 (the fastest there)"
ROLES = {"human": "user", "gpt": "assistant"}
_EMPTY_THINK = re.compile(r"^\s*<think>\s*</think>\s*")


@dataclass
class ModelScore:
    """One model on the held-out data: ``perplexity`` is exp(eval_loss); None where it is not finite."""

    model: str
    eval_loss: float | None
    perplexity: float | None
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Sample:
    """A held-out conversation cut before its last answer: ``record`` is its LLaMA-Factory line."""

    id: str
    record: dict[str, Any]
    messages: list[dict[str, str]]
    reference: str


@dataclass
class EvalResult:
    """What the stage found: the scores of both models and their answers, or why it was skipped."""

    dataset: str | None
    skipped: str | None = None
    conversations: int = 0
    base: ModelScore | None = None
    tuned: ModelScore | None = None
    answers: list[dict[str, Any]] = field(default_factory=list)
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """``eval/results.json``, the form the run report reads: when skipped, only the reason and the dataset."""
        if self.skipped:
            return {"skipped": self.skipped, **({"dataset": self.dataset} if self.dataset else {})}
        return {
            "skipped": None,
            "dataset": self.dataset,
            "conversations": self.conversations,
            "base": self.base.to_dict() if self.base else None,
            "tuned": self.tuned.to_dict() if self.tuned else None,
            "answers": self.answers,
        }

    def summary(self) -> dict[str, Any]:
        """The manifest's details: figures only, no message text."""
        if self.skipped:
            return {"skipped": self.skipped}
        scores = {side: getattr(self, side) for side in SIDES}
        return {
            "conversations": self.conversations,
            "answers": len(self.answers),
            **{f"{side}_eval_loss": s.eval_loss for side, s in scores.items() if s},
            **{f"{side}_perplexity": s.perplexity for side, s in scores.items() if s},
            **{f"{side}_metrics": s.metrics for side, s in scores.items() if s},
        }

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"eval skipped: {self.skipped}"]
        base, tuned = self.base, self.tuned
        out = [
            f"held-out loss on {self.conversations} conversations: base {_figure(base.eval_loss)} "
            f"(perplexity {_figure(base.perplexity)}), tuned {_figure(tuned.eval_loss)} "
            f"(perplexity {_figure(tuned.perplexity)})"
        ]
        if self.answers:
            rouge = [s.metrics.get("rouge-l") for s in (base, tuned)]
            out.append(
                f"answers to {len(self.answers)} held-out prompts, ROUGE-L against the held-out answers: "
                f"base {_figure(rouge[0])}, tuned {_figure(rouge[1])}; in {self.path}"
            )
        return out


def evaluate(
    configs: dict[str, dict[str, dict[str, Any]]],
    eval_file: Path,
    run_dir: Path,
    *,
    samples: int = 8,
    identities: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    float32_weights: bool = False,
    on_phase: Callable[[str], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> EvalResult:
    """Score the base and the tuned model on the held-out conversations of ``eval_file`` and write
    ``run_dir/eval/results.json``.

    ``configs[side]["loss"]`` and ``configs[side]["predict"]`` (side: base, tuned) are LLaMA-Factory
    eval-only configs (``llamafactory.eval_config``); the loss config names ``eval_file``'s dataset, the
    predict config the ``SAMPLES`` dataset this function writes from the first ``samples`` answerable
    conversations. ``identities[side]``, when given, identifies that model's weights: a side whose
    weights, configs and data are unchanged since the last evaluation keeps its scores (no launch).
    """
    eval_dir = Path(run_dir) / "eval"
    dataset = configs["base"]["loss"]["eval_dataset"]
    records = read_held_out(eval_file)
    if not records:
        reason = f"no held-out conversations in {eval_file}: set data.eval_split and run the data stage"
        return write_skipped(eval_dir, reason, dataset)
    picked = pick_samples(records, eval_file.name, samples)
    if picked:
        write_samples(picked, configs["base"]["predict"])
    data_key = [file_digest(eval_file), [s.record for s in picked]]
    launcher = _Launcher(eval_dir, Path(run_dir) / "logs", env or {}, float32_weights, on_phase, on_progress)
    scores, answers = {}, {}
    for side in SIDES:
        key = _fingerprint(identities[side], configs[side], data_key) if identities else None
        scores[side], answers[side] = launcher.score(side, configs[side], len(picked), key)
    result = EvalResult(dataset, None, len(records), scores["base"], scores["tuned"])
    result.answers = [
        {"id": s.id, "messages": s.messages, "reference": s.reference, "base": b, "tuned": t}
        for s, b, t in zip(picked, answers["base"], answers["tuned"], strict=True)
    ]
    return _write(eval_dir, result)


def write_skipped(eval_dir: Path, reason: str, dataset: str | None) -> EvalResult:
    return _write(Path(eval_dir), EvalResult(dataset, reason))


def _write(eval_dir: Path, result: EvalResult) -> EvalResult:
    (eval_dir / SERVED_FILE).unlink(missing_ok=True)  # answers of an earlier evaluation's prompts
    result.path = write_json(eval_dir / RESULTS_FILE, result.to_dict())
    return result


def read_held_out(path: Path) -> list[dict[str, Any]]:
    """The ShareGPT records of a held-out JSONL file (none when it does not exist)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise StageError(f"cannot read the held-out dataset {path} ({exc}); rerun the data stage") from None
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
            raise StageError(f"{path}, line {number}: not a LLaMA-Factory ShareGPT record; rerun the data stage")
        records.append(record)
    return records


def pick_samples(records: list[dict[str, Any]], file_name: str, count: int) -> list[Sample]:
    """The first ``count`` records that are plain chats (user and assistant turns, no tools) ending on an
    answer to a user turn; ids are ``<file name>:<line>`` (the exported file carries no chat ids)."""
    picked: list[Sample] = []
    for number, record in enumerate(records, 1):
        if len(picked) >= count:
            break
        turns = record["conversations"]
        system = str(record.get("system") or "")
        if turns and isinstance(turns[0], dict) and turns[0].get("from") == "system":
            system, turns = str(turns[0].get("value") or ""), turns[1:]
        plain = all(isinstance(t, dict) and t.get("from") in ROLES and isinstance(t.get("value"), str) for t in turns)
        if not plain or record.get("tools") or len(turns) < 2 or len(turns) % 2 or turns[-1]["from"] != "gpt":
            continue
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": ROLES[t["from"]], "content": t["value"]} for t in turns[:-1]]
        picked.append(Sample(f"{file_name}:{number}", record, messages, turns[-1]["value"]))
    return picked


def write_samples(picked: list[Sample], predict_config: dict[str, Any]) -> Path:
    """The answered conversations as their own dataset, where the predict config looks for it (inside the
    run folder: the user's data folder gets nothing of the eval's)."""
    folder = Path(predict_config["dataset_dir"])
    name = predict_config["eval_dataset"]
    lines = "".join(json.dumps(s.record, ensure_ascii=False) + "\n" for s in picked)
    path = write_text(folder / f"{name}.jsonl", lines)
    write_json(folder / INFO_FILE, {name: dataset_entry(path.name)})
    return path


@dataclass
class _Launcher:
    """Runs eval-only ``llamafactory-cli train`` launches: configs in eval/, logs in logs/eval-*.log."""

    eval_dir: Path
    logs_dir: Path
    env: dict[str, str]
    float32_weights: bool
    on_phase: Callable[[str], None] | None
    on_progress: Callable[[Progress], None] | None = None  # LLaMA-Factory's eval steps, every fifth

    def say(self, message: str) -> None:
        if self.on_phase:
            self.on_phase(message)

    def launch(self, config: dict[str, Any], name: str) -> tuple[Path, Path]:
        """Run one launch; returns its output folder and its log."""
        out = Path(config["output_dir"])
        shutil.rmtree(out, ignore_errors=True)  # never read an earlier launch's results
        config_path = write_yaml(self.eval_dir / f"{name}.yaml", config)
        log_path = self.logs_dir / f"eval-{name}.log"
        lf.run_cli(
            "train",
            config_path,
            log_path,
            env=self.env,
            trainer_log=out / "trainer_log.jsonl",  # eval-only launches log every fifth batch there
            on_progress=self.on_progress,
            float32_weights=self.float32_weights,
            on_phase=self.on_phase,
        )
        return out, log_path

    def score(
        self, side: str, configs: dict[str, dict[str, Any]], count: int, key: str | None
    ) -> tuple[ModelScore, list[str]]:
        """One model's loss (one launch) and, when there are samples, its answers and their metrics
        (another); kept in eval/<side>.json, and taken from there when ``key`` is the one it was made with."""
        cache = self.eval_dir / f"{side}.json"
        saved = _cached(cache, key)
        if saved:
            self.say(f"the {side} model's scores are reused: its weights, configs and data are unchanged")
            return saved
        model = configs["loss"].get("adapter_name_or_path") or configs["loss"]["model_name_or_path"]
        self.say(f"evaluating the {side} model ({model}): held-out loss")
        out, log = self.launch(configs["loss"], f"{side}-loss")
        loss = lf.read_eval_loss(out, log)
        finite = loss if math.isfinite(loss) else None
        score = ModelScore(str(model), finite, perplexity(finite))
        answers: list[str] = []
        if count:
            self.say(f"evaluating the {side} model: answers to {count} held-out prompts")
            out, log = self.launch(configs["predict"], f"{side}-predict")
            texts, score.metrics = lf.read_predictions(out, count, log)
            # An empty think block carries nothing (Ollama hands it over as empty thinking).
            answers = [_EMPTY_THINK.sub("", text, count=1) for text in texts]
        write_json(cache, {"key": key, "score": score.to_dict(), "answers": answers})
        return score, answers


def _cached(path: Path, key: str | None) -> tuple[ModelScore, list[str]] | None:
    saved = read_json(path)
    if not key or not isinstance(saved, dict) or saved.get("key") != key:
        return None
    try:
        return ModelScore(**saved["score"]), [str(a) for a in saved["answers"]]
    except (KeyError, TypeError):
        return None


def perplexity(loss: float | None) -> float | None:
    """exp(loss); None for no loss or one too large to exponentiate."""
    if loss is None:
        return None
    try:
        return math.exp(loss)
    except OverflowError:
        return None


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


# -- the pipeline's side ------------------------------------------------------------------------------


def eval_file(run: RunContext) -> Path:
    return run.dataset_dir / f"{run.recipe.dataset_name}{EVAL_SUFFIX}.jsonl"


def _tuned(run: RunContext) -> tuple[str, Path | None]:
    """The tuned model as it is served: the merged model, or for ``serve: adapter`` the base plus the LoRA."""
    if run.recipe.ollama.serve == "adapter":
        return run.model_path, run.adapter_dir
    return str(run.merged_dir), None


def _tuned_weights(run: RunContext) -> list[dict[str, Any]]:
    if run.recipe.ollama.serve == "adapter":
        return [file_stat(run.adapter_dir / ADAPTER_FILE)]
    return [file_stat(p) for p in sorted(run.merged_dir.glob("*.safetensors"))]


def configs(run: RunContext) -> dict[str, dict[str, dict[str, Any]]]:
    """The four LLaMA-Factory configs, by side (base, tuned) and kind (loss, predict)."""
    recipe, eval_dir = run.recipe, run.run_dir / "eval"
    models = {"base": (run.model_path, None), "tuned": _tuned(run)}
    out = {}
    for side, (model, adapter) in models.items():
        common: dict[str, Any] = {"model_path": model, "adapter_dir": adapter}
        out[side] = {
            "loss": lf.eval_config(
                recipe,
                run.hardware,
                **common,
                dataset=f"{recipe.dataset_name}{EVAL_SUFFIX}",
                dataset_dir=run.dataset_dir,
                output_dir=eval_dir / side / "loss",
            ),
            "predict": lf.eval_config(
                recipe,
                run.hardware,
                **common,
                dataset=SAMPLES,
                dataset_dir=eval_dir / "data",
                output_dir=eval_dir / side / "predict",
                max_new_tokens=recipe.eval.max_new_tokens,
            ),
        }
    return out


def fingerprint(run: RunContext) -> str:
    recipe = run.recipe
    if not recipe.data.eval_split:
        return _fingerprint("skipped", recipe.dataset_name)
    return _fingerprint(
        _tuned_weights(run),
        run.model_identity(),
        file_digest(eval_file(run)),
        configs(run),
        recipe.eval.model_dump(),
        run.hardware.backend,  # float32 weights on the CPU
    )


def run(run: RunContext) -> StageResult:
    recipe = run.recipe
    dataset = f"{recipe.dataset_name}{EVAL_SUFFIX}"
    if not recipe.data.eval_split:
        result = write_skipped(run.run_dir / "eval", NO_SPLIT, dataset)
    else:
        result = _evaluate(run)
    for line in result.lines():
        run.reporter.info(line)
    return StageResult(
        inputs={"eval_dataset": str(eval_file(run)), "base": run.model_path, "tuned": _tuned(run)[0]},
        outputs={"results": str(result.path)},
        details=result.summary(),
    )


def _evaluate(run: RunContext) -> EvalResult:
    run.ensure_model()
    model, adapter = _tuned(run)
    if adapter is not None and not (adapter / ADAPTER_FILE).is_file():
        raise StageError(f"no adapter in {adapter} to evaluate; run the train stage first")
    if adapter is None and not any(Path(model).glob("*.safetensors")):
        raise StageError(f"no merged model in {model} to evaluate; run the merge stage first")
    float32 = run.hardware.backend == "cpu"
    if float32:
        run.reporter.info(CPU_WEIGHTS)
    run.reporter.info(f"evaluating on held-out conversations; LLaMA-Factory's output goes to {run.logs_dir}/eval-*.log")
    try:
        return evaluate(
            configs(run),
            eval_file(run),
            run.run_dir,
            samples=run.recipe.eval.samples,
            identities={"base": run.model_identity(), "tuned": _tuned_weights(run)},
            env=run.lf_env(),
            float32_weights=float32,
            on_phase=run.reporter.info,
            on_progress=run.reporter.progress,
        )
    finally:
        shutil.rmtree(run.cache_dir / "datasets", ignore_errors=True)  # tokenized private chats


# -- served answers (after the register stage) --------------------------------------------------------


def write_served(run: RunContext, host: str | None, model: str) -> ServedAnswers | None:
    """Ask the registered ``model`` at ``host`` the prompts of ``eval/results.json`` (greedy, as long as the
    evaluation's answers at most, thinking as trained) and write ``eval/served.json``. None, with nothing
    written, when the evaluation has no answers. Ollama's failures are recorded in the file, not raised."""
    from orchestrator.ollama.answers import ask_all
    from orchestrator.ollama.templates import thinks

    path = run.run_dir / "eval" / RESULTS_FILE
    results = read_json(path)
    answers = results.get("answers") if isinstance(results, dict) else None
    if not isinstance(answers, list) or not answers:
        return None
    prompts = [a.get("messages") if isinstance(a, dict) else None for a in answers]
    if not all(isinstance(p, list) and all(isinstance(m, dict) for m in p) for p in prompts):
        raise StageError(f"{path} is damaged (answers without messages); rerun the eval stage")
    recipe = run.recipe
    served = ask_all(
        prompts,
        host=host,
        model=model,
        think=thinks(recipe.model.resolved_template, recipe.model.enable_thinking),
        num_predict=recipe.eval.max_new_tokens,
    )
    served.path = write_json(path.with_name(SERVED_FILE), served.to_dict())
    return served
