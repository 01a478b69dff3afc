"""The quick header reader (metadata and tensor table, no tensor data) refuses what is not a GGUF."""

from __future__ import annotations

import pytest

from orchestrator.errors import UsageError


def test_header_reader_refuses_what_is_not_a_whole_gguf_header(small_model, tmp_path):
    from orchestrator.gguf import convert_model
    from orchestrator.gguf.header import read_gguf_header

    good = convert_model(small_model, tmp_path / "good.gguf", "f16").path
    raw = good.read_bytes()
    header = read_gguf_header(good)
    cases = {"folder": tmp_path / "folder", "missing": tmp_path / "missing.gguf"}
    (tmp_path / "folder").mkdir()
    for name, data in {
        "empty": b"",
        "junk": b"not a gguf file at all",
        "magic only": raw[:4],
        "cut in the metadata": raw[:1000],
        "cut in the last tensor name": raw[: last_name_cut(raw, header)],
    }.items():
        cases[name] = tmp_path / f"{name}.gguf"
        cases[name].write_bytes(data)
    reasons = {
        "folder": "is a folder; give the .gguf file",
        "missing": "no such file",
        "junk": "not a GGUF file (it does not start with the GGUF magic); give a .gguf file",
    }
    for name, path in cases.items():
        with pytest.raises(UsageError) as err:
            read_gguf_header(path)
        message = str(err.value)
        assert message.startswith(str(path)) and "\n" not in message, (name, message)
        assert reasons.get(name, "not a readable GGUF") in message, (name, message)


def last_name_cut(raw: bytes, header) -> int:
    """A length that ends the file inside the last tensor's name (the tensor table is the header's end)."""
    name = header.tensors[-1].name.encode()
    return raw.rindex(name) + len(name) // 2
