"""The mount-propagation tunnel `machinectl bind` uses, which nspawn gives every container.

machined hard-codes the host directory /run/systemd/nspawn/propagate/NAME: to bind a host
path into a machine it mounts it on a fresh entry in that directory, expects the mount to
show up below /run/host/incoming in the machine's mount namespace, and moves it from there
to its destination (from inside that namespace).

Host side (here, before clone): only the directory. Container side (pid1/tunnel.py, run
by PID 1 on the unpivoted, shared tree, in nspawn's place among the mounts): the directory
is bound read-only at /run/host/incoming and made a slave. The bind's source is PID 1's
copy of the host's /, a slave of it, so what machined mounts there on a host whose / is
shared (systemd makes it so) arrives below it; being a slave and not shared itself,
incoming lets machined move the mount away again (the kernel refuses to move one out of a
shared parent). As in nspawn the bind lands in the shared /run/host, whose peer /run
receives a hidden copy of it; the visible one is a slave of that copy.

Difference from nspawn v252: nspawn leaves the host directory behind (it cannot remove it
when /run is no tmpfs); nspawnpy removes it at exit, or its janitor does after a kill.

Runs in: the host side before clone (the host end) and the supervisor or the janitor
(teardown); the container end runs in PID 1 (pid1/tunnel.py).
"""

import os

BASE = "/run/systemd/nspawn/propagate"


def host_dir(machine: str) -> str:
    return f"{BASE}/{machine}"


def setup(machine: str, cleanups: list) -> str:
    """Create the host end for `machine`, register its removal on `cleanups`, return it."""
    path = host_dir(machine)
    os.makedirs("/run/systemd/nspawn", 0o755, exist_ok=True)
    os.makedirs(BASE, 0o600, exist_ok=True)   # nspawn's modes
    try:
        os.mkdir(path, 0o600)
    except FileExistsError:
        pass
    cleanups.append(lambda: teardown(path))
    return path


def teardown(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass  # gone already, or machined left something below it: not ours to remove
