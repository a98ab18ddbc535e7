"""sd_notify towards our own service manager (Type=notify units), via pystemd.

Imported only when $NOTIFY_SOCKET is set. READY=1 goes out when the container
is up, or when its PID 1 says READY=1 with --notify-ready=yes; the guest's
STATUS= lines are passed on. With $WATCHDOG_USEC set (WatchdogSec= in the unit)
WATCHDOG=1 is sent at half the interval: the supervisor's poll loop asks
poll_timeout() how long it may sleep and calls tick() after every wake-up.

Runs in: the supervisor.
"""

import os
import time


class Notifier:
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
        from pystemd.daemon import notify
        notify(False, state)

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
