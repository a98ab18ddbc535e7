"""The mount-propagation tunnel `machinectl bind` uses.

machined hard-codes the host directory /run/systemd/nspawn/propagate/NAME: to bind a host
path into a machine it mounts it on a fresh entry in that directory, expects the mount to
show up below /run/host/incoming in the machine's mount namespace, and moves it from there
to its destination (from inside that namespace).

Host side (here, before clone): the directory is bound onto itself and made a shared
mount of its own, so what machined mounts below it propagates whatever the propagation of
the host's / or /run is (systemd makes / shared; on a host without systemd it may be
private).  Container side (pid1/tunnel.py's `incoming_step`, run by PID 1 on the unpivoted
tree): the directory is bound read-only at /run/host/incoming and made a slave of it, which receives
machined's mounts and, not being shared, lets machined move them away (the kernel refuses
to move a mount out of a shared parent).

After pivot_root (which refuses a shared root), `share_mounts` makes the container's mounts
shared, as nspawn does: a guest's systemd does not do that itself in a container, and its
services' own mount namespaces (PrivateTmp=, ProtectSystem=, ...) are slaves of the
container's, so only then do they see what `machinectl bind` moves in later.  That makes
incoming shared too; it is made a plain slave of the host end again.

Differences from nspawn v252: nspawn creates the tunnel for every container and leaves the
host directory behind; nspawnpy creates it only for machines it registers with machined
(nobody else uses it) and without --private-users (machined refuses `bind` for user
namespaced machines), and removes it again at exit, or its janitor does after a kill.

Runs in: the host side before clone (the host end) and the supervisor or the janitor
(teardown); the container end runs in PID 1 (pid1/tunnel.py).
"""

import os

from .. import linux
from ..linux import MNT_DETACH, MS_BIND, MS_SHARED

BASE = "/run/systemd/nspawn/propagate"


def host_dir(machine: str) -> str:
    return f"{BASE}/{machine}"


def setup(machine: str, cleanups: list):
    """Create and mount the host end for `machine`, register its removal on `cleanups`, and
    return the step that makes the container end."""
    path = host_dir(machine)
    os.makedirs("/run/systemd/nspawn", 0o755, exist_ok=True)
    os.makedirs(BASE, 0o700, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    linux.mount(path, path, None, MS_BIND)
    cleanups.append(lambda: teardown(path))
    linux.mount(None, path, None, MS_SHARED)
    from ..pid1.tunnel import incoming_step
    return incoming_step(path)


def teardown(path: str) -> None:
    """Detach our bind (and whatever machined left below it) and remove the directory."""
    try:
        linux.umount2(path, MNT_DETACH)
    except OSError:
        pass
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
