"""The base model from the Hugging Face hub, downloaded before LLaMA-Factory starts, with its bytes shown by
the run's one progress renderer.

LLaMA-Factory would download a hub id itself, but inside its log and with tqdm bars of its own. The
download is done here instead, by ``huggingface_hub.snapshot_download`` into the usual Hugging Face
cache (so LLaMA-Factory, transformers and a later run find it there). Its progress is read from the
cache folder, not from huggingface_hub's tqdm bars, whose shape changes between its versions: every
file of the snapshot has a known blob name and size, and what is in the blobs folder (whole files, and
the ``<blob>…incomplete`` files being written) is how far the download has come.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.errors import StageError

# What LLaMA-Factory needs of a Qwen3 repo: config, tokenizer, safetensors weights, chat template.
# Left out: README/LICENSE need nothing, and *.bin, *.gguf or original/ copies would double the download.
PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "*.py"]
POLL_S = 0.5


def is_hub_id(name: str) -> bool:
    """An ``owner/name`` that is not a local path."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def ensure(
    repo_id: str,
    *,
    on_transfer: Callable[[str, int, int], None],
    on_info: Callable[[str], None],
    revision: str | None = None,
) -> Path:
    """The local snapshot folder of ``repo_id``, downloaded first when the cache lacks any of its files."""
    from huggingface_hub import snapshot_download

    if offline():
        try:
            return Path(snapshot_download(repo_id, revision=revision, allow_patterns=PATTERNS, local_files_only=True))
        except Exception as exc:
            raise StageError(
                f"base model {repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                "unset it to download the model, or set model.name_or_path to a local folder"
            ) from exc
    try:
        expected = files(repo_id, revision)
    except Exception as exc:
        raise StageError(hub_error(repo_id, exc)) from exc
    total = sum(expected.values())
    blobs = cache_folder(repo_id) / "blobs"
    sweep(repo_id, expected)
    if on_disk(blobs, expected) < total:
        on_info(f"downloading base model {repo_id} ({len(expected)} files) into {cache_folder(repo_id)}")
    result: dict[str, Any] = {}

    def download() -> None:
        try:
            result["path"] = snapshot_download(
                repo_id, revision=revision, allow_patterns=PATTERNS, tqdm_class=_silent()
            )
        except BaseException as exc:  # handed to the waiting thread, which raises it as a StageError
            result["error"] = exc

    worker = threading.Thread(target=download, name=f"download {repo_id}", daemon=True)
    worker.start()
    watch(worker, blobs, expected, lambda done: on_transfer(f"download {repo_id}", done, total))
    if "error" in result:
        raise StageError(hub_error(repo_id, result["error"])) from result["error"]
    return Path(result["path"])


def watch(worker: threading.Thread, blobs: Path, expected: dict[str, int], report: Callable[[int], None]) -> None:
    """Report the bytes in ``blobs`` every POLL_S until ``worker`` ends, then once more."""
    last = -1
    while True:
        worker.join(POLL_S)
        done = on_disk(blobs, expected)
        if done != last:
            report(done)
            last = done
        if not worker.is_alive():
            return


def files(repo_id: str, revision: str | None) -> dict[str, int]:
    """The blob name (what the cache calls the file) and size of every file of the snapshot to download."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings or []}
    wanted = filter_repo_objects(siblings, allow_patterns=PATTERNS)
    blobs: dict[str, int] = {}
    for name in wanted:
        sibling = siblings[name]
        lfs = sibling.lfs
        blob = lfs.sha256 if lfs else sibling.blob_id
        if blob:
            blobs[blob] = (lfs.size if lfs else sibling.size) or 0
    return blobs


def sweep(repo_id: str, expected: dict[str, int]) -> int:
    """Remove the partial files a killed download left for the expected blobs, each only when nobody holds
    the blob's lock (huggingface_hub holds it while it writes). Returns how many were removed."""
    from filelock import FileLock, Timeout
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    blobs = cache_folder(repo_id) / "blobs"
    locks = Path(constants.HF_HUB_CACHE) / ".locks" / repo_folder_name(repo_id=repo_id, repo_type="model")
    stale: dict[str, list[Path]] = {}
    for path in blobs.glob("*.incomplete") if blobs.is_dir() else ():
        blob = path.name.partition(".")[0]
        if blob in expected:
            stale.setdefault(blob, []).append(path)
    removed = 0
    for blob, paths in stale.items():
        locks.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(locks / f"{blob}.lock"), timeout=0):
                removed += _unlink(paths)
        except Timeout:  # another download of this model is writing it
            continue
    return removed


def _unlink(paths: list[Path]) -> int:
    count = 0
    for path in paths:
        try:
            path.unlink()
            count += 1
        except FileNotFoundError:
            pass
    return count


def cache_folder(repo_id: str) -> Path:
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")


def on_disk(blobs: Path, expected: dict[str, int]) -> int:
    """Bytes of the expected blobs present: a whole blob counts its size, one being written what it has."""
    have: dict[str, int] = {}
    try:
        entries = list(os.scandir(blobs))
    except OSError:
        return 0
    for entry in entries:
        blob, _, rest = entry.name.partition(".")
        if blob not in expected:
            continue
        try:
            size = expected[blob] if not rest else entry.stat().st_size
        except OSError:  # renamed or removed since the scan
            continue
        have[blob] = max(have.get(blob, 0), min(size, expected[blob]))
    return sum(have.values())


def hub_error(repo_id: str, exc: BaseException) -> str:
    """One line for a failed download, with the fix; never the token, never the hub's multi-line text."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    if isinstance(exc, GatedRepoError):
        return (
            f"base model {repo_id} is gated on the Hugging Face hub: accept its terms on its page, then "
            "log in (hf auth login, or HF_TOKEN)"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"base model {repo_id} was not found on the Hugging Face hub: check model.name_or_path "
            "(a private repo needs hf auth login, or HF_TOKEN)"
        )
    if isinstance(exc, KeyboardInterrupt):
        return f"the download of base model {repo_id} was interrupted; the next run keeps the files it finished"
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        why = f"HTTP {exc.response.status_code}"
    else:
        why = type(exc).__name__
    return (
        f"base model {repo_id} could not be downloaded from the Hugging Face hub ({why}): check the network "
        "(HF_ENDPOINT for a mirror), or download it elsewhere and set model.name_or_path to its folder"
    )


def _silent() -> type:
    """huggingface_hub's own bar class, always disabled: the progress shown is ours (read from the cache)."""
    from huggingface_hub.utils import tqdm

    class Silent(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return Silent
