"""The supervisor's life with a running container: one poll loop (wait) over PID 1's exit,
signals, sd_notify messages, the sync socket and the console, each with a small handler;
the shutdown semantics of nspawn's signals, and PID 1's exit status as ours.

Runs in: the supervisor and the slim supervisor (slim.py).
"""

import os
import sys

from .. import protocol
from ..errors import UserError
from .console import HANGUP_RETRY

SIGHUP, SIGINT, SIGKILL, SIGTERM, SIGWINCH = 1, 2, 9, 15, 28
SIGRTMIN = 34
EXIT_REBOOT = 133


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class Events:
    """The event handlers of loop.Supervisor and slim.Slim (which own the state they use)."""

    def run(self) -> int:
        """start() (the subclass's), then the loop until PID 1 is gone; always the teardown."""
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
        """The terminal as it was, then this run's cleanups (the slim supervisor's list holds
        the plan's too)."""
        if self.relay:
            self.relay.restore()
        # The janitor goes first: it sits in our cgroup, which --keep-unit's clean-up removes.
        if self.janitor:
            self.janitor.dismiss()
        from .cleanups import run_all
        run_all(self.cleanups, log)

    def loop_fds(self) -> list[int]:
        """The fds only the event loop uses (none of them is the janitor's business)."""
        fds = [self.sync.fileno(), self.notify.fileno(), self.console_master, self.kmsg_fifo]
        if self.relay is not None:
            fds.append(self.relay.peer)
        return [fd for fd in fds if fd is not None and fd >= 0]

    # wait(): a poll loop over these event sources, each with a small handler.

    def wait(self) -> int:
        import select
        self.poller = select.poll()
        self.watch(self.pidfd, self.on_exit)
        from . import signals
        self.watch(signals.catch(), self.on_signals)  # caught since main(); queued ones now
        self.watch(self.notify.fileno(), self.on_notify)
        if not self.published:
            self.watch(self.sync.fileno(), self.on_sync)
        if self.active_relay:
            if self.rearm_at is None:  # (else it is polled again when rearm_at is due)
                self.watch(self.active_relay.master, self.on_console_output)
            if self.active_relay.input_open:
                self.watch(0, self.on_console_input)
        while self.status is None:
            for fd, _ in self.poller.poll(self.poll_timeout()):
                handler = self.handlers.get(fd)
                if handler:
                    handler()
                if self.status is not None:
                    break
        return self.status

    def watch(self, fd: int, handler) -> None:
        import select
        self.poller.register(fd, select.POLLIN)
        self.handlers[fd] = handler

    def unwatch(self, fd: int) -> bool:
        """Stop polling fd; False if it was not polled."""
        if self.handlers.pop(fd, None) is None:
            return False
        self.poller.unregister(fd)
        return True

    @property
    def active_relay(self):
        """The relay that moves bytes (a passive console only holds the pty)."""
        return self.relay if self.relay and self.relay.mode != "passive" else None

    def poll_timeout(self):
        """How long poll() may sleep: until the next WATCHDOG=1, janitor renewal or console
        re-arm."""
        import time
        if self.notifier:  # WATCHDOG=1 pings are due even when nothing happens
            self.notifier.tick()
        timeout = self.notifier.poll_timeout() if self.notifier else None
        if self.janitor_renewal is not None:
            timeout = self.renew_janitor(timeout)
        if self.rearm_at is not None:
            left = max(0, int((self.rearm_at - time.monotonic()) * 1000))
            if left == 0:
                self.watch(self.active_relay.master, self.on_console_output)
                self.rearm_at = None
            else:
                timeout = left if timeout is None else min(timeout, left)
        return timeout

    def renew_janitor(self, timeout):
        """Renew the janitor once the container has settled (janitor.Janitor.renewed);
        returns the poll timeout, shortened to when that is due."""
        import time
        left = max(0, int((self.janitor_renewal - time.monotonic()) * 1000))
        if left > 0:
            return left if timeout is None else min(timeout, left)
        self.janitor_renewal = None
        if self.may_slim():
            from .handover import exec_slim
            exec_slim(self)  # returns only if the exec failed: carry on in this image
        import gc
        gc.collect(0)  # the start's young garbage: fewer pages to share
        self.janitor = self.janitor.renewed(self.plan.cleanups + self.cleanups, self.loop_fds())
        return timeout

    def on_exit(self) -> None:
        """PID 1 is gone: flush the console, then its status is ours."""
        _, wstatus = os.waitpid(self.pid, 0)
        relay = self.active_relay
        if self.relay:
            self.relay.release()
        if relay:
            self.drain(relay)
            if not self.settings.quiet:
                relay.end_line()
        self.on_sync()
        if self.child_error:
            raise UserError(self.child_error)
        self.status = self.exit_status(wstatus)

    def on_console_output(self) -> None:
        import time
        if not self.active_relay.output():
            # vhangup() in the guest: poll the console again a little later
            self.unwatch(self.active_relay.master)
            self.rearm_at = time.monotonic() + HANGUP_RETRY

    def on_console_input(self) -> None:
        import time
        relay = self.active_relay
        if relay.input(time.monotonic()):
            self.signal(SIGKILL)
        if not relay.input_open:
            self.unwatch(0)

    def on_signals(self) -> None:
        from . import signals
        for signum in signals.take():
            self.on_signal(signum)

    def on_sync(self) -> None:
        """PID 1 reports a failure before exec here; EOF means exec happened."""
        try:
            message = self.sync.recv(4096, 0x40)  # MSG_DONTWAIT
        except (BlockingIOError, OSError):
            return
        if message.startswith(protocol.ERROR):
            self.child_error = message[1:].decode(errors="replace")
        elif self.unwatch(self.sync.fileno()):
            self.published = True
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
                # Room for the credentials only: fds a guest sends along are not installed
                # (and if ever they were, they are close-on-exec and closed below).
                data, ancdata, _, _ = self.notify.recvmsg(4096, _socket.CMSG_SPACE(12),
                                                          protocol.MSG_CMSG_CLOEXEC)
            except (BlockingIOError, InterruptedError):
                return
            sender = None
            for level, kind, cdata in ancdata:
                if level == _socket.SOL_SOCKET and kind == _socket.SCM_CREDENTIALS:
                    sender = int.from_bytes(cdata[0:4], sys.byteorder)
            for fd in protocol.received_fds(ancdata):
                os.close(fd)
            if sender != self.pid or self.notifier is None:
                continue
            self.notifier.message(data.decode(errors="replace"))

    def exit_status(self, wstatus: int) -> int:
        name = self.machine_name
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
