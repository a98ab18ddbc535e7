"""The container's file system, as a plan of small mount operations.

Each operation knows its container path and does one thing in `execute(root)`,
where `root` is the host path of the (not yet pivoted) container tree. The
plan is built before clone (custom mounts) and in PID 1 (API mounts), and run by
PID 1 inside its new mount namespace, so nothing of it is ever visible on the host.
Every container path is resolved inside the tree (intree.py), never through the host's
view of a symlink in it.

Runs in: PID 1, before pivot_root (execute); the ops are built on the host side and in PID
1.
"""

import os

from .. import intree, linux
from ..linux import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT

DEV_NODES = (  # name, major, minor
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
    ("tty", 5, 0), ("net/tun", 10, 200))


def under(root: str, path: str) -> str:
    return root + path if root != "/" else path


def mkdir_p(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)


def touch(path: str, mode: int = 0o644) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOCTTY, mode))


def make_mount_point(target: str, like_dir: bool) -> None:
    """Create what a mount needs to land on, matching the source's type."""
    if os.path.lexists(target):
        return
    mkdir_p(os.path.dirname(target))
    if like_dir:
        os.mkdir(target, 0o755)
    else:
        touch(target)


def bind_remount(target: str, flags: int) -> None:
    linux.mount(None, target, None, MS_BIND | MS_REMOUNT | flags)


class Op:
    """One step of the plan: `where` is the container path it affects."""
    where = "/"

    def execute(self, root: str) -> None:
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.where})"


class Mount(Op):
    def __init__(self, where, fstype, options="", flags=0, source=None, mode=0o755):
        self.where, self.fstype, self.options, self.flags = where, fstype, options, flags
        self.source, self.mode = source or fstype, mode

    def execute(self, root):
        intree.mount(root, self.where, self.source, self.fstype, self.flags,
                     self.options or None, mode=self.mode)


def labelled(ops, label):
    """--selinux-apifs-context=: the tmpfs and devpts mounts carry the SELinux label."""
    if not label:
        return ops
    for op in ops:
        if isinstance(op, Mount) and op.fstype in ("tmpfs", "devpts"):
            op.options = ",".join(filter(None, (op.options, f'context="{label}"')))
    return ops


class Bind(Op):
    """Bind `source` (a host path, or a container path with '+') onto `where`. Run with the
    host's privileges (PID 1 without a user namespace, else the set-up process), so a source
    in a directory only the host's root may enter binds as with nspawn."""

    def __init__(self, source, where, read_only=False, recursive=True, in_container=False):
        self.source, self.where, self.read_only = source, where, read_only
        self.recursive, self.in_container = recursive, in_container

    def execute(self, root):
        import stat
        try:  # a '+' source is the container's: resolved in the tree, as nspawn does
            fd = intree.resolve(root, self.source) if self.in_container else \
                os.open(self.source, os.O_PATH | os.O_CLOEXEC)
        except OSError as e:
            raise OSError(e.errno, f"Failed to stat {self.source}: "
                                   f"{os.strerror(e.errno)}") from None
        try:
            is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
            with intree.at(root, self.where, "dir" if is_dir else "file") as target:
                if stat.S_ISDIR(os.stat(target).st_mode) != is_dir:
                    kinds = ("directory", "file") if is_dir else ("file", "directory")
                    where = intree.host_path(root) + intree.canonical(root, self.where)
                    raise OSError(20 if is_dir else 21, f"Cannot bind mount {kinds[0]} "
                                  f"{self.source} on {kinds[1]} {where}.")
                linux.mount(intree.fd_path(fd), target, None,
                            MS_BIND | (MS_REC if self.recursive else 0))
        finally:
            os.close(fd)
        if self.read_only:
            intree.remount(root, self.where, MS_RDONLY)


class ReadOnly(Op):
    """Make a path read-only (if it exists): bound onto itself first, like nspawn's
    /proc/acpi, or (bind=False) an existing mount such as /run/host remounted."""

    def __init__(self, where, flags=MS_NOSUID | MS_NODEV | MS_NOEXEC, required=False,
                 bind=True):
        self.where, self.flags, self.required, self.bind = where, flags, required, bind

    def execute(self, root):
        if not self.required and not intree.exists(root, self.where):
            return
        if self.bind:
            with intree.at(root, self.where) as target:
                linux.mount(target, target, None, MS_BIND)
        intree.remount(root, self.where, MS_RDONLY | self.flags)


class SelfBind(Op):
    """Bind a (new) directory onto itself, so it can be made read-only later (/run/host)."""

    def __init__(self, where, owner=None):
        self.where, self.owner = where, owner

    def execute(self, root):
        with intree.at(root, self.where, "dir") as target:
            if self.owner is not None:   # (target is a descriptor's /proc link: followed)
                os.chown(target, self.owner, self.owner)
            linux.mount(target, target, None, MS_BIND)


class Attach(Op):
    """Put a detached mount (an fd from fsmount/open_tree: the supervisor's sysfs, an
    ID-mapped bind's clone from plan/idmap.py) at `where`, read-only if asked."""

    def __init__(self, where, fd, read_only=False):
        self.where, self.fd, self.read_only = where, fd, read_only

    def execute(self, root):
        kind = "dir" if os.path.isdir(intree.fd_path(self.fd)) else "file"  # a file's on a file
        target = intree.chase(root, self.where, kind)
        try:
            linux.move_mount(self.fd, "", to_dirfd=target,
                             flags=linux.MOVE_MOUNT_F_EMPTY_PATH | linux.MOVE_MOUNT_T_EMPTY_PATH)
        finally:
            os.close(target)
        os.close(self.fd)
        if self.read_only:
            intree.remount(root, self.where, MS_RDONLY)


class Mask(Op):
    """Cover a path with an empty read-only node of the same kind (--inaccessible=)."""

    def __init__(self, where, node="empty"):
        self.where, self.node = where, node

    def execute(self, root):
        try:
            fd = intree.resolve(root, self.where)
        except FileNotFoundError:
            raise OSError(2, f"Failed to resolve {intree.host_path(root)}/{self.where}: "
                          "No such file or directory") from None
        try:
            st = os.fstat(fd)
            with intree.at(root, "/run/host/inaccessible") as inaccessible:
                linux.mount(self.source(inaccessible, st), intree.fd_path(fd), None, MS_BIND)
        finally:
            os.close(fd)
        intree.remount(root, self.where, MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)

    @staticmethod
    def source(inaccessible: str, st) -> str:
        import stat
        if stat.S_ISDIR(st.st_mode):
            source = inaccessible + "/dir"
        elif stat.S_ISCHR(st.st_mode):
            source = inaccessible + "/chr"
        elif stat.S_ISFIFO(st.st_mode):
            source = inaccessible + "/fifo"
        elif stat.S_ISSOCK(st.st_mode):
            source = inaccessible + "/sock"
        else:
            source = inaccessible + "/reg"
        return source


class Call(Op):
    """A plain function of the root, for steps that are not one mount."""

    def __init__(self, where, function, *args):
        self.where, self.function, self.args = where, function, args

    def execute(self, root):
        self.function(root, *self.args)

    def __repr__(self):
        return f"Call({self.where}, {self.function.__name__})"


# What every tree gets if it lacks it (a --volatile=yes root starts out empty but /usr):
# compatibility symlinks into /usr where /usr has the target, and the top-level dirs.
BASE_LINKS = ("bin", "lib", "lib64", "sbin")
BASE_DIRS = (("usr", 0o755), ("var", 0o755), ("etc", 0o755), ("proc", 0o555), ("sys", 0o555),
             ("root", 0o750))


def base_filesystem(root: str) -> None:
    for name in BASE_LINKS:
        path = under(root, "/" + name)
        if not os.path.lexists(path) and intree.kind(root, "/usr/" + name) == 0o040000:
            try:
                os.symlink("usr/" + name, path)
            except OSError:
                pass
    for name, mode in BASE_DIRS:
        path = under(root, "/" + name)
        if not os.path.lexists(path):
            try:
                os.mkdir(path)
                os.chmod(path, mode)
            except OSError:
                pass


def populate_dev(root: str, owner=None) -> None:
    """The device nodes and links nspawn gives every container (/dev/net/tun 0600 as in
    nspawn). With a user namespace they are made by the set-up process, which still has the
    host's privileges, and handed to the container's root (`owner`) as nspawn hands them:
    nodes, directories and the /dev links, not the links in /dev/char."""
    with intree.at(root, "/dev") as dev:  # our tmpfs: everything below it is ours
        give(_populate_dev(dev), owner)


def _populate_dev(dev: str) -> list:
    import stat
    old = os.umask(0)
    try:
        made = [dev + "/net", dev + "/char"]
        for path in made:
            os.makedirs(path, 0o755, exist_ok=True)
        for name, major, minor in DEV_NODES:
            mode = 0o600 if name == "net/tun" else 0o666
            os.mknod(f"{dev}/{name}", stat.S_IFCHR | mode, os.makedev(major, minor))
            made.append(f"{dev}/{name}")
            os.symlink(f"../{name}", f"{dev}/char/{major}:{minor}")
        os.symlink("/proc/self/fd", dev + "/fd")
        made.append(dev + "/fd")
        for i, name in enumerate(("stdin", "stdout", "stderr")):
            os.symlink(f"/proc/self/fd/{i}", f"{dev}/{name}")
            made.append(f"{dev}/{name}")
        return made
    finally:
        os.umask(old)


def give(paths: list, owner) -> None:
    """Hand what the set-up process made to the container's root (no-op without userns)."""
    if owner is not None:
        for path in paths:
            os.lchown(path, owner, owner)


def ptmx_link(root: str, owner=None) -> None:
    """/dev/ptmx -> pts/ptmx (it and devpts' root and ptmx node are the container root's)."""
    with intree.at(root, "/dev") as dev:  # our tmpfs
        os.symlink("pts/ptmx", dev + "/ptmx")
        give([dev + "/pts", dev + "/ptmx", dev + "/pts/ptmx"], owner)


def populate_inaccessible(root: str, owner=None) -> None:
    with intree.at(root, "/run/host", "dir") as host:  # in our /run tmpfs
        base = host + "/inaccessible"
        _populate_inaccessible(base)
        give([base] + [f"{base}/{name}" for name in ("reg", "dir", "fifo", "sock", "chr", "blk")],
             owner)


def _populate_inaccessible(base: str) -> None:
    import stat
    old = os.umask(0)
    try:
        os.makedirs(base, 0o755, exist_ok=True)
        os.mkdir(base + "/dir", 0)
        touch(base + "/reg", 0)
        os.mkfifo(base + "/fifo", 0)
        import _socket
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        bind_socket(sock, base + "/sock")
        sock.close()
        os.chmod(base + "/sock", 0)
        for name, kind in (("chr", stat.S_IFCHR), ("blk", stat.S_IFBLK)):
            os.mknod(f"{base}/{name}", kind, os.makedev(0, 0))
    finally:
        os.umask(old)


def bind_socket(sock, path: str) -> None:
    """Bind an AF_UNIX socket at *path*, however long the tree's own path is: sun_path holds
    108 bytes, so the socket is named through an O_PATH descriptor of its directory."""
    directory, name = os.path.split(path)
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.bind(f"/proc/self/fd/{fd}/{name}")
    finally:
        os.close(fd)


def write_file(path: str, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def has_peers(path: str) -> bool:
    """Whether the mount at `path` shares its peer group with another mount of our namespace
    (a bind of a part of it, say)."""
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            mount_id = next(line.split()[1] for line in f if line.startswith("mnt_id:"))
    finally:
        os.close(fd)
    groups, ours = [], None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" - ")[0].split()
            group = next((field for field in fields[6:] if field.startswith("shared:")), None)
            groups.append(group)
            if fields[0] == mount_id:
                ours = group
    return ours is not None and groups.count(ours) > 1
