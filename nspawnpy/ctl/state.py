"""Finding machines: the records the launcher publishes in /run/nspawnpy/machines, with stale
ones (leader gone, or its PID now another process) removed on sight, machined's view merged
in where a system bus exists, and the stopped trees of the image search path."""

import dataclasses
import os

from .. import statefile
from ..errors import UserError
from ..plan.tree import SEARCH_PATH as MACHINE_SEARCH_PATH

SYSTEM_BUS = "/run/dbus/system_bus_socket"


@dataclasses.dataclass
class Machine:
    name: str
    state: str = "stopped"            # running | stopped
    leader: int | None = None
    supervisor: int | None = None
    root: str | None = None
    uuid: str | None = None
    started_usec: int | None = None
    boot: bool = False
    kill_signal: int | None = None
    unit: str = ""
    registered: bool = False          # machined knows it
    source: str = "nspawnpy"          # nspawnpy | machined (started by systemd-nspawn, say)
    service: str = ""
    cgroups: str = ""                 # the leader's /proc/PID/cgroup when published
    links: tuple = ()                 # host-side link names
    userns: tuple | None = None       # (base, size)
    record: dict = dataclasses.field(default_factory=dict, repr=False)


def from_record(record: dict) -> Machine:
    def number(key):
        value = record.get(key, "")
        return int(value) if value.isdigit() else None
    userns = None
    if number("USERNS_SIZE"):
        userns = (number("USERNS_BASE") or 0, number("USERNS_SIZE"))
    return Machine(
        name=record["NAME"], state="running", leader=int(record["LEADER"]),
        supervisor=number("SUPERVISOR"), root=record["ROOT"], uuid=record.get("UUID") or None,
        started_usec=number("STARTED_USEC"), boot=record.get("BOOT") == "1",
        kill_signal=number("KILL_SIGNAL"), unit=record.get("UNIT", ""),
        registered=record.get("REGISTERED") == "1", cgroups=record.get("CGROUPS", ""),
        links=tuple(record.get("LINKS", "").split()), userns=userns, record=record)


def valid_name(name: str) -> bool:
    return 0 < len(name) <= 64 and "/" not in name and not name.startswith(".") and \
        all(c.isalnum() or c in "-_." for c in name)


def check_name(name: str) -> str:
    if not valid_name(name):
        raise UserError(f"Invalid machine name: {name!r}")
    return name


def _read_record(name: str, strict: bool):
    """The live record of *name*, or None (no record, or a stale one, which is removed). A
    corrupt record is removed too; strict=True then reports it as an error."""
    path = os.path.join(statefile.STATE_DIR, name)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise UserError(f"Cannot read state file {path}: {e.strerror}") from None
    try:
        record = statefile.decode(data)
        if record["NAME"] != name:
            raise ValueError(f"it names machine {record['NAME']!r}")
    except (ValueError, UnicodeDecodeError) as e:
        _unlink(path)
        if strict:
            raise UserError(f"State file {path} is corrupt ({e}); removed it.") from None
        import sys
        sys.stderr.write(f"State file {path} is corrupt ({e}); removed it.\n")
        return None
    if statefile.start_time(int(record["LEADER"])) != int(record["LEADER_START"]):
        _unlink(path)  # the leader is gone: a killed launcher's record
        return None
    return record


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def running(with_machined: bool = True) -> dict:
    """Every running machine by name."""
    machines = {}
    try:
        names = sorted(n for n in os.listdir(statefile.STATE_DIR) if not n.startswith("."))
    except FileNotFoundError:
        names = []
    for name in names:
        record = _read_record(name, strict=False)
        if record is not None:
            machines[name] = from_record(record)
    if with_machined:
        from . import machined
        machined.merge(machines)
    return machines


def stopped_trees(skip) -> dict:
    """Machine trees in the image search path that are not running."""
    trees = {}
    for base in MACHINE_SEARCH_PATH:
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name in skip or entry.name in trees or not valid_name(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                trees[entry.name] = Machine(name=entry.name, root=entry.path)
    return trees


def find_tree(name: str) -> str | None:
    for base in MACHINE_SEARCH_PATH:
        path = os.path.join(base, name)
        if os.path.isdir(path) and not os.path.islink(path):
            return path
    return None


def lookup(name: str) -> Machine | None:
    """The running machine *name* (ours or machined's), else its stopped tree, else None."""
    check_name(name)
    record = _read_record(name, strict=True)
    if record is not None:
        machine = from_record(record)
        from . import machined
        machined.merge({name: machine}, only=name)
        return machine
    from . import machined
    found = {}
    machined.merge(found, only=name)
    if name in found:
        return found[name]
    tree = find_tree(name)
    return Machine(name=name, root=tree) if tree else None


def require_running(name: str) -> Machine:
    machine = lookup(name)
    if machine is None:
        raise UserError(f"No machine '{name}' known.")
    if machine.state != "running":
        raise UserError(f"Machine '{name}' is not running.")
    return machine


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("Need to be root.")
