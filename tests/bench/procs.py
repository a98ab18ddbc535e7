"""What the bench reads from /proc: status lines, PID namespaces, process trees, smaps_rollup."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

ROLLUP_KEYS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Anonymous")


def _fields(path: str, keys) -> dict:
    """The "Key: value" lines of a /proc file whose key is in *keys* (empty if it is gone)."""
    out = {}
    with contextlib.suppress(OSError):
        with open(path) as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in keys:
                    out[key] = val.strip()
    return out


def proc_status(pid: int) -> dict:
    out = _fields(f"/proc/{pid}/status", ("Name", "VmHWM", "VmRSS", "PPid"))
    for key in ("VmHWM", "VmRSS"):
        if key in out:
            out[key] = int(out[key].split()[0])  # kB
    return out


def pidns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") \
            .decode(errors="replace").strip()[:120]
    return ""


def describe_tree(pid: int) -> list[dict]:
    """Descendants of *pid*, marked host-side (same PID namespace as us) or in the container."""
    host_ns = pidns("self")
    out = []
    for c in descendants(pid):
        st = proc_status(c)
        if not st:
            continue
        st["cmdline"] = cmdline(c)
        st["pid"] = c
        st["side"] = "host" if pidns(c) == host_ns else "container"
        out.append(st)
    return out


def smaps_rollup(pid: int) -> dict:
    """kB figures of /proc/PID/smaps_rollup (empty if the process is gone)."""
    return {key: int(val.split()[0])
            for key, val in _fields(f"/proc/{pid}/smaps_rollup", ROLLUP_KEYS).items()}
