"""Secret redaction: keys, tokens, private keys, URL passwords, e-mail addresses and phone numbers become
typed placeholders (``<API_KEY>``, ``<TOKEN>``, ``<SECRET>``, ``<PRIVATE_KEY>``, ``<PASSWORD>``,
``<EMAIL>``, ``<PHONE>``) before a conversation is written.

Keys, tokens and URL passwords are found by detect-secrets' own plugins, through ``analyze_string`` (the
raw values; ``analyze_line`` may call a provider to verify a key, and an export never goes online),
and filtered by its heuristics (templated values, ``$VARIABLES``, UUIDs, sequences). detect-secrets flags
a private key by its first line only, so the PEM block is taken from that line to its END line. E-mail
addresses and phone numbers are no detect-secrets plugin's business: two small regexes here.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import re
from collections import Counter
from typing import Any

from orchestrator.cleaning.screen import screen
from orchestrator.conversations import Message, ToolCall
from orchestrator.errors import OrchestratorError

# detect-secrets plugin (module, class) -> the placeholder its findings become. Left out on purpose:
# HexHighEntropyString (commit ids and checksums are everyday text in chats) and IPPublicDetector (an
# address is not a secret); PrivateKeyDetector starts the PEM block search below.
PLUGINS = {
    ("aws", "AWSKeyDetector"): "API_KEY",
    ("openai", "OpenAIDetector"): "API_KEY",
    ("github_token", "GitHubTokenDetector"): "TOKEN",
    ("gitlab_token", "GitLabTokenDetector"): "TOKEN",
    ("slack", "SlackDetector"): "TOKEN",
    ("jwt", "JwtTokenDetector"): "TOKEN",
    ("discord", "DiscordBotTokenDetector"): "TOKEN",
    ("telegram_token", "TelegramBotTokenDetector"): "TOKEN",
    ("npm", "NpmDetector"): "TOKEN",
    ("pypi_token", "PypiTokenDetector"): "TOKEN",
    ("stripe", "StripeDetector"): "API_KEY",
    ("twilio", "TwilioKeyDetector"): "API_KEY",
    ("sendgrid", "SendGridDetector"): "API_KEY",
    ("mailchimp", "MailchimpDetector"): "API_KEY",
    ("square_oauth", "SquareOAuthDetector"): "API_KEY",
    ("azure_storage_key", "AzureStorageKeyDetector"): "API_KEY",
    ("artifactory", "ArtifactoryDetector"): "API_KEY",
    ("ibm_cloud_iam", "IbmCloudIamDetector"): "API_KEY",
    ("ibm_cos_hmac", "IbmCosHmacDetector"): "API_KEY",
    ("cloudant", "CloudantDetector"): "PASSWORD",
    ("softlayer", "SoftlayerDetector"): "API_KEY",
    ("basic_auth", "BasicAuthDetector"): "PASSWORD",
    # The generic ones last: a value a specific plugin named keeps that plugin's placeholder.
    ("keyword", "KeywordDetector"): "SECRET",
    ("high_entropy_strings", "Base64HighEntropyString"): "TOKEN",
}
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|---- END SSH2 ENCRYPTED PRIVATE KEY ----")
# A block whose END line is missing (cut off) still loses its key material: base64, headers, escapes.
_PEM_BODY = re.compile(r"(?:\s*(?:[A-Za-z0-9+/=]{16,}|[A-Za-z-]+: [^\n]*|\\n))*")
_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}(?![\w-])")
# International (+CC ...) or North American ((555) 123-4567, 555-123-4567) numbers; plain digit runs,
# dates, versions and addresses are left alone.
_PHONE = re.compile(
    r"(?<![\w+.-])(?:\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?)(?:[ .-]?\d{2,4}){2,4}"
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![\w.-]?\d)"
)
# Fine-grained GitHub tokens are newer than detect-secrets' GitHub plugin.
_GITHUB_PAT = re.compile(r"(?<!\w)github_pat_[A-Za-z0-9_]{60,}")
_PATTERNS = ((_GITHUB_PAT, "TOKEN"), (_EMAIL, "EMAIL"), (_PHONE, "PHONE"))
_JWT_TAIL = re.compile(r"[A-Za-z0-9_+/=.-]*")
_FRAME = " \t\r\n\"'=:"  # what some plugins' patterns match around a secret
_WORD = re.compile(r"\w")


class RedactionError(OrchestratorError):
    """detect-secrets is missing or unusable."""


_MISSING = (
    "secret redaction needs the package detect-secrets: pip install detect-secrets "
    "(or set data.redact: false to export without it)"
)


@functools.lru_cache(maxsize=1)
def _detectors() -> tuple[tuple[Any, str], ...]:
    try:
        importlib.import_module("detect_secrets.plugins.private_key")
    except ImportError as exc:
        raise RedactionError(_MISSING) from exc
    out = []
    for (module, name), kind in PLUGINS.items():
        cls = getattr(importlib.import_module(f"detect_secrets.plugins.{module}"), name)
        out.append((cls(), kind))
    return tuple(out)


def check_available() -> None:
    """Raise RedactionError now, before an export reads anything, when detect-secrets is missing. Its
    plugins are loaded (a fifth of a second) only once the screen flags a text: an export whose texts
    all pass the screen, or whose worker processes redact, never needs them here."""
    try:
        found = importlib.util.find_spec("detect_secrets") is not None
    except ValueError:  # a module of that name without a spec
        found = False
    if not found:
        raise RedactionError(_MISSING)


@functools.lru_cache(maxsize=1)
def _filters() -> tuple[Any, ...]:
    from detect_secrets.filters import heuristic

    return (
        heuristic.is_templated_secret,
        heuristic.is_prefixed_with_dollar_sign,
        heuristic.is_sequential_string,
        heuristic.is_potential_uuid,
        heuristic.is_not_alphanumeric_string,
    )


def redact_text(text: str, counts: Counter, key: str | None = None) -> str:
    """``text`` with its secrets replaced by placeholders; each replacement counted in ``counts``.

    ``key`` is the name a tool-call argument has: detect-secrets' keyword plugin sees ``"key": "text"``.
    Only the lines ``cleaning.screen`` flags go through the plugins (every line when there is a key).
    """
    if not text:
        return text
    if "PRIVATE KEY" in text or "PuTTY" in text:
        text = _redact_private_keys(text, counts)
    lines = text.splitlines(keepends=True)
    flagged = screen(lines) if key is None else [True] * len(lines)
    return "".join(_redact_line(line, counts, key) if hit else line for line, hit in zip(lines, flagged, strict=True))


def redact_conversations(
    conversations: list[tuple[list[Message], str]],
) -> list[tuple[list[Message], str, Counter]]:
    """``redact_conversation`` for many (turns, system) at once: one screen pass over all their texts,
    and the plugins only for a conversation the screen flags."""
    texts, owners = [], []
    for index, (turns, system) in enumerate(conversations):
        texts.append(system)
        owners.append(index)
        for message in turns:
            texts.append(message.content)
            owners.append(index)
            if message.thinking:
                texts.append(message.thinking)
                owners.append(index)
    suspect = [False] * len(conversations)
    for owner, hit in zip(owners, screen(texts), strict=True):
        suspect[owner] = suspect[owner] or hit
    out = []
    for index, (turns, system) in enumerate(conversations):
        if suspect[index] or any(m.tool_calls for m in turns):
            out.append(redact_conversation(turns, system))
        else:
            out.append((turns, system, Counter()))
    return out


def redact_conversation(turns: list[Message], system: str) -> tuple[list[Message], str, Counter]:
    """The turns and system prompt with every content, thinking and tool-call argument redacted, and the
    placeholders used, counted by kind."""
    counts: Counter = Counter()
    out = [
        Message(
            m.role,
            redact_text(m.content, counts),
            None if m.thinking is None else redact_text(m.thinking, counts),
            [ToolCall(c.name, redact_value(c.arguments, counts)) for c in m.tool_calls],
            m.tool_name,
        )
        for m in turns
    ]
    return out, redact_text(system, counts), counts


def redact_value(value: Any, counts: Counter, key: str | None = None) -> Any:
    """Every string in a JSON value (tool-call arguments) redacted; keys and other values kept."""
    if isinstance(value, str):
        return redact_text(value, counts, key)
    if isinstance(value, dict):
        return {k: redact_value(v, counts, k if isinstance(k, str) else None) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v, counts, key) for v in value]
    return value


def _redact_private_keys(text: str, counts: Counter) -> str:
    markers = importlib.import_module("detect_secrets.plugins.private_key").PrivateKeyDetector.denylist
    out, pos = [], 0
    while (start := _first_marker(text, pos, markers)) is not None:
        begin = start - 5 if text[max(start - 5, 0) : start] == "-----" else start
        end = _PEM_END.search(text, start)
        if end:
            stop = end.end()
        else:
            line_end = text.find("\n", start)
            stop = _PEM_BODY.match(text, len(text) if line_end < 0 else line_end).end()
        out += [text[pos:begin], "<PRIVATE_KEY>"]
        counts["PRIVATE_KEY"] += 1
        pos = stop
    return "".join(out) + text[pos:]


def _first_marker(text: str, pos: int, patterns: Any) -> int | None:
    found = [m.start() for m in (p.search(text, pos) for p in patterns) if m]
    return min(found) if found else None


def _redact_line(line: str, counts: Counter, key: str | None) -> str:
    spans: list[tuple[int, int, str]] = []
    contexts = [line] if key is None else [line, json.dumps({key: line.rstrip("\r\n")}, ensure_ascii=False)]
    for detector, kind in _detectors():
        if hasattr(detector, "denylist"):
            _claim(spans, _regex_spans(detector, line), kind)
            continue
        for context in contexts:
            for value in detector.analyze_string(context):
                if _is_secret(detector, value):
                    _claim(spans, _occurrences(line, value), kind)
    for pattern, kind in _PATTERNS:
        _claim(spans, [(m.start(), m.end()) for m in pattern.finditer(line)], kind)
    if not spans:
        return line
    out, pos = [], 0
    for start, end, kind in sorted(spans):
        out += [line[pos:start], f"<{kind}>"]
        counts[kind] += 1
        pos = end
    return "".join(out) + line[pos:]


def _regex_spans(detector: Any, line: str) -> list[tuple[int, int]]:
    """Where a regex plugin's secrets stand in ``line``.

    The plugin's own patterns, matched in place: its ``analyze_string`` yields a pattern's first group,
    which for some is the secret (AWS secret keys, URL passwords) and for others only a prefix
    (GitHub's ``(ghp|gho|...)_``). A group after the start of the match is the secret, else the match is.
    """
    found = []
    for pattern in detector.denylist:
        for match in pattern.finditer(line):
            groups = [g for g in range(1, pattern.groups + 1) if match.group(g)]
            g = groups[-1] if groups else 0
            start, end = match.span(g)
            if g and (start == match.start() or end - start < 4):
                start, end = match.span()
            value = line[start:end]
            if isinstance(detector, _jwt_detector()):
                if not detector.is_formally_valid(value):
                    continue
                end = _JWT_TAIL.match(line, end).end()  # its pattern ends lazily, before the signature
            start += len(value) - len(value.lstrip(_FRAME))
            end -= len(value) - len(value.rstrip(_FRAME))
            if end > start:
                found.append((start, end))
    return found


def _is_secret(detector: Any, value: str) -> bool:
    if not value or any(check(value) for check in _filters()):
        return False
    # The entropy plugins yield every quoted string; their analyze_line keeps those above the limit.
    limit = getattr(detector, "entropy_limit", None)
    return limit is None or detector.calculate_shannon_entropy(value) > limit


def _jwt_detector() -> type:
    return importlib.import_module("detect_secrets.plugins.jwt").JwtTokenDetector


def _occurrences(line: str, value: str) -> list[tuple[int, int]]:
    """Where ``value`` stands in ``line`` as a whole token (not inside a longer word)."""
    before = r"(?<!\w)" if _WORD.match(value[0]) else ""
    after = r"(?!\w)" if _WORD.match(value[-1]) else ""
    return [(m.start(), m.end()) for m in re.finditer(before + re.escape(value) + after, line)]


def _claim(spans: list[tuple[int, int, str]], found: list[tuple[int, int]], kind: str) -> None:
    """Add the spans that do not overlap one already claimed (earlier plugins take precedence)."""
    for start, end in found:
        if all(end <= s or start >= e for s, e, _ in spans):
            spans.append((start, end, kind))
