"""A fast first look for secrets: which texts could hold one at all, many texts per pass (one RE2 pass
with google-re2; a few numpy passes without it).

Most chat text holds nothing that any redaction rule can match, and running every detect-secrets plugin
over every line costs about a millisecond per conversation. ``screen`` clears a text only when no rule
in ``cleaning.redact`` could fire on it; the texts it flags then go through all of them. It never clears
a text a rule would change (the planted-secret corpus and a property test hold it to that), because
each rule needs at least one of:

- a run of 20 or more characters of ``[A-Za-z0-9+/=_\\-]``: every token pattern (AWS, GitHub, GitLab,
  Stripe, Twilio, Slack webhooks, OpenAI, Discord, Telegram, SendGrid, Square, Azure, PyPI, Mailchimp,
  IBM, SoftLayer, Cloudant secrets, fine-grained GitHub tokens) and the base64 entropy rule, which needs
  23 characters of that set for its 4.5-bit limit;
- a keyword, in any case: ``key`` (api_key, private_key..., and ``PRIVATE KEY`` blocks), ``pass``,
  ``pwd``, ``secret``, ``contrase`` (detect-secrets' keyword plugin), ``xox`` (Slack tokens),
  ``authtoken`` (npm), ``putty`` (PuTTY keys); plus the two non-ASCII letters Python's case-insensitive
  matching folds onto them (the Kelvin sign and the long s);
- ``@`` (e-mail), ``://`` (passwords in URLs, Cloudant and SoftLayer URLs), ``eyJ`` (JWT), ``AKC`` and
  ``AP`` followed by a hex digit (Artifactory), ``+`` followed by a digit (international phone numbers),
  or ten digits within fourteen characters (North American phone numbers).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from typing import Any

import numpy as np

RUN = 20
_RUN_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_\\-"
_KEYWORDS = (b"key", b"pass", b"pwd", b"secret", b"contrase", b"xox", b"authtoken", b"putty", b"@", b"://")
_FOLDING = ("\u212a".encode(), "\u017f".encode())  # Kelvin sign (folds to k), long s (folds to s)
_CASED = (b"eyJ", b"AKC")
_FOLLOWED = ((b"AP", b"0123456789ABCDEF"), (b"+", b"0123456789"))  # a literal, then one byte of these
_PHONE_DIGITS, _PHONE_WINDOW = 10, 14
_SEPARATOR = b"\n"  # joins texts; it breaks runs and keywords (a digit window across it flags both texts)

_IN_RUN = np.zeros(256, dtype=bool)
_IN_RUN[np.frombuffer(_RUN_CHARS, dtype=np.uint8)] = True
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[np.frombuffer(b"0123456789", dtype=np.uint8)] = True


# The same rules as one RE2 pattern over bytes (LATIN1: a byte is a character, as above), matched in one
# linear pass: about fifteen times the numpy passes' speed. Ten digits within fourteen bytes have at most
# four other bytes between two of them, so the last alternative matches wherever that rule does.
_PATTERN = b"|".join(
    [
        b"[" + re.escape(_RUN_CHARS) + b"]{%d}" % RUN,
        rb"(?i:" + b"|".join(k for k in _KEYWORDS if k.isalpha()) + rb")",
        *(re.escape(k) for k in _KEYWORDS if not k.isalpha()),
        *(re.escape(k) for k in _FOLDING + _CASED),
        *(re.escape(literal) + b"[" + re.escape(then) + b"]" for literal, then in _FOLLOWED),
        rb"[0-9](?:[^0-9]{0,%d}[0-9]){%d}" % (_PHONE_WINDOW - _PHONE_DIGITS, _PHONE_DIGITS - 1),
    ]
)


# In a JSON string a character takes at most 6 bytes (\u001f), so four of them take at most 24: the same
# rules for texts inside JSON lines (quotes, backslashes and the line's keys change no other rule).
_JSON_PATTERN = _PATTERN.rsplit(b"|", 1)[0] + b"|[0-9](?:[^0-9]{0,%d}[0-9]){%d}" % (
    6 * (_PHONE_WINDOW - _PHONE_DIGITS),
    _PHONE_DIGITS - 1,
)


@functools.lru_cache(maxsize=2)
def _compiled(pattern: bytes = _PATTERN) -> Any:
    """The RE2 program, or None without the google-re2 package (the numpy passes are used then)."""
    try:
        import re2
    except ImportError:
        return None
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.never_capture = True
    return re2.compile(pattern, options)


def screen_json_lines(lines: list[bytes]) -> list[bool] | None:
    """``screen`` for texts already written as JSON lines (orjson's: UTF-8, no other escapes than JSON's
    own), a flag per line for all the texts in it; None without RE2 (screen the texts then)."""
    program = _compiled(_JSON_PATTERN)
    if program is None:
        return None
    return _flag(b"".join(lines), list(itertools.accumulate(map(len, lines))), len(lines), program)


def screen(texts: list[str]) -> list[bool]:
    """For each text, whether a redaction rule could match it (False: it certainly holds no secret)."""
    if not texts:
        return []
    program = _compiled()
    return _screen_numpy(texts) if program is None else _screen_re2(texts, program)


def _screen_re2(texts: list[str], program: Any) -> list[bool]:
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    ends = list(itertools.accumulate(len(e) + 1 for e in encoded))  # one past the separator after each text
    return _flag(_SEPARATOR.join(encoded), ends, len(texts), program)


def _flag(blob: bytes, ends: list[int], count: int, program: Any) -> list[bool]:
    """Which of the ``count`` pieces of ``blob`` (piece i ends before ``ends[i]``) ``program`` matches in."""
    flagged = [False] * count
    at = 0
    while (found := program.search(blob, at)) is not None:
        first, last = bisect.bisect_right(ends, found.start()), bisect.bisect_right(ends, found.end() - 1)
        flagged[first : last + 1] = [True] * (last + 1 - first)  # a digit window may span a separator
        at = ends[last]  # on from the next text
    return flagged


def _screen_numpy(texts: list[str]) -> list[bool]:
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    ends = np.cumsum([len(e) + 1 for e in encoded]) - 1  # the separator after each text
    blob = _SEPARATOR.join(encoded)
    flagged = np.zeros(len(texts), dtype=bool)

    def mark(positions) -> None:
        if len(positions):
            flagged[np.searchsorted(ends, positions)] = True

    data = np.frombuffer(blob, dtype=np.uint8)
    breaks = np.flatnonzero(~_IN_RUN[data])
    bounds = np.concatenate(([-1], breaks, [len(data)]))
    long_runs = np.flatnonzero(np.diff(bounds) > RUN)
    mark(bounds[long_runs] + 1)
    lowered = blob.lower()
    for keyword in _KEYWORDS if blob.isascii() else _KEYWORDS + _FOLDING:
        mark(_find_all(lowered, keyword))
    for literal in _CASED:
        mark(_find_all(blob, literal))
    for literal, then in _FOLLOWED:
        after = len(literal)
        mark([at for at in _find_all(blob, literal) if (nxt := blob[at + after : at + after + 1]) and nxt in then])
    digits = np.flatnonzero(_DIGIT[data])
    if len(digits) >= _PHONE_DIGITS:  # ten digits, the first and the last fewer than 14 bytes apart
        close = digits[_PHONE_DIGITS - 1 :] - digits[: 1 - _PHONE_DIGITS] < _PHONE_WINDOW
        mark(digits[: 1 - _PHONE_DIGITS][close])
    return flagged.tolist()


def _find_all(blob: bytes, needle: bytes) -> list[int]:
    found, at = [], blob.find(needle)
    while at >= 0:
        found.append(at)
        at = blob.find(needle, at + len(needle))
    return found
