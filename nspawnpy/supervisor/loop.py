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


class Channels:
    """The per-run ends PID 1 takes with it through clone(): the sync socket (protocol.py),
    the notify socket it binds at /run/host/notify, and, in a user namespace, mounts made
    for it (a sysfs, a detached bind of the tunnel's host end)."""

    def __init__(self, sync, notify, sysfs_fd, tunnel_fd=None):
        self.sync, self.notify, self.sysfs_fd = sync, notify, sysfs_fd
        self.tunnel_fd = tunnel_fd


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def run(plan) -> int:
    """Run the container until it ends; restart it in place on reboot unless --keep-unit.

    What the plan set up on the host (ephemeral layer, UID range, scratch trees)
    lives across in-place reboots and is undone once, at the end."""
    try:
        while True:
            status = run_once(plan)
            if status != EXIT_REBOOT or plan.settings.keep_unit:
                return status
    finally:
        run_cleanups(plan.cleanups)


def run_cleanups(cleanups: list) -> None:
    for cleanup in reversed(cleanups):
        try:
            cleanup()
        except Exception as e:  # noqa: BLE001 - finish tearing down, then report
            log(f"Cleanup failed: {e}")


def clone_flags(plan) -> int:
    flags = linux.CLONE_NEWNS | linux.CLONE_NEWPID | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC
    network = plan.network.plan
    if network is not None and network.needs_netns and not plan.settings.network_namespace_path:
        flags |= linux.CLONE_NEWNET
    if plan.userns is not None:
        flags |= linux.CLONE_NEWUSER
    return flags


def run_once(plan) -> int:
    import _socket
    sync, child_sync = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
    notify = _socket.socket(_socket.AF_UNIX,
                            _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK)
    notify.setsockopt(_socket.SOL_SOCKET, _socket.SO_PASSCRED, 1)
    flags = clone_flags(plan)
    sysfs_fd = None
    if plan.userns is not None and not flags & linux.CLONE_NEWNET:
        # sysfs can only be mounted from a user namespace that owns the network
        # namespace: without one of its own, the container gets ours, made here.
        sysfs_fd = linux.fsmount_new("sysfs", linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NOSUID
                                     | linux.MOUNT_ATTR_NODEV | linux.MOUNT_ATTR_NOEXEC)
    if not plan.settings.quiet:
        log(f"Spawning container {plan.machine.name} on {plan.tree.root}.")
        if plan.console.mode != "pipe":
            log("Press ^] three times within 1s to kill container.")
        from ..pid1.caps import current_bounding
        if plan.kept_caps & ~current_bounding():
            log("Some capabilities will not be set because they are not in the current bounding set.")
    tunnel_fd = None
    if plan.userns is not None and plan.mounts.tunnel:
        # PID 1 in a user namespace may not walk there itself: a detached bind for it.
        tunnel_fd = linux.open_tree(plan.mounts.tunnel, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC)
    sys.stdout.flush()
    import gc
    # The set-up's objects are frozen: no later collection in the supervisor, PID 1 or
    # the janitor walks them, so their pages stay shared copy-on-write.
    gc.freeze()
    pid = linux.clone(flags)
    if pid == 0:
        sync.close()
        from ..pid1 import main as pid1
        pid1.run(plan, Channels(child_sync, notify, sysfs_fd, tunnel_fd))
    child_sync.close()
    for fd in (sysfs_fd, tunnel_fd):
        if fd is not None:
            os.close(fd)
    return Supervisor(plan, pid, sync, notify).run()


class Supervisor:
    def __init__(self, plan, pid, sync, notify):
        self.plan, self.pid, self.sync, self.notify = plan, pid, sync, notify
        self.settings = plan.settings
        self.cleanups = []  # this run's: cgroups, links, registration
        self.pidfd = os.pidfd_open(pid)
        self.relay = None
        self.janitor = None
        self.terminating = False
        self.notifier = None
        self.child_error = None
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

    def signal(self, signum: int) -> None:
        """Signal PID 1 through its pidfd: never another process that got its PID."""
        import _signal
        try:
            _signal.pidfd_send_signal(self.pidfd, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal(SIGKILL)
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
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
        os.close(self.pidfd)
        self.sync.close()
        self.notify.close()

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
        userns = self.plan.userns
        userns.write_maps(self.pid)
        tree = userns.apply(self.pid, self.plan.tree.root)
        fds = [] if tree is None else [tree]
        try:
            self.sync.sendmsg([protocol.USERNS_SET], protocol.fds_to_send(fds))
        except OSError:
            pass  # PID 1 is gone; receive_ready() says why
        if tree is not None:
            os.close(tree)

    def start(self) -> None:
        plan = self.plan
        own_cgroup = self.place_in_cgroups()
        if plan.userns is not None:
            self.enter_userns()
        master = self.receive_ready()
        network, ifindexes = plan.network.plan, []
        if network is not None and (network.needs_netns or network.netns_path):
            from . import network as links
            net = links.setup(network, self.pid)
            self.cleanups.append(net.teardown)
            self.network = net
            ifindexes = net.ifindexes
        registration = plan.registration
        if registration is not None:
            self.cleanups.append(registration.register(self.pid, ifindexes))
        if plan.userns is not None and own_cgroup:
            from . import cgroup
            cgroup.delegate_to(self.pid, plan.userns.base)
        needs_janitor = self.cleanups or plan.cleanups
        from .publish import remover  # the record is written once PID 1 has exec'd (on_sync)
        self.cleanups.append(remover(plan.machine.name, self.pid))
        if needs_janitor:
            from .janitor import Janitor
            self.janitor = Janitor(plan.cleanups + self.cleanups, self.pidfd)
        if master is not None:
            from .console import Relay
            self.relay = Relay(master, plan.console.mode)
        self.sync.send(protocol.GO)
        if self.relay:
            self.relay.start()
        if os.environ.get("NOTIFY_SOCKET"):
            from .notify import Notifier
            self.notifier = Notifier(self.pid, self.settings.notify_ready)

    def place_in_cgroups(self) -> bool:
        """Give the payload (and with --keep-unit the supervisor) its cgroups, right after
        clone(): the first cgroup v1 move waits for an RCU grace period (~10 ms here), which
        then passes while PID 1 builds its file system. Returns whether the payload has a
        cgroup of its own."""
        registration = self.plan.registration
        # machined makes a scope for the payload: that is its own cgroup
        scope = registration is not None and registration.makes_scope
        if not ((self.settings.boot and not scope) or self.settings.keep_unit):
            return scope  # a plain command stays in ours
        from . import cgroup
        placement = cgroup.Placement(self.plan.machine.name, self.settings.keep_unit)
        self.cleanups.append(placement.teardown)
        try:
            placement.attach(self.pid)
        except ProcessLookupError:
            pass  # PID 1 already failed; receive_ready() says why
        return True

    def wait(self) -> int:
        import select
        import time
        from . import signals
        wake_r = signals.catch()  # caught since main() started; queued ones are handled now
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        poller.register(wake_r, select.POLLIN)
        poller.register(self.notify.fileno(), select.POLLIN)
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
                        self.signal(SIGKILL)
                    if not relay.input_open:
                        poller.unregister(0)
                elif fd == wake_r:
                    for signum in signals.take():
                        self.on_signal(signum)
                elif fd == self.notify.fileno():
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
            publish(self.plan, self.pid, self.network, self.plan.registration is not None)

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
            self.signal(kill_signal)
        else:
            self.signal(SIGKILL)

    def on_notify(self) -> None:
        import _socket
        while True:
            try:
                data, ancdata, _, _ = self.notify.recvmsg(4096, _socket.CMSG_SPACE(12))
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
        name = self.plan.machine.name
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

