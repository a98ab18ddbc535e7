"""Signals from the first instruction on: SIGTERM (systemctl stop), SIGINT, SIGHUP and SIGWINCH
are caught as soon as main() starts and queued on a pipe, so one that arrives during set-up
(userns chown, network, registration, cgroup split) never kills us half-way with Python's
default action. The event loop reads the queue and acts on it as nspawn does with the signals
it blocks until its event loop runs: the container is started, then stopped, and everything
is torn down.

Runs in: the supervisor and the slim supervisor (catch, the queue); forked helpers and PID 1 call forget().
"""

import os

SIGHUP, SIGINT, SIGTERM, SIGWINCH = 1, 2, 15, 28
CAUGHT = (SIGTERM, SIGINT, SIGHUP, SIGWINCH)

_queue = None  # the read end of the pipe the signals are written to


def catch() -> int:
    """Queue every caught signal from now on; returns the queue's read end (idempotent)."""
    global _queue
    if _queue is None:
        import _signal
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        _signal.set_wakeup_fd(write_end)
        for sig in CAUGHT:
            _signal.signal(sig, _queued)
        _queue = read_end
        # The installed launcher blocks them until now: what came meanwhile is queued here.
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, CAUGHT)
    return _queue


def take() -> bytes:
    """The signals queued since the last call, oldest first (one byte each)."""
    taken = b""
    while True:
        try:
            chunk = os.read(_queue, 64)
        except BlockingIOError:
            return taken
        if not chunk:
            return taken
        taken += chunk


def forget() -> None:
    """In a forked process: stop writing to the supervisor's queue and restore the default
    actions (an exec'd program must not start with our handlers' effects)."""
    import _signal
    _signal.set_wakeup_fd(-1)
    for sig in CAUGHT:
        _signal.signal(sig, _signal.SIG_DFL)


def _queued(signum, frame):
    """The byte on the wake-up pipe is the message; the loop acts on it."""
