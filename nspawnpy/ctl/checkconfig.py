"""nspawnpyctl checkconfig: what this kernel and host can do for nspawnpy, proven by trying
it (see probes.py), not read from a kernel config. Exit 1 when something nspawnpy needs is
missing; optional features that are missing only disable what uses them."""

import os
import sys

from . import probes

HELP = "check what this kernel and host can do (tried live)"
GREEN, RED, YELLOW, RESET = "\033[32m", "\033[31m", "\033[33m", "\033[0m"


def add_arguments(parser, verb) -> None:
    parser.add_argument("--machines-dir", default="/var/lib/machines", metavar="DIR",
                        help="where to try ID-mapped mounts (default /var/lib/machines)")


def checks(machines_dir: str) -> list:
    """[(section, name, needed, (works, detail), what it is for)]"""
    rows = []
    for name, flag in probes.NAMESPACES:
        needed = name in ("mount", "uts", "ipc", "pid", "cgroup")
        probe = probes.user_namespaces() if name == "user" else probes.namespace(flag)()
        rows.append(("Namespaces", name, needed, probe,
                     {"network": "--private-network and friends", "user": "-U",
                      "time": "nothing yet"}.get(name, "every container")))
    rows.append(("Kernel", "pidfd", True, probes.pidfd(), "supervision, attach"))
    seccomp = probes.seccomp()
    rows.append(("Kernel", "seccomp filters", False, seccomp, "nspawn's system call filter"))
    rows.append(("Kernel", "overlayfs", False, probes.overlayfs(), "--ephemeral, --overlay="))
    rows.append(("Kernel", f"ID-mapped mounts", False, probes.idmapped_mounts(machines_dir),
                 "-U with --private-users-ownership=map"))
    rows.append(("Control groups", "hierarchy", True, probes.cgroups(), "every container"))
    for kind, works, detail in probes.link_types():
        rows.append(("Network links", kind, False, (works, detail),
                     {"veth": "--network-veth", "bridge": "--network-zone=",
                      "macvlan": "--network-macvlan=", "ipvlan": "--network-ipvlan="}[kind]))
    rows.append(("Libraries", "libseccomp", seccomp[0],
                 probes.library("libseccomp.so.2", "seccomp_version"), "compiling the filter"))
    rows.append(("Libraries", "libnftables", False, probes.library("libnftables.so.1"),
                 "--port="))
    rows.append(("Host", "systemd as PID 1", False, probes.systemd_pid1(),
                 "nspawnpy@.service, nspawnpyctl enable"))
    rows.append(("Host", "systemd-machined", False, probes.machined(),
                 "--register=yes (the default), machinectl"))
    return rows


def run(args) -> int:
    from . import state
    state.require_root()
    colour = os.isatty(1)
    missing_needed = False
    section = None
    for sec, name, needed, (works, detail), purpose in checks(args.machines_dir):
        if sec != section:
            sys.stdout.write(f"{'' if section is None else chr(10)}--- {sec} ---\n")
            section = sec
        if works:
            word, paint = "yes", GREEN
        elif needed:
            word, paint, missing_needed = "missing (required)", RED, True
        else:
            word, paint = "missing", YELLOW
        if colour:
            word = f"{paint}{word}{RESET}"
        note = f" ({detail})" if detail else ""
        if not works:
            note += f" -- needed for {purpose}"
        sys.stdout.write(f"{name}: {word}{note}\n")
    if missing_needed:
        sys.stdout.write("\nSomething nspawnpy needs is missing.\n")
    return 1 if missing_needed else 0
