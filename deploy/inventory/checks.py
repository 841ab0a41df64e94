"""The rules a single inventory value must meet, each a function: None when the value is fine,
else what is wrong (validate.py adds file, line and key path). Kept apart from model.py so the
model reads as a list of settings and this file as the list of rules.

Many values end up inside configuration files or commands on the hosts (apt.conf, redis.conf,
env files, URLs, nginx). The rules are therefore allow-lists of characters, not block-lists:
a value either matches what the setting can mean or it is refused before anything is built.
"""
from __future__ import annotations

import difflib
import ipaddress
import re
import unicodedata
from typing import Any, Callable
from urllib.parse import urlsplit

Check = Callable[[Any], "str | None"]     # None when the value is fine, else what is wrong


def suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def between(low: int, high: int | None = None, why: str = "") -> Check:
    def check(value: int) -> str | None:
        if value >= low and (high is None or value <= high):
            return None
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        return f"must be {bounds}, got {value}" + (f" ({why})" if why else "")
    return check


def one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else (
        f"must be one of {', '.join(choices)}, got {value!r}{suggest(value, choices)}")


def matching(pattern: str, what: str, flags: int = 0) -> Check:
    regex = re.compile(pattern, flags)
    return lambda value: None if regex.fullmatch(value) else f"must be {what}, got {value!r}"


PORT = between(1, 65535, "a TCP port")
NAME = matching(r"[A-Za-z0-9_.-]+", "letters, digits, '_', '.' or '-'")   # needs no quoting
# re.ASCII: \d would also take other scripts' digits, which redis.conf does not.
MAXMEMORY = matching(r"\d+(b|k|kb|m|mb|g|gb)?", "a size like 256mb, 2gb or 0",
                     re.IGNORECASE | re.ASCII)
MODULE = matching(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", "a dotted Python module path", re.ASCII)
QUEUE = matching(r"[A-Za-z0-9_.:-]+", "a queue name (letters, digits, '_', '.', ':', '-')")
URL_PATH = matching(r"[A-Za-z0-9_-]*(/[A-Za-z0-9_-]+)*", "a URL path such as flower or ops/flower")
# The vhost goes into URLs (quoted) and onto rabbitmqctl command lines.
VHOST = matching(r"/?[A-Za-z0-9_.-]+", "an optional '/' followed by letters, digits, '_', '.' "
                 "or '-' (such as /celery)")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
# What apt.proxy may be made of: RFC 3986 characters without quotes, so that the value cannot
# end the quoted string it is written into in apt.conf ('Acquire::http::Proxy "...";').
_URL_CHARS = "-._~:/?#[]@!&()*+,=%"
_URL_TEXT = re.compile(r"[A-Za-z0-9" + re.escape(_URL_CHARS) + r"]*")


def printable(value: str) -> str | None:
    """Every string in the file: a line break or a control character would end a line of the
    config file or command it goes into and start one the file never said."""
    for index, char in enumerate(value, 1):
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return (f"must not contain a line break or control character, found {char!r} "
                    f"at character {index}")
    return None


def not_empty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def host_address(value: str) -> str | None:
    # An IPv6 zone index ("fe80::1%eth0") may hold any character at all, and a link-local
    # address cannot serve a cluster anyway: such a value is refused as neither form.
    if "%" not in value:
        try:
            ipaddress.ip_address(value)
            return None
        except ValueError:
            pass
    # An all-digit last label is a mistyped IPv4 address (10.77.0.300), not a DNS name.
    last_label = value.rstrip(".").split(".")[-1]
    if _DNS_NAME.fullmatch(value) and len(value) <= 253 and not last_label.isdigit():
        return None
    return f"must be an IPv4/IPv6 address or a DNS host name, got {value!r}"


def same_address(address: str) -> str:
    """One spelling per address, so that 10.0.0.1 and 10.000.0.1, or NODE1. and node1, match."""
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address.lower().rstrip(".")


def network(value: str) -> str | None:
    """An IPv4 or IPv6 network; a bare address is a network of one (/32, /128)."""
    what = "an IPv4 or IPv6 network such as 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32"
    if "%" in value:                   # an IPv6 zone index ("%eth0") may hold any character
        return f"must be {what}, got {value!r}"
    try:
        ipaddress.ip_network(value)
        return None
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"must be {what}, got {value!r}"
    return (f"{value} has host bits set; a network starts at its first address "
            f"(did you mean {loose}?)")


def http_url(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port                    # raises ValueError when the port is not a number
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    return None if ok else f"must be an http:// or https:// URL with a host, got {value!r}"


def proxy_url(value: str) -> str | None:
    for index, char in enumerate(value, 1):
        if not _URL_TEXT.fullmatch(char):
            return (f"must be a URL made only of letters, digits and {_URL_CHARS} (it is written "
                    f"into apt's configuration), found {char!r} at character {index}")
    return http_url(value)


def mirror_choice(value: str | int) -> str | None:
    if isinstance(value, int):
        return between(1)(value)
    return None if value in ("majority", "all") else (
        f"must be 'majority', 'all' or a number of nodes, got {value!r}"
        + suggest(value, ("majority", "all")))


def not_guest(value: str) -> str | None:
    # guest/guest is RabbitMQ's well-known default login; it must not be one of ours.
    return "must not be 'guest', RabbitMQ's default account" if value == "guest" else None
