"""The settled supervisor's exec into its slim loop: what crosses, and the exec itself.

A running container needs of its supervisor only the poll loop, the console relay,
sd_notify, the janitor and the cleanups; the set-up's modules (ctypes, the settings table,
the plan, PID 1's code) are memory Python never gives back. So once the container has
settled, the supervisor execs the program it was started as again (same PID: PID 1 stays
its child, the unit's main PID, the published record and the cgroups stay valid; same
command line and `comm`), and the fresh interpreter runs supervisor/slim.py only.

The state crosses as one Handover record, marshalled (plain data only) into a memfd whose
number is in $NSPAWNPY_HANDOVER; the fds it names lose close-on-exec just before the exec
and get it back first thing after. The signals the supervisor handles are blocked over the
exec (the mask and what is pending survive it): the slim side takes them once its handlers
are in. The janitor forked by this image stays until the slim one has forked its own, so a
SIGKILL at any moment still leaves no trace. If the exec fails we carry on in this image.

Runs in: the supervisor (taking and exec'ing) and the slim supervisor (reading).
"""

import os
import sys

from ..record import Record
from .cleanups import Cleanup, held_fds
from .console import RelayState
from .notify import NotifierState

ENV = "NSPAWNPY_HANDOVER"
FORMAT = 1


class LoopSettings(Record):
    """The settings the running loop uses (the names are the settings table's)."""
    quiet: bool
    boot: bool
    kill_signal: int | None
    keep_unit: bool
    notify_ready: bool


class Handover(Record):
    """Everything the slim loop takes over from the set-up image."""
    machine_name: str
    settings: LoopSettings
    pid: int                        # PID 1 (host PID), our child
    pidfd: int
    sync: int                       # the sync socket (PID 1 has exec'd: only EOF is left)
    notify: int                     # /run/host/notify's socket
    kmsg_fifo: int | None
    relay: RelayState | None
    rearm_at: float | None          # a hung-up console is polled again then (monotonic)
    terminating: bool               # the first SIGTERM was passed on as the kill signal
    notifier: NotifierState | None
    janitor_pid: int                # the janitor this image forked, and its pipe's write end
    janitor_pipe: int
    cleanups: tuple                 # Cleanup records, oldest first
    held: tuple                     # fds held for a lock only (the tree's flock)


NESTED = {"settings": LoopSettings, "relay": RelayState, "notifier": NotifierState}


def _plain(record: Record) -> tuple:
    return tuple(getattr(record, name) for name in record.fields())


def encode(handover: Handover) -> bytes:
    import marshal
    values = []
    for name in Handover.fields():
        value = getattr(handover, name)
        if name in NESTED and value is not None:
            value = _plain(value)
        elif name == "cleanups":
            value = tuple(_plain(c) for c in value)
        values.append(value)
    return marshal.dumps((FORMAT, Handover.fields(), tuple(values)))


def decode(data: bytes) -> Handover:
    """The Handover, or ValueError if the data is not one of this version's."""
    import marshal
    try:
        version, names, values = marshal.loads(data)
    except (EOFError, TypeError, ValueError) as e:
        raise ValueError(f"unreadable handover: {e}") from None
    if version != FORMAT or tuple(names) != Handover.fields():
        raise ValueError("handover of another version")
    fields = {}
    for name, value in zip(names, values):
        if name in NESTED and value is not None:
            value = NESTED[name](*value)
        elif name == "cleanups":
            value = tuple(Cleanup(*c) for c in value)
        fields[name] = value
    return Handover(**fields)


def carried_fds(handover: Handover) -> list[int]:
    fds = [handover.pidfd, handover.sync, handover.notify, handover.kmsg_fifo,
           handover.janitor_pipe, *held_fds(handover.cleanups), *handover.held]
    if handover.relay is not None:
        fds += [handover.relay.master, handover.relay.peer]
    return [fd for fd in fds if fd is not None and fd >= 0]


def taken(sv) -> Handover:
    """The Handover of a running loop.Supervisor."""
    s = sv.settings
    return Handover(
        sv.machine_name, LoopSettings(bool(s.quiet), bool(s.boot), s.kill_signal,
                                      bool(s.keep_unit), bool(s.notify_ready)),
        sv.pid, sv.pidfd, sv.sync.fileno(), sv.notify.fileno(), sv.kmsg_fifo,
        sv.relay.state() if sv.relay else None, sv.rearm_at, sv.terminating,
        sv.notifier.state() if sv.notifier else None, sv.janitor.pid, sv.janitor.write_end,
        tuple(sv.plan.cleanups) + tuple(sv.cleanups), tuple(sv.held_fds()))


def command() -> tuple[str, list[str]]:
    """What to exec to be started again as we were: a `#!` launcher (/usr/bin/nspawnpy)
    itself, so the kernel builds the same command line and `comm` stays its name; else
    the interpreter with its original arguments (python3 -m nspawnpy, python3 -c ...)."""
    script = sys.argv[0]  # as the kernel passed it to the interpreter (cwd is unchanged)
    if script not in ("", "-c", "-m") and script in sys.orig_argv[1:] \
            and not script.endswith(".py"):
        try:
            with open(script, "rb") as f:
                if f.read(2) == b"#!":
                    return script, [script, *sys.argv[1:]]
        except OSError:
            pass
    return sys.executable or "/proc/self/exe", list(sys.orig_argv)


def exec_slim(sv) -> None:
    """Exec into the slim loop; returns only if that failed (nothing changed then)."""
    import _signal
    from . import signals
    _signal.pthread_sigmask(_signal.SIG_BLOCK, signals.CAUGHT)
    memfd = None
    fds = []
    try:
        sv.on_signals()  # what came before the block is acted on here, the rest after exec
        handover = taken(sv)
        memfd = os.memfd_create("nspawnpy-handover", os.MFD_CLOEXEC)
        data = memoryview(encode(handover))
        while data:
            data = data[os.write(memfd, data):]
        os.lseek(memfd, 0, os.SEEK_SET)
        path, argv = command()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        fds = [*carried_fds(handover), memfd]
        for fd in fds:
            os.set_inheritable(fd, True)
        os.execve(path, argv, {**os.environ, ENV: str(memfd)})
    except Exception:  # noqa: BLE001 - any failure (also a package upgraded under us whose
        pass  # handover.py no longer fits this image): carry on as we are
    finally:  # reached only when the exec did not happen
        for fd in fds:
            os.set_inheritable(fd, False)
        if memfd is not None:
            os.close(memfd)
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, signals.CAUGHT)
