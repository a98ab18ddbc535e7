"""--as-pid2: a minimal PID 1 that reaps zombies, runs the payload as PID 2 and
turns the container's shutdown signals into halt/reboot, like nspawn's stub.

Runs in: PID 1, after pivot_root, with --as-pid2.
"""

import os

SIGHUP, SIGINT, SIGTERM, SIGCHLD = 1, 2, 15, 17
SIGRTMIN = 34
LINUX_REBOOT_CMD_RESTART, LINUX_REBOOT_CMD_POWER_OFF = 0x01234567, 0x4321FEDC
GRACE_SECONDS = 90
STUB_NAME = b"(sd-stubinit)"


def run(exec_payload) -> None:
    """Fork PID 2 to exec the payload; this process stays PID 1 until it ends."""
    import _signal
    rename_to_stub()  # before the fork: the payload may look at PID 1 at once
    pid = os.fork()
    if pid == 0:
        exec_payload()
        os._exit(127)
    os.closerange(3, 65536)
    try:
        os.setsid()
    except OSError:
        pass
    trim()
    # "exited" is set while PID 2 is still an unreaped zombie, so its number cannot name
    # another process when the handler signals it (no pidfd: PID 1 shows no fd but stdio).
    request = {"action": None, "exited": False}

    def on_signal(signum, frame):
        if request["action"] is None:
            request["action"] = "reboot" if signum in (SIGINT, SIGRTMIN + 5) else "poweroff"
            for sig in (SIGTERM, SIGHUP) if not request["exited"] else ():
                try:
                    os.kill(pid, sig)  # our unreaped child: the number is still its own
                except ProcessLookupError:
                    pass
            _signal.alarm(GRACE_SECONDS)

    for sig in (SIGINT, SIGRTMIN + 3, SIGRTMIN + 4, SIGRTMIN + 5):
        _signal.signal(sig, on_signal)
    for sig in (SIGTERM, SIGHUP):
        _signal.signal(sig, _signal.SIG_IGN)
    _signal.signal(14, _grace_over)  # SIGALRM
    status = 0
    while True:
        try:
            exited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT).si_pid
            request["exited"] = request["exited"] or exited == pid
            child, wstatus = os.waitpid(exited, 0)
        except ChildProcessError:
            break
        except TimeoutError:
            break
        if child == pid:
            status = os.waitstatus_to_exitcode(wstatus)
            break
    if request["action"] is not None:
        _reboot(LINUX_REBOOT_CMD_RESTART if request["action"] == "reboot" else LINUX_REBOOT_CMD_POWER_OFF)
    os._exit(status if status >= 0 else 128 - status)


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


def _grace_over(signum, frame):
    raise TimeoutError


def _reboot(cmd: int) -> None:
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(cmd)
    os._exit(0)
