"""Where the Ollama server is: ``--host`` / ``OLLAMA_HOST`` resolved the way Ollama's own CLI does it.

``resolve_host`` follows ``envconfig.Host()`` exactly, and refuses two things Ollama would mangle: a
user name or password in the value (Ollama's API takes none, and echoing the value would print them)
and a host name longer than DNS allows (the socket layer fails on it with a traceback).
``connectable_url`` turns an address a server listens on into one a client can dial.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from urllib.parse import quote, urlsplit

from orchestrator.errors import UsageError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = "11434"
HOST_ENV = "OLLAMA_HOST"
MAX_HOST_NAME = 253  # characters in a DNS name
MAX_LABEL = 63  # characters between two dots
_PORT_RE = re.compile(r"[+-]?[0-9]+")


def resolve_host(host: str | None = None) -> str:
    """The server's base URL, following Ollama's ``envconfig.Host()`` rules exactly.

    The value comes from ``host``, else ``$OLLAMA_HOST``, else ``127.0.0.1:11434``. Spaces and quotes
    around it are dropped. Without a scheme it is ``http`` and the default port 11434; ``http://`` and
    ``https://`` default to ports 80 and 443. A bare IP or hostname gets the default port, an invalid
    port is replaced by the default one, and a path after the host is kept (a proxy prefix).

    Raises:
        UsageError: the value holds ``@`` (credentials), or names a host longer than DNS allows.
    """
    given = host is not None and bool(host.strip())
    raw = host if given else os.environ.get(HOST_ENV, "")
    where = "the Ollama host (--host or ollama.host)" if given else HOST_ENV
    value = raw.strip().strip("\"'").strip()
    if "@" in value:
        # Never echo the value: whatever precedes the @ may be a password.
        raise UsageError(
            f"{where} contains '@', as in user:password@host; Ollama's API takes no credentials in its URL "
            "and none are sent: remove the part up to the '@'"
        )
    default_port = DEFAULT_PORT
    scheme, sep, hostport = value.partition("://")
    if not sep:
        scheme, hostport = "http", value
        if value == "ollama.com":
            scheme, hostport = "https", "ollama.com:443"
    elif scheme == "http":
        default_port = "80"
    elif scheme == "https":
        default_port = "443"

    hostport, _, path = hostport.partition("/")
    name, port = _host_and_port(hostport, default_port)
    _check_host_name(name, where)
    url = f"{scheme}://{_join_host_port(name, port)}"
    if path:
        url += "/" + quote(path, safe="/$&+,:;=@")
    return url


def _host_and_port(hostport: str, default_port: str) -> tuple[str, str]:
    split = _split_host_port(hostport)
    if split is None:
        name, port = DEFAULT_HOST, default_port
        ip = _parse_ip(hostport.strip("[]"))
        if ip is not None:
            name = ip
        elif hostport:
            name = hostport
    else:
        name, port = split
    if not _valid_port(port):
        log.warning("invalid port %r in the Ollama host, using %s", port, default_port)
        port = default_port
    return name, port


def _check_host_name(name: str, where: str) -> None:
    """Refuse a name no resolver takes (too long, an empty or over-long label) in one line."""
    if _parse_ip(name) is not None or not name:
        return
    labels = name.removesuffix(".").split(".")
    too_long = len(name) > MAX_HOST_NAME or any(len(label) > MAX_LABEL for label in labels)
    shown = name if len(name) <= 60 else f"{name[:40]}... ({len(name)} characters)"
    if too_long:
        raise UsageError(
            f"{where} names the host '{shown}', longer than a host name can be ({MAX_HOST_NAME} characters, "
            f"{MAX_LABEL} between dots); check the value"
        )
    try:
        name.encode("idna")
    except UnicodeError as exc:
        raise UsageError(f"{where} names the host '{shown}', which is not a valid host name; check the value") from exc


def connectable_url(url: str) -> str:
    """``url`` with a host a client can dial: unspecified or empty addresses become loopback ones.

    Ollama's ``ConnectableHost()`` does the first part; an empty host (``OLLAMA_HOST=:1234``) is dialed
    as the local machine by Go, which ``requests`` cannot do, so it becomes 127.0.0.1 here.
    """
    scheme, _, rest = url.partition("://")
    hostport, slash, path = rest.partition("/")
    split = _split_host_port(hostport)
    if split is None:
        return url
    name, port = split
    ip = _parse_ip(name)
    if not name or ip == "0.0.0.0":
        name = DEFAULT_HOST
    elif ip == "::":
        name = "::1"
    return f"{scheme}://{_join_host_port(name, port)}{slash}{path}"


def is_local_host(url: str) -> bool:
    """Whether ``url`` points at this machine (``ollama create -f`` hands the server local paths)."""
    host = urlsplit(url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0", "::", "") or host.startswith("127.")


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's ``net.SplitHostPort``: ``(host, port)``, or None where Go returns an error."""
    i = hostport.rfind(":")
    if i < 0:
        return None
    start, end = 0, 0
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0 or close + 1 != i:
            return None
        host = hostport[1:close]
        start, end = 1, close + 1
    else:
        host = hostport[:i]
        if ":" in host:
            return None
    if "[" in hostport[start:] or "]" in hostport[end:]:
        return None
    return host, hostport[i + 1 :]


def _join_host_port(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_ip(text: str) -> str | None:
    """Go's ``net.ParseIP(text).String()``, or None when ``text`` is not an IP address."""
    if "%" in text:  # Go's ParseIP takes no IPv6 zone
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _valid_port(port: str) -> bool:
    """Go's ``strconv.ParseInt(port, 10, 32)`` succeeding with a value in 0..65535."""
    return bool(_PORT_RE.fullmatch(port)) and 0 <= int(port) <= 65535
