"""What conversation sources this machine holds, each with its conversation count (``data sources``).

Counts come from ``count(*)`` queries and the length of export arrays: no message is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import UsageError

# Open WebUI's DATA_DIR in its Docker image, and the named volume Docker keeps it in on the host.
OPEN_WEBUI_DIRS = (Path("/app/backend/data"), Path("/var/lib/docker/volumes/open-webui/_data"))


@dataclass
class FoundSource:
    type: str
    path: Path
    count: int | None = None
    problem: str | None = None  # why it could not be counted (one line, no message content)

    @property
    def spec(self) -> str:
        """The ``--source`` value that exports it."""
        return f"{self.type}:{self.path}"

    def line(self) -> str:
        what = f"{self.count} chat{'s' if self.count != 1 else ''}" if self.problem is None else self.problem
        return f"{self.type:<11} {self.path}  {what}  (--source {self.spec})"


def _exists(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a folder we may not enter (Docker's volumes are root's)
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def find_sources(
    open_webui: list[str | Path] | None = None,
    chatgpt: list[str | Path] | None = None,
    home: Path | None = None,
) -> list[FoundSource]:
    """The Ollama app's database at its default place (under ``home``, default the user's), Open WebUI's
    ``webui.db`` in each folder of ``open_webui`` (or, when none is given, at its usual places), and
    each export file given."""
    from orchestrator.sources import chatgpt as chatgpt_source
    from orchestrator.sources import ollama_app
    from orchestrator.sources import open_webui as webui

    found: list[FoundSource] = []
    app = ollama_app.default_path(home)
    if _exists(app):
        found.append(_counted("ollama_app", app, ollama_app.count_chats))
    given = [Path(p) for p in open_webui or []]
    for place in given or list(OPEN_WEBUI_DIRS):
        target = place / "webui.db" if _is_dir(place) else place
        if _exists(target):
            found.append(_counted("open_webui", target, webui.count_chats))
        elif given:
            found.append(FoundSource("open_webui", target, problem="no such file"))
    for path in (Path(p) for p in chatgpt or []):
        found.append(_counted("chatgpt", path, lambda p: len(chatgpt_source.export_items(p))))
    return found


def _counted(kind: str, path: Path, count) -> FoundSource:
    try:
        return FoundSource(kind, path, count(path))
    except UsageError as exc:
        return FoundSource(kind, path, problem=str(exc).removeprefix(f"{path}: "))
