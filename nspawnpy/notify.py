"""sd_notify towards our own service manager (Type=notify units), via pystemd.

Imported only when $NOTIFY_SOCKET is set. READY=1 goes out when the container
is up, or when its PID 1 says READY=1 with --notify-ready=yes."""


class Notifier:
    def __init__(self, leader_pid: int, wait_for_guest: bool):
        self.leader_pid = leader_pid
        self.ready = False
        if not wait_for_guest:
            self.send_ready()

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
