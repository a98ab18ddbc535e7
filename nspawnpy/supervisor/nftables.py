"""Port forwarding (--port=) through libnftables, called with ctypes.

Only imported when a port is forwarded.  All our rules live in one table,
`ip io.nspawnpy.nat`, with one chain per hook:

  prerouting  traffic from elsewhere to a host-local address
  output      traffic from the host itself to a host-local, non-loopback address

Each rule carries a comment tag naming its machine and its container's PID, so
several machines share the table and each removes exactly its own rules.  The
table goes away with its last rule.  Changes are made under a file lock so that
"is the table empty now?" and "delete it" cannot race with another instance.

Runs in: the port watcher and the supervisor/janitor (removing the rules).
"""

import fcntl
import json
import os
import re

LIBRARY = "libnftables.so.1"
TABLE = "io.nspawnpy.nat"
FAMILY = "ip"
LOCK = "/run/nspawnpy/nat.lock"
TAG_PREFIX = "nspawnpy:"

# From <nftables/libnftables.h>.
_NFT_CTX_DEFAULT = 0
_NFT_CTX_OUTPUT_HANDLE = 1 << 3
_NFT_CTX_OUTPUT_JSON = 1 << 4

_lib = None


class NftError(Exception):
    """A command that libnftables refused; the message is its first error line."""


def load():
    """The libnftables handle; raises OSError when the library is not installed."""
    global _lib
    if _lib is None:
        import ctypes
        lib = ctypes.CDLL(LIBRARY)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.restype = None
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).restype = ctypes.c_int
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).restype = ctypes.c_char_p
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.restype = None
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        _lib = lib
    return _lib


def available() -> bool:
    try:
        load()
    except OSError:
        return False
    return True


class Context:
    """One libnftables context with buffered output and errors."""

    def __init__(self, json_output: bool = False):
        self.lib = load()
        self.ctx = self.lib.nft_ctx_new(_NFT_CTX_DEFAULT)
        if not self.ctx:
            raise NftError("cannot create an nftables context")
        self.lib.nft_ctx_buffer_output(self.ctx)
        self.lib.nft_ctx_buffer_error(self.ctx)
        if json_output:
            self.lib.nft_ctx_output_set_flags(self.ctx, _NFT_CTX_OUTPUT_JSON | _NFT_CTX_OUTPUT_HANDLE)

    def run(self, commands: str) -> str:
        """Run `commands` as one transaction; returns the output, raises NftError."""
        rc = self.lib.nft_run_cmd_from_buffer(self.ctx, commands.encode())
        out = (self.lib.nft_ctx_get_output_buffer(self.ctx) or b"").decode(errors="replace")
        err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode(errors="replace")
        if rc != 0:
            first = next((line for line in err.splitlines() if line.strip()), "")
            raise NftError(first.removeprefix("Error: ") or f"nftables command failed ({rc})")
        return out

    def close(self) -> None:
        if self.ctx:
            self.lib.nft_ctx_free(self.ctx)
            self.ctx = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Lock:
    def __enter__(self):
        os.makedirs(os.path.dirname(LOCK), mode=0o755, exist_ok=True)
        self.fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def make_tag(machine: str, pid: int) -> str:
    """The comment that marks the rules of one running container."""
    return f"{TAG_PREFIX}{re.sub(r'[^A-Za-z0-9_.-]', '_', machine)}:{pid}"


def _tag_pid(tag: str):
    if not tag.startswith(TAG_PREFIX):
        return None
    tail = tag.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _rules(ctx) -> "list[dict] | None":
    """Our table's rules (dicts with chain, handle, comment), None if there is no table."""
    try:
        out = ctx.run(f"list table {FAMILY} {TABLE}")
    except NftError:
        return None
    rules = []
    for item in json.loads(out).get("nftables", []):
        rule = item.get("rule")
        if rule:
            rules.append(rule)
    return rules


def _delete_commands(rules, doomed) -> "list[str]":
    return [f"delete rule {FAMILY} {TABLE} {r['chain']} handle {r['handle']}"
            for r in rules if doomed(r.get("comment", ""))]


def _stale(comment: str) -> bool:
    """A tagged rule whose container is gone (its owner was killed and never cleaned up)."""
    pid = _tag_pid(comment)
    return pid is not None and not os.path.exists(f"/proc/{pid}")


def rule_commands(ports, address: str, tag: str) -> "list[str]":
    """The `add rule` commands that DNAT each port to `address` (IPv4)."""
    cmds = []
    for p in ports:
        match = f"fib daddr type local {p.proto} dport {p.host_port}"
        action = f"dnat to {address}:{p.container_port} comment \"{tag}\""
        cmds.append(f"add rule {FAMILY} {TABLE} prerouting {match} {action}")
        # Loopback destinations are left alone (as nspawn: they would need route_localnet).
        cmds.append(f"add rule {FAMILY} {TABLE} output ip daddr != 127.0.0.0/8 {match} {action}")
    return cmds


def forward(ports, address: str, tag: str) -> None:
    """Point `tag`'s rules at `address`, replacing earlier ones, in one transaction."""
    with _Lock(), Context(json_output=True) as ctx:
        rules = _rules(ctx) or []
        cmds = [f"add table {FAMILY} {TABLE}",
                f"add chain {FAMILY} {TABLE} prerouting {{ type nat hook prerouting priority -100; }}",
                f"add chain {FAMILY} {TABLE} output {{ type nat hook output priority -100; }}"]
        cmds += _delete_commands(rules, lambda c: c == tag or _stale(c))
        cmds += rule_commands(ports, address, tag)
        ctx.run("\n".join(cmds) + "\n")


def unforward(tag: str) -> None:
    """Remove `tag`'s rules (and stale ones); drop the table when nothing else is in it."""
    with _Lock(), Context(json_output=True) as ctx:
        rules = _rules(ctx)
        if rules is None:
            return
        cmds = _delete_commands(rules, lambda c: c == tag or _stale(c))
        if len(cmds) == len(rules):
            cmds = [f"delete table {FAMILY} {TABLE}"]
        if cmds:
            ctx.run("\n".join(cmds) + "\n")
