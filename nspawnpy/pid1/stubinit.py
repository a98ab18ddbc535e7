"""--as-pid2: a minimal PID 1 that reaps zombies, runs the payload as PID 2 and
turns the container's shutdown signals into halt/reboot, like nspawn's stub.

Runs in: PID 1, after pivot_root, with --as-pid2.
"""

import os

SIGHUP, SIGTERM = 1, 15
SIGINT, SIGCHLD = 2, 17
SIGRTMIN = 34
CLD_EXITED = 1
LINUX_REBOOT_CMD_RESTART, LINUX_REBOOT_CMD_POWER_OFF = 0x01234567, 0x4321FEDC
GRACE_SECONDS = 90
STUB_NAME = b"(sd-stubinit)"
# What nspawn's stub waits for; everything else stays blocked, and so ignored (SIGTERM and
# SIGHUP too: no re-execution or reload here).  Halt is power-off in a container, kexec a reboot.
REBOOT = frozenset({SIGINT, SIGRTMIN + 5, SIGRTMIN + 6, SIGRTMIN + 15, SIGRTMIN + 16})
POWEROFF = frozenset({SIGRTMIN + 3, SIGRTMIN + 4, SIGRTMIN + 13, SIGRTMIN + 14})
WAITED = frozenset({SIGCHLD}) | REBOOT | POWEROFF


def run(exec_payload) -> None:
    """Fork PID 2 to exec the payload; this process stays PID 1 until it ends.

    As nspawn's stub, PID 1 handles no signal asynchronously: every signal is blocked from
    before the fork (none can slip in between) and the ones it acts on are taken with
    sigtimedwait, so /proc/1/status shows what nspawn's shows (all blocked but those while it
    waits, none caught or ignored: main.reset_signal_dispositions at PID 1's start)."""
    import _signal
    rename_to_stub()  # before the fork: the payload may look at PID 1 at once
    trim()  # (before it too: after it, PID 1 would reach its wait a malloc_trim() later)
    old_mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
    pid = os.fork()
    if pid == 0:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, old_mask)
        exec_payload()
        os._exit(127)
    os.closerange(3, 65536)
    try:
        os.setsid()
    except OSError:
        pass
    status, action = _serve(pid)
    if action is not None:
        _reboot(LINUX_REBOOT_CMD_RESTART if action == "reboot" else LINUX_REBOOT_CMD_POWER_OFF)
    os._exit(status)


def _serve(pid: int) -> tuple[int, str | None]:
    """Reap every child until PID 2 ends (or the grace after a shutdown request runs out):
    PID 2's exit code (255 if a signal ended it, 0 at the end of the grace) and the action
    asked."""
    import _signal
    import time  # built in: importable after pivot_root
    action, deadline = None, None
    while True:
        status = _reap_all(pid)
        if status is not None:
            return status, action
        if deadline is None:
            info = _signal.sigwaitinfo(WAITED)
        else:
            left = deadline - time.monotonic()
            info = _signal.sigtimedwait(WAITED, left) if left > 0 else None
            if info is None:
                return 0, action
        if info.si_signo == SIGCHLD or action is not None:
            continue
        action = "reboot" if info.si_signo in REBOOT else "poweroff"
        for sig in (SIGTERM, SIGHUP):  # shells ignore SIGTERM but end on SIGHUP
            os.kill(pid, sig)  # our unreaped child: the number is still its own
        deadline = time.monotonic() + GRACE_SECONDS


def _reap_all(pid: int) -> int | None:
    """Reap whatever has ended; PID 2's exit code once it is among them."""
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            return 0
        if info is None:
            return None
        if info.si_pid == pid:
            return info.si_status if info.si_code == CLD_EXITED else 255  # as nspawn's


def rename_to_stub() -> None:
    """Look like nspawn's stub: comm and command line "(sd-stubinit)" (the command line
    overwritten in place and NUL-padded to its old length, as nspawn does)."""
    import ctypes
    from .. import linux
    comm = ctypes.create_string_buffer(STUB_NAME)
    linux.prctl(linux.PR_SET_NAME, ctypes.addressof(comm))
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end (fields 48, 49)
    except (OSError, ValueError, IndexError):
        return
    if end > start:
        name = STUB_NAME[:end - start - 1]
        ctypes.memmove(start, name + bytes(end - start - len(name)), end - start)


def trim() -> None:
    """Weigh no more than this loop needs: the objects the set-up left are frozen (no
    collection walks them again, so their copy-on-write pages stay shared with the
    supervisor) and free heap memory goes back to the kernel."""
    import ctypes
    import gc
    gc.freeze()
    gc.disable()
    ctypes.CDLL(None).malloc_trim(0)


def _reboot(cmd: int) -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(cmd)
    os._exit(0)
