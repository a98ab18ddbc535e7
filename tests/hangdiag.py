"""What a container run that does not end was doing: for the failure report of a test whose run
timed out, taken before the run is killed.

`run(argv, timeout, **popen_kw)` is subprocess.run(capture_output=True) whose timeout raises
`Hung` (a subprocess.TimeoutExpired) carrying `report(...)` of the still-running run: its output
so far, every process of it (host PID, state, wchan, kernel stack, namespaces' PIDs, cgroups) and,
where a guest systemd is PID 1 of it, its jobs, failed units and journal tail.  Reports are also
written to /var/tmp/nspawnpy-hangs/ (a long pytest report gets cut; the file does not).

Also a command: `python3 tests/hangdiag.py PID...` prints the report of running PIDs' trees.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

REPORTS = Path("/var/tmp/nspawnpy-hangs")


class Hung(subprocess.TimeoutExpired):
    """A run that outlived its timeout; str() is the report."""

    def __init__(self, argv, timeout, stdout, stderr, report: str):
        super().__init__(argv, timeout, output=stdout, stderr=stderr)
        self.report = report

    def __str__(self):
        return f"{super().__str__()}\n{self.report}"


def run(argv: list, timeout: float, *, input: str | None = None, cgroups=(), **popen_kw):
    """subprocess.run(argv, capture_output=True, text=True, timeout=timeout): on timeout, the
    report of the run (and of what is in *cgroups*, directories) before it is killed."""
    if input is not None:
        popen_kw["stdin"] = subprocess.PIPE
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **popen_kw) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            partial = (_text(e.stdout), _text(e.stderr))
            text = report(proc.pid, cgroups, *partial)
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                out, err = proc.communicate(timeout=30)
                partial = (out, err)
            raise Hung(argv, timeout, *partial, _saved(text)) from None
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _text(data) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _saved(text: str) -> str:
    with contextlib.suppress(OSError):
        REPORTS.mkdir(exist_ok=True)
        path = REPORTS / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.txt"
        path.write_text(text)
        text = f"(also in {path})\n{text}"
    return text


def report(root_pid: int, cgroups=(), stdout: str = "", stderr: str = "") -> str:
    """Everything below about the tree of *root_pid* and the processes in *cgroups*."""
    pids = tree(root_pid) | in_cgroups(cgroups)
    parts = [f"=== stdout so far (last 4000 chars)\n{stdout[-4000:]}",
             f"=== stderr so far (last 4000 chars)\n{stderr[-4000:]}",
             "=== processes\n" + "\n".join(describe(p) for p in sorted(pids))]
    for leader in guest_inits(pids):
        parts.append(guest_state(leader))
    return "\n".join(parts)


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError as e:
        return f"<{e.strerror}>"


def _status(pid: int) -> dict:
    """/proc/PID/status as {field: value}; {} for a process that is gone."""
    pairs = (line.split(":", 1) for line in _read(f"/proc/{pid}/status").splitlines())
    return {pair[0]: pair[1].strip() for pair in pairs if len(pair) == 2}


def tree(root_pid: int) -> set[int]:
    """*root_pid* and all its descendants (by PPid)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = _status(int(entry)).get("PPid")
            if ppid and ppid.isdigit():
                children.setdefault(int(ppid), []).append(int(entry))
    found, todo = set(), [root_pid]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def in_cgroups(cgroups) -> set[int]:
    pids: set[int] = set()
    for d in cgroups:
        for root, _dirs, files in os.walk(d):
            if "cgroup.procs" in files:
                pids |= {int(p) for p in _read(os.path.join(root, "cgroup.procs")).split()
                         if p.isdigit()}
    return pids


def describe(pid: int) -> str:
    status = _status(pid)
    cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()[:200]
    lines = [f"--- {pid} ppid={status.get('PPid')} state={status.get('State')} "
             f"nspid={status.get('NSpid')} wchan={_read(f'/proc/{pid}/wchan')} "
             f"sigpnd={status.get('SigPnd')}/{status.get('ShdPnd')} "
             f"sigblk={status.get('SigBlk')} sigign={status.get('SigIgn')}",
             f"    cmd: {cmdline}"]
    lines += [f"    cgroup {c}" for c in _read(f"/proc/{pid}/cgroup").splitlines()]
    lines += [f"    stack {s}" for s in _read(f"/proc/{pid}/stack").splitlines()[:12]]
    if "futex" in _read(f"/proc/{pid}/wchan"):  # waits in user space: on what?
        lines += [f"    gdb {s}" for s in user_stack(pid).splitlines()[:25]]
    with contextlib.suppress(OSError):
        fds = sorted(os.listdir(f"/proc/{pid}/fd"), key=int)
        targets = []
        for fd in fds[:40]:
            with contextlib.suppress(OSError):
                targets.append(f"{fd}->{os.readlink(f'/proc/{pid}/fd/{fd}')}")
        lines.append("    fds " + " ".join(targets))
    return "\n".join(lines)


def user_stack(pid: int) -> str:
    """The user-space backtrace of *pid*'s threads, if gdb is installed."""
    try:
        r = subprocess.run(["gdb", "-batch", "-p", str(pid), "-ex", "thread apply all bt 20"],
                           text=True, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"<{e}>"
    return "\n".join(line for line in r.stdout.splitlines() if line.startswith(("#", "Thread")))


def guest_inits(pids) -> list[int]:
    """The processes that are PID 1 of a PID namespace below the host's."""
    inits = []
    for pid in sorted(pids):
        nspid = _status(pid).get("NSpid", "").split()
        if len(nspid) > 1 and nspid[-1] == "1":
            inits.append(pid)
    return inits


GUEST_COMMANDS = (
    ("systemctl", "list-jobs", "--no-pager"),
    ("systemctl", "--failed", "--no-pager"),
    ("systemctl", "is-system-running"),
    ("systemctl", "list-units", "--no-pager", "--state=activating,deactivating"),
    ("sh", "-c", "journalctl -b --no-pager | tail -80"),
)


def guest_state(leader: int) -> str:
    """What the guest's systemd (or whatever PID 1 is) says, from inside via nsenter."""
    parts = [f"=== guest PID 1 = host {leader}: {_read(f'/proc/{leader}/comm').strip()}"]
    for command in GUEST_COMMANDS:
        try:
            r = subprocess.run(["nsenter", "-t", str(leader), "-a", *command], text=True,
                               capture_output=True, timeout=15, stdin=subprocess.DEVNULL)
            parts.append(f"--- {' '.join(command)} (exit {r.returncode})\n{r.stdout}{r.stderr}")
        except (OSError, subprocess.TimeoutExpired) as e:
            parts.append(f"--- {' '.join(command)}: {e}")
    return "\n".join(parts)


if __name__ == "__main__":
    print("\n".join(report(int(p)) for p in sys.argv[1:]))
