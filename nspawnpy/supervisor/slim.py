"""The slim supervisor: the settled supervisor after its exec (supervisor/handover.py), a
fresh interpreter that imports only what the running loop needs (the poll loop of
events.py, signals, the console relay, sd_notify, the janitor and the cleanups), never
ctypes, the settings table, the plan or PID 1's code.

First thing it takes its descriptors back (close-on-exec again), then lets in the signals
held over the exec, forks its own janitor (after gc.freeze(), so the two share the pages)
and only then dismisses the one the set-up image forked. It ends as the supervisor
always ends: PID 1's status is ours, after the teardown.

Runs in: the slim supervisor (the nspawnpy process, same PID, after its exec) and the
janitor it forks.
"""

import os
import sys

from ..errors import UserError
from .events import Events, log
from .handover import ENV, carried_fds, decode


class Slim(Events):
    """The running container's loop, resumed from a Handover."""

    def __init__(self, handover):
        import _socket
        h = handover
        self.machine_name, self.settings = h.machine_name, h.settings
        self.pid, self.pidfd, self.kmsg_fifo = h.pid, h.pidfd, h.kmsg_fifo
        self.sync = _socket.socket(fileno=h.sync)
        self.notify = _socket.socket(fileno=h.notify)
        self.relay = self.notifier = None
        if h.relay is not None:
            from .console import Relay
            self.relay = Relay.resumed(h.relay)
        self.console_master = h.relay.master if h.relay is not None else None
        if h.notifier is not None:
            from .notify import Notifier
            self.notifier = Notifier.resumed(h.notifier)
        self.rearm_at, self.terminating = h.rearm_at, h.terminating
        self.cleanups, self.held = list(h.cleanups), h.held
        from .janitor import Janitor
        self.janitor = Janitor.adopted(h.janitor_pid, h.janitor_pipe, h.pidfd)
        self.janitor_renewal = 0.0  # due at once: the loop forks the janitor (renew_janitor)
        self.published, self.child_error = True, None
        self.poller, self.handlers, self.status = None, {}, None

    def start(self) -> None:
        from . import signals
        signals.catch()  # handlers and wake-up pipe in, then the signals held over the exec

    def renew_janitor(self, timeout):
        """A janitor forked from this image, the old one dismissed once the new one exists.
        Called by the loop before its first poll: forked once the loop is set up, the
        janitor shares most pages that the loop would otherwise write after the fork."""
        self.janitor_renewal = None
        self.janitor = self.janitor.renewed(self.cleanups, self.loop_fds())
        return timeout


def resume() -> None:
    """The slim supervisor's whole life; never returns."""
    fd = int(os.environ.pop(ENV, "-1"))
    status = 1
    try:
        handover = decode(_read_all(fd))
        for carried in carried_fds(handover):
            os.set_inheritable(carried, False)
        status = Slim(handover).run()
    except ValueError as e:  # a handover this version cannot read: the janitor cleans up
        log(f"Cannot resume the supervisor: {e}")
    except UserError as e:  # one line, as __main__ prints it
        log(e.message)
        status = e.status
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _read_all(fd: int) -> bytes:
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except OSError as e:
        raise ValueError(f"handover fd {fd}: {e.strerror}") from None
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    return data
