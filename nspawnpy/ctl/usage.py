"""What a running machine uses -- CPU time, memory, tasks, block I/O -- read from its own
cgroup (unified or v1/hybrid), or summed over the processes of its PID namespace where it
has no cgroup of its own (a plain command stays in the launcher's cgroup)."""

import os

from ..statefile import read_text

ROOT = "/sys/fs/cgroup"


def _read(path: str) -> str | None:
    return read_text(path, None)


def cgroup_paths(pid: int) -> dict:
    """{controller or '' (unified) : path} from /proc/PID/cgroup."""
    text = _read(f"/proc/{pid}/cgroup") or ""
    paths = {}
    for line in text.splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0":
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _machine_paths(leader: int, supervisor: int | None) -> dict:
    """The machine's cgroup per controller, only where it has one of its own (not the
    launcher's, not the root). A booted systemd sits in init.scope below it."""
    own = cgroup_paths(leader)
    theirs = cgroup_paths(supervisor) if supervisor else {}
    result = {}
    for controller, path in own.items():
        if path.endswith("/init.scope"):
            path = path[:-len("/init.scope")]
        if path in ("/", "") or ".." in path.split("/") or theirs.get(controller) == path:
            continue
        result[controller] = path
    return result


def _unified_dir(path: str) -> str:
    return f"{ROOT}/unified{path}" if os.path.isdir(f"{ROOT}/unified") else f"{ROOT}{path}"


def from_cgroups(paths: dict) -> dict:
    """What the cgroup files say; keys missing where the controller is not there."""
    usage = {}
    if "" in paths:
        d = _unified_dir(paths[""])
        cpu = _read(f"{d}/cpu.stat")
        if cpu:
            stat = dict(line.split() for line in cpu.splitlines() if len(line.split()) == 2)
            usage["cpu_usec"] = int(stat.get("usage_usec", 0))
        for key, name in (("memory_bytes", "memory.current"), ("tasks", "pids.current")):
            text = _read(f"{d}/{name}")
            if text and text.strip().isdigit():
                usage[key] = int(text)
        io = _read(f"{d}/io.stat")
        if io is not None:
            usage["io_read_bytes"], usage["io_write_bytes"] = _io_stat(io)
    v1 = (("cpu_usec", "cpuacct", "cpuacct.usage", 1000), ("memory_bytes", "memory",
          "memory.usage_in_bytes", 1), ("tasks", "pids", "pids.current", 1))
    for key, controller, name, divisor in v1:
        if key not in usage and controller in paths:
            text = _read(f"{ROOT}/{controller}{paths[controller]}/{name}")
            if text and text.strip().isdigit():
                usage[key] = int(text) // divisor
    if "tasks" not in usage and "name=systemd" in paths:
        usage["tasks"] = _count_tasks(f"{ROOT}/systemd{paths['name=systemd']}")
    if "io_read_bytes" not in usage and "blkio" in paths:
        text = _read(f"{ROOT}/blkio{paths['blkio']}/blkio.throttle.io_service_bytes")
        if text is not None:
            usage["io_read_bytes"], usage["io_write_bytes"] = _blkio(text)
    return usage


def _count_tasks(directory: str) -> int:
    """Threads in a v1 cgroup and below it (the named systemd hierarchy has no counters)."""
    count = 0
    for top, _, files in os.walk(directory):
        if "tasks" in files:
            count += len((_read(f"{top}/tasks") or "").split())
    return count


def _io_stat(text: str) -> tuple:
    read = write = 0
    for line in text.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key == "rbytes":
                read += int(value)
            elif key == "wbytes":
                write += int(value)
    return read, write


def _blkio(text: str) -> tuple:
    read = write = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1] == "Read":
            read += int(fields[2])
        elif len(fields) == 3 and fields[1] == "Write":
            write += int(fields[2])
    return read, write


def machine_pids(leader: int) -> list[int]:
    """Every process in the leader's PID namespace."""
    try:
        ns = os.stat(f"/proc/{leader}/ns/pid").st_ino
    except OSError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/pid").st_ino == ns:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def from_processes(leader: int) -> dict:
    """Sums over the machine's processes: CPU time, resident memory, threads, I/O bytes."""
    ticks = os.sysconf("SC_CLK_TCK")
    usage = dict.fromkeys(("cpu_usec", "memory_bytes", "tasks", "io_read_bytes",
                           "io_write_bytes"), 0)
    for pid in machine_pids(leader):
        stat = _read(f"/proc/{pid}/stat")
        if not stat:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        usage["cpu_usec"] += (int(fields[11]) + int(fields[12])) * 1_000_000 // ticks
        usage["tasks"] += int(fields[17])
        usage["memory_bytes"] += int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        io = _read(f"/proc/{pid}/io") or ""
        for line in io.splitlines():
            key, _, value = line.partition(":")
            if key in ("read_bytes", "write_bytes"):
                usage[f"io_{key}"] += int(value)
    return usage


def usage(leader: int, supervisor: int | None) -> dict:
    """The machine's usage; 'source' says per key family whether a cgroup or the
    processes were counted."""
    from_cg = from_cgroups(_machine_paths(leader, supervisor))
    summed = None
    result = {}
    for key in ("cpu_usec", "memory_bytes", "tasks", "io_read_bytes", "io_write_bytes"):
        if key in from_cg:
            result[key] = from_cg[key]
        else:
            summed = summed or from_processes(leader)
            result[key] = summed[key]
    result["source"] = "cgroup" if from_cg else "processes"
    if from_cg and summed:
        result["source"] = "cgroup+processes"
    return result
