"""-U / --private-users=: which UID/GID range the container gets, the lock that keeps
two containers off the same picked range, and making the tree's ownership fit the
range (recursive chown, or an ID-mapped mount of the root) — nspawn 252's rules.

Host side only: `resolve()` runs before the container starts, `Userns.prepare_tree()` in the
supervisor before the set-up process is cloned, `write_maps()` once PID 1 exists.

Runs in: the host side before clone (resolve) and the supervisor (maps, ownership).
"""

import os

from ..errors import UserError

RANGE = 0x10000
PICK_MIN, PICK_MAX = 0x00080000, 0x6FFF0000
# nspawn's own lock directory and lock kind (an OFD write lock on a file named after the
# base, in decimal), so that systemd-nspawn and nspawnpy never pick the same range at once.
LOCK_DIR = "/run/systemd/nspawn-uid"
# Key of the name hash nspawn tries first when picking, so a container keeps its range.
PICK_HASH_KEY = bytes.fromhex("e156e0f04af041af9641cf413394ff72")


class Userns:
    """base/size of the mapping; ownership 'off', 'chown', 'map' or 'auto'."""

    def __init__(self, base: int, size: int, ownership: str):
        self.base, self.size, self.ownership = base, size, ownership
        self.lock_fd = None
        self.lock_path = None

    def map_line(self) -> str:
        return f"0 {self.base} {self.size}\n"

    def write_maps(self, pid: int, bound: tuple = ()) -> None:
        """The container's UID and GID maps; `bound` holds (container ID, host UID, host GID)
        of each --bind-user= user, ascending, each mapped alone with the range split around."""
        # Written by us, privileged in the parent namespace: no need to deny setgroups.
        for column, name in ((1, "uid_map"), (2, "gid_map")):
            text = self.map_text([(ids[0], ids[column]) for ids in bound])
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(text)
            except OSError as e:
                raise UserError(f"Failed to write {name[:3].upper()} map: "
                                f"{os.strerror(e.errno)}") from None

    def map_text(self, singles: list) -> str:
        """The base range, with each (container ID, host ID) of `singles` cut out of it."""
        if not singles:
            return self.map_line()
        lines, start = [], 0
        for inside, outside in singles:
            if inside > start:
                lines.append(f"{start} {self.base + start} {inside - start}\n")
            lines.append(f"{inside} {outside} 1\n")
            start = inside + 1
        if self.size > start:
            lines.append(f"{start} {self.base + start} {self.size - start}\n")
        return "".join(lines)

    def prepare_tree(self, root: str, with_submounts: bool = False):
        """Fix up the tree's ownership before the container starts: an ID-mapped clone of
        its root for the set-up process to put in place of its bind mount (an IdMap), or a
        recursive chown (None). *with_submounts*: the clone takes the mounts below the root
        along, each ID-mapped (a disk image's partitions, which nspawn maps one by one)."""
        if self.ownership in ("map", "auto") and self.base != 0:
            from .. import linux
            from ..plan.idmap import mapping_userns
            tree = userns_fd = None
            try:
                # As nspawn's: the host's root also maps (to the last ID), so that the set-up
                # process can create files through the ID-mapped tree.
                userns_fd = mapping_userns(f"{self.map_line()}{HOST_ROOT_ALIAS} 0 1\n")
                recursive = linux.AT_RECURSIVE if with_submounts else 0
                tree = linux.open_tree(root, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC
                                       | recursive)
                linux.mount_setattr(tree, linux.MOUNT_ATTR_IDMAP, userns_fd,
                                    flags=linux.AT_EMPTY_PATH | recursive)
                return IdMap(tree, userns_fd)
            except OSError as e:
                for fd in (tree, userns_fd):
                    if fd is not None:
                        os.close(fd)
                if e.errno not in (22, 95):  # EINVAL, EOPNOTSUPP: the fs or kernel can't
                    raise UserError(f"Failed to set up ID mapped mounts: {e.strerror}") from None
                if self.ownership == "map":
                    raise UserError("ID mapped mounts are apparently not available, sorry.") from None
                self.ownership = "chown"
        if self.ownership == "chown":
            patch_tree(root, self.base, self.size)
        return None


HOST_ROOT_ALIAS = 2147483646


class IdMap:
    """The tree's ID-mapped root mount and the user namespace that maps it (both fds)."""

    def __init__(self, tree: int, userns_fd: int):
        self.tree, self.userns_fd = tree, userns_fd

    def close(self) -> None:
        from .cleanups import close_quietly
        for fd in (self.tree, self.userns_fd):
            if fd is not None:
                close_quietly(fd)
        self.tree = self.userns_fd = None


def resolve(settings, root: str, machine: str, cleanups: list):
    """The Userns for these settings, or None without user namespacing."""
    mode = settings.private_users
    if mode in (None, "no"):
        return None
    ownership = settings.private_users_ownership or ("auto" if mode == "pick" else "off")
    if mode == "identity":
        return Userns(0, RANGE, ownership)
    if isinstance(mode, tuple):
        base, size = mode
        return Userns(base, size, ownership)
    st = os.stat(root)
    base = st.st_uid & 0xFFFF0000
    if base != st.st_gid & 0xFFFF0000:
        raise UserError(f"UID and GID base of {root} don't match.")
    if base != 0:
        # An already shifted tree keeps being chowned (what nspawn does for compatibility).
        if ownership == "auto":
            ownership = "chown"
        elif ownership == "map":
            raise UserError(f"UID base of {root} is not zero, UID mapping not supported.")
    userns = Userns(base, RANGE, ownership)
    if mode == "pick":
        userns.base, userns.lock_fd, userns.lock_path = pick(base, machine)
        from .cleanups import Cleanup
        cleanups.append(Cleanup("userns_range", (userns.lock_path, userns.lock_fd),
                                (userns.lock_fd,)))
    return userns


def pick(candidate: int, machine: str):
    """A free 64K range: the tree's own if it is free, then one hashed from the machine
    name, then random ones; (base, lock fd, lock path)."""
    from ..config.siphash import siphash24
    os.makedirs(LOCK_DIR, 0o755, exist_ok=True)
    tried_hashed = False
    for _ in range(99):
        if PICK_MIN <= candidate <= PICK_MAX and candidate & 0xFFFF == 0:
            lock = _try_lock(f"{LOCK_DIR}/{candidate}")
            if lock is not None:
                if not _known_ids(candidate):
                    return candidate, lock, f"{LOCK_DIR}/{candidate}"
                os.unlink(f"{LOCK_DIR}/{candidate}")
                os.close(lock)
        if machine and not tried_hashed:
            candidate = siphash24(machine.encode(), PICK_HASH_KEY) & 0xFFFFFFFF
            tried_hashed = True
        else:
            candidate = int.from_bytes(os.urandom(4), "little")
        candidate = (candidate % (PICK_MAX - PICK_MIN) + PICK_MIN) & 0xFFFF0000
    raise UserError("Failed to pick UID shift: Device or resource busy")


F_OFD_SETLK, F_WRLCK = 37, 1


def ofd_lock(fd: int) -> bool:
    """A non-blocking open-file-description write lock on the whole file (what systemd's
    lock files use; flock(2) locks would not conflict with nspawn's)."""
    import fcntl
    import struct
    try:
        fcntl.fcntl(fd, F_OFD_SETLK, struct.pack("hhqqi4x", F_WRLCK, 0, 0, 0, 0))
        return True
    except (BlockingIOError, PermissionError):  # EAGAIN / EACCES: somebody holds it
        return False


def _try_lock(path: str):
    """A locked lock file at path, or None if another container holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW,
                     0o600)
        if not ofd_lock(fd):
            os.close(fd)
            return None
        if os.fstat(fd).st_nlink > 0:
            return fd
        os.close(fd)  # removed by its previous owner meanwhile: take a fresh one


def _known_ids(base: int) -> bool:
    """Whether the host's user database already uses the range's first or last IDs."""
    import grp
    import pwd
    for lookup, ident in ((pwd.getpwuid, base), (pwd.getpwuid, base + 0xFFFE),
                          (grp.getgrgid, base), (grp.getgrgid, base + 0xFFFE)):
        try:
            lookup(ident)
            return True
        except KeyError:
            pass
    return False


def patch_tree(root: str, base: int, size: int) -> None:
    """Recursive chown of the tree into the range (UID = base | UID & 0xFFFF). The root
    directory is done last and says whether the whole job was done, so re-runs are cheap."""
    if base & 0xFFFF or size != RANGE:
        raise UserError("Automatic UID/GID adjusting is only supported for UID/GID ranges "
                        "starting at multiples of 2^16 with a range of 2^16.")
    st = os.lstat(root)
    if (st.st_uid ^ base) >> 16 == 0 and (st.st_gid ^ base) >> 16 == 0:
        return
    device = st.st_dev
    # fwalk with descriptors: no path in the tree is ever resolved again, so a symlink
    # (or one swapped in meanwhile) is changed itself, never followed.
    for _top, dirs, files, dirfd in os.fwalk(root, follow_symlinks=False):
        dirs[:] = [name for name in dirs if _patch(name, base, device, dirfd)]
        for name in files:
            _patch(name, base, device, dirfd)
    _patch(root, base, device, top=True)


def _patch(name: str, base: int, device: int, dirfd=None, top: bool = False) -> bool:
    """Shift one inode; False for what is not ours to descend into (other file systems)."""
    import stat
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if st.st_dev != device and not top:
        return False
    uid, gid = base | (st.st_uid & 0xFFFF), base | (st.st_gid & 0xFFFF)
    if (uid, gid) != (st.st_uid, st.st_gid):
        os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
        # chown clears set-ID bits; put them back like they were (never through a link).
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dirfd)
    return True
