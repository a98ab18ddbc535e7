"""nspawnpyctl stop NAME: the shutdown the guest understands, SIGKILL after --timeout, and
return only once the launcher has exited (and so torn everything down)."""

import os
import select
import signal

from . import state
from .. import statefile
from ..errors import UserError

HELP = "shut a running machine down cleanly (SIGKILL after the timeout)"
SIGRTMIN = 34
SYSTEMD_POWEROFF = SIGRTMIN + 4
BUSYBOX_POWEROFF = signal.SIGUSR2
TEARDOWN_TIMEOUT = 30.0


def add_arguments(parser, verb) -> None:
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("--timeout", "-t", type=float, default=30.0, metavar="SEC",
                        help="seconds to wait for a clean shutdown before SIGKILL (default 30)")
    parser.add_argument("--kill", "-k", action="store_true", help="SIGKILL at once")


def shutdown_signal(machine) -> int:
    """systemd and the -a stub: SIGRTMIN+4 (poweroff); busybox init: SIGUSR2; else the
    machine's kill signal. Only picks a signal: what the guest says about itself is trusted
    no further."""
    comm = statefile.read_text(f"/proc/{machine.leader}/comm").strip()
    try:
        exe = os.path.basename(os.readlink(f"/proc/{machine.leader}/exe"))
    except OSError:
        exe = ""
    if comm in ("systemd", "(sd-stubinit)") or exe == "systemd":
        return SYSTEMD_POWEROFF   # the --as-pid2 stub init understands it too
    if comm == "init" and exe == "busybox":
        return BUSYBOX_POWEROFF
    return machine.kill_signal or signal.SIGKILL


def open_process(pid: int | None, start: str | None) -> int | None:
    """A pidfd for *pid* if it is still the process that started at *start* (when known)."""
    if not pid:
        return None
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if start and str(statefile.start_time(pid)) != start:
        os.close(fd)
        return None
    return fd


def wait_exit(pidfd: int | None, timeout: float) -> bool:
    return pidfd is None or bool(select.select([pidfd], [], [], timeout)[0])


def run(args) -> int:
    state.require_root()
    machine = state.require_running(args.name)
    record = machine.record
    leader = open_process(machine.leader, record.get("LEADER_START"))
    supervisor = open_process(machine.supervisor, record.get("SUPERVISOR_START"))
    if leader is None:
        raise UserError(f"Machine '{args.name}' is not running.")
    if args.kill or not wait_after(leader, shutdown_signal(machine), args.timeout):
        wait_after(leader, signal.SIGKILL, TEARDOWN_TIMEOUT)
    if not wait_exit(supervisor, TEARDOWN_TIMEOUT):
        raise UserError(f"Machine '{args.name}' stopped, but its launcher (PID "
                        f"{machine.supervisor}) has not exited after {TEARDOWN_TIMEOUT:.0f}s.")
    return 0


def wait_after(pidfd: int, signum: int, timeout: float) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        return True
    return wait_exit(pidfd, timeout)
