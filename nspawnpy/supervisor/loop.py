"""The supervisor: start PID 1 in new namespaces, hand it the go-ahead once the
host side (cgroups, network, registration) is ready, relay the console, turn
signals into nspawn's shutdown semantics, and tear everything down again.

Runs in: the supervisor: the nspawnpy process after clone(), until it exits or (settled,
with --keep-unit) execs into the slim supervisor (slim.py).
"""

import os
import sys

from .. import linux, protocol
from ..errors import UserError
from ..record import Record
from .events import EXIT_REBOOT, Events, log

JANITOR_RENEWAL = 1.0  # seconds after the go-ahead: the container has settled


class Channels(Record):
    """The per-run ends PID 1 takes with it through clone(): the sync socket (protocol.py)
    and the notify socket it binds at /run/host/notify."""
    sync: object                      # socket: SOCK_SEQPACKET, our end's peer
    notify: object                    # socket: SOCK_DGRAM, bound by PID 1


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
        from .cleanups import run_all
        run_all(plan.cleanups, log)


def clone_flags(plan) -> int:
    flags = linux.CLONE_NEWNS
    for kind, flag in (("pid", linux.CLONE_NEWPID), ("uts", linux.CLONE_NEWUTS),
                       ("ipc", linux.CLONE_NEWIPC)):
        if kind not in plan.shared_ns:   # $SYSTEMD_NSPAWN_SHARE_NS_*: keep the host's
            flags |= flag
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
    if not plan.settings.quiet:
        log(f"Spawning container {plan.machine.name} on {plan.tree.root}.")
        if plan.console.mode != "pipe":
            log("Press ^] three times within 1s to kill container.")
        from ..pid1.caps import current_bounding
        if plan.kept_caps & ~current_bounding():
            log("Some capabilities will not be set because they are not in the current bounding set.")
    idmap = plan.userns.prepare_tree(plan.tree.root, plan.tree.image is not None) \
        if plan.userns is not None else None
    sys.stdout.flush()
    import gc
    from ..pid1 import caps
    caps.last_cap()  # cached for PID 1
    # The set-up's objects are frozen: no later collection in the supervisor, PID 1 or
    # the janitor walks them, so their pages stay shared copy-on-write.
    gc.freeze()
    wait_until_one_thread()
    if plan.userns is None:
        pid = linux.clone(flags)
        if pid == 0:
            sync.close()
            from ..pid1 import main as pid1
            pid1.run(plan, Channels(child_sync, notify))
        child_sync.close()
    else:
        pid = start_in_userns(plan, flags, sync, child_sync, notify, idmap)
    return Supervisor(plan, pid, sync, notify).run()


def wait_until_one_thread(timeout: float = 5.0) -> None:
    """PID 1 comes from a raw clone(), which runs none of the C library's fork handlers: a
    thread of ours alive (or ending) then leaves the child locks and a thread list it can
    hang on. Only a reboot in place after machined's Controller thread could meet one; its
    teardown ends it (register.unregister), and here we wait until the kernel has let it go."""
    import time
    deadline = time.monotonic() + timeout
    while len(os.listdir("/proc/self/task")) > 1 and time.monotonic() < deadline:
        time.sleep(0.001)


def start_in_userns(plan, flags: int, sync, child_sync, notify, idmap) -> int:
    """With a user namespace PID 1 is made as nspawn makes it: a set-up process in a mount
    namespace of its own builds the tree with the host's privileges (device nodes, sysfs,
    tmpfs owned by the container's root) and then clones PID 1 into the new namespaces,
    whose copy of the tree the kernel locks (a read-only /sys stays read-only). Returns
    PID 1's PID (it is our child: CLONE_PARENT)."""
    outer = linux.clone(linux.CLONE_NEWNS)
    if outer == 0:
        sync.close()
        from ..pid1 import setup_process
        setup_process.run(plan, Channels(child_sync, notify), flags | linux.CLONE_PARENT, idmap)
    child_sync.close()
    if idmap is not None:
        idmap.close()
    try:
        message = sync.recv(4096)
    finally:
        os.waitpid(outer, 0)
    if message.startswith(protocol.ERROR):
        raise UserError(message[1:].decode(errors="replace"))
    if not message.startswith(protocol.PID1):
        raise UserError("Child died too early.")
    return int(message[1:])


class Supervisor(Events):
    """One run of the container: PID 1's set-up handshake (start), its lifetime (wait,
    in events.py) and the teardown."""
    def __init__(self, plan, pid, sync, notify):
        self.plan, self.pid, self.sync, self.notify = plan, pid, sync, notify
        self.settings = plan.settings
        self.machine_name = plan.machine.name
        self.cleanups = []  # this run's: cgroups, links, registration
        self.pidfd = os.pidfd_open(pid)
        self.relay = None
        self.janitor = None
        self.janitor_renewal = None  # when to renew the janitor (Events.renew_janitor)
        self.janitor_considered = False  # start_janitor ran (early or in its place)
        self.terminating = False
        self.notifier = None
        self.child_error = None
        self.published = False       # PID 1 has exec'd (the sync socket's EOF): record written
        # produced by start()'s steps (START) and used by later ones
        self.console_master = None   # pty master PID 1 sent with READY
        self.kmsg_fifo = None        # /proc/kmsg's FIFO, held open while the container runs
        self.own_cgroup = False      # the payload has a cgroup of its own
        self.network = None          # supervisor.network.Network: the links made
        # wait()'s state
        self.poller = None
        self.handlers = {}           # fd -> handler
        self.rearm_at = None         # when to poll a hung-up console again
        self.status = None           # our exit status, once PID 1 is gone

    def teardown(self) -> None:
        super().teardown()
        self.close_fds()

    def close_fds(self) -> None:
        """This run's descriptors end with it: a reboot in place starts from none of them."""
        if self.relay:
            self.relay.close()
        os.close(self.pidfd)
        if self.kmsg_fifo is not None:
            os.close(self.kmsg_fifo)
        self.sync.close()
        self.notify.close()

    def receive_ready(self) -> None:
        import _socket
        message, ancdata, _, _ = self.sync.recvmsg(4096, _socket.CMSG_SPACE(4 * 4),
                                                   protocol.MSG_CMSG_CLOEXEC)
        fds = protocol.received_fds(ancdata)
        if message.startswith(protocol.ERROR):
            os.waitpid(self.pid, 0)
            raise UserError(message[1:].decode(errors="replace"))
        if message[:1] != protocol.READY:
            os.waitpid(self.pid, 0)
            raise UserError("Child died too early.")
        self.console_master, self.kmsg_fifo = protocol.ready_fds(message, fds)

    def enter_userns(self) -> None:
        """Write PID 1's UID/GID maps; PID 1 waits for it."""
        userns = self.plan.userns
        if userns is None:
            return
        userns.write_maps(self.pid, tuple(user.map_pair() for user in self.plan.bound_users))
        try:
            self.sync.send(protocol.USERNS_SET)
        except OSError:
            pass  # PID 1 is gone; receive_ready() says why

    # start() runs these steps in this order, from PID 1's clone to its go-ahead: (step,
    # what it needs from earlier steps, what it produces). tests/test_layout.py checks that
    # every need is produced earlier, so a reordering cannot silently drop, say, the
    # interfaces from the registration.
    START = (
        ("place_in_cgroup", (), ("own_cgroup",)),
        ("start_janitor_early", ("own_cgroup",), ()),
        ("enter_userns", (), ("userns_set",)),
        ("receive_ready", (), ("console_master", "kmsg_fifo")),
        ("make_links", (), ("links",)),
        ("register", ("links",), ("registered",)),
        ("delegate_cgroup", ("own_cgroup", "userns_set"), ()),
        ("start_janitor", ("own_cgroup", "links", "registered"), ("janitor",)),
        ("go_ahead", ("console_master", "janitor"), ("relay", "notifier")),
    )

    def start(self) -> None:
        for step, _, _ in self.START:
            getattr(self, step)()
        import gc
        gc.enable()  # off during the set-up (__main__.run_and_exit); the loop runs for long

    def place_in_cgroup(self) -> None:
        """Give the payload (and with --keep-unit the supervisor) its cgroups, right after
        clone(): the kernel's wait before the first move (an RCU grace period, 5-15 ms here)
        then passes while PID 1 builds its file system. (Starting that wait earlier, in a
        thread, gained nothing once the thread had to end before the raw clone(), which must
        find no other thread: glibc's copy of one made -U's PID 1 hang in setgroups().)
        A booted init needs a cgroup of its own; a plain command stays in ours; machined's
        scope, if it makes one, is the payload's own cgroup too."""
        registration = self.plan.registration
        scope = registration is not None and registration.makes_scope
        self.own_cgroup = scope or self.settings.boot or self.settings.keep_unit
        if not ((self.settings.boot and not scope) or self.settings.keep_unit):
            return
        from . import cgroup
        placement = cgroup.Placement(self.plan.machine.name, self.settings.keep_unit)
        try:
            placement.attach(self.pid)
        except ProcessLookupError:
            pass  # PID 1 already failed; receive_ready() says why
        finally:
            self.cleanups.append(placement.cleanup())

    def makes_links(self) -> bool:
        network = self.plan.network.plan
        return network is not None and bool(network.needs_netns or network.netns_path)

    def make_links(self) -> None:
        if self.makes_links():
            from . import links
            self.network = links.setup(self.plan.network.plan, self.pid)
            self.cleanups.append(self.network.cleanup())

    def register(self) -> None:
        registration = self.plan.registration
        if registration is not None:
            ifindexes = self.network.ifindexes if self.network else []
            self.cleanups.append(registration.register(self.pid, ifindexes))

    def delegate_cgroup(self) -> None:
        if self.plan.userns is not None and self.own_cgroup:
            from . import cgroup
            cgroup.delegate_to(self.pid, self.plan.userns.base)

    def start_janitor_early(self) -> None:
        """Without links or a registration to come, what the janitor will have to undo is
        known once the cgroups are placed: fork it now, while PID 1 builds its file system,
        rather than on the way to the go-ahead."""
        if not self.makes_links() and self.plan.registration is None:
            self.start_janitor()

    def start_janitor(self) -> None:
        if self.janitor_considered:
            return
        self.janitor_considered = True
        needs_janitor = self.cleanups or self.plan.cleanups
        from .publish import remover  # the record is written once PID 1 has exec'd (on_sync)
        self.cleanups.append(remover(self.plan.machine.name, self.pid))
        if needs_janitor:
            from .janitor import Janitor
            self.preload()
            self.janitor = Janitor(self.plan.cleanups + self.cleanups, self.pidfd,
                                   self.loop_fds())

    def may_slim(self) -> bool:
        """Whether the settled supervisor execs into its slim loop (supervisor/slim.py),
        which needs nothing of this image's plan. Only with --keep-unit: without it, PID 1's
        exit 133 reboots the container in place from the plan, keeping what the plan made
        (the ephemeral layer, the UID range), which a fresh image cannot rebuild; with it,
        exit 133 ends the run as any status does. Not with -a: its stub, PID 1, is a copy of
        this image that execs nothing, and would keep alone the pages we share now (measured:
        11.2 MB for the machine's three processes with the exec, 9.2 MB without). And only
        once PID 1 has exec'd (the record is published, no set-up error can come) and while
        we are one thread."""
        return bool(self.settings.keep_unit and not self.settings.as_pid2
                    and self.published and self.child_error is None
                    and self.janitor is not None and len(os.listdir("/proc/self/task")) == 1)

    def held_fds(self) -> list[int]:
        """What this run holds open for a lock it keeps (the tree's flock), besides the loop's
        and the cleanups' own fds."""
        return [fd for fd in (self.plan.tree.lock_fd,) if fd is not None]

    @staticmethod
    def preload() -> None:
        """Import what the loop needs before the janitor is forked: the janitor shares our
        pages copy-on-write, and every page we write after the fork is copied for both."""
        import select  # noqa: F401
        import time  # noqa: F401
        from . import console, publish, signals  # noqa: F401

    def go_ahead(self) -> None:
        if self.console_master is not None:
            from .console import Relay
            self.relay = Relay(self.console_master, self.plan.console.mode)
        self.sync.send(protocol.GO)
        from .cleanups import started
        started(self.plan.cleanups)  # what only a start that failed undoes is kept
        if self.janitor:
            import time
            self.janitor_renewal = time.monotonic() + JANITOR_RENEWAL
        if self.relay:
            self.relay.start()
        if os.environ.get("NOTIFY_SOCKET"):
            from .notify import Notifier
            self.notifier = Notifier(self.pid, self.settings.notify_ready)
