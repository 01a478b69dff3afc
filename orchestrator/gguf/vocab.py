"""The tokenizer as llama.cpp wants it: a GPT-2-style byte-level BPE vocabulary with merges.

Read straight from ``tokenizer.json`` and ``tokenizer_config.json`` (no transformers import). Token
types follow llama.cpp's converter: added tokens that are special, or look like ``<|...|>``, are
CONTROL; other added tokens (``<think>``, ``<tool_call>``) are USER_DEFINED; ids the tokenizer does not
use are ``[PAD<id>]`` and UNUSED. The pre-tokenizer is recognised from its split regex.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import UsageError
from orchestrator.gguf.jsonio import read_json_object

log = logging.getLogger(__name__)

QWEN2_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_REGEX = QWEN2_REGEX.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
# split regex -> the name llama.cpp's tokenizer.ggml.pre uses for it
PRE_TOKENIZERS = {QWEN2_REGEX: "qwen2", LLAMA3_REGEX: "llama-bpe"}
SPECIAL_KINDS = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
LOOKS_SPECIAL = ("<pad>", "<mask>")


@dataclass
class Vocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int] = field(default_factory=dict)
    add_special: dict[str, bool] = field(default_factory=dict)
    chat_template: str | None = None
    chat_template_source: str | None = None


def read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, "copy the file from the base model again")


def load_vocab(model_dir: Path, n_vocab: int, chat_template: str | None = None) -> Vocab:
    """Read the tokenizer of ``model_dir``; ``chat_template`` (the trained one) wins over the folder's."""
    files = [model_dir / "tokenizer.json", model_dir / "tokenizer_config.json"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise UsageError(
            f"{model_dir}: {' and '.join(missing)} missing; copy the tokenizer files from the base model "
            "into this folder (llamafactory-cli export writes them)"
        )
    tokenizer, tok_config = read_json(files[0]), read_json(files[1])
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise UsageError(f"{files[0]}: only byte-level BPE tokenizers convert (found {model.get('type')})")
    pre = pre_tokenizer(tokenizer, files[0])
    added = tokenizer.get("added_tokens") or []
    tokens, types = token_table(model["vocab"], added, n_vocab, files[0])
    vocab = Vocab(tokens, types, merge_list(model.get("merges") or [], files[0]), pre)
    vocab.special_ids, vocab.add_special = special_tokens(model_dir, tokenizer, tok_config, added, n_vocab)
    if chat_template is not None:
        vocab.chat_template, vocab.chat_template_source = chat_template, "the training template"
    else:
        vocab.chat_template, vocab.chat_template_source = folder_chat_template(model_dir, tok_config)
    return vocab


def pre_tokenizer(tokenizer: dict[str, Any], where: Path) -> str:
    """``qwen2`` or ``llama-bpe``, recognised by the Split regex of a byte-level pre-tokenizer."""
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") or [pre]
    regexes = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    byte_level = any(s.get("type") == "ByteLevel" for s in steps)
    name = PRE_TOKENIZERS.get(regexes[0]) if len(regexes) == 1 and byte_level else None
    if name is None:
        raise UsageError(
            f"{where}: pre-tokenizer not recognised (the built-in converter knows Qwen2/Qwen3 and Llama 3 "
            "byte-level BPE); use llama.cpp's convert_hf_to_gguf.py for this tokenizer"
        )
    return name


def token_table(
    vocab: dict[str, int], added: list[dict[str, Any]], n_vocab: int, where: Path
) -> tuple[list[str], list[int]]:
    import gguf

    by_id: list[str | None] = [None] * n_vocab
    types = [int(gguf.TokenType.NORMAL)] * n_vocab
    for text, idx in vocab.items():
        if idx >= n_vocab:
            raise UsageError(f"{where}: token id {idx} is beyond the model's vocab_size {n_vocab}; wrong tokenizer?")
        by_id[idx] = text
    for entry in added:
        idx, text = entry["id"], entry["content"]
        if idx >= n_vocab:
            raise UsageError(f"{where}: added token {text!r} (id {idx}) is beyond vocab_size {n_vocab}")
        if entry.get("special") or looks_special(text):
            types[idx] = int(gguf.TokenType.CONTROL)
        else:
            text = text.replace("\u2581", " ")  # llama.cpp expects user-defined tokens pre-normalised
            types[idx] = int(gguf.TokenType.USER_DEFINED)
        by_id[idx] = text
    tokens = []
    for idx, text in enumerate(by_id):
        if text is None:
            text = f"[PAD{idx}]"
            types[idx] = int(gguf.TokenType.UNUSED)
        tokens.append(text)
    return tokens, types


def looks_special(text: str) -> bool:
    """Added tokens that act as control tokens even when not flagged special (as llama.cpp judges them)."""
    return (
        text in LOOKS_SPECIAL
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def merge_list(merges: list[Any], where: Path) -> list[str]:
    """Merges as ``"a b"`` strings; pair-form merges with a space in a part encode it as U+0120."""
    if not merges:
        raise UsageError(f"{where}: the BPE model has no merges; copy tokenizer.json from the base model again")
    if isinstance(merges[0], str):
        return merges
    return [" ".join(part.replace(" ", "\u0120") for part in pair) for pair in merges]


def special_tokens(
    model_dir: Path, tokenizer: dict[str, Any], tok_config: dict[str, Any], added: list[dict[str, Any]], n_vocab: int
) -> tuple[dict[str, int], dict[str, bool]]:
    """Special token ids (tokenizer_config first, then config.json) and the add_bos/add_eos flags."""
    ids_by_text = {}
    for entry in added:
        ids_by_text.setdefault(entry["content"], entry["id"])
    ids: dict[str, int] = {}
    for kind in SPECIAL_KINDS:
        entry = tok_config.get(f"{kind}_token")
        text = entry.get("content") if isinstance(entry, dict) else entry
        if isinstance(text, str) and text in ids_by_text:
            ids[kind] = ids_by_text[text]
    config_path = model_dir / "config.json"
    config = read_json(config_path) if config_path.is_file() else {}
    for kind in SPECIAL_KINDS:
        value = config.get(f"{kind}_token_id")
        if kind not in ids and isinstance(value, int) and 0 <= value < n_vocab:
            ids[kind] = value
    add = post_processor_adds(tokenizer, tok_config)
    for kind in SPECIAL_KINDS:  # the post-processor wins where both say something, as in llama.cpp
        if isinstance(tok_config.get(f"add_{kind}_token"), bool):
            add.setdefault(kind, tok_config[f"add_{kind}_token"])
    return ids, add


def post_processor_adds(tokenizer: dict[str, Any], tok_config: dict[str, Any]) -> dict[str, bool]:
    """add_bos/add_eos as the tokenizer's post-processor implies: a ByteLevel one adds nothing, a
    TemplateProcessing one adds the BOS (and EOS) tokens it names around every sequence."""

    def content(kind: str) -> Any:
        entry = tok_config.get(f"{kind}_token")
        return entry.get("content") if isinstance(entry, dict) else entry

    add: dict[str, bool] = {}
    post = tokenizer.get("post_processor") or {}
    for step in post.get("processors") or [post]:
        if step.get("type") == "ByteLevel":
            add.setdefault("bos", False)
            add.setdefault("eos", False)
        elif step.get("type") == "TemplateProcessing" and len(step.get("single") or []) > 1:
            single = step["single"]
            add["bos"] = single[0].get("SpecialToken", {}).get("id") == content("bos")
            add["eos"] = single[-1].get("SpecialToken", {}).get("id") == content("eos")
    return add


def folder_chat_template(model_dir: Path, tok_config: dict[str, Any]) -> tuple[str | None, str | None]:
    """The model folder's own template: tokenizer_config.json, else chat_template.jinja/.json."""
    template = tok_config.get("chat_template")
    if isinstance(template, list):  # named templates: take the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if isinstance(template, str) and template:
        return template, "tokenizer_config.json"
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return read_template(jinja), jinja.name
    as_json = model_dir / "chat_template.json"
    if as_json.is_file():
        template = read_json(as_json).get("chat_template")
        if isinstance(template, str):
            return template, as_json.name
    return None, None


def read_template(path: Path) -> str:
    """A Jinja chat template file, refused when it is a folder or not UTF-8 text."""
    if path.is_dir():
        raise UsageError(f"{path}: is a folder; give the chat template file (Jinja text)")
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such chat template file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the chat template ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text, so not a Jinja chat template; give the template file") from None


def add_vocab(writer: Any, vocab: Vocab) -> None:
    """Write the tokenizer keys: model gpt2, pre, tokens, types, merges, special ids, add flags, template."""
    import gguf

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    # the big arrays with their item type given: the writer then skips checking each item's type
    array, keys = gguf.GGUFValueType.ARRAY, gguf.Keys.Tokenizer
    writer.add_key_value(keys.LIST, vocab.tokens, array, gguf.GGUFValueType.STRING)
    writer.add_key_value(keys.TOKEN_TYPE, vocab.types, array, gguf.GGUFValueType.INT32)
    writer.add_key_value(keys.MERGES, vocab.merges, array, gguf.GGUFValueType.STRING)
    for kind, idx in vocab.special_ids.items():
        adder = getattr(writer, f"add_{kind}_token_id", None)
        if adder is not None:
            adder(idx)
    for kind, value in vocab.add_special.items():
        adder = getattr(writer, f"add_add_{kind}_token", None)
        if adder is not None:
            adder(value)
    if vocab.chat_template:
        writer.add_chat_template(vocab.chat_template)
