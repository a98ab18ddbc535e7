"""The core launcher: running and booting a tree, what the container sees,
lifecycle and exit codes, and bad input — as systemd-nspawn 252 does it."""

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (PYTHON, QUIET, REPO, leftovers, processes_in_pid_namespace, run_pipe,
                      spawn, stop, wait_for)

sys.path.insert(0, str(REPO))
from nspawnpy.pid1 import caps  # noqa: E402



def out(r) -> str:
    """Console output passes a pty in read-only mode: \\n arrives as \\r\\n, as with nspawn."""
    return r.stdout.replace("\r\n", "\n")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []




def leader_of(supervisor: int, comm: str) -> int:
    def find():
        for child in children(supervisor):
            try:
                with open(f"/proc/{child}/comm") as f:
                    if f.read().strip() == comm:
                        return child
            except FileNotFoundError:
                pass
        return None
    return wait_for(find)


def nsenter(pid: int, *cmd, timeout=30) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", "-t", str(pid), "-a", *cmd], capture_output=True, text=True,
                          timeout=timeout)


def pid_namespace(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/pid")


def own_subcgroups() -> set:
    """The cgroups below ours in the name=systemd (or unified) hierarchy, where --keep-unit
    makes payload/ and supervisor/."""
    from nspawnpy.supervisor import cgroup
    return {(d, name) for d in cgroup.managed_dirs() for name in os.listdir(d)
            if os.path.isdir(os.path.join(d, name))}


def write_inittab(root: Path, *lines: str) -> None:
    (root / "etc/inittab").write_text("\n".join(lines) + "\n")


# -- running a command ---------------------------------------------------------------------

def test_command_output_and_exit_status_are_the_payloads(run_nspawnpy, busybox_root):
    r = run_nspawnpy(*QUIET, "-D", busybox_root, "/bin/sh", "-c", "echo hi; exit 7")
    assert r.returncode == 7
    assert out(r) == "hi\n"
    assert r.stderr == ""


def test_console_output_after_the_guest_closed_its_console_arrives_at_once(busybox_root):
    # systemd closes /dev/console between writes: the pty must not hang up under us,
    # or what the guest writes next would only show up when it exits.
    p = spawn(busybox_root, "/bin/sh", "-c",
              "exec 0<&- 1>&- 2>&-; sleep 0.5; echo late > /dev/console; sleep 30")
    try:
        ready, _, _ = select.select([p.stdout], [], [], 10)
        assert ready and p.stdout.readline() == "late\n"
        assert p.poll() is None  # it came while the container was still running
    finally:
        stop(p)


@pytest.mark.parametrize("command", [["/bin/true"], ["/bin/echo", "-n", "abc"],
                                     ["/bin/sh", "-c", "echo out; exit 3"]])
def test_status_lines_and_output_match_systemd_nspawn(run_nspawnpy, systemd_nspawn, busybox_root,
                                                      command):
    ours = run_nspawnpy("--register=no", "-D", busybox_root, *command)
    theirs = systemd_nspawn(["--register=no", "--keep-unit", "-D", str(busybox_root), *command])
    assert ours.returncode == theirs.returncode
    assert ours.stdout == theirs.stdout
    # nspawn 252 also complains about /run/systemd/nspawn/propagate on a host without systemd.
    assert ours.stderr.splitlines() == [line for line in theirs.stderr.splitlines()
                                        if not line.startswith("Attempted to remove")]


def test_payload_is_pid_1_with_pipe_console(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "/bin/sh", "-c", "echo $$; ls /dev/console",
                 check=None)
    assert r.stdout.splitlines()[0] == "1"
    assert "No such file" in r.stderr  # pipe mode has no /dev/console, like nspawn


def test_without_a_command_a_shell_starts(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, input="echo shell=$0; exit 3\n")
    assert r.returncode == 3
    assert "shell=-sh" in r.stdout  # a login shell, as nspawn's (tests/test_login_shell.py)


def test_command_is_looked_up_on_the_container_path(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "echo", "found", check=0)
    assert r.stdout == "found\n"


def test_machine_name_defaults_to_directory_name_and_sets_hostname(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "/bin/hostname", check=0)
    assert r.stdout.strip() == busybox_root.name
    r = run_pipe(run_nspawnpy, busybox_root, "--hostname=other", "/bin/hostname", check=0)
    assert r.stdout.strip() == "other"


def test_machine_option_finds_tree_in_image_search_path(run_nspawnpy, busybox_root):
    name = f"nspawnpy-search-{os.getpid()}"
    link = Path("/run/machines") / name
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(busybox_root)
    try:
        r = run_nspawnpy(*QUIET, "--console=pipe", "-M", name, "/bin/hostname", check=0)
        assert r.stdout.strip() == name
    finally:
        link.unlink()


def test_environment_is_built_like_nspawns(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "-E", "FOO=bar", "-E", "PATH=/bin", "/bin/env",
                 env={"TERM": "vt102"}, check=0)
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert env["container"] == "systemd-nspawn"
    assert env["NOTIFY_SOCKET"] == "/run/host/notify"
    assert env["FOO"] == "bar" and env["PATH"] == "/bin"
    assert env["HOME"] == "/root" and env["USER"] == "root" and env["LOGNAME"] == "root"
    assert env["TERM"] == "vt102"
    assert len(env["container_uuid"]) == 36
    assert "container_host_id" in env


def test_socket_activation_fds_are_passed_on_to_pid_1(busybox_root):
    import socket
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    fd = listener.fileno()
    try:
        r = subprocess.run(
            ["/bin/sh", "-c", f'LISTEN_PID=$$ LISTEN_FDS=1 exec {PYTHON} -m nspawnpy '
             f'--register=no -q --console=pipe -D {busybox_root} /bin/sh -c '
             "'echo $LISTEN_FDS $LISTEN_PID; readlink /proc/self/fd/3'"],
            pass_fds=(fd, 3), preexec_fn=lambda: os.dup2(fd, 3),
            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=30)
    finally:
        listener.close()
    lines = r.stdout.split("\n")
    assert r.returncode == 0, r.stderr
    assert lines[0] == "1 1"
    assert lines[1].startswith("socket:")


def test_uuid_option_is_used_when_the_image_has_no_machine_id(run_nspawnpy, busybox_root):
    uuid = "0123456789abcdef0123456789abcdef"
    r = run_pipe(run_nspawnpy, busybox_root, f"--uuid={uuid}", "/bin/sh", "-c",
                 "echo $container_uuid; cat /run/host/container-uuid", check=0)
    assert r.stdout.split() == ["01234567-89ab-cdef-0123-456789abcdef"] * 2


def test_user_is_resolved_through_the_containers_getent(run_nspawnpy, busybox_root):
    # (the fixture's getent reads the tree's passwd and group; tests/test_user_getent.py)
    r = run_pipe(run_nspawnpy, busybox_root, "-u", "alice", "/bin/sh", "-c",
                 "id -u; id -g; id -G; echo $HOME $USER; grep CapEff /proc/self/status", check=0)
    lines = r.stdout.splitlines()
    assert lines[0] == "1000" and lines[1] == "1000"
    assert "10" in lines[2].split()
    assert lines[3] == "/home/alice alice"
    assert lines[4].split()[1] == "0000000000000000"


def test_chdir_sets_working_directory(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "--chdir=/etc", "/bin/pwd", check=0)
    assert r.stdout.strip() == "/etc"


def test_capabilities_are_nspawns_default_set(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "/bin/grep", "^Cap", "/proc/self/status", check=0)
    status = dict(line.split(":\t") for line in r.stdout.splitlines())
    expected = caps.DEFAULT & caps.current_bounding()
    for field in ("CapBnd", "CapEff", "CapPrm", "CapInh"):
        assert int(status[field], 16) == expected, field
    assert int(status["CapAmb"], 16) == 0


def test_seccomp_filter_is_installed(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "/bin/grep", "Seccomp:", "/proc/self/status", check=0)
    assert r.stdout.split()[1] == "2"


def test_api_file_systems_are_mounted_as_nspawn_does(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "/bin/cat", "/proc/self/mountinfo", check=0)
    mounts = {}
    for line in r.stdout.splitlines():
        fields = line.split()
        sep = fields.index("-")
        # the first line of a mount point is the visible mount (nspawn has hidden copies)
        mounts.setdefault(fields[4], (set(fields[5].split(",")), fields[sep + 1]))
    assert mounts["/proc"][1] == "proc"
    for ro in ("/proc/sys", "/sys", "/run/host", "/proc/sys/kernel/random/boot_id"):
        assert "ro" in mounts[ro][0], ro
    assert mounts["/dev"][1] == "tmpfs" and mounts["/dev/pts"][1] == "devpts"
    assert mounts["/dev/shm"][1] == "tmpfs" and mounts["/dev/mqueue"][1] == "mqueue"
    assert mounts["/run"][1] == "tmpfs" and mounts["/tmp"][1] == "tmpfs"
    assert "/proc/kmsg" in mounts
    assert mounts["/sys/fs/cgroup"][1] in ("tmpfs", "cgroup2")
    assert not any(m.startswith("/var/tmp") or m.startswith("/work") for m in mounts)


def test_dev_has_nspawns_nodes_and_links(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "/bin/sh", "-c",
                 "cd /dev && for f in null zero full random urandom tty net/tun; do "
                 "stat -c '%n %F %t:%T %a' $f; done; for l in ptmx fd stdin stdout stderr char/1:3; "
                 "do readlink $l; done", check=0)
    lines = r.stdout.splitlines()
    assert lines[:7] == [
        "null character special file 1:3 666", "zero character special file 1:5 666",
        "full character special file 1:7 666", "random character special file 1:8 666",
        "urandom character special file 1:9 666", "tty character special file 5:0 666",
        "net/tun character special file a:c8 600"]   # nspawn's mode
    assert lines[7:13] == ["pts/ptmx", "/proc/self/fd", "/proc/self/fd/0", "/proc/self/fd/1",
                           "/proc/self/fd/2", "../null"]


def test_run_host_tells_the_container_about_its_manager(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "/bin/sh", "-c",
                 "cat /run/host/container-manager; test -S /run/host/notify && echo sock; "
                 "grep -c . /run/host/os-release; ls /run/host/inaccessible", check=0)
    lines = r.stdout.split()
    assert lines[0] == "systemd-nspawn" and lines[1] == "sock" and int(lines[2]) > 0
    assert set(lines[3:]) == {"blk", "chr", "dir", "fifo", "reg", "sock"}


def test_boot_id_is_random_per_container(run_nspawnpy, busybox_root):
    ids = {run_pipe(run_nspawnpy, busybox_root, "/bin/cat",
                    "/proc/sys/kernel/random/boot_id", check=0).stdout for _ in range(2)}
    assert len(ids) == 2
    assert Path("/proc/sys/kernel/random/boot_id").read_text() not in ids


def test_proc_and_sys_are_read_only(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "/bin/sh", "-c",
                 "echo x > /proc/sys/kernel/hostname || echo ro1; touch /sys/x || echo ro2")
    assert "ro1" in r.stdout and "ro2" in r.stdout


def test_hosts_mounts_are_invisible(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "/bin/sh", "-c", "ls /work 2>&1; ls /", check=0)
    assert "No such file" in r.stdout


def test_private_network_has_only_loopback_up(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "--private-network", "/bin/cat", "/proc/net/dev",
                 check=0)
    names = [line.split(":")[0].strip() for line in r.stdout.splitlines()[2:]]
    assert names == ["lo"]


# -- consoles --------------------------------------------------------------------------------

def _pty_session(root: Path, *args, send: list[bytes], timeout=20, after: bytes = b""):
    """Run nspawnpy on a real terminal, typing *send* (once *after* was printed) whenever
    the output pauses; returns (exit status, everything it printed)."""
    pid, master = pty.fork()
    if pid == 0:
        os.environ["PYTHONPATH"] = str(REPO)
        os.execv(PYTHON, [PYTHON, "-m", "nspawnpy", *QUIET, "-D", str(root), *args])
    output = b""
    deadline = time.monotonic() + timeout
    pending = list(send)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        elif pending and after in output:
            os.write(master, pending.pop(0))
    _, status = os.waitpid(pid, 0)
    os.close(master)
    return os.waitstatus_to_exitcode(status), output


def test_interactive_console_relays_both_ways(busybox_root):
    status, output = _pty_session(busybox_root, "/bin/sh",
                                  send=[b"echo $((6*7)) $(tty)\r", b"exit 5\r"])
    assert status == 5
    assert b"42 /dev/pts/0" in output


def test_booted_debian_shows_its_boot_and_login_prompt_on_the_console(debian_root):
    status, output = _pty_session(debian_root, "-b", send=[b"\x1d\x1d\x1d"], after=b"login:",
                                  timeout=60)
    assert b"Welcome to" in output and b"login:" in output
    assert status == 1 and b"terminated by signal KILL" in output


def test_three_escape_presses_within_a_second_kill_the_container(busybox_root):
    status, output = _pty_session(busybox_root, "/bin/sh", send=[b"\x1d\x1d\x1d"])
    assert status == 1
    assert b"terminated by signal KILL" in output


def test_window_size_follows_the_terminal(busybox_root):
    status, output = _pty_session(busybox_root, "/bin/sh", "-c", "stty size", send=[])
    assert status == 0
    rows, cols = output.split()[:2]
    assert int(rows) > 0 and int(cols) > 0


# -- boot, stub init, lifecycle --------------------------------------------------------------

def test_boot_runs_busybox_init_and_poweroff_exits_zero(run_nspawnpy, busybox_root):
    write_inittab(busybox_root, "::sysinit:/bin/echo booted-as-$$", "::once:/bin/poweroff",
                  "::shutdown:/bin/true")
    r = run_nspawnpy(*QUIET, "-b", "-D", busybox_root, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "booted-as-" in out(r)


def test_reboot_restarts_in_place_without_keep_unit(run_nspawnpy, busybox_root):
    write_inittab(busybox_root,
                  "::sysinit:/bin/sh -c 'echo x >> /count; "
                  "if [ $(wc -l < /count) -lt 2 ]; then reboot; else poweroff; fi'",
                  "::shutdown:/bin/true")
    r = run_nspawnpy(*QUIET, "-b", "-D", busybox_root, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (busybox_root / "count").read_text() == "x\nx\n"


def test_ephemeral_layer_survives_an_in_place_reboot_and_is_removed_at_exit(run_nspawnpy,
                                                                             busybox_root):
    write_inittab(busybox_root,
                  "::sysinit:/bin/sh -c 'if [ -e /marker ]; then echo kept; poweroff; "
                  "else touch /marker; reboot; fi'", "::shutdown:/bin/true")
    r = run_nspawnpy(*QUIET, "-x", "-b", "-D", busybox_root, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "kept" in out(r)
    assert not (busybox_root / "marker").exists()
    assert [p.name for p in busybox_root.parent.iterdir() if p.name.startswith(".#")] == []


def test_reboot_exits_133_with_keep_unit(run_nspawnpy, busybox_root):
    write_inittab(busybox_root, "::once:/sbin/reboot", "::shutdown:/bin/true")
    before = own_subcgroups()
    r = run_nspawnpy(*QUIET, "--keep-unit", "-b", "-D", busybox_root, timeout=60)
    assert r.returncode == 133, r.stderr
    assert leftovers() == []
    # payload/ and supervisor/ are gone again (other cgroups may come and go: concurrent runs)
    split = {"payload", "supervisor"}
    assert {c for c in own_subcgroups() if c[1] in split} == {c for c in before if c[1] in split}


def test_boot_without_init_is_refused(run_nspawnpy, busybox_root):
    (busybox_root / "sbin/init").unlink()
    r = run_nspawnpy(*QUIET, "-b", "-D", busybox_root)
    assert r.returncode == 1
    assert "init" in r.stderr and len(r.stderr.splitlines()) == 1


def test_boot_passes_arguments_to_init(run_nspawnpy, busybox_root):
    (busybox_root / "sbin/init").unlink()
    (busybox_root / "sbin/init").write_text("#!/bin/sh\necho args=\"$*\" pid=$$\n")
    (busybox_root / "sbin/init").chmod(0o755)
    r = run_pipe(run_nspawnpy, busybox_root, "-b", "one", "two", check=0)
    assert r.stdout.strip() == "args=one two pid=1"


def test_as_pid2_runs_stub_init_as_pid_1(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "-a", "/bin/sh", "-c",
                 "echo $$; cat /proc/1/cmdline | tr '\\0' ' '; exit 4")
    assert r.returncode == 4
    assert r.stdout.splitlines()[0] == "2"


@pytest.mark.parametrize("userns", [[], ["-U"]], ids=["plain", "userns"])
def test_as_pid2_stub_is_named_like_systemd_nspawns(run_nspawnpy, systemd_nspawn, busybox_root,
                                                     userns):
    # comm, and the command line up to its NUL padding (nspawn overwrites its own in place).
    probe = ["/bin/sh", "-c", "cat /proc/1/comm; tr '\\0' '|' < /proc/1/cmdline | tr -s '|'"]
    ours = run_pipe(run_nspawnpy, busybox_root, "-a", *userns, *probe, check=0)
    theirs = systemd_nspawn(["--register=no", "--keep-unit", "-q", "--console=pipe", "-a",
                             *userns, "-D", str(busybox_root), *probe], check=0)
    assert theirs.stdout == "(sd-stubinit)\n(sd-stubinit)|", theirs.stdout
    assert ours.stdout == theirs.stdout
    assert ours.returncode == theirs.returncode == 0


def test_as_pid2_stub_reaps_orphans(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "-a", "/bin/sh", "-c",
                 "(sleep 0.2 &) ; sleep 0.6; ps -o stat,comm | grep -c Z || true", check=0)
    assert r.stdout.strip() == "0"


def test_pid_1_ignores_its_own_kill_like_nspawn(run_nspawnpy, busybox_root):
    # PID 1 of a PID namespace cannot be killed from inside: sh carries on and exits 0.
    r = run_pipe(run_nspawnpy, busybox_root, "/bin/sh", "-c", "kill -9 $$; echo alive")
    assert r.returncode == 0 and r.stdout == "alive\n"


def test_sigterm_kills_a_plain_command_and_exits_1(busybox_root):
    p = spawn(busybox_root, "--console=pipe", "/bin/sleep", "100")
    leader_of(p.pid, "sleep")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 1
    assert "terminated by signal KILL" in err


def test_sigterm_sends_the_kill_signal_once(busybox_root):
    p = spawn(busybox_root, "--console=pipe", "--kill-signal=SIGINT", "/bin/sh", "-c",
              "trap 'echo got-int; exit 3' INT; while :; do sleep 0.1; done")
    leader_of(p.pid, "sh")
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    stdout, _ = p.communicate(timeout=20)
    assert p.returncode == 3
    assert "got-int" in stdout


def test_sigkill_of_the_supervisor_leaves_nothing_behind(busybox_root):
    write_inittab(busybox_root, "::sysinit:/bin/true", "::shutdown:/bin/true")
    p = spawn(busybox_root, "-b")
    leader = leader_of(p.pid, "init")
    namespace = pid_namespace(leader)
    assert processes_in_pid_namespace(namespace)
    p.kill()
    p.wait(timeout=10)
    wait_for(lambda: not processes_in_pid_namespace(namespace), timeout=15)
    assert not os.path.exists(f"/proc/{leader}")
    wait_for(lambda: leftovers() == [], timeout=15)
    # The tree's lock went with it: it starts again at once.
    r = subprocess.run([PYTHON, "-m", "nspawnpy", *QUIET, "--console=pipe", "-D",
                        str(busybox_root), "/bin/true"], env={**os.environ, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr


def test_the_renewed_janitor_cleans_up_after_kill_9_with_keep_unit(busybox_root):
    # A second after the start the supervisor forks a fresh janitor (so the two share the
    # pages the start wrote) and lets the first go: the fresh one must do the clean-up.
    from testhost import ScratchCgroup
    with ScratchCgroup("janitor") as cg:
        p = spawn(busybox_root, "--keep-unit", "--console=pipe", "/bin/sleep", "60",
                  preexec_fn=cg.enter)
        try:
            leader = leader_of(p.pid, "sleep")
            first = set(children(p.pid)) - {leader}
            assert len(first) == 1
            wait_for(lambda: (set(children(p.pid)) - {leader, *first}) or None, timeout=10)
            assert {d.name for d in cg.dirs[0].iterdir() if d.is_dir()} == {"payload",
                                                                            "supervisor"}
            # in supervisor/ in every hierarchy it was moved in
            own = [line.split(":", 2)[2] for line in Path(f"/proc/{p.pid}/cgroup").read_text()
                   .splitlines() if line.split(":")[1] in ("name=systemd", "")]
            assert own and all(path.endswith(f"/{cg.name}/supervisor") for path in own), own
        finally:
            p.kill()
            p.wait()
        wait_for(lambda: not any(d.is_dir() for top in cg.dirs for d in top.iterdir()),
                 timeout=15)
        wait_for(lambda: not os.path.exists(f"/proc/{leader}"), timeout=15)


def test_a_running_tree_is_locked_against_a_second_start(run_nspawnpy, busybox_root):
    p = spawn(busybox_root, "--console=pipe", "/bin/sleep", "100")
    try:
        leader_of(p.pid, "sleep")
        r = run_nspawnpy(*QUIET, "--console=pipe", "-D", busybox_root, "/bin/true")
        assert r.returncode == 1
        assert "busy" in r.stderr and len(r.stderr.splitlines()) == 1
    finally:
        stop(p)


def test_nothing_is_left_after_a_normal_run(run_nspawnpy, busybox_root):
    run_pipe(run_nspawnpy, busybox_root, "/bin/true", check=0)
    assert leftovers() == []


@contextlib.contextmanager
def booted_debian(root: Path):
    """Boot the tree, wait until its systemd is running; yields (supervisor, leader)."""
    p = spawn(root, "-b")
    try:
        leader = leader_of(p.pid, "systemd")
        wait_for(lambda: nsenter(leader, "systemctl", "is-system-running").stdout.strip()
                 in ("running", "degraded"), timeout=60, step=0.3)
        yield p, leader
    finally:
        stop(p)


def test_debian_boots_to_running_and_sigterm_halts_it(debian_root):
    with booted_debian(debian_root) as (p, leader):
        machine_id = nsenter(leader, "cat", "/etc/machine-id").stdout.strip()
        assert len(machine_id) == 32
        # The guest's systemd runs in a cgroup subtree of its own, seen as its root.
        assert "0::/init.scope" in nsenter(leader, "cat", "/proc/1/cgroup").stdout
        cgroup_mounts = {line.split()[4]: line.split(" - ")[1].split()[0] for line in
                         nsenter(leader, "cat", "/proc/1/mountinfo").stdout.splitlines()
                         if "/sys/fs/cgroup" in line}
        if Path("/sys/fs/cgroup/unified").is_dir():  # hybrid host, as nspawn 252 mounts it
            assert cgroup_mounts["/sys/fs/cgroup/unified"] == "cgroup2"
            assert cgroup_mounts["/sys/fs/cgroup/systemd"] == "cgroup"
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=60)
        assert p.returncode == 0
    wait_for(lambda: leftovers() == [], timeout=15)


def test_debian_poweroff_inside_ends_with_status_0(debian_root):
    with booted_debian(debian_root) as (p, leader):
        nsenter(leader, "systemctl", "poweroff")
        p.communicate(timeout=60)
        assert p.returncode == 0


# -- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("args, expect", [
    (["-D", "/nonexistent/tree", "/bin/true"], "No such file"),
    (["-D", "/etc/hostname", "/bin/true"], "Not a directory"),
    (["--no-such-option"], "unrecognized option"),
    (["-D", "/", "--uuid=xyz", "/bin/true"], "--uuid"),
    (["-D", "/", "-b", "-a"], "--boot and --as-pid2 may not be combined"),
    (["-D", "/", "--kill-signal=SIGNOPE", "/bin/true"], "--kill-signal"),
    (["-D", "/", "--console=bogus", "/bin/true"], "--console"),
    (["-D", "/", "--read-only", "--volatile=yes", "/bin/true"], "--volatile"),
    (["-D"], "requires an argument"),
    (["-i", "/nonexistent-nspawnpy.raw", "/bin/true"], "/nonexistent-nspawnpy.raw"),
    (["--root-hash=" + "ab" * 32, "-D", "/", "/bin/true"], "not supported"),
])
def test_bad_input_is_one_line_and_exit_1(run_nspawnpy, args, expect):
    r = run_nspawnpy("--register=no", "-q", *args)
    assert r.returncode == 1
    assert expect in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("option", ["--selinux-context=", "--selinux-apifs-context="])
def test_selinux_labels_without_selinux_fail_as_with_nspawn_naming_the_option(
        run_nspawnpy, systemd_nspawn, busybox_root, option):
    if os.path.exists("/sys/fs/selinux/enforce"):
        pytest.skip("SELinux is enabled here: the labels apply")
    label = option + "system_u:object_r:svirt_sandbox_file_t:s0"
    theirs = systemd_nspawn(["--register=no", "--keep-unit", "-q", "-D", str(busybox_root),
                             label, "/bin/true"])
    ours = run_nspawnpy("--register=no", "-q", "--console=pipe", "-D", busybox_root, label,
                        "/bin/true")
    assert ours.returncode == theirs.returncode == 1
    assert ours.stderr.splitlines() == [f"{label}: SELinux is not enabled on this host, "
                                        "cannot apply the label."]
    assert leftovers() == []


def test_missing_command_is_one_line_and_exit_1(run_nspawnpy, busybox_root):
    r = run_pipe(run_nspawnpy, busybox_root, "/bin/nonexistent")
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "nonexistent" in r.stderr
    r = run_pipe(run_nspawnpy, busybox_root, "nonexistent-command")
    assert r.returncode == 1
    assert "execv" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert leftovers() == []


def test_missing_command_reports_like_systemd_nspawn(run_nspawnpy, systemd_nspawn, busybox_root):
    message = "execv(/bin/nonexistent) failed: No such file or directory"
    ours = run_nspawnpy("--register=no", "-q", "-D", busybox_root, "/bin/nonexistent")
    theirs = systemd_nspawn(["--register=no", "--keep-unit", "-q", "-D", str(busybox_root),
                             "/bin/nonexistent"])
    assert ours.returncode == theirs.returncode == 1
    # nspawn's PID 1 writes it to the console; ours is a one-line error on stderr.
    assert message in theirs.stdout + theirs.stderr
    assert ours.stderr.splitlines() == [message]


def test_unknown_user_fails_with_nspawns_two_lines_and_exit_1(run_nspawnpy, busybox_root):
    # nspawn 252's child says why, its parent adds the second line (test_user_getent.py)
    r = run_pipe(run_nspawnpy, busybox_root, "-u", "nobody-here", "/bin/true")
    assert r.returncode == 1
    assert r.stderr.splitlines() == ["Failed to resolve user nobody-here.",
                                     "Child died too early."]
    assert leftovers() == []


def test_registration_without_machined_fails_clearly(run_nspawnpy, busybox_root):
    if os.path.exists("/run/dbus/system_bus_socket"):
        pytest.skip("a system bus exists here; registration is tested in the test host")
    r = run_nspawnpy("-q", "--console=pipe", "-D", busybox_root, "/bin/true")
    assert r.returncode == 1
    assert "register" in r.stderr and "--register=no" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_plain_run_imports_neither_pyroute2_nor_dbus_nor_re(busybox_root):
    # main() itself: the module's entry point leaves with os._exit, before any print.
    # re (with the enum, functools and collections it imports) costs ~4 ms of a start,
    # contextlib (collections, functools) ~2 ms; -S as the installed script runs (site
    # itself imports re).
    code = ("import sys; from nspawnpy.__main__ import main; main(['--register=no','-q',"
            f"'--console=pipe','-D','{busybox_root}','/bin/true']);\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pyroute2','dbus_next','pystemd','re','enum','contextlib','collections',"
            "'functools')))")
    r = subprocess.run([PYTHON, "-S", "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                       capture_output=True, text=True, timeout=30)
    assert r.stdout.strip().endswith("[]"), r.stdout + r.stderr


def test_help_and_version(run_nspawnpy):
    r = run_nspawnpy("--help", check=0)
    for option in ("--directory", "--boot", "--as-pid2", "--machine", "--console", "--kill-signal"):
        assert option in r.stdout
    assert run_nspawnpy("--version", check=0).stdout.startswith("nspawnpy ")
