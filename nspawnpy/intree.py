"""Paths inside a guest tree, resolved inside the tree.

The tree is hostile: any component of a path in it may be a symlink (absolute, or
climbing with ..) or a device, FIFO or socket where a file is expected. Followed the
host's way, such a link leads to the host's own files. Here the kernel resolves every
path relative to the tree's root (openat2 with RESOLVE_IN_ROOT and no magic links, as
if the tree were already `/`); the result is an O_PATH descriptor, and what needs a
path name (mount(2), bind(2), overlayfs options) gets /proc/self/fd/N, which names
that very inode. A mount made onto such a name is not visible through the descriptor:
resolve again to reach what was mounted.

`root` is the tree's host path as the caller trusts it (the tree itself, or
/proc/self/fd/N or /proc/self/cwd of it). Imports only the standard library and linux.py: the
container's PID 1 uses it before pivot_root.

Runs in: PID 1 before pivot_root, and the host side (checks in the tree before clone).
"""

import os
import stat
from . import linux

O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_RESOLVE = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
_MAX_LINKS = 40  # the kernel's own limit


def fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def host_path(root: str) -> str:
    """The tree's host path, for messages (PID 1 may reach it as /proc/self/fd/N)."""
    return os.readlink(root) if root.startswith("/proc/self/") else root


def _relative(path: str) -> str:
    return path.strip("/") or "."


def _openat2(rootfd: int, path: str, flags: int) -> int:
    """openat2 in the tree. EAGAIN means a rename or mount anywhere on the machine raced with
    a '..' of the walk (the kernel cannot prove it stayed inside): try again."""
    for _ in range(1000):
        try:
            return linux.openat2(rootfd, path, flags, _RESOLVE)
        except BlockingIOError:
            continue
    return linux.openat2(rootfd, path, flags, _RESOLVE)


def open_root(root: str) -> int:
    return os.open(root, O_PATH_DIR)


def resolve(root: str, path: str, flags: int = os.O_PATH) -> int:
    """A descriptor (O_CLOEXEC) of `path` as the container would see it, its last
    component followed (within the tree too). Raises OSError (ENOENT, ELOOP, ...)."""
    rootfd = open_root(root)
    try:
        return _openat2(rootfd, _relative(path), flags | os.O_CLOEXEC)
    finally:
        os.close(rootfd)


def exists(root: str, path: str) -> bool:
    try:
        os.close(resolve(root, path))
        return True
    except OSError:
        return False


def kind(root: str, path: str, follow: bool = True):
    """stat.S_IFMT of `path` in the tree (its last component followed or not), or None."""
    try:
        if follow:
            fd = resolve(root, path)
            try:
                return stat.S_IFMT(os.fstat(fd).st_mode)
            finally:
                os.close(fd)
        parent, name = resolve_parent(root, path)
        try:
            return stat.S_IFMT(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
        finally:
            os.close(parent)
    except OSError:
        return None


def resolve_parent(root: str, path: str, create: bool = False, mode: int = 0o755):
    """(descriptor of the parent directory, last component): for acting on a name
    itself without following it (unlink, symlink, mkdir, O_NOFOLLOW opens)."""
    parent, name = os.path.split("/" + path.strip("/"))
    if name in ("", ".", ".."):
        raise OSError(22, f"Invalid path {path}")
    if create:
        return chase(root, parent, "dir", mode), name
    return resolve(root, parent, os.O_DIRECTORY), name


def chase(root: str, path: str, create=None, mode: int = 0o755) -> int:
    """Like resolve(), but with create="dir" or "file" what is missing is made on the
    way, the last component as that kind (a dangling link is followed within the tree
    and its target made, as nspawn's chase + mkdir_p does)."""
    try:
        return resolve(root, path)
    except FileNotFoundError:
        if create is None:
            raise
    return resolve(root, canonical(root, path, create, mode))


def canonical(root: str, path: str, create=None, mode: int = 0o755,
              missing_ok: bool = False) -> str:
    """`path` as the tree's own absolute path without links, '.' or '..' ("/a/b"), every
    link followed within the tree. What is missing is made if `create` says so (see
    chase); else with `missing_ok` the rest of the path from the first missing component
    on is taken as it is written (where it would be made), without it ENOENT is raised."""
    rootfd = open_root(root)
    try:
        return "/" + "/".join(_walk(rootfd, path, create, mode, missing_ok))
    finally:
        os.close(rootfd)


def _walk(rootfd: int, path: str, create, mode: int, missing_ok: bool) -> list:
    done, todo, links = [], [p for p in path.split("/") if p], 0
    while todo:
        name = todo.pop(0)
        if name in (".", ".."):
            if name == ".." and done:
                done.pop()
            continue
        parent = _openat2(rootfd, "/".join(done) or ".", O_PATH_DIR)
        try:
            try:
                st = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                if create is None:
                    if not missing_ok:
                        raise
                    return _lexically(done + [name], todo)
                _make(parent, name, "dir" if todo else create, mode)
                done.append(name)
                continue
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(40, os.strerror(40) + f": {path}")
                target = os.readlink(name, dir_fd=parent)
                if target.startswith("/"):
                    done = []
                todo[:0] = [p for p in target.split("/") if p]
                continue
            if todo and not stat.S_ISDIR(st.st_mode):
                raise OSError(20, os.strerror(20) + f": {path}")
            done.append(name)
        finally:
            os.close(parent)
    return done


def _lexically(done: list, todo: list) -> list:
    for name in todo:
        if name == "..":
            if done:
                done.pop()
        elif name != ".":
            done.append(name)
    return done


def _make(parent: int, name: str, what: str, mode: int) -> None:
    try:
        if what == "dir":
            os.mkdir(name, mode, dir_fd=parent)
        else:  # a file mount point is 0644 where a directory would be 0755, as nspawn's
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC | os.O_NOCTTY, mode & 0o666, dir_fd=parent))
    except FileExistsError:
        pass  # made meanwhile: the next resolution looks at what it is


class _Held:
    """`with` gives the path and closes the descriptor behind it on leaving (a class, not
    contextlib.contextmanager: importing contextlib, with the collections and functools
    it pulls in, cost ~2 ms of every start)."""
    __slots__ = ("fd", "path")

    def __init__(self, fd: int, path: str):
        self.fd, self.path = fd, path

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def at(root: str, path: str, create=None, mode: int = 0o755) -> _Held:
    """`with at(root, "/dev", "dir") as target:` target is /proc/self/fd/N of the path
    resolved in the tree (made if missing and `create` says so); closed afterwards."""
    fd = chase(root, path, create, mode)
    return _Held(fd, fd_path(fd))


def parent_of(root: str, path: str, create: bool = False) -> _Held:
    """`with parent_of(root, "/run/host/notify") as name:` name is
    /proc/self/fd/N/notify, N the parent resolved in the tree; the last component is
    the caller's to create or remove, and is not followed by mkdir/unlink/bind."""
    parent, name = resolve_parent(root, path, create)
    return _Held(parent, f"{fd_path(parent)}/{name}")


def make_dir(root: str, path: str, mode: int = 0o755) -> None:
    """mkdir of *path* in the tree (its parent must exist there); one already there is fine."""
    try:
        with parent_of(root, path) as name:
            os.mkdir(name, mode)
    except FileExistsError:
        pass


def mount(root: str, where: str, source, fstype, flags: int = 0, data=None,
          create="dir", mode: int = 0o755) -> None:
    """mount(2) onto `where` resolved in the tree (its mount point made if missing)."""
    with at(root, where, create, mode) as target:
        linux.mount(source, target, fstype, flags, data)


def remount(root: str, where: str, flags: int) -> None:
    """Change the flags of the bind mount now at `where` (re-resolved: see above)."""
    with at(root, where) as target:
        linux.mount(None, target, None, linux.MS_BIND | linux.MS_REMOUNT | flags)


def write_file(root: str, path: str, data: bytes, mode: int = 0o644, create_dirs=False) -> None:
    """Create or replace the contents of a regular file in the tree; a symlink, FIFO,
    device or socket in its place is refused (ELOOP, EINVAL), never opened."""
    with parent_of(root, path, create_dirs) as name:
        fd = open_regular(name, os.O_WRONLY | os.O_TRUNC, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)


def open_regular(name: str, flags: int, mode: int = 0o644, create: bool = True) -> int:
    """Open a regular file for I/O without following a symlink in its place or opening
    anything else (a FIFO would block, a device act): inspect through O_PATH first."""
    if create:
        try:
            return os.open(name, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                           | os.O_NOCTTY, mode)
        except FileExistsError:
            pass
    probe = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return reopen_regular(probe, flags, name)
    finally:
        os.close(probe)


def reopen_regular(fd: int, flags: int, what: str = "") -> int:
    """Reopen an O_PATH descriptor for I/O if (and only if) it is a regular file."""
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        # What open(2) or a copy into it would have said: ELOOP, EISDIR, ENXIO, EBADFD.
        code = {stat.S_IFLNK: 40, stat.S_IFDIR: 21, stat.S_IFSOCK: 6}.get(kind, 77)
        raise OSError(code, os.strerror(code) + f": {what}")
    return os.open(fd_path(fd), flags | os.O_CLOEXEC | os.O_NOCTTY)


def read_file(root: str, path: str, limit: int = 1 << 20) -> bytes:
    """The contents of a regular file in the tree (links followed within it)."""
    probe = resolve(root, path)
    try:
        fd = reopen_regular(probe, os.O_RDONLY, path)
    finally:
        os.close(probe)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)
