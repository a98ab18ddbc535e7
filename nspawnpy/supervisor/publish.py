"""Publish the running container in /run/nspawnpy/machines/NAME (once PID 1 has exec'd, so
whoever enters it finds the final root), and remove the record again at exit. A killed
supervisor's record is removed by the janitor, or recognised as stale by nspawnpyctl (its
leader is gone or is another process).

Runs in: the supervisor (and the janitor, removing the record).
"""

import os

from .. import statefile

SIGRTMIN = 34


def remover(machine: str, leader: int):
    """The cleanup that removes our record, and only ours (never a namesake's)."""
    from .cleanups import Cleanup
    return Cleanup("record", (machine, leader))


def remove_record(machine: str, leader: int) -> None:
    path = os.path.join(statefile.STATE_DIR, machine)
    try:
        with open(path, "rb") as f:
            if statefile.decode(f.read())["LEADER"] != str(leader):
                return
        os.unlink(path)
    except (OSError, ValueError):
        pass


def publish(plan, pid: int, network, registered: bool) -> None:
    """Write the record; a live namesake (two trees run as one -M name without machined)
    keeps its record."""
    s, machine = plan.settings, plan.machine.name
    if _live_namesake(machine):
        return
    userns = plan.userns
    record = {
        "NAME": machine, "LEADER": pid, "LEADER_START": statefile.start_time(pid),
        "SUPERVISOR": os.getpid(), "SUPERVISOR_START": statefile.start_time(os.getpid()),
        "ROOT": plan.tree.root, "UUID": plan.machine.uuid, "STARTED_USEC": _realtime_usec(),
        "BOOT": int(bool(s.boot)), "KILL_SIGNAL": _kill_signal(s),
        "UNIT": _unit(machine, registered, s.keep_unit), "REGISTERED": int(registered),
        "CGROUPS": statefile.read_text(f"/proc/{pid}/cgroup").strip(), "LINKS": " ".join(_host_links(network)),
        "USERNS_BASE": "" if userns is None else userns.base,
        "USERNS_SIZE": "" if userns is None else userns.size,
        "CAPS": f"{plan.kept_caps:x}", "NO_NEW_PRIVS": int(bool(s.no_new_privileges)),
        "SYSCALL_ALLOW": " ".join(s.syscall_allow), "SYSCALL_DENY": " ".join(s.syscall_deny),
        "SUPPRESS_SYNC": int(bool(s.suppress_sync)), "WORKDIR": s.chdir or "/",
    }
    if record["LEADER_START"] is None:
        return  # PID 1 is already gone
    try:
        statefile.write_atomically(statefile.STATE_DIR, machine, statefile.encode(record))
    except OSError as e:
        import sys
        sys.stderr.write(f"Failed to publish machine state: {e.strerror}\n")


def _live_namesake(machine: str) -> bool:
    try:
        with open(os.path.join(statefile.STATE_DIR, machine), "rb") as f:
            record = statefile.decode(f.read())
    except (OSError, ValueError):
        return False
    return statefile.start_time(int(record["LEADER"])) == int(record["LEADER_START"])


def _kill_signal(s) -> int:
    """The signal that asks PID 1 to shut down, as the supervisor sends it on SIGTERM."""
    if s.kill_signal:
        return s.kill_signal
    return SIGRTMIN + 3 if s.boot else 9


def _unit(machine: str, registered: bool, keep_unit: bool) -> str:
    """machined's scope for a registered machine, or the unit we run in with --keep-unit."""
    if registered and not keep_unit:
        return f"machine-{_unit_escape(machine)}.scope"
    if not keep_unit:
        return ""
    for line in statefile.read_text("/proc/self/cgroup").splitlines():
        for part in reversed(line.split(":", 2)[-1].split("/")):
            if part.endswith((".service", ".scope")):
                return part
    return ""


def _unit_escape(name: str) -> str:
    """systemd's unit name escaping of a machine name ('-' and other bytes as \\xNN)."""
    out = []
    for i, ch in enumerate(name):
        if ch.isascii() and (ch.isalnum() or ch in ":_" or (ch == "." and i > 0)):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


def _host_links(network) -> list:
    if network is None:
        return []
    return [name for name, _ in network.host_links]  # the veth ends we made


def _realtime_usec() -> int:
    import time
    return time.time_ns() // 1000


