"""`orchestrator ollama`: placeholder until the ollama commands are built."""


def add_parser(sub) -> None:
    return None
