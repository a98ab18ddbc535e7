"""The record of a running machine in /run/nspawnpy/machines/NAME: its format, and how
a process is identified safely (PID plus start time, so a recycled PID is not mistaken
for the machine's leader). Written by the supervisor, read by nspawnpyctl.

The format is one KEY=VALUE per line (backslash escapes for backslash and newline),
cheap to write on the launcher's hot path and easy to read with a shell.

Runs in: the supervisor and the janitor (writing, removing) and nspawnpyctl (reading).
"""

import os

STATE_DIR = "/run/nspawnpy/machines"
# Every key a record has, in the order written. Lists are space-separated.
FIELDS = (
    "NAME", "LEADER", "LEADER_START", "SUPERVISOR", "SUPERVISOR_START", "ROOT", "UUID",
    "STARTED_USEC", "BOOT", "KILL_SIGNAL", "UNIT", "REGISTERED", "CGROUPS", "LINKS",
    "USERNS_BASE", "USERNS_SIZE", "CAPS", "NO_NEW_PRIVS", "SYSCALL_ALLOW", "SYSCALL_DENY",
    "SUPPRESS_SYNC", "WORKDIR",
)


def encode(record: dict) -> bytes:
    lines = []
    for key in FIELDS:
        value = str(record.get(key, ""))
        lines.append(f"{key}={value.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}")
    return ("\n".join(lines) + "\n").encode()


def decode(data: bytes) -> dict:
    """The record, or ValueError when it is not one (unknown or missing keys, bad bytes)."""
    record = {}
    for line in data.decode().splitlines():
        key, sep, value = line.partition("=")
        if not sep or key not in FIELDS:
            raise ValueError(f"unexpected line {line[:40]!r}")
        record[key] = _unescape(value)
    missing = [k for k in ("NAME", "LEADER", "LEADER_START", "ROOT") if not record.get(k)]
    if missing:
        raise ValueError(f"{missing[0]} is missing")
    for key in ("LEADER", "LEADER_START"):
        if not record[key].isdigit():
            raise ValueError(f"{key} is not a number")
    return record


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            out.append("\n" if value[i + 1] == "n" else value[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def read_text(path: str, default=""):
    """A small /proc, /sys or cgroup file's text, or *default* when it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot, /proc/PID/stat field 22), or None
    when it does not exist or has ended (a zombie). The command name may hold spaces and parentheses: split after
    the last ')'."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return None if fields[0] in (b"Z", b"X") else int(fields[19])


def write_atomically(directory: str, name: str, data: bytes) -> str:
    """Write *data* to directory/name through a temporary file renamed into place."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, name)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    return path
