"""The project's exceptions. Library code raises them; only the CLI turns them into exit codes."""

from __future__ import annotations


class OrchestratorError(Exception):
    """A failure the user can act on; its message is one line naming the cause and the fix."""

    exit_code = 1


class UsageError(OrchestratorError):
    """Bad usage or bad input (a recipe, a file): exit code 2."""

    exit_code = 2


class RecipeError(UsageError):
    """A recipe failed validation. ``problems`` holds one line per problem."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{path}: {len(problems)} {noun} in the recipe:\n{lines}")


class StageError(OrchestratorError):
    """A pipeline stage failed: exit code 1."""


class OllamaError(OrchestratorError):
    """The Ollama server could not be reached or refused a request."""
