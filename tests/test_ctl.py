"""nspawnpyctl on this machine: the state records the launcher publishes, list/info/stop/remove,
and attach checked against the container's own view (namespaces, CapBnd, Seccomp, cgroup)."""

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import REPO, leftovers, wait_for

PYTHON = "/usr/bin/python3"
STATE = Path("/run/nspawnpy/machines")
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
VIEW = ("for n in cgroup ipc mnt net pid user uts; do readlink /proc/$P/ns/$n; done; "
        "grep -E '^(CapBnd|Seccomp|NoNewPrivs):' /proc/$P/status; cat /proc/$P/cgroup")


def ctl(*args, input=None, timeout=60):
    return subprocess.run([PYTHON, "-m", "nspawnpy.ctl", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=ENV, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)


def spawn(root, *args, name=None):
    name = name or f"ctl-{secrets.token_hex(3)}"
    proc = subprocess.Popen([PYTHON, "-m", "nspawnpy", "-q", "--register=no", "--console=pipe",
                             "-M", name, "-D", str(root), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True)
    return proc, name


def wait_published(name, proc, timeout=30):
    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"launcher ended early: {proc.stderr.read()}")
        return (STATE / name).exists()
    wait_for(ready, timeout=timeout, what=f"state record of {name}")


def end(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


@pytest.fixture
def running(busybox_root):
    """running(*args) -> (proc, name): a published busybox machine, killed afterwards."""
    procs = []

    def start(*args, root=busybox_root):
        proc, name = spawn(root, *args)
        procs.append(proc)
        wait_published(name, proc)
        return proc, name
    yield start
    for proc in procs:
        end(proc)


def stray(*names) -> list:
    """leftovers() that are ours (other sessions' machines run concurrently)."""
    return [item for item in leftovers() if any(str(n) in item for n in names)]


def view(name, pid="self", *extra):
    r = ctl("attach", *extra, name, "--", "/bin/sh", "-c", f"P={pid}; {VIEW}")
    assert r.returncode == 0, r.stderr
    return r.stdout


def record(name) -> dict:
    return dict(line.split("=", 1) for line in (STATE / name).read_text().splitlines())


# --- the state directory ----------------------------------------------------------------------

def test_a_running_machine_is_published_listed_and_unpublished_at_exit(running, busybox_root):
    proc, name = running("/bin/sleep", "60")
    rec = record(name)
    assert rec["ROOT"] == str(busybox_root) and rec["SUPERVISOR"] == str(proc.pid)
    leader_root, tree = os.stat(f"/proc/{rec['LEADER']}/root"), os.stat(busybox_root)
    assert (leader_root.st_dev, leader_root.st_ino) == (tree.st_dev, tree.st_ino)
    listed = json.loads(ctl("list", "--json=short").stdout)
    mine = [m for m in listed if m["name"] == name]
    assert mine and mine[0]["state"] == "running" and mine[0]["leader"] == int(rec["LEADER"])
    assert name in ctl("list").stdout
    r = ctl("stop", name)
    assert r.returncode == 0, r.stderr
    assert proc.poll() is not None, "stop returned before the launcher exited"
    assert not (STATE / name).exists()
    assert name not in ctl("list").stdout
    assert stray(name, busybox_root) == []


def test_a_killed_launchers_record_is_recognised_as_stale_and_removed(running):
    proc, name = running("/bin/sleep", "60")
    leader = int(record(name)["LEADER"])
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not Path(f"/proc/{leader}").exists(), what="the leader to die")
    r = ctl("info", name)
    assert "running" not in r.stdout
    assert not (STATE / name).exists()
    assert name not in ctl("list").stdout


def test_a_record_naming_a_recycled_pid_is_stale(tmp_path):
    name = f"ctl-stale-{secrets.token_hex(3)}"
    STATE.mkdir(parents=True, exist_ok=True)
    # our own PID, but a start time it never had: a recycled PID.
    (STATE / name).write_text(f"NAME={name}\nLEADER={os.getpid()}\nLEADER_START=1\nROOT=/x\n")
    r = ctl("attach", name, "--", "true")
    assert r.returncode == 1 and r.stderr.strip() == f"No machine '{name}' known."
    assert not (STATE / name).exists()


def test_a_corrupt_record_is_one_line_naming_the_file_and_is_removed():
    name = f"ctl-corrupt-{secrets.token_hex(3)}"
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / name).write_bytes(b"\xff\xfegarbage\n")
    r = ctl("stop", name)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    assert str(STATE / name) in r.stderr and "corrupt" in r.stderr
    assert not (STATE / name).exists()


# --- info -------------------------------------------------------------------------------------

def test_info_reports_leader_tasks_memory_and_cpu(running):
    proc, name = running("/bin/sh", "-c", "sleep 60 & sleep 60 & i=0; while [ $i -lt 20000 ]; "
                         "do i=$((i+1)); done; wait")
    rec = record(name)
    time.sleep(0.5)
    info = json.loads(ctl("info", name, "--json=pretty").stdout)
    assert info["state"] == "running" and info["leader"] == int(rec["LEADER"])
    assert info["usage"]["tasks"] == 3
    assert info["usage"]["memory_bytes"] > 0 and info["usage"]["cpu_usec"] > 0
    text = ctl("info", name).stdout
    assert f"Leader:    {rec['LEADER']}" in text and "Tasks:     3" in text


def test_info_of_a_booted_machine_reads_its_own_cgroup(running):
    proc, name = running("-b")
    info = json.loads(ctl("info", name, "--json=short").stdout)
    assert info["usage"]["source"].startswith("cgroup")
    assert info["usage"]["tasks"] >= 1


def test_info_of_a_stopped_tree_says_stopped(machine_tree):
    r = ctl("info", machine_tree.name)
    assert r.returncode == 0 and "State:" in r.stdout and "stopped" in r.stdout
    assert json.loads(ctl("info", machine_tree.name, "--json=short").stdout)["state"] == "stopped"


@pytest.mark.parametrize("verb", ["info", "attach", "stop", "remove"])
def test_an_unknown_machine_is_named_in_one_line(verb):
    r = ctl(verb, "no-such-machine-ctl")
    assert r.returncode == 1 and r.stderr == "No machine 'no-such-machine-ctl' known.\n"


@pytest.mark.parametrize("verb", ["attach", "stop"])
def test_a_stopped_machine_is_not_running(verb, machine_tree):
    r = ctl(verb, machine_tree.name)
    assert r.returncode == 1 and r.stderr == f"Machine '{machine_tree.name}' is not running.\n"


def test_a_bad_option_names_it():
    r = ctl("list", "--json=loud")
    assert r.returncode == 1 and "--json" in r.stderr and len(r.stderr.splitlines()) == 1


# --- stop -------------------------------------------------------------------------------------

def test_stop_powers_a_busybox_init_off_cleanly(running):
    proc, name = running("-b")
    r = ctl("stop", name, "--timeout=20")
    assert r.returncode == 0, r.stderr
    assert proc.wait(timeout=5) == 0, proc.stderr.read()   # init's poweroff, not SIGKILL
    assert stray(name) == []


def test_stop_kills_after_the_timeout(running):
    proc, name = running("--kill-signal=SIGTERM", "/bin/sh", "-c", "trap '' TERM; sleep 60")
    started = time.monotonic()
    r = ctl("stop", name, "--timeout=1")
    assert r.returncode == 0, r.stderr
    assert 1 <= time.monotonic() - started < 15
    assert proc.poll() is not None and "KILL" in proc.stderr.read()


# --- attach -----------------------------------------------------------------------------------

@pytest.mark.parametrize("options", [(), ("-b",), ("-U",), ("--system-call-filter=~@clock",
                                                            "--drop-capability=CAP_NET_RAW")])
def test_attach_sees_what_pid1_sees(running, options):
    args = (*options, "/bin/sleep", "60") if "-b" not in options else options
    proc, name = running(*args)
    assert view(name, "self") == view(name, "1")
    own = view(name, "self").splitlines()
    host = [os.readlink(f"/proc/self/ns/{n}") for n in ("mnt", "pid", "uts")]
    assert not set(host) & set(own)
    if "-U" in options:
        assert ctl("attach", name, "--", "id", "-u").stdout == "0\n"
        assert os.readlink("/proc/self/ns/user") not in own


def test_attach_filter_and_caps_are_enforced(running):
    proc, name = running("--system-call-filter=~mkdir mkdirat", "--drop-capability=CAP_CHOWN",
                         "/bin/sleep", "60")
    r = ctl("attach", name, "--", "/bin/sh", "-c", "chown 1000 /tmp; echo chown=$?; "
            "mkdir /tmp/x 2>/dev/null; echo mkdir=$?")
    assert r.stdout == "chown=1\nmkdir=1\n"


def test_attach_passes_the_exit_status_environment_and_user(running):
    proc, name = running("/bin/sleep", "60")
    assert ctl("attach", name, "--", "/bin/sh", "-c", "exit 42").returncode == 42
    r = ctl("attach", "--setenv=FOO=bar", name, "--", "/bin/sh", "-c", "echo $FOO $container")
    assert r.stdout == "bar systemd-nspawn\n"
    r = ctl("attach", "--user=alice", name, "--", "/bin/sh", "-c", "id -u; pwd; echo $HOME")
    assert r.stdout == "1000\n/home/alice\n/home/alice\n"
    r = ctl("attach", name, "--", "/no/such/command")
    assert r.returncode == 127 and "/no/such/command" in r.stderr


def test_attach_gives_a_pty_on_a_terminal_and_follows_its_size(running):
    import fcntl
    import pty
    import select
    import struct
    import termios
    proc, name = running("/bin/sleep", "60")
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        os.execve(PYTHON, [PYTHON, "-m", "nspawnpy.ctl", "attach", name], ENV)
    out = b""

    def read_until(token, timeout=10):
        nonlocal out
        deadline = time.monotonic() + timeout
        while token not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        return token in out

    assert read_until(b"# ")
    os.write(fd, b"tty; stty size\n")
    assert read_until(b"33 101"), out
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    os.kill(pid, signal.SIGWINCH)
    time.sleep(0.3)
    os.write(fd, b"stty size; exit 3\n")
    assert read_until(b"40 120"), out
    assert b"/dev/pts/" in out
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 3


def test_attach_detaches_on_three_escapes(running):
    import pty
    proc, name = running("/bin/sleep", "60")
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(PYTHON, [PYTHON, "-m", "nspawnpy.ctl", "attach", name], ENV)
    time.sleep(1.5)
    os.write(fd, b"\x1d\x1d\x1d")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        try:
            os.read(fd, 4096)
        except OSError:
            pass
        time.sleep(0.05)
    assert done, "attach did not end on ^]^]^]"
    assert proc.poll() is None  # the machine runs on


# --- remove -----------------------------------------------------------------------------------

@pytest.fixture
def machine_tree():
    """A busybox tree under /var/lib/machines with a unique name, removed afterwards."""
    import rootfs
    path = Path("/var/lib/machines") / f"ctl-{secrets.token_hex(3)}"
    rootfs.busybox_tree(path)
    yield path
    if path.exists():
        rootfs.rmtree(path)
    Path(f"/etc/systemd/nspawn/{path.name}.nspawn").unlink(missing_ok=True)


def test_remove_refuses_a_running_machine_then_removes_tree_and_settings(machine_tree):
    settings = Path(f"/etc/systemd/nspawn/{machine_tree.name}.nspawn")
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text("[Exec]\nBoot=no\n")
    proc, name = spawn(machine_tree, "/bin/sleep", "60", name=machine_tree.name)
    try:
        wait_published(name, proc)
        r = ctl("remove", name)
        assert r.returncode == 1 and name in r.stderr and "running" in r.stderr
        assert machine_tree.is_dir()
    finally:
        ctl("stop", name)
        end(proc)
    r = ctl("remove", name)
    assert r.returncode == 0, r.stderr
    assert not machine_tree.exists() and not settings.exists()


# --- create -----------------------------------------------------------------------------------

@pytest.fixture
def new_name():
    """A fresh machine name; whatever create made of it is removed afterwards."""
    import rootfs
    name = f"ctl-new-{secrets.token_hex(3)}"
    yield name
    if (Path("/var/lib/machines") / name).exists():
        rootfs.rmtree(Path("/var/lib/machines") / name)


def scratch_left(name):
    return [p for p in os.listdir("/var/lib/machines") if p.startswith(f".#{name}.")]


def test_create_busybox_makes_a_tree_that_runs(new_name, run_nspawnpy):
    r = ctl("create", new_name, "--distribution=busybox")
    assert r.returncode == 0, r.stderr
    r = run_nspawnpy("-q", "--register=no", "--console=pipe", "-M", new_name, "/bin/sh", "-c",
                     "id -u; cat /etc/os-release | head -1; wc -c </etc/machine-id")
    assert r.stdout.split() == ["0", "NAME=BusyBox", "0"], r.stderr
    r = ctl("create", new_name, "--distribution=busybox")
    assert r.returncode == 1 and r.stderr.startswith(f"Machine '{new_name}' already exists")
    assert scratch_left(new_name) == []


def test_a_booted_busybox_machine_gives_root_a_shell_on_the_console(new_name):
    import pty
    import select
    assert ctl("create", new_name, "--distribution=busybox").returncode == 0
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(PYTHON, [PYTHON, "-m", "nspawnpy", "-q", "--register=no", "-b", "-M", new_name],
                  ENV)
    out, deadline, asked = b"", time.monotonic() + 20, False
    while b"uid=0" not in out and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            out += os.read(fd, 4096)
        if b"# " in out and not asked:
            os.write(fd, b"id; poweroff -f\n")
            asked = True
    assert b"uid=0(root)" in out, out
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_create_from_a_directory_and_a_tarball_keeps_owners(new_name, busybox_root, tmp_path):
    os.chown(busybox_root / "etc/passwd", 1234, 5678)
    assert ctl("create", new_name, f"--from={busybox_root}").returncode == 0
    made = Path("/var/lib/machines") / new_name
    assert os.stat(made / "etc/passwd").st_uid == 1234 and (made / "bin/sh").is_symlink()
    tarball = tmp_path / "tree.tar.gz"
    subprocess.run(["tar", "-czf", tarball, "-C", busybox_root, "."], check=True)
    second = f"{new_name}-t"
    try:
        r = ctl("create", second, f"--from={tarball}")
        assert r.returncode == 0, r.stderr
        assert os.stat(Path("/var/lib/machines") / second / "etc/passwd").st_gid == 5678
    finally:
        import rootfs
        rootfs.rmtree(Path("/var/lib/machines") / second)


def test_create_from_something_that_is_not_a_tarball_leaves_nothing(new_name, tmp_path):
    bogus = tmp_path / "tree.tar"
    bogus.write_text("not a tarball\n")
    r = ctl("create", new_name, f"--from={bogus}")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1 and str(bogus) in r.stderr
    assert not (Path("/var/lib/machines") / new_name).exists() and scratch_left(new_name) == []


@pytest.mark.parametrize("args, word", [(["../evil"], "Invalid machine name"),
                                        (["x", "--distribution=arch"], "--distribution"),
                                        (["x", "--from=/nonexistent"], "/nonexistent")])
def test_create_refuses_bad_input_naming_it(args, word):
    r = ctl("create", *args)
    assert r.returncode == 1 and word in r.stderr and len(r.stderr.splitlines()) == 1
    assert not Path("/var/lib/machines/x").exists()


# --- checkconfig ------------------------------------------------------------------------------

def test_checkconfig_proves_what_this_host_has_and_leaves_nothing():
    r = ctl("checkconfig")
    assert "\033[" not in r.stdout  # not a terminal: no colour
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    for name in ("mount", "pid", "cgroup", "pidfd", "veth"):
        assert lines[name].startswith("yes"), r.stdout
    assert lines["systemd as PID 1"].startswith("yes") == os.path.isdir("/run/systemd/system")
    assert r.returncode == 0
    assert [n for n in os.listdir("/run") if n.startswith(".nspawnpy-check")] == []
    assert stray("chk", ".nspawnpy-check") == []


# --- a booted Debian guest --------------------------------------------------------------------

@pytest.mark.parametrize("options", [(), ("-U",)])
def test_attach_and_stop_a_booted_debian_guest(debian_root, options):
    proc, name = spawn(debian_root, *options, "-b")
    try:
        wait_published(name, proc, timeout=60)

        def booted():
            r = ctl("attach", name, "--", "systemctl", "is-system-running")
            return r.stdout.strip() in ("running", "degraded")
        wait_for(booted, timeout=60, what="the guest to boot")
        assert view(name, "self") == view(name, "1")
        r = ctl("attach", name, "--", "/bin/sh", "-c", "cat /etc/hostname 2>/dev/null; hostname; "
                "cat /proc/self/loginuid; echo $container")
        assert name in r.stdout.split() and "systemd-nspawn" in r.stdout
        if options:
            assert ctl("attach", name, "--", "id", "-u").stdout == "0\n"
            assert view(name, "self").splitlines()[5] != os.readlink("/proc/self/ns/user")
        info = json.loads(ctl("info", name, "--json=short").stdout)
        assert info["usage"]["tasks"] > 3 and info["boot"] is True
        r = ctl("stop", name, "--timeout=30")
        assert r.returncode == 0, r.stderr
        assert proc.wait(timeout=5) == 0, proc.stderr.read()  # a clean poweroff
    finally:
        end(proc)
    assert stray(name, debian_root) == []


def test_the_janitor_removes_the_record_after_kill_9(running):
    proc, name = running("--network-veth", "/bin/sleep", "60")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    wait_for(lambda: not (STATE / name).exists(), timeout=30, what="the janitor")
    assert stray(name) == []


def test_list_all_adds_stopped_trees(machine_tree):
    rows = {m["name"]: m for m in json.loads(ctl("list", "--all", "--json=short").stdout)}
    assert rows[machine_tree.name]["state"] == "stopped"
    assert rows[machine_tree.name]["root"] == str(machine_tree)
    assert machine_tree.name not in ctl("list").stdout


@pytest.mark.parametrize("verb", ["list", "checkconfig", "create x", "stop x", "attach x"])
def test_every_verb_needs_root(verb):
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PYTHON,
                        "-m", "nspawnpy.ctl", *verb.split()], capture_output=True, text=True,
                       env=ENV, cwd="/")
    assert r.returncode == 1 and r.stderr == "Need to be root.\n"


def test_create_debian_debootstraps_a_tree_root_can_log_into_at_the_console(new_name):
    """The one test that runs debootstrap from the network (about a minute)."""
    import pty
    import select
    import shutil
    import rootfs
    if not shutil.which("debootstrap"):
        pytest.skip("debootstrap is not installed")
    try:
        rootfs.debian_tarball()   # skips where no mirror could be reached before
    except rootfs.RootfsUnavailable as e:
        pytest.skip(f"no Debian mirror: {e}")
    r = ctl("create", new_name, timeout=1200)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "I: Retrieving" in r.stdout + r.stderr            # debootstrap's progress is shown
    tree = Path("/var/lib/machines") / new_name
    assert (tree / "etc/machine-id").read_text() == ""
    assert not (tree / "etc/hostname").exists()
    assert (tree / "etc/shadow").read_text().startswith("root::")
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(PYTHON, [PYTHON, "-m", "nspawnpy", "-q", "--register=no", "-b", "-M", new_name],
                  ENV)
    out, deadline, step = b"", time.monotonic() + 90, 0
    replies = ((b"login: ", b"root\n"), (b"# ", b"id -u; systemctl poweroff\n"))
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
        if step < len(replies) and out.rstrip(b" ").endswith(replies[step][0].rstrip(b" ")):
            os.write(fd, replies[step][1])
            step += 1
    assert step == 2 and b"\r0\r\n" in out, out[out.find(b"login:"):][:1500]
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_list_and_info_show_addresses_and_link_bytes(running):
    proc, name = running("--network-veth", "/bin/sleep", "60")
    r = ctl("attach", name, "--", "/bin/sh", "-c", "ip addr add 10.213.7.2/24 dev host0 && "
            "ip link set host0 up && ping -c 2 -W 1 10.213.7.1 >/dev/null 2>&1; true")
    assert r.returncode == 0, r.stderr
    rows = {m["name"]: m for m in json.loads(ctl("list", "--json=short").stdout)}
    assert "10.213.7.2" in rows[name]["addresses"]
    info = json.loads(ctl("info", name, "--json=short").stdout)
    assert "10.213.7.2" in info["addresses"]
    assert info["links"]["host0"]["tx_bytes"] > 0          # the pings went out
    host_end = record(name)["LINKS"]
    assert host_end.startswith("ve-") and info["host_links"][host_end]["rx_bytes"] > 0
    assert "10.213.7.2" in ctl("info", name).stdout


def test_checkconfig_colours_a_terminal():
    import pty
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(PYTHON, [PYTHON, "-m", "nspawnpy.ctl", "checkconfig"], ENV)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert b"\033[32myes\033[0m" in out


def test_the_command_starts_with_default_signals_and_dies_with_attach(running):
    proc, name = running("/bin/sleep", "60")
    r = ctl("attach", name, "--", "grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status")
    assert r.stdout.split() == ["SigBlk:", "0" * 16, "SigIgn:", "0" * 16]

    def sleepers():
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x004242\x00":
                    found.append(pid)
            except OSError:
                pass
        return found
    attach = subprocess.Popen([PYTHON, "-m", "nspawnpy.ctl", "attach", name, "sleep", "4242"],
                              env=ENV, stdin=subprocess.DEVNULL)
    wait_for(sleepers, what="the attached command")
    attach.terminate()
    attach.wait(timeout=10)
    wait_for(lambda: not sleepers(), timeout=10, what="the attached command to die with attach")
    assert proc.poll() is None   # the machine itself runs on


def test_stop_powers_the_as_pid2_stub_off_cleanly(running):
    proc, name = running("-a", "/bin/sleep", "60")
    r = ctl("stop", name, "--timeout=20")
    assert r.returncode == 0, r.stderr
    assert proc.wait(timeout=5) == 0, proc.stderr.read()


def test_stop_kill_does_not_wait_for_a_clean_shutdown(running):
    proc, name = running("--kill-signal=SIGTERM", "/bin/sh", "-c", "trap '' TERM; sleep 60")
    started = time.monotonic()
    assert ctl("stop", name, "--kill", "--timeout=30").returncode == 0
    assert time.monotonic() - started < 10 and proc.poll() is not None
    assert "KILL" in proc.stderr.read()
