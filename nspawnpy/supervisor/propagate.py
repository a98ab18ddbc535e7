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

Two runs may share a name (--register=no): they share the directory. Each holds a shared
flock on it while it runs; the last one out (the only one that gets the lock exclusive)
removes it, and only if it is still the directory it locked, so no run removes the tunnel
of another. A run that locked a directory being removed makes a fresh one.

Difference from nspawn v252: nspawn's exit removes the directory while empty, even the one
another run of the same name still uses (machinectl bind into that one then fails);
nspawnpy removes it once the last run using it is gone (or its janitor does after a kill).

Runs in: the host side before clone (the host end) and the supervisor or the janitor
(teardown); the container end runs in PID 1 (pid1/tunnel.py).
"""

import os

BASE = "/run/systemd/nspawn/propagate"


def host_dir(machine: str) -> str:
    return f"{BASE}/{machine}"


def setup(machine: str, cleanups: list) -> str:
    """Create (or share) the host end for `machine`, locked for this run; register its
    release on `cleanups`; return it."""
    path = host_dir(machine)
    os.makedirs("/run/systemd/nspawn", 0o755, exist_ok=True)
    os.makedirs(BASE, 0o600, exist_ok=True)   # nspawn's modes
    fd = _lock_shared(path)
    from .cleanups import Cleanup
    cleanups.append(Cleanup("tunnel", (path, fd), (fd,)))
    return path


def _lock_shared(path: str) -> int:
    """An fd of the directory at `path`, made if missing, with a shared flock on it."""
    import fcntl
    while True:
        try:
            os.mkdir(path, 0o600)
        except FileExistsError:
            pass
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits out a last run's removal in progress
        if _same(fd, path):
            return fd
        os.close(fd)  # removed (or replaced) before we locked it: make a fresh one


def teardown(path: str, fd: int) -> None:
    """Remove the host end if no other run holds it, and it is still the one we locked."""
    import fcntl
    from .cleanups import close_quietly
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _same(fd, path):
            os.rmdir(path)
    except OSError:
        pass  # another run uses it, it is gone, or machined left something below it
    finally:
        close_quietly(fd)


def _same(fd: int, path: str) -> bool:
    try:
        st, here = os.fstat(fd), os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)
