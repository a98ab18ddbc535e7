"""What the container's PID 1 does between clone() and exec(): build its file
system, tell the supervisor it is ready, wait for the go-ahead, then pivot,
drop privileges and exec the payload. Runs only inside the new namespaces.

Runs in: PID 1, from clone() to exec().
"""

import os
import struct

from .. import intree, linux, protocol
from ..linux import (MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC,
                     MS_REMOUNT, MS_SHARED, MS_SLAVE)
from . import exec_payload as payload, kernelfs, mounts

SIGKILL, SIGSTOP = 9, 19
MS_STRICTATIME = 1 << 24
VOLATILE_TMPFS = "mode=755,size=25%,nr_inodes=1m"   # nspawn's, for --volatile's tmpfs
TIOCSCTTY, TIOCSPTLCK, TIOCGPTN, TIOCSWINSZ = 0x540E, 0x40045431, 0x80045430, 0x5414


def report(sync, message: str) -> None:
    try:
        sync.send(protocol.ERROR + message.encode(errors="replace"))
    except OSError:
        pass


def run(plan, channels) -> None:
    """Never returns: execs the payload or exits 1 after telling the supervisor why.
    `plan` is the ContainerPlan, `channels` the supervisor's loop.Channels."""
    try:
        _start_process()
        _prepare(plan, channels)
        os._exit(1)
    except BaseException as e:  # noqa: BLE001 - everything is reported, nothing escapes
        report(channels.sync, _describe(e))
        os._exit(1)


def _start_process() -> None:
    """A fresh process of ours: dies with its parent, default signal handling."""
    linux.prctl(linux.PR_SET_PDEATHSIG, SIGKILL)
    import _signal
    _signal.set_wakeup_fd(-1)  # the supervisor's signal queue is not ours
    reset_signal_dispositions()


def reset_signal_dispositions() -> None:
    """Every signal to its default action, as nspawn's child resets them: none caught (the
    set-up's Python SIGINT handler) and none ignored (Python's SIGPIPE and SIGXFSZ, or what
    our caller ignored: nohup's SIGHUP, a shell's background SIGQUIT), which the payload
    and the -a stub would otherwise keep across exec()."""
    import _signal
    for sig in _signal.valid_signals():
        if sig not in (SIGKILL, SIGSTOP):
            _signal.signal(sig, _signal.SIG_DFL)


def _describe(e: BaseException) -> str:
    if isinstance(e, payload.errors.UserError):
        return e.message
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return f"{type(e).__name__}: {e}"


def _prepare(plan, channels) -> None:
    if plan.network.netns_fd is not None:
        linux.setns(plan.network.netns_fd, linux.CLONE_NEWNET)
    root = build(plan, None)
    if root.startswith("/proc/self/fd/"):
        # (--pivot-root) a descriptor of the old namespace's mount: reached again through
        # our working directory, which the copy below carries over
        os.chdir(root)
        root = "/proc/self/cwd"
    linux.unshare(linux.CLONE_NEWNS)  # our own copy: it lists the mounts in tree order
    finish(plan, channels, root)


def build(plan, idmapped_root, owner=None) -> str:
    """The tree with everything nspawn mounts on it before the container gets its own copy
    (clone() of the mount namespace, which lists the mounts in tree order, as nspawn's
    does); `owner`: the container root's host UID with a user namespace. Returns its path."""
    settings = plan.settings
    linux.mount(None, "/", None, MS_REC | MS_SLAVE)
    root = setup_root(plan, idmapped_root)
    if settings.read_only:
        make_read_only(root)
    if settings.pivot_root:
        root = pivot_inner(root, *settings.pivot_root)
    # Shared from here on, as in nspawn: a mount made later in the container reaches the
    # mount namespaces of its services; mounts on peers leave the hidden copies nspawn has.
    linux.mount(None, root, None, MS_REC | MS_SHARED)
    from . import fsplan
    label = plan.settings.selinux_apifs_context
    for op in mounts.labelled(fsplan.tree_mounts(plan.network.private, owner,
                                                 plan.mounts.api_vfs_writable,
                                                 plan.mounts.tmp_tmpfs), label):
        op.execute(root)
    if plan.host.os_release:
        with intree.at(root, "/run/host", "dir") as host:  # in our /run tmpfs
            mounts.touch(host + "/os-release")
            linux.mount(plan.host.os_release, host + "/os-release", None, MS_BIND)
            mounts.bind_remount(host + "/os-release", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if plan.mounts.tunnel:
        from . import tunnel
        tunnel.incoming(root, plan.mounts.tunnel, owner)
    for op in mounts.labelled(plan.mounts.custom, label):
        op.execute(root)
    if plan.bound_users:  # (as nspawn: after the custom mounts, before the /etc files)
        from . import binduser
        binduser.setup(root, plan.bound_users, owner)
    run_tree_steps(plan.mounts.tree_steps, root, owner)
    write_run_host(plan, root, owner)
    return root


def run_tree_steps(steps, root: str, owner) -> None:
    """/etc files and the journal link. With a user namespace they run as the container's
    root (file system IDs), so what they make in the tree is its; the tree is reached through
    a descriptor, as that identity may not walk the host directories above it."""
    if owner is None:
        for step in steps:
            step(root)
        return
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for step in steps:
            from .etcfiles import EtcStep
            as_owner = not (isinstance(step, EtcStep) and step.as_host_root)
            linux.set_fs_ids(*((owner, owner) if as_owner else (0, 0)))
            step(f"/proc/self/fd/{fd}")
    finally:
        linux.set_fs_ids(0, 0)
        os.close(fd)


def finish(plan, channels, root: str) -> None:
    """From the container's own copy of the tree to exec: /proc and the rest of the API
    file systems, the console, the handshake with the supervisor, cgroups, pivot_root."""
    sync = channels.sync
    with intree.at(root, "/run/host") as host:  # in our /run tmpfs
        mounts.bind_socket(channels.notify, host + "/notify")
    from . import fsplan
    for op in fsplan.own_mounts(plan.network.private, plan.mounts.api_vfs_writable):
        op.execute(root)
    master, console_pts = setup_console(plan, root) if plan.console.mode != "pipe" else (None, None)
    kmsg_fifo, kmsg = kernelfs.held_fifo(root, "/proc/kmsg")
    fds = [fd for fd in (master, kmsg) if fd is not None]
    sync.sendmsg([protocol.ready(master is not None, kmsg is not None)],
                 protocol.fds_to_send(fds))
    for fd in fds:
        os.close(fd)
    reply = sync.recv(64)
    if reply != protocol.GO:
        os._exit(1)
    own_cgroup = None
    # $SYSTEMD_NSPAWN_USE_CGNS=0: no namespace, the whole hierarchy read-only with our own
    # cgroup writable in it -- done for cgroup2 without -U only (in a user namespace it could
    # be mounted only by the supervisor; nspawn's v1 variant fails on this kind of host)
    if plan.mounts.cgroup_ns or plan.mounts.cgroups != "unified" or plan.userns is not None:
        linux.unshare(linux.CLONE_NEWCGROUP)
    else:
        own_cgroup = _own_unified_cgroup()
    mount_cgroups(root, plan.mounts.cgroups, plan.userns is not None, own_cgroup)
    mask_proc_files(root)
    if kmsg_fifo:   # after the cgroups and boot_id, as nspawn covers it
        kernelfs.cover_with_fifo(root, "/proc/kmsg", kmsg_fifo)
    pivot(root)
    payload.start(plan, console_pts)


def run_in_userns(plan, channels) -> None:
    """PID 1 with --private-users, cloned by the set-up process (pid1/setup_process.py)
    into the new namespaces with the built tree as its working directory. Never returns."""
    try:
        _start_process()
        wait_for_userns(channels.sync)
        become_root()
        if plan.network.netns_fd is not None:
            try:
                linux.setns(plan.network.netns_fd, linux.CLONE_NEWNET)
            except OSError as e:  # nspawn 252's words, from its PID 1 and then from itself
                raise OSError(e.errno, f"Failed to join network namespace: {os.strerror(e.errno)}"
                                       "\nChild died too early.") from None
        finish(plan, channels, own_tree())
        os._exit(1)
    except BaseException as e:  # noqa: BLE001 - everything is reported, nothing escapes
        report(channels.sync, _describe(e))
        os._exit(1)


def own_tree() -> str:
    """Our copy of the tree (the working directory) is locked, as a user namespace's copy of
    more privileged mounts is, and pivot_root refuses a locked new root: a recursive copy of
    it on top is ours (its mounts keep their locked flags: a read-only /sys stays so). Its
    mounts lose their peers, as nspawn's do, and are made shared again, each on its own; those
    that came from the host stay slaves of the host's peer group, as nspawn's do (where the
    host's / is shared)."""
    tree = linux.open_tree(".", linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | linux.AT_RECURSIVE)
    linux.move_mount(tree, ".")
    os.fchdir(tree)
    os.close(tree)
    root = "/proc/self/cwd"
    linux.mount(None, root, None, MS_REC | MS_SLAVE)
    linux.mount(None, root, None, MS_REC | MS_SHARED)
    return root


def make_read_only(root: str) -> None:
    """--read-only: the tree and everything mounted in it, right away as nspawn does, so
    that nothing of the set-up (/etc files, mount points) writes to it."""
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        linux.mount_setattr(fd, linux.MOUNT_ATTR_RDONLY, flags=linux.AT_EMPTY_PATH | linux.AT_RECURSIVE)
    finally:
        os.close(fd)


def wait_for_userns(sync) -> None:
    """Wait until the supervisor wrote our UID/GID maps."""
    if sync.recv(16) != protocol.USERNS_SET:
        os._exit(1)


def become_root() -> None:
    """Become the namespace's root, so what we create is the container root's."""
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    linux.prctl(linux.PR_SET_PDEATHSIG, SIGKILL)  # a credential change clears it


def setup_root(plan, idmapped_root) -> str:
    """Make the tree a mount of its own, applying --volatile/--ephemeral.

    Layers go on top of the tree's own path; the original tree stays reachable
    through an O_PATH descriptor, so no staging directory is needed on the host.
    """
    root, volatile = plan.tree.root, plan.settings.volatile
    ephemeral_dir = plan.tree.ephemeral_dir
    if idmapped_root is not None:
        linux.move_mount(idmapped_root, root)  # --private-users-ownership=map
        os.close(idmapped_root)
        # The clone is a peer of the host mount it came from: shared where the host's
        # is (pivot_root refuses a shared mount, and our mounts would reach the host).
        linux.mount(None, root, None, MS_SLAVE)
    else:
        linux.mount(root, root, None, MS_BIND | MS_REC)
    if volatile == "state":   # a read-only tree (from the start, as in nspawn), /var fresh
        make_read_only(root)
        mounts.Mount("/var", "tmpfs", VOLATILE_TMPFS, MS_STRICTATIME).execute(root)
    if volatile in ("no", "state") and not ephemeral_dir:
        return root
    original = f"/proc/self/fd/{os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)}"
    if ephemeral_dir:
        upper = ephemeral_dir
    else:
        linux.mount("tmpfs", root, "tmpfs", MS_STRICTATIME, VOLATILE_TMPFS)
        if volatile == "yes":
            os.mkdir(root + "/usr", 0o755)  # in the fresh tmpfs; the tree's /usr resolved in it
            with intree.at(original, "/usr") as usr:
                linux.mount(usr, root + "/usr", None, MS_BIND | MS_REC)
            mounts.bind_remount(root + "/usr", MS_RDONLY)
            return root
        upper = f"/proc/self/fd/{os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)}"
    for name in ("upper", "work"):
        os.makedirs(f"{upper}/{name}", 0o755, exist_ok=True)
    linux.mount("overlay", root, "overlay", 0,
                f"lowerdir={original},upperdir={upper}/upper,workdir={upper}/work")
    return root


def setup_console(plan, root: str) -> tuple[int, str]:
    """Open a pty in the container's own devpts; its slave becomes /dev/console.
    Returns the master and the slave's path inside the container."""
    with intree.at(root, "/dev") as dev:  # our tmpfs and devpts from here on
        return _open_console(plan, dev)


def _open_console(plan, dev: str) -> tuple[int, str]:
    import fcntl
    import struct
    master = os.open(dev + "/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    number = struct.unpack("i", fcntl.ioctl(master, TIOCGPTN, b"\0\0\0\0"))[0]
    rows, cols = plan.console.winsize
    fcntl.ioctl(master, TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    os.symlink(f"pts/{number}", dev + "/console")
    return master, f"/dev/pts/{number}"


def write_run_host(plan, root: str, owner=None) -> None:
    with intree.at(root, "/run/host", "dir") as host:  # in our /run tmpfs
        _write_run_host(plan, host, owner)


def _write_run_host(plan, host: str, owner) -> None:
    """container-manager and container-uuid (the host's root's, as in nspawn), credentials
    (the container root's: `owner` with a user namespace)."""
    mounts.write_file(host + "/container-manager", f"{plan.machine.service}\n".encode())
    mounts.write_file(host + "/container-uuid", f"{plan.machine.uuid_dashed}\n".encode())
    if plan.credentials:
        # As nspawn: a ramfs (never swapped out), made read-only as a whole once written.
        creds = host + "/credentials"
        os.makedirs(creds, 0o700, exist_ok=True)
        flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
        linux.mount("none", creds, "ramfs", flags, "mode=0700")
        for name, data in plan.credentials:
            mounts.write_file(f"{creds}/{name}", data, 0o400)
        mounts.give([creds] + [f"{creds}/{name}" for name, _ in plan.credentials], owner)
        os.chmod(creds, 0o500)
        linux.mount(None, creds, None, MS_REMOUNT | MS_RDONLY | flags, "mode=0700")


def mask_proc_files(root: str) -> None:
    """A boot ID of the container's own."""
    boot_id = os.urandom(16)
    boot_id = bytes([*boot_id[:6], (boot_id[6] & 0x0F) | 0x40, boot_id[7],
                     (boot_id[8] & 0x3F) | 0x80, *boot_id[9:]]).hex()
    dashed = f"{boot_id[:8]}-{boot_id[8:12]}-{boot_id[12:16]}-{boot_id[16:20]}-{boot_id[20:]}\n"
    kernelfs.mask_with_file(root, "/proc/sys/kernel/random/boot_id", dashed.encode())


def mount_cgroups(root: str, layout, userns: bool, own_cgroup=None) -> None:
    """/sys/fs/cgroup as nspawn presents it: on a legacy/hybrid host a tmpfs with the v1
    controllers read-only, the name=systemd tree writable, and the tmpfs itself remounted
    read-only at the end (nothing is made read-only in a user namespace, where nspawn
    leaves it to ownership); cgroup2 on a unified one (without a cgroup namespace, the
    whole hierarchy read-only and only `own_cgroup` writable)."""
    if layout is None:
        return
    if layout[0] == "missing":   # $SYSTEMD_NSPAWN_USE_CGNS=0 where nspawn fails
        raise OSError(2, f"Failed to read link {layout[1]}: No such file or directory")
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if layout == "unified":
        intree.mount(root, "/sys/fs/cgroup", "cgroup", "cgroup2",
                     flags | (MS_RDONLY if own_cgroup else 0), create=None)
        if own_cgroup and own_cgroup != "/":
            with intree.at(root, "/sys/fs/cgroup" + own_cgroup) as target:
                linux.mount(target, target, None, MS_BIND)
            intree.remount(root, "/sys/fs/cgroup" + own_cgroup, flags)
        return
    intree.mount(root, "/sys/fs/cgroup", "tmpfs", "tmpfs", flags | MS_STRICTATIME,
                 "mode=755,size=4m,nr_inodes=1k", create=None)
    with intree.at(root, "/sys/fs/cgroup") as target:  # the tmpfs just mounted: ours
        _mount_controllers(target, layout, userns, flags)


def _mount_controllers(target: str, layout, userns: bool, flags: int) -> None:
    for name, fstype, options, writable in layout:
        where = f"{target}/{name}"
        os.mkdir(where, 0o755)
        linux.mount("cgroup", where, fstype, flags, options)
        if not (writable or userns):
            mounts.bind_remount(where, MS_RDONLY | flags)
        for alias in name.split(",") if "," in name else ():
            os.symlink(name, f"{target}/{alias}")
    if not userns:
        linux.mount(None, target, None, MS_REMOUNT | MS_RDONLY | flags | MS_STRICTATIME, "mode=755")


def _own_unified_cgroup() -> str:
    """This process's cgroup in the unified hierarchy ("0::PATH" in /proc/self/cgroup)."""
    with open("/proc/self/cgroup") as f:
        return next((line[3:].strip() for line in f if line.startswith("0::")), "/")


def pivot(root: str) -> None:
    """Make the tree the root. pivot_root refuses a shared new root: it is only a slave (of the
    host's peer group, where it came from a shared host mount) for the moment of the switch, or
    private where a mount in it is its peer (a slave of its peers it would stay), and shared
    again afterwards (its mounts keep their peer groups)."""
    os.chdir(root)
    linux.mount(None, ".", None, MS_PRIVATE if mounts.has_peers(".") else MS_SLAVE)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
    linux.mount(None, "/", None, MS_SHARED)


def pivot_inner(root: str, new: str, old) -> str:
    """--pivot-root=NEW[:OLD]: NEW becomes the tree every later mount goes into (as in
    nspawn, the API file systems land in NEW); the original tree stays visible at OLD."""
    with intree.at(root, new) as target:
        linux.mount(target, target, None, MS_BIND | MS_REC)
    new_root = intree.fd_path(intree.resolve(root, new, os.O_DIRECTORY))  # the mount just made
    if old:
        intree.mount(new_root, old, root, None, MS_BIND | MS_REC)
    return new_root


