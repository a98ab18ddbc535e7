"""sd_notify towards our own service manager (Type=notify units): one datagram per message
to $NOTIFY_SOCKET (a path, or an abstract name written with a leading '@'), as sd_notify()
sends it; plain sockets, so the slim supervisor's loop imports no library for it.

Imported only when $NOTIFY_SOCKET is set. READY=1 goes out when the container
is up, or when its PID 1 says READY=1 with --notify-ready=yes; the guest's
STATUS= lines are passed on. With $WATCHDOG_USEC set (WatchdogSec= in the unit)
WATCHDOG=1 is sent at half the interval: the supervisor's poll loop asks
poll_timeout() how long it may sleep and calls tick() after every wake-up.

Runs in: the supervisor and the slim supervisor.
"""

import os
import time

from ..record import Record


class NotifierState(Record):
    """A Notifier as the slim supervisor takes it over (supervisor/handover.py)."""
    leader_pid: int
    ready: bool
    watchdog_interval: float | None
    next_ping: float               # time.monotonic() of the next WATCHDOG=1


class Notifier:
    def state(self) -> NotifierState:
        return NotifierState(self.leader_pid, self.ready, self.watchdog_interval, self.next_ping)

    @classmethod
    def resumed(cls, state: NotifierState) -> "Notifier":
        notifier = cls.__new__(cls)
        notifier.leader_pid, notifier.ready = state.leader_pid, state.ready
        notifier.watchdog_interval, notifier.next_ping = state.watchdog_interval, state.next_ping
        return notifier

    def __init__(self, leader_pid: int, wait_for_guest: bool):
        self.leader_pid = leader_pid
        self.ready = False
        self.watchdog_interval = _watchdog_interval()
        self.next_ping = time.monotonic()
        self.tick()
        if not wait_for_guest:
            self.send_ready()
        else:
            self._notify(f"STATUS=Container running, waiting for it to become ready.\n"
                         f"X_NSPAWN_LEADER_PID={leader_pid}")

    def _notify(self, state: str) -> None:
        send(state)

    def send_ready(self) -> None:
        if not self.ready:
            self.ready = True
            self._notify(f"READY=1\nSTATUS=Container running.\nX_NSPAWN_LEADER_PID={self.leader_pid}")

    def message(self, text: str) -> None:
        """A datagram from the container's PID 1 on /run/host/notify."""
        for line in text.splitlines():
            if line == "READY=1":
                self.send_ready()
            elif line.startswith("STATUS="):
                self._notify(line)

    def stopping(self) -> None:
        self._notify("STOPPING=1\nSTATUS=Terminating...")

    def poll_timeout(self):
        """Milliseconds the poll loop may sleep before the next watchdog ping (None: forever)."""
        if self.watchdog_interval is None:
            return None
        return max(0, int((self.next_ping - time.monotonic()) * 1000) + 1)

    def tick(self) -> None:
        """Ping the watchdog when it is due."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now >= self.next_ping:
            self._notify("WATCHDOG=1")
            self.next_ping = now + self.watchdog_interval


def send(state: str) -> None:
    """One sd_notify message; nothing when $NOTIFY_SOCKET is unset or unreachable."""
    import _socket
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address.startswith(("/", "@")):
        return
    if address[0] == "@":
        address = "\0" + address[1:]
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        sock.sendto(state.encode(), address)
    except OSError:
        pass
    finally:
        sock.close()


def _watchdog_interval():
    """Half of $WATCHDOG_USEC in seconds, if the watchdog is meant for us."""
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    owner = os.environ.get("WATCHDOG_PID")
    if usec <= 0 or (owner and owner != str(os.getpid())):
        return None
    return usec / 2 / 1e6
