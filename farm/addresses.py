"""Which hosts a git checkout may reach. Pure module: a host name is resolved by a function
the caller passes in (the API's gives up after a bound, the executor's is the system's).

A checkout runs on the executor's host, on its network, whatever the job's `network` says,
so the host it connects to must be a public address. Refused: this node (loopback,
unspecified, `localhost`), its link (link-local, like a cloud's metadata service), private
networks (RFC 1918, IPv6 ULA and site-local, the shared space 100.64.0.0/10), multicast,
reserved and every other range that is not globally reachable. In every spelling a
resolver or git's transports read: IPv4 as inet_aton reads it (127.1, 2130706433,
0x7f000001, 0177.0.0.1, 0), IPv6 holding an IPv4 address (::ffff:127.0.0.1, ::7f00:1,
64:ff9b::/96, 6to4), brackets, a trailing dot, any case.

Invariants: a host name counts by every address it resolves to, and one refused address
refuses it; a name that does not resolve is not refused here (the caller decides: the API
lets it pass, the executor does not). A host that is not a plain DNS name or IP address
(percent-encoded, not ASCII, white space...) is refused: a transport may read it otherwise
than this module does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str], Sequence[str] | None]
"""A host name -> every address it resolves to; None (or none) when it does not resolve."""

_LABEL = r"(?!-)[a-z0-9_-]{1,63}"
_NAME = re.compile(rf"{_LABEL}(\.{_LABEL})*\.?")
_SHARED = IPv4Network("100.64.0.0/10")  # carrier-grade NAT: another tenant's network, not the internet
_THIS_NETWORK = IPv4Network("0.0.0.0/8")
_NAT64 = IPv6Network("64:ff9b::/96")


def unresolved(host: str) -> None:
    """A resolver that resolves nothing: literal addresses are still checked."""
    return None


@dataclass(frozen=True)
class Reach:
    """Where a host leads: the addresses checked (every one of them may be reached unless
    `refused` says why not, as "resolves to 127.0.0.1 (loopback)")."""

    host: str  # as the URL spells it
    addresses: tuple[str, ...] = ()  # (): a name that did not resolve
    refused: str | None = None


def inet_aton(text: str) -> IPv4Address | None:
    """The IPv4 address `text` spells as inet_aton(3) reads it: one to four dot-separated
    numbers, each decimal, octal (leading 0) or hex (0x), the last filling the bytes left."""
    nums = []
    for part in text.split("."):
        if re.fullmatch(r"0x[0-9a-f]*", part):
            nums.append(int(part[2:] or "0", 16))
        elif re.fullmatch(r"0[0-7]*", part):
            nums.append(int(part, 8))
        elif re.fullmatch(r"[1-9][0-9]*", part):
            nums.append(int(part))
        else:
            return None
    if len(nums) > 4:
        return None
    *head, last = nums
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    return IPv4Address(sum(n << (8 * (3 - i)) for i, n in enumerate(head)) + last)


def _inner_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one carries to (mapped, compatible, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):  # ::a.b.c.d, but not :: or ::1
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def why_refused(ip: IPAddress) -> str | None:
    """Why a checkout may not connect to `ip` (None: it may)."""
    if isinstance(ip, IPv6Address):
        if (inner := _inner_ipv4(ip)) is not None:
            why = why_refused(inner)
            return f"{why}: {inner}" if why else None
        if ip.sixtofour is not None and (why := why_refused(ip.sixtofour)):
            return f"{why}: {ip.sixtofour}"
    checks: list[tuple[bool, str]] = [
        (ip.is_unspecified, "unspecified"),
        (isinstance(ip, IPv4Address) and ip in _THIS_NETWORK, "this network"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, IPv4Address) and ip in _SHARED, "shared address space"),
        (isinstance(ip, IPv6Address) and ip.is_site_local, "site-local"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not globally reachable"),
    ]
    return next((why for refused, why in checks if refused), None)


def _literal(host: str, ip: IPAddress) -> Reach:
    why = why_refused(ip)
    return Reach(host, (str(ip),), f"is {ip} ({why})" if why else None)


def check_host(host: str, resolve: Resolver = unresolved) -> Reach:
    """Where `host` (a URL's host, brackets and all) leads, and whether a checkout may go."""
    name = host.lower()
    bracketed = name.startswith("[") and name.endswith("]")  # an IPv6 address, and only that
    if bracketed:
        name = name[1:-1]
    if not name:
        return Reach(host, refused="names no host")
    if ":" in name or bracketed:
        try:
            return _literal(host, IPv6Address(name))
        except ValueError:
            return Reach(host, refused="is not a plain host name or address")
    if not _NAME.fullmatch(name):
        return Reach(host, refused="is not a plain host name or address (only ASCII letters, digits, '-', '_' and dots)")
    bare = name.rstrip(".")
    if (ip := inet_aton(bare)) is not None:
        return _literal(host, ip)
    if bare == "localhost" or bare.endswith(".localhost"):
        return Reach(host, refused="names this node (localhost)")
    # Both spellings: a transport may drop the trailing dot before it resolves the name.
    found = tuple(dict.fromkeys(a for n in dict.fromkeys((name, bare)) for a in resolve(n) or ()))
    checked = []
    for text in found:
        try:
            ip = ip_address(text)
        except ValueError:
            return Reach(host, found, f"resolves to {text!r}, not an address")
        if why := why_refused(ip):
            return Reach(host, found, f"resolves to {ip} ({why})")
        checked.append(str(ip))
    return Reach(host, tuple(checked))
