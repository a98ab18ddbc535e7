"""A small process that outlives a killed supervisor and undoes what the kernel
does not undo by itself (cgroups, zone bridges, moved links, scratch trees).

It is forked after set-up, so it holds the same cleanup list. A supervisor that
ends normally tells it "done" and cleans up itself; if the pipe closes without
that, the supervisor was killed: wait for the container to die, then clean up.

Runs in: the supervisor and the slim supervisor (forking it) and the janitor process.
"""

import os

DONE = b"d"


class Janitor:
    def __init__(self, cleanups: list, container_pidfd: int, loop_fds=()):
        """*loop_fds*: the supervisor's own event sources (console pty, sockets), closed in
        the janitor at once: a copy held there would keep the console from ever reporting
        EOF (so the supervisor's last drain waited a second) and leak into cleanups."""
        self.container_pidfd = container_pidfd
        read_end, self.write_end = os.pipe2(os.O_CLOEXEC)
        import gc
        import select  # noqa: F401 - for _watch, imported before the fork (shared pages)
        gc.freeze()  # no collection walks (and copies) the pages we share
        supervisor = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:
            supervisor_fd = _pidfd_of_parent(supervisor)
            os.close(self.write_end)
            for fd in loop_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            _watch(read_end, cleanups, container_pidfd, supervisor_fd)
        os.close(read_end)

    @classmethod
    def adopted(cls, pid: int, write_end: int, container_pidfd: int):
        """The janitor a previous image of this process forked (supervisor/slim.py)."""
        janitor = cls.__new__(cls)
        janitor.pid, janitor.write_end = pid, write_end
        janitor.container_pidfd = container_pidfd
        return janitor

    def renewed(self, cleanups: list, loop_fds=()) -> "Janitor":
        """A fresh janitor forked from the supervisor as it is now, this one dismissed.

        The pages the supervisor wrote since the first fork (console relay, published
        record, its loop) are copies held twice; a janitor forked once the container
        has settled shares them again. The new one exists before the old one goes."""
        fresh = Janitor(cleanups, self.container_pidfd, [*loop_fds, self.write_end])
        self.dismiss()
        return fresh

    def dismiss(self) -> None:
        """The supervisor cleaned up itself; let the janitor go."""
        if self.pid:
            try:
                os.write(self.write_end, DONE)
            except OSError:
                pass
            os.close(self.write_end)
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0


def _pidfd_of_parent(supervisor: int):
    """A pidfd of the supervisor, taken while it is surely our parent (not a recycled PID)."""
    try:
        fd = os.pidfd_open(supervisor)
    except OSError:
        return None
    if os.getppid() != supervisor:
        os.close(fd)
        return None
    return fd


def _watch(read_end: int, cleanups: list, pidfd: int, supervisor_fd) -> None:
    import _signal
    import select
    from . import signals
    try:
        os.setsid()
        signals.forget()
        for sig in (1, 2, 15):
            _signal.signal(sig, _signal.SIG_IGN)
        message = os.read(read_end, 1)
        if message != DONE:
            # The container dies with its supervisor (PID 1's parent-death signal); make
            # sure of it where that signal was lost (a set-user-ID payload clears it).
            try:
                _signal.pidfd_send_signal(pidfd, 9)
            except ProcessLookupError:
                pass
            # Our pipe closes early in the supervisor's exit, before it leaves its cgroups:
            # wait for its exit to finish, or supervisor/ is still busy when we remove it.
            if supervisor_fd is not None:
                select.select([supervisor_fd], [], [], 30)
            select.select([pidfd], [], [], 30)
            from .cleanups import run_all
            run_all(cleanups)  # best effort, silent
    finally:
        os._exit(0)
