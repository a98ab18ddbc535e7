"""The mount-propagation tunnel `machinectl bind` uses.

machined hard-codes the host directory /run/systemd/nspawn/propagate/NAME: to bind a host
path into a machine it mounts it on a fresh entry in that directory, expects the mount to
show up below /run/host/incoming in the machine's mount namespace, and moves it from there
to its destination (from inside that namespace).

Host side (here, before clone): the directory is bound onto itself and made a shared
mount of its own, so what machined mounts below it propagates whatever the propagation of
the host's / or /run is (systemd makes / shared; on a host without systemd it may be
private).  Container side (`incoming_step`, run by PID 1 on the unpivoted tree): the
directory is bound read-only at /run/host/incoming and made a slave of it, which receives
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

Runs in: the host side before clone (the tunnel), PID 1 (incoming_step before, share_mounts
after pivot_root), the supervisor/janitor (teardown).
"""

import os

from .. import linux
from ..linux import MNT_DETACH, MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REMOUNT, \
    MS_REC, MS_SHARED, MS_SLAVE

BASE = "/run/systemd/nspawn/propagate"
INCOMING = "/run/host/incoming"


def host_dir(machine: str) -> str:
    return f"{BASE}/{machine}"


def setup(image) -> None:
    """Create and mount the host end for image.machine; register its removal on image.cleanups
    and the container end on image.etc_steps."""
    path = host_dir(image.machine)
    os.makedirs("/run/systemd/nspawn", 0o755, exist_ok=True)
    os.makedirs(BASE, 0o700, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    linux.mount(path, path, None, MS_BIND)
    image.cleanups.append(lambda: teardown(path))
    linux.mount(None, path, None, MS_SHARED)
    image.etc_steps.append(incoming_step(path))
    image.tunnel = True


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


def incoming_step(path: str):
    def step(root: str) -> None:
        target = root + INCOMING
        os.makedirs(root + "/run/host", 0o755, exist_ok=True)
        try:
            os.mkdir(target, 0o600)
        except FileExistsError:
            pass
        linux.mount(path, target, None, MS_BIND)
        linux.mount(None, target, None,
                    MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        linux.mount(None, target, None, MS_SLAVE)
    return step


def share_mounts() -> None:
    """In PID 1 after pivot_root: every mount shared, /run/host/incoming a slave only."""
    linux.mount(None, "/", None, MS_REC | MS_SHARED)
    linux.mount(None, INCOMING, None, MS_SLAVE)
