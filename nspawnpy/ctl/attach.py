"""nspawnpyctl attach NAME [-- CMD...]: run a shell or a command inside a running machine.

Three processes: this one (host side: looks the machine up, compiles nothing new -- the
seccomp filter comes from the launcher's cache --, relays a pty); a child that joins the
leader's cgroups and, through a pidfd of the leader, all its namespaces at once; and that
child's child, born in the machine's PID namespace, which takes on the leader's limits
(capability bounding set, seccomp, no_new_privs) and execs (ctl/enter.py). The exit status
of the command is ours."""

import argparse
import os

from . import state
from .. import statefile
from ..errors import UserError

HELP = "run a shell or a command inside a running machine"
DROPPED_ENV = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "WATCHDOG_PID",
               "WATCHDOG_USEC", "CREDENTIALS_DIRECTORY")


def add_arguments(parser, verb) -> None:
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("--user", "-u", metavar="USER", help="run as this user of the machine")
    parser.add_argument("--setenv", "-E", action="append", default=[], metavar="NAME=VALUE",
                        help="set an environment variable (repeatable)")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD",
                        help="command and arguments (default: the user's shell); options "
                             "of ours go before NAME")


class Target:
    """What the entering processes need to know, gathered on the host side."""

    def __init__(self, machine):
        leader = machine.leader
        self.leader = leader
        self.pidfd = os.pidfd_open(leader)
        start = machine.record.get("LEADER_START")
        if start and str(statefile.start_time(leader)) != start:
            os.close(self.pidfd)
            raise UserError(f"Machine '{machine.name}' is not running.")
        status = _status(leader)
        self.bounding = int(status.get("CapBnd", "0"), 16)
        self.no_new_privs = status.get("NoNewPrivs", "0") == "1"
        self.namespaces = namespaces_to_join(leader)
        self.cgroups = _read(f"/proc/{leader}/cgroup")
        self.environ = leader_environment(leader)
        self.workdir = machine.record.get("WORKDIR") or "/"
        self.userns = "user" in [name for name, _ in self.namespaces]
        self.seccomp = seccomp_programs(machine.record, int(status.get("Seccomp", "0")))


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _status(pid: int) -> dict:
    fields = {}
    for line in _read(f"/proc/{pid}/status").splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


NAMESPACES = (("user", 0x10000000), ("mnt", 0x00020000), ("uts", 0x04000000),
              ("ipc", 0x08000000), ("net", 0x40000000), ("pid", 0x20000000),
              ("cgroup", 0x02000000), ("time", 0x00000080))


def namespaces_to_join(leader: int) -> list:
    """(name, CLONE_NEW* flag) of the leader's namespaces that are not ours."""
    result = []
    for name, flag in NAMESPACES:
        try:
            theirs = os.stat(f"/proc/{leader}/ns/{name}")
            ours = os.stat(f"/proc/self/ns/{name}")
        except FileNotFoundError:
            continue
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            result.append((name, flag))
    return result


def leader_environment(leader: int) -> dict:
    """The environment the machine's PID 1 started with, less what was only for PID 1."""
    env = {}
    for item in open(f"/proc/{leader}/environ", "rb").read().split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep and key not in DROPPED_ENV:
            env[key] = value
    return env


def seccomp_programs(record: dict, leader_mode: int) -> list:
    """The filter PID 1 runs under, from the same cache and inputs the launcher used. A
    machine we did not start (machined's) gets none: its inputs are unknown."""
    if leader_mode != 2 or "CAPS" not in record:
        return []
    from ..seccomp import cache as seccomp_cache
    kept = int(record["CAPS"] or "0", 16)
    caps = {i for i in range(64) if kept >> i & 1}
    return seccomp_cache.programs_for(caps, record.get("SYSCALL_ALLOW", "").split(),
                                      record.get("SYSCALL_DENY", "").split(),
                                      record.get("SUPPRESS_SYNC") == "1")


def build_env(target: Target, setenv: list, tty: bool) -> dict:
    env = dict(target.environ)
    if tty:
        env["TERM"] = os.environ.get("TERM") or env.get("TERM") or "vt220"
    for assignment in setenv:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise UserError(f"--setenv: expected NAME=VALUE, got {assignment!r}")
        env[key] = value
    return env


def run(args) -> int:
    state.require_root()
    machine = state.require_running(args.name)
    if not machine.leader:
        raise UserError(f"Machine '{args.name}' is not running.")
    try:
        target = Target(machine)
    except (FileNotFoundError, ProcessLookupError):
        raise UserError(f"Machine '{args.name}' is not running.") from None
    tty = os.isatty(0)
    env = build_env(target, args.setenv, tty)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    from . import enter
    return enter.attach(target, command, env, args.user, tty)
