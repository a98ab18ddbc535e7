"""A machine's network as the host sees it through /proc/LEADER/net (no setns, no pyroute2):
its addresses and the byte counters of its links, and those of our host-side veth ends."""

import ipaddress
import os


def private_network(leader: int) -> bool:
    """Whether the machine has a network namespace of its own."""
    try:
        return os.stat(f"/proc/{leader}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return False


def addresses(leader: int, include_link_local: bool = False) -> list[str]:
    """IPv4 then IPv6 addresses of the machine's interfaces, loopback left out."""
    if not private_network(leader):
        return []
    found = [a for a in _ipv4(leader) if not a.startswith("127.")]
    for address, scope in _ipv6(leader):
        if scope == 0 or (include_link_local and scope == 0x20):
            found.append(address)
    return found


def _ipv4(leader: int) -> list[str]:
    """Local addresses from the fib trie: an IP line followed by '/32 host LOCAL'."""
    try:
        with open(f"/proc/{leader}/net/fib_trie") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    found = []
    for previous, line in zip(lines, lines[1:]):
        if line.strip() == "/32 host LOCAL":
            address = previous.strip().lstrip("|-+ ").strip()
            if address not in found:
                found.append(address)
    return found


def _ipv6(leader: int) -> list[tuple[str, int]]:
    try:
        with open(f"/proc/{leader}/net/if_inet6") as f:
            rows = [line.split() for line in f]
    except OSError:
        return []
    return [(str(ipaddress.IPv6Address(bytes.fromhex(row[0]))), int(row[3], 16))
            for row in rows if len(row) >= 6]


def link_bytes(leader: int) -> dict:
    """{interface: {"rx_bytes": N, "tx_bytes": N}} inside the machine (loopback left out)."""
    if not private_network(leader):
        return {}
    try:
        with open(f"/proc/{leader}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return {}
    stats = {}
    for line in lines:
        name, _, numbers = line.partition(":")
        fields = numbers.split()
        if name.strip() != "lo" and len(fields) >= 9:
            stats[name.strip()] = {"rx_bytes": int(fields[0]), "tx_bytes": int(fields[8])}
    return stats


def host_link_bytes(links) -> dict:
    """The same counters for our host-side link ends (as the host counts them)."""
    stats = {}
    for link in links:
        base = f"/sys/class/net/{link}/statistics"
        try:
            stats[link] = {key: int(open(f"{base}/{key}").read()) for key in ("rx_bytes", "tx_bytes")}
        except (OSError, ValueError):
            continue
    return stats
