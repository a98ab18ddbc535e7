"""What of the caller's process state reaches the payload: open file descriptors (only stdio
and the LISTEN_FDS passed on, as nspawn) and RLIMIT_NOFILE (nspawn's select()-safe soft limit
under the caller's hard one) — compared with systemd-nspawn 252 where it runs here."""

import os
import pty
import subprocess

import pytest

import testhost
from conftest import PYTHON, REPO, skip_unless

# The caller leaves a shell's fd 10, a pipe at 251 and a directory fd of the host's / open.
LEAKY_CALLER = "exec 10</dev/null 9</ 251> >(cat >/dev/null); "
CONSOLE_MODES = ["pipe", "read-only", "passive", "interactive"]


def run_from_shell(prefix: str, argv: list[str], *, on_pty: bool = False,
                   timeout: float = 60) -> subprocess.CompletedProcess:
    """Run *argv* from bash after *prefix* (fd redirections, ulimits) — on a pty as stdin and
    stdout if asked, as a user at a terminal would."""
    cmd = ["bash", "-c", prefix + 'exec "$@"', "bash", *argv]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if not on_pty:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    master, slave = pty.openpty()
    try:
        r = subprocess.run(cmd, stdin=slave, stdout=slave, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, env=env, start_new_session=True)
    finally:
        os.close(slave)
        os.close(master)
    return r


def nspawnpy(*args) -> list[str]:
    return [PYTHON, "-m", "nspawnpy", "--register=no", "-q", *map(str, args)]


def run_nspawn(prefix: str, *args) -> subprocess.CompletedProcess:
    """systemd-nspawn from a scratch cgroup, cleaned up after, run after *prefix*."""
    exe = testhost.systemd_nspawn()
    with testhost.ScratchCgroup("nspawn") as cg:
        cmd = ["bash", "-c", prefix + 'exec "$@"', "bash", exe, "--register=no", "--keep-unit",
               "-q", *map(str, args)]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL, preexec_fn=cg.enter)
        finally:
            testhost.clean_nspawn_runtime(testhost.nspawn_machine_name(list(map(str, args))))


def listed_fds(root) -> set[int]:
    """The fds the payload recorded in /fds of its tree (read from the host)."""
    return {int(fd) for fd in (root / "fds").read_text().split()}


# The listing runs in a subshell, so neither its own fds nor a redirection's show up in $$'s.
RECORD_FDS = "(ls /proc/$$/fd > /fds); true"
# First run: record nothing, reboot in place; the run after the reboot records its fds.
RECORD_FDS_AFTER_REBOOT = ("if [ -e /rebooted ]; then (ls /proc/$$/fd > /fds); true; "
                           "else touch /rebooted; reboot -f; sleep 10; fi")


@pytest.mark.parametrize("mode", CONSOLE_MODES)
@pytest.mark.parametrize("extra", [[], ["-a"], ["-U"]], ids=["plain", "as-pid2", "userns"])
@pytest.mark.parametrize("script", [RECORD_FDS, RECORD_FDS_AFTER_REBOOT],
                         ids=["first-run", "after-a-reboot-in-place"])
def test_fds_the_caller_left_open_never_reach_the_payload(busybox_root, mode, extra, script):
    # After a reboot in place, the pty master received from the previous run, its pidfd and
    # wake-up pipe stay ours too.
    r = run_from_shell(LEAKY_CALLER, nspawnpy(f"--console={mode}", *extra, "-D", busybox_root,
                                              "/bin/sh", "-c", script),
                       on_pty=mode == "interactive")
    assert r.returncode == 0, r.stderr
    assert (busybox_root / "rebooted").exists() == (script == RECORD_FDS_AFTER_REBOOT)
    assert listed_fds(busybox_root) == {0, 1, 2}


def test_the_pid_1_stub_keeps_no_fd_of_the_caller(busybox_root):
    r = run_from_shell(LEAKY_CALLER, nspawnpy("--console=pipe", "-a", "-D", busybox_root,
                                              "/bin/sh", "-c", "(ls /proc/1/fd > /fds); true"))
    assert r.returncode == 0, r.stderr
    assert listed_fds(busybox_root) == {0, 1, 2}


def test_passed_sockets_are_the_only_fds_beyond_stdio_as_with_systemd_nspawn(busybox_root):
    # Socket activation: LISTEN_FDS=2 for us → fds 3 and 4 reach the payload, 10 does not.
    prefix = LEAKY_CALLER + "exec 3</dev/null 4</dev/null; export LISTEN_FDS=2 LISTEN_PID=$$; "
    args = ["--console=pipe", "-D", busybox_root, "/bin/sh", "-c",
            RECORD_FDS + "; echo $LISTEN_FDS $LISTEN_PID >> /fds"]
    r = run_from_shell(prefix, nspawnpy(*args))
    assert r.returncode == 0, r.stderr
    assert (busybox_root / "fds").read_text().split() == ["0", "1", "2", "3", "4", "2", "1"]
    if testhost.systemd_nspawn():
        (busybox_root / "fds").unlink()
        assert run_nspawn(prefix, *args).returncode == 0
        assert (busybox_root / "fds").read_text().split() == ["0", "1", "2", "3", "4", "2", "1"]


def test_the_fds_seen_inside_match_systemd_nspawn(busybox_root):
    skip_unless(testhost.systemd_nspawn(), "systemd-nspawn is not installed")
    theirs = run_nspawn(LEAKY_CALLER, "--console=pipe", "-D", busybox_root, "/bin/sh", "-c",
                        RECORD_FDS)
    assert theirs.returncode == 0, theirs.stderr
    expected = listed_fds(busybox_root)
    r = run_from_shell(LEAKY_CALLER, nspawnpy("--console=pipe", "-D", busybox_root,
                                              "/bin/sh", "-c", RECORD_FDS))
    assert r.returncode == 0, r.stderr
    assert listed_fds(busybox_root) == expected == {0, 1, 2}


# -- RLIMIT_NOFILE -------------------------------------------------------------------------

SHOW_NOFILE = 'echo "$(ulimit -Sn) $(ulimit -Hn)"'


def limits_prefix(soft: int, hard: int) -> str:
    return f"ulimit -Sn {soft} && ulimit -Hn {hard} && "


@pytest.mark.parametrize("caller", [(500, 4000), (4096, 10000), (1024, 1024), (100, 100)])
@pytest.mark.parametrize("option", [None, "--rlimit=NOFILE=2000", "--rlimit=NOFILE=2000:3000",
                                    "--rlimit=NOFILE=infinity", "--rlimit=NOFILE=50000:60000",
                                    "--rlimit=NOFILE=50", "--settings=no",
                                    "--settings=no --rlimit=NOFILE=2000"])
def test_nofile_limits_of_the_payload_match_systemd_nspawn(busybox_root, caller, option):
    if option == "--settings=no" and caller == (500, 4000):
        option += " -U"  # and once in a user namespace of its own
    skip_unless(testhost.systemd_nspawn(), "systemd-nspawn is not installed")
    args = ["--console=pipe", *(option.split() if option else []), "-D", busybox_root,
            "/bin/sh", "-c", SHOW_NOFILE]
    prefix = limits_prefix(*caller)
    theirs = run_nspawn(prefix, *args)
    ours = run_from_shell(prefix, nspawnpy(*args))
    assert ours.returncode == theirs.returncode == 0, (ours.stderr, theirs.stderr)
    assert ours.stdout == theirs.stdout


def test_the_payload_gets_the_select_safe_soft_limit_and_our_hard_limit(busybox_root):
    # Our own expectation, so the comparison above could fail: nspawn's values, spelled out.
    r = run_from_shell(limits_prefix(500, 4000), nspawnpy("--console=pipe", "-D", busybox_root,
                                                          "/bin/sh", "-c", SHOW_NOFILE))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1024", "4000"]
    r = run_from_shell(limits_prefix(100, 100), nspawnpy("--console=pipe", "-D", busybox_root,
                                                         "/bin/sh", "-c", SHOW_NOFILE))
    assert r.stdout.split() == ["100", "100"]


def test_a_trusted_nspawn_file_sets_nofile_and_settings_no_keeps_the_callers(busybox_root):
    (busybox_root.parent / f"{busybox_root.name}.nspawn").write_text("[Exec]\nLimitNOFILE=3000\n")
    prefix = limits_prefix(500, 4000)
    for option, expected in (("--settings=trusted", "3000 3000"), ("--settings=no", "500 4000"),
                             ("--settings=yes", "1024 4000")):
        args = [option, "--console=pipe", "-D", busybox_root, "/bin/sh", "-c", SHOW_NOFILE]
        ours = run_from_shell(prefix, nspawnpy(*args))
        assert ours.stdout.split() == expected.split(), (option, ours.stderr)
        if testhost.systemd_nspawn():
            assert run_nspawn(prefix, *args).stdout == ours.stdout, option


def supervisor_fds_while_sleeping(root, reboots: int) -> int:
    """How many fds the supervisor holds once the payload, after *reboots* reboots in place,
    sleeps in its last run."""
    import time
    (root / "count").write_text("0\n")
    script = (f"n=$(cat /count); if [ $n -lt {reboots} ]; then echo $((n+1)) > /count; "
              "reboot -f; fi; touch /settled; sleep 30")
    (root / "settled").unlink(missing_ok=True)
    p = subprocess.Popen(nspawnpy("--console=read-only", "-D", root, "/bin/sh", "-c", script),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 30
        while not (root / "settled").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        return len(os.listdir(f"/proc/{p.pid}/fd"))
    finally:
        p.kill()
        p.wait()


def test_a_reboot_in_place_leaves_the_supervisor_no_fd_of_the_previous_run(busybox_root):
    # Each run's pty master, pidfd, sync and notify sockets end with the run.
    assert supervisor_fds_while_sleeping(busybox_root, 4) == \
        supervisor_fds_while_sleeping(busybox_root, 0)


@pytest.mark.parametrize("extra", [["--console=read-only"], ["--console=pipe", "-n", "-U", "--keep-unit"],
                                   ["--console=pipe", "--ephemeral", "-a"]],
                         ids=["pty", "veth-userns-keep-unit", "ephemeral-as-pid2"])
def test_every_fd_of_the_supervisor_and_janitor_is_close_on_exec(busybox_root, extra):
    import time
    O_CLOEXEC = 0o2000000
    cg = testhost.ScratchCgroup("cloexec")  # --keep-unit splits the caller's cgroup
    p = subprocess.Popen(nspawnpy(*extra, "-D", busybox_root, "/bin/sleep", "30"),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)},
                         preexec_fn=cg.enter)
    try:
        def settled():
            kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
            sleeping = any(open(f"/proc/{k}/comm").read().strip() in ("sleep", "(sd-stubinit)")
                           for k in kids)
            return kids if sleeping else None
        deadline = time.monotonic() + 20
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        ours = [p.pid] + [int(k) for k in settled()
                          if open(f"/proc/{k}/comm").read().strip() == "python3"]
        inheritable = []
        for pid in ours:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if int(fd) > 2:
                    flags = int(open(f"/proc/{pid}/fdinfo/{fd}").read().split("flags:")[1].split()[0], 8)
                    if not flags & O_CLOEXEC:
                        inheritable.append(f"{pid}:{fd} -> {os.readlink(f'/proc/{pid}/fd/{fd}')}")
        assert len(ours) >= 1 and inheritable == []
    finally:
        p.kill()
        p.wait()
        cg.remove()


@pytest.mark.parametrize("mode", ["pipe", "read-only"])
def test_a_booted_init_gets_no_fd_of_the_caller_as_under_systemd_nspawn(busybox_root, mode):
    (busybox_root / "etc/inittab").write_text(
        "::sysinit:/bin/sh -c '(ls /proc/1/fd > /fds); true'\n::sysinit:/sbin/poweroff -f\n")
    args = [f"--console={mode}", "-b", "-D", busybox_root]
    r = run_from_shell(LEAKY_CALLER, nspawnpy(*args))
    assert r.returncode == 0, r.stderr
    assert listed_fds(busybox_root) == {0, 1, 2}
    if testhost.systemd_nspawn():
        (busybox_root / "fds").unlink()
        assert run_nspawn(LEAKY_CALLER, *args).returncode == 0
        assert listed_fds(busybox_root) == {0, 1, 2}


def test_fds_sent_to_the_notify_socket_never_stay_in_the_supervisor(busybox_root):
    # Anyone who can reach /run/host/notify (root in the container) may attach fds.
    import array
    import socket
    import time
    p = subprocess.Popen(nspawnpy("--console=pipe", "-D", busybox_root, "/bin/sleep", "30"),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)},
                         start_new_session=True)
    try:
        def sleeping_leader():
            for kid in open(f"/proc/{p.pid}/task/{p.pid}/children").read().split():
                if open(f"/proc/{kid}/comm").read().strip() == "sleep":
                    return kid
        deadline = time.monotonic() + 20
        while not sleeping_leader() and time.monotonic() < deadline:
            time.sleep(0.05)
        leader = sleeping_leader()
        before = len(os.listdir(f"/proc/{p.pid}/fd"))
        files = [os.open("/etc/hostname", os.O_RDONLY) for _ in range(8)]
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            for _ in range(10):
                s.sendmsg([b"READY=1"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                          array.array("i", files))], 0,
                          f"/proc/{leader}/root/run/host/notify")
        for fd in files:
            os.close(fd)
        time.sleep(0.3)
        assert len(os.listdir(f"/proc/{p.pid}/fd")) == before
    finally:
        p.kill()
        p.wait()


def test_the_janitor_holds_no_console_or_loop_fd_also_after_its_renewal(busybox_root):
    # A copy of the console's pty in the janitor kept the console from reporting EOF, and
    # the supervisor's last drain waited a second (a WatchdogSec=1s unit was killed).
    import time
    p = subprocess.Popen(nspawnpy("--console=read-only", "--keep-unit", "-D", busybox_root,
                                  "/bin/sleep", "30"),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)},
                         preexec_fn=(cg := testhost.ScratchCgroup("janitor")).enter)
    try:
        time.sleep(2.5)  # past the janitor's renewal, a second after the go-ahead
        kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
        janitors = [k for k in kids if open(f"/proc/{k}/comm").read().strip() == "python3"]
        assert len(janitors) == 1
        held = [os.readlink(f"/proc/{janitors[0]}/fd/{fd}")
                for fd in os.listdir(f"/proc/{janitors[0]}/fd")]
        supervisor = [os.readlink(f"/proc/{p.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{p.pid}/fd")]
        loop_only = [t for t in supervisor if t.startswith(("/dev/pts/", "socket:"))]
        assert loop_only and not set(loop_only) & set(held)
    finally:
        p.kill()
        p.wait()
        cg.remove()


# -- signal dispositions --------------------------------------------------------------------

# The caller ignores SIGHUP (as nohup does), SIGINT and SIGQUIT (as for a shell's background
# job) and SIGUSR1: ignored dispositions survive exec(), so only a reset keeps them out.
IGNORING_CALLER = "trap '' HUP INT QUIT USR1; "
SHOW_SIGNALS = ["/bin/grep", "-E", "^Sig(Blk|Ign|Cgt)", "/proc/self/status", "/proc/1/status"]


@pytest.mark.parametrize("extra", [[], ["-a"], ["-U"]], ids=["plain", "as-pid2", "userns"])
def test_signals_the_caller_ignored_are_default_for_the_payload(busybox_root, extra):
    args = ["--console=pipe", *extra, "-D", busybox_root, *SHOW_SIGNALS]
    ours = run_from_shell(IGNORING_CALLER, nspawnpy(*args))
    assert ours.returncode == 0, ours.stderr
    assert "/proc/self/status:SigIgn:\t0000000000000000" in ours.stdout.splitlines(), ours.stdout
    if testhost.systemd_nspawn():
        theirs = run_nspawn(IGNORING_CALLER, *args)
        assert (theirs.returncode, theirs.stdout) == (0, ours.stdout), theirs.stderr


def test_signals_the_caller_ignored_are_default_for_a_booted_init(busybox_root):
    (busybox_root / "etc/inittab").write_text(
        "::sysinit:/bin/grep -E '^Sig(Ign|Cgt)' /proc/1/status\n::sysinit:/bin/poweroff\n")
    args = ["--console=pipe", "-b", "-D", busybox_root]
    ours = run_from_shell(IGNORING_CALLER, nspawnpy(*args))
    assert ours.returncode == 0, ours.stderr
    ignored = int(ours.stdout.split("SigIgn:")[1].split()[0], 16)
    assert ignored & 0x207 == 0, ours.stdout  # HUP INT QUIT USR1
    if testhost.systemd_nspawn():
        theirs = run_nspawn(IGNORING_CALLER, *args)
        assert (theirs.returncode, theirs.stdout) == (0, ours.stdout), theirs.stderr
