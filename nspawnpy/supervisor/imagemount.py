"""-i/--image=: the image opened and locked (copied first for --ephemeral), its file
systems attached through self-clearing loop devices and mounted on a fresh directory in a
mount namespace of our own, so that the rest of nspawnpy runs on it as on a -D tree.

The namespace is a slave of the host's (host mounts still reach us and the container,
ours never reach the host) and dies with the last process in it: the supervisor, its
janitor and PID 1's set-up. With it go the mounts and, once unmounted, the loop devices
(LO_FLAGS_AUTOCLEAR). What remains on the host is the empty mount point directory, which
a cleanup removes (the janitor's after a kill), and an --ephemeral copy, which is
unlinked as soon as its loop devices hold it, as nspawn does.

Runs in: the host side, before clone (the nspawnpy process that becomes the supervisor);
the cleanup in the supervisor or the janitor.
"""

import errno
import os

from .. import intree, linux
from ..errors import UserError
from . import loopdev
from .cleanups import Cleanup, close_quietly, unlink_quietly

MOUNT_BASE = "/tmp"
MOUNT_PREFIX = "nspawnpy-root-"
STALE_AFTER = 60   # seconds: a mount point this old and unlocked belongs to a dead run
NORECOVERY_TYPES = ("ext4", "xfs", "btrfs")   # read-only mounts that must not replay a log
READ_ONLY_TYPES = ("squashfs", "erofs")        # mounted read-only whatever else is asked
FICLONE = 0x40049409


def open_image(image: str, read_only: bool) -> tuple[str, int, bool]:
    """(real path, descriptor, read-only) of the image, locked as nspawn locks it (shared
    when read-only); an image file we may not write to is used read-only, as nspawn does."""
    import fcntl
    path = os.path.realpath(image)
    fd = None
    if not read_only:
        try:
            fd = _open(image, path, os.O_RDWR)
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise UserError(f"Failed to open image {image}: {e.strerror}") from None
            read_only = True
    if fd is None:
        fd = open_for_reading(image, path)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if read_only else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"Disk image {path} is currently busy.") from None
    return path, fd, read_only


def open_for_reading(image: str, path: str) -> int:
    try:
        return _open(image, path, os.O_RDONLY)
    except OSError as e:
        raise UserError(f"Failed to open image {image}: {e.strerror}") from None


def _open(image: str, path: str, mode: int) -> int:
    """A regular file or a block device, nothing else (a FIFO would block us)."""
    import stat
    fd = os.open(path, mode | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    kind = os.fstat(fd).st_mode
    if not (stat.S_ISREG(kind) or stat.S_ISBLK(kind)):
        os.close(fd)
        raise UserError(f"Image {image} is neither a regular file nor a block device.")
    import fcntl
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def ephemeral_copy(path: str, fd: int, read_only: bool, cleanups: list) -> tuple[str, int]:
    """--ephemeral: a copy next to the image (reflinked where the file system can),
    locked and ours alone; (its path, its descriptor). Removed by a cleanup, and earlier
    by mount_image once the loop devices hold it."""
    import fcntl
    directory, base = os.path.split(path)
    copy = f"{directory}/.#machine.{base}{os.urandom(8).hex()}"
    try:
        out = os.open(copy, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                      0o400 if read_only else 0o600)
    except OSError as e:
        raise UserError(f"Failed to copy image file: {e.strerror}") from None
    cleanups.append(Cleanup("unlink", (copy,)))
    fcntl.flock(out, fcntl.LOCK_EX)
    try:
        try:
            fcntl.ioctl(out, FICLONE, fd)
        except OSError:
            _copy_contents(fd, out)
    except OSError as e:
        raise UserError(f"Failed to copy image file: {e.strerror}") from None
    return copy, out


def _copy_contents(source: int, dest: int) -> None:
    size, done = os.fstat(source).st_size, 0
    while done < size:
        n = os.copy_file_range(source, dest, min(size - done, 1 << 30), done, done)
        if n == 0:
            break
        done += n


def enter_private_namespace() -> None:
    """Our own mount namespace, receiving the host's mounts but sending none back."""
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_SLAVE)


def make_mount_point(machine: str, cleanups: list) -> str:
    """/tmp/nspawnpy-root-MACHINE-XXXXXXXX, empty on the host (the mounts are ours alone),
    flocked while in use: a run killed before its janitor existed leaves one behind, which
    the next -i start removes (remove_stale_mount_points)."""
    import fcntl
    import tempfile
    remove_stale_mount_points()
    root = tempfile.mkdtemp(prefix=f"{MOUNT_PREFIX}{machine}-", dir=MOUNT_BASE)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX)
    cleanups.append(Cleanup("image_mount_point", (root, fd), (fd,)))
    return root


def remove_mount_point(root: str, lock_fd: int | None = None) -> None:
    """Unmount what is left in our namespace (lazily: PID 1 may still hold a copy) and
    remove the directory."""
    try:
        linux.umount2(root, linux.MNT_DETACH)
    except OSError:
        pass   # nothing mounted (a start that failed early)
    try:
        os.rmdir(root)
    except OSError:
        pass
    if lock_fd is not None:
        close_quietly(lock_fd)


def remove_stale_mount_points() -> None:
    """Remove mount points of earlier runs that nobody holds (their run was killed during
    set-up) and that are older than a start takes. One in use is never removed: on the host
    it is an empty directory, but removing it would detach the mounts of the run using it."""
    import fcntl
    import time
    try:
        names = [n for n in os.listdir(MOUNT_BASE) if n.startswith(MOUNT_PREFIX)]
    except OSError:
        return
    for name in names:
        path = f"{MOUNT_BASE}/{name}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if time.time() - os.fstat(fd).st_mtime > STALE_AFTER:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rmdir(path)
        except OSError:
            pass   # in use, not empty, or gone meanwhile
        finally:
            os.close(fd)


def mount_image(image: str, machine: str, read_only: bool, ephemeral: bool,
                cleanups: list) -> tuple[str, int]:
    """The image's tree, mounted in our own mount namespace: (its path, the descriptor
    holding the image's lock)."""
    from ..plan.image import dissect
    if ephemeral:   # the original is only read (several runs may copy it at once)
        original = open_for_reading(image, os.path.realpath(image))
        try:
            path, fd = ephemeral_copy(os.path.realpath(image), original, read_only, cleanups)
        finally:
            os.close(original)
    else:
        path, fd, read_only = open_image(image, read_only)
    cleanups.append(Cleanup("close", (fd,), (fd,)))   # the image's lock
    parts = dissect(fd, image)
    enter_private_namespace()
    root = make_mount_point(machine, cleanups)
    try:
        mount_parts(image, fd, parts, root, read_only)
    except OSError as e:
        raise UserError(f"Failed to set up loopback block device for {image}: "
                        f"{e.strerror or e}") from None
    if ephemeral:
        unlink_quietly(path)   # the loop devices hold it now
    return root, fd


def mount_parts(image: str, fd: int, parts: list, root: str, read_only: bool) -> None:
    """Mount every file system of the image in order, root first."""
    boot_used = any(part.where == "/boot" for part in parts)
    for part in parts:
        ro = read_only or part.read_only or part.fstype in READ_ONLY_TYPES
        device = loopdev.attach(fd, part.start, part.size, ro)
        try:
            _mount_part(image, device, part, root, ro, boot_used)
        finally:
            os.close(device)   # from here on only the mount holds the device


def _mount_part(image: str, device: int, part, root: str, ro: bool, boot_used: bool) -> None:
    options = ["norecovery"] if ro and part.fstype in NORECOVERY_TYPES else []
    flags = linux.MS_NODEV | (linux.MS_RDONLY if ro else 0)
    source = f"/proc/self/fd/{device}"   # as nspawn 252 names it (no path lookup either)
    try:
        if part.where == "/":
            linux.mount(source, root, part.fstype, flags, ",".join(options) or None)
        else:
            intree.mount(root, _where(root, part.where, boot_used), source, part.fstype, flags,
                         ",".join(options) or None)
    except OSError as e:
        where = "ESP" if part.where == "esp" else part.where
        raise UserError(f"Failed to mount image {image} ({where}, {part.fstype}): "
                        f"{os.strerror(e.errno) if e.errno else e}") from None


def _where(root: str, where: str, boot_used: bool) -> str:
    """The ESP goes to /efi, or to an empty /boot where there is no /efi and no XBOOTLDR
    partition went to /boot (nspawn's rule)."""
    if where != "esp":
        return where
    if boot_used or intree.exists(root, "/efi") or intree.kind(root, "/boot") != 0o040000:
        return "/efi"
    with intree.at(root, "/boot") as boot:
        return "/efi" if os.listdir(boot) else "/boot"
