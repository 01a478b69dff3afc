"""From Ollama conversations to a fine-tuned Qwen3 served back by Ollama.

Importing this package is cheap: torch, transformers and llamafactory are imported only inside
the functions that need them.
"""

__version__ = "0.1.0"
