"""The supervisor: start PID 1 in new namespaces, hand it the go-ahead once the
host side (cgroups, network, registration) is ready, relay the console, turn
signals into nspawn's shutdown semantics, and tear everything down again.

Runs in: the supervisor: the nspawnpy process after clone(), until it exits.
"""

import os
import sys

from .. import linux, protocol
from .console import HANGUP_RETRY
from ..errors import UserError

SIGHUP, SIGINT, SIGKILL, SIGTERM, SIGWINCH = 1, 2, 9, 15, 28
SIGRTMIN = 34
EXIT_REBOOT = 133
SERVICE = "systemd-nspawn"


class Context:
    """Everything PID 1 needs to know; it reaches the child through clone()."""
    console_pts = None
    sync = None
    userns = None
    sysfs_fd = None
    idmapped_root = None


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def run(settings, image) -> int:
    """Run the container until it ends; restart it in place on reboot unless --keep-unit.

    What prepare() set up on the host (ephemeral layer, UID range, scratch trees)
    lives across in-place reboots and is undone once, at the end."""
    try:
        while True:
            status = run_once(settings, image)
            if status != EXIT_REBOOT or settings.keep_unit:
                return status
    finally:
        run_cleanups(image.cleanups)


def run_cleanups(cleanups: list) -> None:
    for cleanup in reversed(cleanups):
        try:
            cleanup()
        except Exception as e:  # noqa: BLE001 - finish tearing down, then report
            log(f"Cleanup failed: {e}")


def make_context(settings, image) -> Context:
    ctx = Context()
    ctx.settings, ctx.root, ctx.machine = settings, image.root, image.machine
    ctx.hostname = settings.hostname or image.machine
    ctx.service = os.environ.get("SYSTEMD_NSPAWN_CONTAINER_SERVICE", SERVICE)
    ctx.uuid = image.uuid
    u = image.uuid
    ctx.uuid_dashed = f"{u[:8]}-{u[8:12]}-{u[12:16]}-{u[16:20]}-{u[20:]}"
    ctx.console_mode = image.console_mode
    ctx.term = os.environ.get("TERM") or ("vt220" if ctx.console_mode != "pipe" else None)
    ctx.winsize = image.winsize
    ctx.private_net = settings.private_net
    ctx.argv = settings.parameters
    ctx.host_env = host_os_env()
    ctx.listen_fds = passed_sockets()
    ctx.host_os_release = next((p for p in ("/etc/os-release", "/usr/lib/os-release")
                                if os.path.exists(p)), None)
    ctx.credentials = image.credentials
    ctx.etc_steps = image.etc_steps
    ctx.ephemeral_dir = image.ephemeral_dir
    ctx.kept_caps = image.kept_caps
    ctx.custom_plan = image.custom_plan
    ctx.tunnel = getattr(image, "tunnel", False)  # propagate.py: machinectl bind
    from . import cgroup
    ctx.cgroup_ns = True
    ctx.cgroup_mounts = cgroup.container_mounts(settings.boot)
    return ctx


def passed_sockets() -> int:
    """Socket activation: the fds our service manager passed us (from 3 on) go on to PID 1."""
    try:
        if int(os.environ.get("LISTEN_PID", "0")) != os.getpid():
            return 0
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return 0
    for fd in range(3, 3 + count):
        os.set_inheritable(fd, True)
    return count


def host_os_env() -> dict:
    """container_host_{id,version_id,build_id,variant_id} from the host's os-release."""
    wanted = {"ID", "VERSION_ID", "BUILD_ID", "VARIANT_ID"}
    env = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.strip().partition("=")
                    if key in wanted:
                        env[f"container_host_{key.lower()}"] = value.strip("\"'")
            return env
        except OSError:
            continue
    return env


def run_once(settings, image) -> int:
    import _socket
    ctx = make_context(settings, image)
    sync, child_sync = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    ctx.notify = _socket.socket(_socket.AF_UNIX,
                                _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK)
    ctx.notify.setsockopt(_socket.SOL_SOCKET, _socket.SO_PASSCRED, 1)
    network_plan = image.network_plan
    flags = linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC
    if network_plan is not None and network_plan.needs_netns and not settings.network_namespace_path:
        flags |= linux.CLONE_NEWNET
    ctx.netns_fd = image.netns_fd
    ctx.userns = getattr(image, "userns", None)
    if ctx.userns is not None:
        flags |= linux.CLONE_NEWUSER
        if not flags & linux.CLONE_NEWNET:
            # sysfs can only be mounted from a user namespace that owns the network
            # namespace: without one of its own, the container gets ours, made here.
            ctx.sysfs_fd = linux.fsmount_new("sysfs", linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NOSUID
                                             | linux.MOUNT_ATTR_NODEV | linux.MOUNT_ATTR_NOEXEC)
    if not settings.quiet:
        log(f"Spawning container {ctx.machine} on {ctx.root}.")
        if ctx.console_mode != "pipe":
            log("Press ^] three times within 1s to kill container.")
        from ..pid1.caps import current_bounding
        if ctx.kept_caps & ~current_bounding():
            log("Some capabilities will not be set because they are not in the current bounding set.")
    sys.stdout.flush()
    pid = linux.clone(flags)
    if pid == 0:
        sync.close()
        ctx.sync = child_sync
        from ..pid1 import main as inner
        inner.run(ctx)
    child_sync.close()
    if ctx.sysfs_fd is not None:
        os.close(ctx.sysfs_fd)
    return Supervisor(ctx, pid, sync, image).run()


class Supervisor:
    def __init__(self, ctx, pid, sync, image):
        self.ctx, self.pid, self.sync, self.image = ctx, pid, sync, image
        self.settings = ctx.settings
        self.cleanups = []  # this run's: cgroups, links, registration
        self.pidfd = os.pidfd_open(pid)
        self.relay = None
        self.janitor = None
        self.terminating = False
        self.notifier = None
        self.child_error = None
        self.wake_pipe = ()
        self.network = None

    def run(self) -> int:
        try:
            self.start()
            status = self.wait()
        except BaseException:
            self.kill()
            raise
        finally:
            self.teardown()
        return status

    def kill(self) -> None:
        try:
            os.kill(self.pid, SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass

    def teardown(self) -> None:
        if self.relay:
            self.relay.restore()
        # The janitor goes first: it sits in our cgroup, which --keep-unit's clean-up removes.
        if self.janitor:
            self.janitor.dismiss()
        run_cleanups(self.cleanups)
        self.close_fds()

    def close_fds(self) -> None:
        """This run's descriptors end with it: a reboot in place starts from none of them."""
        if self.relay:
            self.relay.close()
        if self.wake_pipe:
            import _signal
            _signal.set_wakeup_fd(-1)
        for fd in (self.pidfd, *self.wake_pipe):
            os.close(fd)
        self.wake_pipe = ()
        self.sync.close()
        self.ctx.notify.close()

    def receive_ready(self) -> int | None:
        import _socket
        message, ancdata, _, _ = self.sync.recvmsg(4096, _socket.CMSG_SPACE(4 * 4),
                                                   protocol.MSG_CMSG_CLOEXEC)
        fds = protocol.received_fds(ancdata)
        if message.startswith(protocol.ERROR):
            os.waitpid(self.pid, 0)
            raise UserError(message[1:].decode(errors="replace"))
        if message != protocol.READY:
            os.waitpid(self.pid, 0)
            raise UserError("Child died too early.")
        return fds[0] if fds else None

    def enter_userns(self) -> None:
        """Write PID 1's UID/GID maps and fix up the tree's ownership; PID 1 waits for it."""
        userns = self.ctx.userns
        userns.write_maps(self.pid)
        tree = userns.apply(self.pid, self.ctx.root)
        fds = [] if tree is None else [tree]
        try:
            self.sync.sendmsg([protocol.USERNS_SET], protocol.fds_to_send(fds))
        except OSError:
            pass  # PID 1 is gone; receive_ready() says why
        if tree is not None:
            os.close(tree)

    def start(self) -> None:
        if self.ctx.userns is not None:
            self.enter_userns()
        master = self.receive_ready()
        scope = getattr(self.image.register, "makes_scope", False)  # machined's scope is its cgroup
        own_cgroup = scope
        if (self.settings.boot and not scope) or self.settings.keep_unit:
            own_cgroup = True
            # A booted init needs a cgroup subtree of its own; a plain command
            # stays in ours (a cgroup v1 move costs milliseconds).
            from . import cgroup
            placement = cgroup.Placement(self.ctx.machine, self.settings.keep_unit)
            self.cleanups.append(placement.teardown)
            placement.attach(self.pid)
        plan = self.image.network_plan
        if plan is not None and (plan.needs_netns or plan.netns_path):
            from . import network
            net = network.setup(plan, self.pid)
            self.cleanups.append(net.teardown)
            self.network = net
            self.image.ifindexes = net.ifindexes
        if self.image.register is not None:
            self.cleanups.append(self.image.register(self.pid))
        if self.ctx.userns is not None and own_cgroup:
            from . import cgroup
            cgroup.delegate_to(self.pid, self.ctx.userns.base)
        needs_janitor = self.cleanups or self.image.cleanups
        from .publish import remover  # the record is written once PID 1 has exec'd (on_sync)
        self.cleanups.append(remover(self.ctx.machine, self.pid))
        if needs_janitor:
            from .janitor import Janitor
            self.janitor = Janitor(self.image.cleanups + self.cleanups, self.pidfd)
        if master is not None:
            from .console import Relay
            self.relay = Relay(master, self.ctx.console_mode)
        self.sync.send(protocol.GO)
        if self.relay:
            self.relay.start()
        if os.environ.get("NOTIFY_SOCKET"):
            from .notify import Notifier
            self.notifier = Notifier(self.pid, self.settings.notify_ready)

    def wait(self) -> int:
        import _signal
        import select
        import time
        self.wake_pipe = wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _signal.set_wakeup_fd(wake_w)
        for sig in (SIGTERM, SIGINT, SIGWINCH, SIGHUP):
            _signal.signal(sig, _ignore_signal)
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        poller.register(self.ctx.notify.fileno(), select.POLLIN)
        poller.register(self.sync.fileno(), select.POLLIN)
        relay = self.relay
        if relay and relay.mode != "passive":
            poller.register(relay.master, select.POLLIN)
            if relay.forward_input:
                poller.register(0, select.POLLIN)
        if self.relay and self.relay.mode == "passive":
            relay = None
        rearm_at = None  # when to poll a hung-up console again (vhangup() in the guest)
        while True:
            if self.notifier:  # WATCHDOG=1 pings are due even when nothing happens
                self.notifier.tick()
            timeout = self.notifier.poll_timeout() if self.notifier else None
            if rearm_at is not None:
                left = max(0, int((rearm_at - time.monotonic()) * 1000))
                if left == 0:
                    poller.register(relay.master, select.POLLIN)
                    rearm_at = None
                else:
                    timeout = left if timeout is None else min(timeout, left)
            for fd, events in poller.poll(timeout):
                if fd == self.pidfd:
                    _, wstatus = os.waitpid(self.pid, 0)
                    if self.relay:
                        self.relay.release()
                    if relay:
                        self.drain(relay)
                        if not self.settings.quiet:
                            relay.end_line()
                    _signal.set_wakeup_fd(-1)
                    self.on_sync(poller)
                    if self.child_error:
                        raise UserError(self.child_error)
                    return self.exit_status(wstatus)
                if fd == self.sync.fileno():
                    self.on_sync(poller)
                if relay and fd == relay.master:
                    if not relay.output():
                        poller.unregister(relay.master)
                        rearm_at = time.monotonic() + HANGUP_RETRY
                elif relay and fd == 0:
                    if relay.input(time.monotonic()):
                        os.kill(self.pid, SIGKILL)
                    if not relay.input_open:
                        poller.unregister(0)
                elif fd == wake_r:
                    for signum in os.read(wake_r, 64):
                        self.on_signal(signum)
                elif fd == self.ctx.notify.fileno():
                    self.on_notify()

    def on_sync(self, poller) -> None:
        """PID 1 reports a failure before exec here; EOF means exec happened."""
        try:
            message = self.sync.recv(4096, 0x40)  # MSG_DONTWAIT
        except (BlockingIOError, OSError):
            return
        if message.startswith(protocol.ERROR):
            self.child_error = message[1:].decode(errors="replace")
        else:
            try:
                poller.unregister(self.sync.fileno())
            except KeyError:
                return
            from .publish import publish
            publish(self.ctx, self.pid, self.network, self.image.register is not None)

    def drain(self, relay) -> None:
        import select
        while relay.output():
            if not select.select([relay.master], [], [], 1.0)[0]:
                break

    def on_signal(self, signum: int) -> None:
        if signum == SIGWINCH:
            if self.relay:
                self.relay.resize()
            return
        if signum not in (SIGTERM, SIGINT, SIGHUP):
            return
        kill_signal = self.settings.kill_signal
        if kill_signal is None and self.settings.boot:
            kill_signal = SIGRTMIN + 3
        if kill_signal and not self.terminating:
            self.terminating = True
            log("Trying to halt container. Send SIGTERM again to trigger immediate termination.")
            if self.notifier:
                self.notifier.stopping()
            os.kill(self.pid, kill_signal)
        else:
            os.kill(self.pid, SIGKILL)

    def on_notify(self) -> None:
        import _socket
        while True:
            try:
                data, ancdata, _, _ = self.ctx.notify.recvmsg(4096, _socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                return
            sender = None
            for level, kind, cdata in ancdata:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_CREDENTIALS:
                    sender = int.from_bytes(cdata[0:4], sys.byteorder)
            if sender != self.pid or self.notifier is None:
                continue
            self.notifier.message(data.decode(errors="replace"))

    def exit_status(self, wstatus: int) -> int:
        name = self.ctx.machine
        if os.WIFEXITED(wstatus):
            code = os.WEXITSTATUS(wstatus)
            if not self.settings.quiet:
                log(f"Container {name} exited successfully." if code == 0
                    else f"Container {name} failed with error code {code}.")
            return code
        sig = os.WTERMSIG(wstatus)
        if sig == SIGINT:
            if not self.settings.quiet:
                log(f"Container {name} has been shut down.")
            return 0
        if sig == SIGHUP:
            if not self.settings.quiet:
                log(f"Container {name} is being rebooted.")
            return EXIT_REBOOT
        from ..config.values import signal_name
        log(f"Container {name} terminated by signal {signal_name(sig)}.")
        return 1


def _ignore_signal(signum, frame):
    """Handled from the wake-up pipe in the poll loop."""
