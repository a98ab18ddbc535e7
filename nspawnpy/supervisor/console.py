"""Console modes and the pty relay between our stdio and the container's /dev/console.

Runs in: the supervisor and the slim supervisor (the relay); the host side picks the mode.
"""

import os

from ..record import Record

ESCAPE = 0x1D            # ^]
ESCAPE_COUNT, ESCAPE_WINDOW = 3, 1.0
TIOCGWINSZ, TIOCSWINSZ, TIOCGPTPEER = 0x5413, 0x5414, 0x5441
HANGUP_RETRY = 0.1       # seconds before polling a hung-up console again
CHUNK = 65536


def choose_mode(requested) -> str:
    """nspawn's default: interactive on a tty, read-only otherwise."""
    tty = os.isatty(0) and os.isatty(1)
    if requested is None:
        return "interactive" if tty else "read-only"
    if requested == "autopipe":
        return "interactive" if tty else "pipe"
    return requested


def window_size() -> tuple:
    import fcntl
    import struct
    for fd in (1, 0, 2):
        try:
            rows, cols = struct.unpack("HHHH", fcntl.ioctl(fd, TIOCGWINSZ, b"\0" * 8))[:2]
            if rows and cols:
                return rows, cols
        except OSError:
            continue
    return 24, 80


class RelayState(Record):
    """A running relay as the slim supervisor takes it over (supervisor/handover.py)."""
    master: int
    mode: str
    peer: int | None
    saved_termios: list | None     # the caller's terminal as it was before raw mode
    escapes: tuple                 # when ^] was pressed lately (time.monotonic())
    at_line_start: bool
    input_open: bool


class Relay:
    """Moves bytes master→stdout and (interactive) stdin→master; counts ^]."""

    def __init__(self, master: int, mode: str):
        self.master, self.mode = master, mode
        self.forward_input = mode == "interactive"
        self.escapes: list[float] = []
        self.saved_termios = None
        self.input_open = self.forward_input
        os.set_blocking(master, False)
        # Our own handle on the console's other end: a guest that closes /dev/console
        # between writes (systemd does) must not hang the pty up under us.
        import fcntl
        self.peer = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)

    at_line_start = False

    def state(self) -> RelayState:
        return RelayState(self.master, self.mode, self.peer, self.saved_termios,
                          tuple(self.escapes), self.at_line_start, self.input_open)

    @classmethod
    def resumed(cls, state: RelayState) -> "Relay":
        """The relay of *state*, already started (no new peer, no change to the terminal)."""
        relay = cls.__new__(cls)
        relay.master, relay.mode, relay.peer = state.master, state.mode, state.peer
        relay.forward_input = state.mode == "interactive"
        relay.saved_termios, relay.escapes = state.saved_termios, list(state.escapes)
        relay.at_line_start, relay.input_open = state.at_line_start, state.input_open
        return relay

    def end_line(self) -> None:
        """Like nspawn, leave the terminal at the start of a line when the container ends."""
        if not self.at_line_start and self.mode != "passive":
            _write_all(1, b"\n")

    def release(self) -> None:
        """The container is gone: drop our handle so the pty reports EOF once drained."""
        if self.peer is not None:
            os.close(self.peer)
            self.peer = None

    def close(self) -> None:
        self.release()
        os.close(self.master)

    def start(self) -> None:
        if self.forward_input and os.isatty(0):
            import termios
            import tty
            self.saved_termios = termios.tcgetattr(0)
            tty.setraw(0)

    def restore(self) -> None:
        if self.saved_termios is not None:
            import termios
            termios.tcsetattr(0, termios.TCSADRAIN, self.saved_termios)
            self.saved_termios = None

    def resize(self) -> None:
        import fcntl
        import struct
        rows, cols = window_size()
        fcntl.ioctl(self.master, TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def output(self) -> bool:
        """Copy what the container wrote; False once the pty is closed."""
        while True:
            try:
                data = os.read(self.master, CHUNK)
            except BlockingIOError:
                return True
            except OSError:  # EIO: every slave fd is closed
                return False
            if not data:
                return False
            _write_all(1, data)
            self.at_line_start = data.endswith(b"\n")

    def input(self, now: float) -> bool:
        """Forward what the user typed; True when ^] was pressed three times within 1 s."""
        try:
            data = os.read(0, CHUNK)
        except OSError:
            data = b""
        if not data:
            self.input_open = False
            return False
        for byte in data:
            if byte == ESCAPE:
                self.escapes = [t for t in self.escapes if now - t < ESCAPE_WINDOW] + [now]
                if len(self.escapes) >= ESCAPE_COUNT:
                    return True
        try:
            _write_all(self.master, data)
        except OSError:
            pass
        return False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            import select
            select.select([], [fd], [])
            continue
        view = view[written:]
