"""`orchestrator gguf`: placeholder until the gguf commands are built."""


def add_parser(sub) -> None:
    return None
