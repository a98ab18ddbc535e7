"""Network option syntax and nspawn's naming rules (pure; no netlink here).

Imported at start-up by the settings layer, so it only needs the standard
library modules that are loaded anyway.  `network.py` does the kernel work.

Runs in: the host side (parsing); the supervisor uses its naming rules.
"""

import os
from collections import namedtuple

from nspawnpy.config.siphash import siphash24

IFNAMSIZ = 16  # including the terminating NUL: names have at most 15 characters

# Hash keys nspawn uses (fixed, originally random 128-bit values).
HOST_KEY = bytes.fromhex("1a376fc746ec450bada3d53106605db1")
CONTAINER_KEY = bytes.fromhex("c3c4f919b557b21ce6cf1427039ceea2")
VETH_EXTRA_HOST_KEY = bytes.fromhex("48c7f6b7ea9d4c9eb728d4de91d5bf66")
VETH_EXTRA_CONTAINER_KEY = bytes.fromhex("af501761cef94d35840d2b2054bece59")
MACVLAN_KEY = bytes.fromhex("00136dbc66834481bb0cf9511f24a66f")
SHORTEN_IFNAME_KEY = bytes.fromhex("e190a404a8ef4b518cccc33a9f11fca2")

_URLSAFE_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# Naming schemes before v250 shortened long names by plain truncation.
_OLD_NAMING_SCHEMES = {"v238", "v239", "v240", "v241", "v243", "v245", "v247", "v249"}


class Port(namedtuple("Port", "proto host_port container_port")):
    """A --port= mapping; proto is "tcp" or "udp"."""

    __slots__ = ()

    def __str__(self) -> str:
        return f"{self.proto}:{self.host_port}:{self.container_port}"


def _parse_port_number(text: str, what: str, spec: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"invalid {what} port in '{spec}': {text!r} is not a number")
    n = int(text)
    if not 1 <= n <= 65535:
        raise ValueError(f"invalid {what} port in '{spec}': {n} is not in 1..65535")
    return n


def parse_port(spec: str) -> Port:
    """Parse `[tcp|udp:]HOST[:CONT]` (the container port defaults to HOST)."""
    rest = spec
    proto = "tcp"
    for p in ("tcp:", "udp:"):
        if rest.startswith(p):
            proto, rest = p[:-1], rest[len(p):]
            break
    host, sep, cont = rest.partition(":")
    if not host:
        raise ValueError(f"invalid port specification '{spec}': expected [tcp|udp:]HOST[:CONTAINER]")
    host_port = _parse_port_number(host, "host", spec)
    if sep:
        if ":" in cont:
            raise ValueError(f"invalid port specification '{spec}': too many ':'")
        container_port = _parse_port_number(cont, "container", spec)
    else:
        container_port = host_port
    return Port(proto, host_port, container_port)


def check_ifname(name: str) -> str:
    """Return `name` if the kernel would accept it as an interface name."""
    if not name:
        raise ValueError("interface name is empty")
    if len(name.encode()) >= IFNAMSIZ:
        raise ValueError(f"interface name '{name}' is longer than {IFNAMSIZ - 1} characters")
    if name in (".", ".."):
        raise ValueError(f"interface name '{name}' is not allowed")
    for c in name:
        if c in "/:" or ord(c) <= 32 or ord(c) >= 127:
            raise ValueError(f"interface name '{name}' contains an invalid character {c!r}")
    if name.isdigit():
        raise ValueError(f"interface name '{name}' is numeric (looks like an ifindex)")
    return name


def parse_iface_pair(spec: str) -> "tuple[str, str | None]":
    """Parse `IF[:CIF]`; the second element is None when no container name is given."""
    host, sep, cont = spec.partition(":")
    check_ifname(host)
    if sep and cont:
        check_ifname(cont)
        return host, cont
    if sep and not cont:
        raise ValueError(f"invalid interface specification '{spec}': empty container name")
    return host, None


def _naming_scheme_has_long_hash() -> bool:
    """True unless net.naming-scheme= (kernel command line) or $NET_NAMING_SCHEME picks a scheme < v250."""
    scheme = None
    try:
        with open("/proc/cmdline") as f:
            for word in f.read().split():
                if word.startswith("net.naming-scheme="):
                    scheme = word.split("=", 1)[1]
    except OSError:
        pass
    if scheme is None:
        scheme = os.environ.get("NET_NAMING_SCHEME", "")
        scheme = scheme.lstrip(":")
    return scheme not in _OLD_NAMING_SCHEMES


def shorten_ifname(name: str, long_hash: "bool | None" = None) -> str:
    """Make `name` fit in 15 characters the way nspawn does.

    Naming scheme v250 and later: the first 11 characters, then 4 URL-safe
    base64 characters of the low 24 bits of siphash24(name, SHORTEN_IFNAME_KEY).
    Older schemes simply cut the name.  Short names are returned unchanged.
    """
    if len(name.encode()) < IFNAMSIZ:
        return name
    if long_hash is None:
        long_hash = _naming_scheme_has_long_hash()
    raw = name.encode()
    if not long_hash:
        return raw[:IFNAMSIZ - 1].decode(errors="ignore")
    h = siphash24(raw, SHORTEN_IFNAME_KEY)
    tail = "".join(_URLSAFE_B64[(h >> s) & 63] for s in (18, 12, 6, 0))
    return raw[:IFNAMSIZ - 5].decode(errors="ignore") + tail


def veth_host_name(machine: str, bridged: bool = False) -> str:
    """Host side of the main veth pair: `ve-NAME`, or `vb-NAME` when it joins a bridge."""
    return shorten_ifname(("vb-" if bridged else "ve-") + machine)


def zone_bridge_name(zone: str) -> str:
    """The bridge behind --network-zone=ZONE: `vz-ZONE`, which must be a valid interface name."""
    name = "vz-" + zone
    try:
        return check_ifname(name)
    except ValueError as e:
        raise ValueError(f"invalid network zone name '{zone}': {e}") from None


def macvlan_name(parent: str) -> str:
    return shorten_ifname("mv-" + parent)


def ipvlan_name(parent: str) -> str:
    return shorten_ifname("iv-" + parent)


def read_machine_id(path: str = "/etc/machine-id") -> bytes:
    """The host machine ID as 16 bytes; nspawn refuses to derive MACs without one."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    if not text or text == "uninitialized":
        raise ValueError(f"{path} is empty or uninitialized, cannot generate predictable MAC addresses")
    try:
        mid = bytes.fromhex(text)
    except ValueError:
        mid = b""
    if len(mid) != 16 or len(text) != 32:
        raise ValueError(f"{path} does not contain a valid machine ID")
    if mid == bytes(16):
        raise ValueError(f"{path} contains the null ID, cannot generate predictable MAC addresses")
    return mid


def container_mac(machine: str, key: bytes, idx: int = 0, host_machine_id: "bytes | None" = None) -> str:
    """Stable MAC for a link of `machine`: siphash24(machine-id ‖ name [‖ LE64 idx]) → 6 bytes.

    The multicast bit is cleared and the locally-administered bit set.
    """
    mid = read_machine_id() if host_machine_id is None else host_machine_id
    if isinstance(mid, str):
        mid = bytes.fromhex(mid)
    data = bytes(mid) + machine.encode()
    if idx > 0:
        data += idx.to_bytes(8, "little")
    b = bytearray(siphash24(data, key).to_bytes(8, "little")[:6])
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)
