"""ContainerPlan: everything decided on the host side before clone, as one frozen, typed
record. PID 1 gets it through clone() (a copy of our memory); the supervisor reads it.
Nothing is added to it on the way: what the supervisor learns later (the PID, the links it
made) is passed explicitly to whoever needs it.

Runs in: the host side (built), the supervisor and PID 1 (read).
"""

from ..record import Record


class Tree(Record):
    """The directory the container runs on, locked against a second nspawnpy."""
    root: str                          # real path on the host
    lock_fd: int | None                # flock on the tree itself (None: $SYSTEMD_NSPAWN_LOCK=0)
    ephemeral_dir: str | None = None   # --ephemeral: overlay upper/work, next to the tree
    image: str | None = None           # -i: the disk image mounted at root (our namespace)


class Machine(Record):
    name: str
    hostname: str
    uuid: str                          # 32 hex digits
    service: str                       # container= and /run/host/container-manager

    @property
    def uuid_dashed(self) -> str:
        u = self.uuid
        return f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}"


class Console(Record):
    mode: str                          # interactive, read-only, passive or pipe
    winsize: tuple                     # (rows, cols) for the container's pty
    term: str | None                   # $TERM inside


class Mounts(Record):
    """What PID 1 mounts besides the API file systems (pid1/fsplan.py lists those)."""
    custom: tuple = ()                 # --bind, --tmpfs, --overlay, --inaccessible ops
    tree_steps: tuple = ()             # f(root): localtime, resolv.conf, journal
    cgroups: object = None             # cgroup.container_mounts(): what /sys/fs/cgroup shows
    tunnel: str | None = None          # host end of machinectl bind's propagation tunnel
    api_vfs_writable: object = False   # $SYSTEMD_NSPAWN_API_VFS_WRITABLE: False, True, "network"
    tmp_tmpfs: bool = True             # a tmpfs on /tmp ($SYSTEMD_NSPAWN_TMPFS_TMP)
    cgroup_ns: bool = True             # $SYSTEMD_NSPAWN_USE_CGNS: a cgroup namespace of its own


class Network(Record):
    plan: object = None                # plan.network.NetworkPlan, or None
    netns_fd: int | None = None        # --network-namespace-path=, opened
    private: bool = False              # any network option: PID 1 brings lo up


class Host(Record):
    """Facts about the host that the payload's environment and /run/host repeat."""
    env: dict                          # container_host_* from os-release
    os_release: str | None             # the host's os-release file, bound at /run/host
    listen_fds: int                    # socket activation: fds 3.. go on to PID 1


class ContainerPlan(Record):
    settings: object                   # config.settings.Settings, after the .nspawn merge
    tree: Tree
    machine: Machine
    console: Console
    mounts: Mounts
    network: Network
    host: Host
    kept_caps: int                     # the payload's capability bounding set
    seccomp: tuple = ()                # compiled filters: (BPF program, fatal message or None)
    credentials: tuple = ()            # (name, bytes) pairs
    userns: object = None              # supervisor.userns.Userns, or None
    bound_users: tuple = ()            # plan.binduser.BoundUser of each --bind-user=
    registration: object = None        # supervisor.register.Registration, or None
    shared_ns: frozenset = frozenset()  # host namespaces kept ($SYSTEMD_NSPAWN_SHARE_*)
    # Undo what the host side made (ephemeral layer, UID range lock, scratch trees, tunnel);
    # run once at the very end, by the supervisor or, if it was killed, the janitor.
    cleanups: list = None
