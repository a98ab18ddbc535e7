"""The processes of nspawnpyctl attach. attach() runs on the host side and relays the pty;
_join() runs in a child that moves into the leader's cgroups and namespaces; _become() runs
in its child, a member of the machine's PID namespace, and execs the command there.

Before the namespaces are joined the child makes itself non-dumpable: a process of the
machine, root in its user namespace, must not be able to ptrace us while we still hold the
host's privileges and memory."""

import os
import signal
import socket
import struct

# Everything the entering processes use is imported here: after setns() the package's
# files are out of reach (the machine's root is ours then).
from .. import linux
from ..pid1 import exec_payload as payload
from ..errors import UserError

PR_SET_DUMPABLE = 4
TIOCSCTTY, TIOCSWINSZ = 0x540E, 0x5414
CGROUP_ROOT = "/sys/fs/cgroup"


def attach(target, command: list, env: dict, user: str | None, tty: bool) -> int:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    me = os.getpid()
    pid = os.fork()
    if pid == 0:
        parent.close()
        _child_main(child, target, command, env, user, tty, me)
    child.close()
    os.close(target.pidfd)
    import signal
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
        signal.signal(sig, signal.SIG_IGN)  # for the command to handle (same process group)
    master, error = _receive(parent)
    status = _relay(master, pid) if master is not None else os.waitpid(pid, 0)[1]
    if error is None:
        error = _receive(parent)[1]
    parent.close()
    code = os.waitstatus_to_exitcode(status)
    code = code if code >= 0 else 128 - code
    if error is not None:
        raise UserError(error, status=code or 1)
    return code


def _receive(sock):
    """(pty master or None, error text or None) from the entering process; (None, None) at
    EOF, which is what the exec of the command looks like from here."""
    try:
        message, ancdata, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(4))
    except OSError:
        return None, None
    fds = [fd for level, kind, data in ancdata if level == socket.SOL_SOCKET
           and kind == socket.SCM_RIGHTS for fd in struct.unpack(f"{len(data) // 4}i", data)]
    if message.startswith(b"E"):
        return None, message[1:].decode(errors="replace")
    return (fds[0] if fds else None), None


def _relay(master: int, pid: int) -> int:
    """Copy between our terminal and the pty until the command ends (or ^] three times
    within a second hangs the pty up, which ends its session); returns the wait status."""
    import select
    import signal
    import time
    from ..supervisor.console import Relay
    relay = Relay(master, "interactive")
    relay.resize()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGWINCH, lambda *_: None)
    pidfd = os.pidfd_open(pid)
    relay.start()
    try:
        poller = select.poll()
        for fd in (master, 0, wake_r, pidfd):
            poller.register(fd, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == pidfd:
                    relay.release()
                    while relay.output() and select.select([master], [], [], 0.2)[0]:
                        pass
                    return os.waitpid(pid, 0)[1]
                if fd == master and not relay.output():
                    poller.unregister(master)
                elif fd == 0:
                    if relay.input(time.monotonic()):
                        relay.release()
                        os.close(master)
                        return os.waitpid(pid, 0)[1]
                    if not relay.input_open:
                        poller.unregister(0)
                elif fd == wake_r:
                    os.read(wake_r, 64)
                    relay.resize()
    finally:
        relay.restore()
        signal.set_wakeup_fd(-1)


def _follow_parent(parent: int) -> None:
    """Die with our parent (an attach that is killed leaves no command running behind)."""
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _default_signals() -> None:
    """The command starts with every signal at its default and none blocked (Python
    ignores SIGPIPE and SIGXFSZ; we ignored the terminal's)."""
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _child_main(sock, target, command, env, user, tty, parent: int) -> None:
    """The joining child: never returns."""
    try:
        linux.prctl(PR_SET_DUMPABLE, 0)
        _follow_parent(parent)
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP):
            signal.signal(sig, signal.SIG_IGN)   # the command's to handle, not ours
        join_cgroups(target.cgroups)
        flags = 0
        for _, flag in target.namespaces:
            flags |= flag
        if flags:
            linux.setns(target.pidfd, flags)
        pid = os.fork()
        if pid == 0:
            _become(sock, target, command, env, user, tty)
        sock.close()
        status = os.waitpid(pid, 0)[1]
        code = os.waitstatus_to_exitcode(status)
        os._exit(code if code >= 0 else 128 - code)
    except BaseException as e:  # noqa: BLE001 - reported as one line by the host side
        _report(sock, e)
        os._exit(1)


def _report(sock, e: BaseException) -> None:
    if isinstance(e, UserError):
        text = e.message
    elif isinstance(e, OSError):
        text = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    else:
        text = f"{type(e).__name__}: {e}"
    try:
        sock.send(b"E" + text.encode(errors="replace"))
    except OSError:
        pass


def join_cgroups(cgroups: str) -> None:
    """Move into the leader's cgroup in every hierarchy mounted here (before joining its
    cgroup namespace, while the host's paths still mean what they say)."""
    mounts = _cgroup_mounts()
    for line in cgroups.splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        wanted = {""} if hierarchy == "0" else set(controllers.split(","))
        base = next((point for names, point in mounts if wanted <= names), None)
        if base is None or ".." in path.split("/"):
            continue
        try:
            with open(f"{base}{path.rstrip('/')}/cgroup.procs", "w") as f:
                f.write("0")
        except OSError as e:
            if hierarchy == "0" or controllers == "name=systemd":
                raise UserError(f"Failed to join cgroup {base}{path}: {e.strerror}") from None


def _cgroup_mounts() -> list:
    """[(names, mount point)] of the cgroup hierarchies below /sys/fs/cgroup: {''} for
    cgroup2, the super options (controllers, name=...) for v1."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            point = left.split()[4]
            fstype, _, options = right.split()[:3]
            if point.startswith(CGROUP_ROOT) and fstype in ("cgroup", "cgroup2"):
                found.append(({""} if fstype == "cgroup2" else set(options.split(",")), point))
    return found


def _become(sock, target, command, env, user, tty) -> None:
    """In the machine's PID namespace: root of its user namespace, its working directory, a
    pty of its own devpts, its user, its limits; then exec. Never returns."""
    parent = os.getppid()   # as this PID namespace shows it (0: outside it)
    try:
        if target.userns:
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        try:
            os.chdir(target.workdir)
        except OSError:
            os.chdir("/")
        if tty:
            _take_pty(sock)
        account = payload.resolve_user(user) if user else None
        if account:
            env.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
        argv = command or [account.shell if account else payload.root_shell()]
        payload.take_on_limits(target.seccomp, target.bounding, account, 0,
                               target.no_new_privs)
        if account:
            try:
                os.chdir(account.home)
            except OSError:
                pass
        _default_signals()
        _follow_parent(parent)   # after the credential change, which clears it
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as e:
            raise UserError(f"Failed to execute {argv[0]}: {e.strerror}", status=127) from None
    except BaseException as e:  # noqa: BLE001
        _report(sock, e)
        os._exit(e.status if isinstance(e, UserError) else 1)


def _take_pty(sock) -> None:
    """A pty from the machine's own /dev/pts: its master goes to the host side, its slave
    becomes our controlling terminal and stdio."""
    import fcntl
    master, slave = os.openpty()
    sock.sendmsg([b"M"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", master))])
    os.close(master)
    os.setsid()
    fcntl.ioctl(slave, TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
