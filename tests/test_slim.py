"""The settled supervisor's exec into its slim loop (supervisor/handover.py, slim.py): with
--keep-unit, a second after the go-ahead the supervisor is a fresh interpreter (no ctypes
mapped) with the same PID, name and command line, and from then on everything behaves as
before: exit statuses, signals, the console, nspawnpyctl, sd_notify, and no trace after any
end, also after a SIGKILL at any moment around the exec."""

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import termios
import time
from pathlib import Path

import pytest

import testhost
from conftest import PYTHON, REPO, leftovers, processes_in_pid_namespace, wait_for

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
STATE = Path("/run/nspawnpy/machines")
HOST_PYTHON = ("--bind-ro=/usr",)   # with lib -> usr/lib links the tree runs the host's python3


def maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def catches_sigterm(pid: int) -> bool:
    """The slim image has its handlers in (an image mid-exec has none, and no command line)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return bool(int(fields["SigCgt"], 16) & (1 << (signal.SIGTERM - 1))) \
        and not int(fields["SigBlk"], 16) & (1 << (signal.SIGTERM - 1))


def slimmed(proc: subprocess.Popen, timeout: float = 15) -> dict:
    """Wait until the supervisor has set up (ctypes mapped), then until it runs its slim image
    (ctypes gone); returns what it was before: comm, cmdline."""
    wait_for(lambda: "_ctypes" in maps(proc.pid) or proc.poll() is not None, timeout=timeout,
             step=0.005, what="the set-up image")
    before = {"comm": Path(f"/proc/{proc.pid}/comm").read_text(),
              "cmdline": Path(f"/proc/{proc.pid}/cmdline").read_bytes()}
    wait_for(lambda: ("_ctypes" not in maps(proc.pid) and catches_sigterm(proc.pid))
             or proc.poll() is not None, timeout=timeout, what="the slim image")
    assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
    return before


def own_leftovers(root: Path, name: str = "") -> list[str]:
    return [item for item in leftovers() if root.name in item or str(root) in item
            or (name and name in item)]


def traces(root: Path) -> list[str]:
    """What leftovers() does not look at: the machine's record and tunnel, ephemeral layers."""
    return [str(p) for p in (*STATE.glob(f"{root.name}*"),
                             *Path("/run/systemd/nspawn/propagate").glob(f"{root.name}*"),
                             *root.parent.glob(".#*"))]


def scratch_children(cg) -> list[str]:
    return [os.path.join(r, d) for top in cg.dirs for r, dirs, _ in os.walk(top) for d in dirs]


@contextlib.contextmanager
def service(root: Path, *args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=None,
            name: str | None = None, program: Path | None = None):
    """nspawnpy --keep-unit (the service case) from a scratch cgroup, run as `python3 -m
    nspawnpy` or as *program* (a launcher); after the block its cgroups, and everything else
    of the machine, must be gone."""
    name = name or root.name
    command = [str(program)] if program else [PYTHON, "-m", "nspawnpy"]
    with testhost.ScratchCgroup("slim") as cg:
        proc = subprocess.Popen(
            [*command, "--register=no", "-q", "--keep-unit", "-M", name, "-D", str(root), *args],
            stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, env={**ENV, **(env or {})},
            preexec_fn=cg.enter)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=60)
            wait_for(lambda: scratch_children(cg) == [], timeout=15, what="cgroups removed")
    wait_for(lambda: own_leftovers(root, name) == [], timeout=15, what="clean-up")


def test_a_settled_supervisor_is_a_fresh_image_with_the_same_pid_name_and_command_line(
        busybox_root):
    go = busybox_root / "slim-go"
    script = "while [ ! -e /slim-go ]; do sleep 0.05; done; echo payload-$((6*7)); exit 7"
    with service(busybox_root, "--console=read-only", "/bin/sh", "-c", script) as proc:
        before = slimmed(proc)
        pid = proc.pid
        assert Path(f"/proc/{pid}/comm").read_text() == before["comm"]
        assert Path(f"/proc/{pid}/cmdline").read_bytes() == before["cmdline"]
        assert "/nspawnpy/plan/" not in maps(pid) and "libseccomp" not in maps(pid)
        record = (STATE / busybox_root.name).read_text()
        assert f"SUPERVISOR={pid}\n" in record
        go.touch()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 7, err
    assert out.decode() == "payload-42\r\n" and err == b""  # through a pty


@pytest.mark.parametrize("boot", [False, True], ids=["command", "boot"])
def test_sigterm_of_a_settled_supervisor_stops_the_container_as_before(busybox_root, boot):
    args = ("--console=pipe", "-b") if boot else ("--console=pipe", "/bin/sleep", "60")
    results = []
    for settle in (False, True):
        with service(busybox_root, *args) as proc:
            if settle:
                slimmed(proc)
            else:
                wait_for(lambda: (STATE / busybox_root.name).exists(), what="the record")
            proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)  # a second one kills, as with nspawn
                _, err = proc.communicate(timeout=20)
            results.append((proc.returncode, err.decode()))
    assert results[1] == results[0]


def test_sigterm_of_a_settled_supervisor_shuts_a_debian_guest_down(debian_root):
    with service(debian_root, "--console=pipe", "-b") as proc:
        slimmed(proc, timeout=60)
        time.sleep(2)  # well into the guest's start-up
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err


def test_an_interactive_console_keeps_relaying_and_three_escapes_kill(busybox_root):
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    script = "read line; echo got-$line; sleep 60"
    try:
        with service(busybox_root, "--console=interactive", "/bin/sh", "-c", script,
                     stdin=slave, stdout=slave) as proc:
            slimmed(proc)
            os.write(master, b"hello\r")
            seen = b""
            deadline = time.monotonic() + 15
            while b"got-hello" not in seen and time.monotonic() < deadline:
                seen += os.read(master, 4096)
            assert b"got-hello" in seen
            os.write(master, b"\x1d\x1d\x1d")
            proc.wait(timeout=15)
        assert termios.tcgetattr(slave) == before   # the caller's terminal as it was
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("options", [(), ("-U",), ("--ephemeral",)], ids=["", "U", "ephemeral"])
def test_sigkill_of_the_slim_supervisor_leaves_no_trace(busybox_root, options):
    with service(busybox_root, "--console=pipe", *options, "/bin/sleep", "60") as proc:
        slimmed(proc)
        path = next(STATE.glob(f"{busybox_root.name}*"))  # --ephemeral: NAME-suffix
        record = dict(line.split("=", 1) for line in path.read_text().splitlines())
        pids = processes_in_pid_namespace_of(proc.pid)
        proc.kill()
        proc.wait()
        wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in pids), timeout=15,
                 what="the container's end")
    # Besides leftovers(): the record, the tunnel, the UID range's lock, the ephemeral layer.
    assert traces(busybox_root) == []
    if record["USERNS_BASE"]:
        assert not Path(f"/run/systemd/nspawn-uid/{record['USERNS_BASE']}").exists()
    assert [p.name for p in busybox_root.parent.iterdir() if p.name.startswith(".#")] == []


def processes_in_pid_namespace_of(supervisor: int) -> list[int]:
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    for child in children:
        namespace = os.readlink(f"/proc/{child}/ns/pid")
        if namespace != os.readlink("/proc/self/ns/pid"):
            return processes_in_pid_namespace(namespace)
    return []


def test_sigkill_at_any_moment_around_the_exec_leaves_no_trace(busybox_root):
    """kill -9 between 0.6 and 1.6 s after the record is published: before, during and after
    the exec, and while the slim image forks its janitor."""
    for _ in range(24):
        with service(busybox_root, "--console=pipe", "/bin/sleep", "60") as proc:
            wait_for(lambda: (STATE / busybox_root.name).exists() or proc.poll() is not None,
                     step=0.005, what="the record")
            time.sleep(random.uniform(0.6, 1.6))
            proc.kill()
            proc.wait()
        assert own_leftovers(busybox_root) == []
        wait_for(lambda: traces(busybox_root) == [], timeout=15, what="the janitor")


def test_sigterm_at_any_moment_around_the_exec_is_never_lost(busybox_root):
    """SIGTERM between 0.6 and 1.6 s after the record is published (before, during and after
    the exec, with the signals blocked over it) stops the container as it does at any other
    time: the same status and words, promptly, nothing left."""
    outcomes = set()
    for _ in range(16):
        with service(busybox_root, "--console=pipe", "/bin/sleep", "60") as proc:
            wait_for(lambda: (STATE / busybox_root.name).exists() or proc.poll() is not None,
                     step=0.005, what="the record")
            time.sleep(random.uniform(0.6, 1.6))
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=10)   # a lost signal would hang here
            outcomes.add((proc.returncode, err.decode()))
    assert len(outcomes) == 1, outcomes


def ctl(*args):
    return subprocess.run([PYTHON, "-m", "nspawnpy.ctl", *map(str, args)], capture_output=True,
                          text=True, timeout=60, env=ENV, stdin=subprocess.DEVNULL)


def test_nspawnpyctl_lists_inspects_attaches_to_and_stops_a_settled_machine(busybox_root):
    name = f"slimctl-{os.getpid()}"
    with service(busybox_root, "--console=pipe", "-b", name=name) as proc:
        slimmed(proc)
        rows = {m["name"]: m for m in json.loads(ctl("list", "--json=short").stdout)}
        assert name in rows
        info = ctl("info", name)
        assert info.returncode == 0 and name in info.stdout, info.stderr
        assert ctl("attach", name, "--", "/bin/sh", "-c", "echo in; exit 3").returncode == 3
        r = ctl("stop", name, "--timeout=20")
        assert r.returncode == 0, r.stderr
        assert proc.wait(timeout=10) == 0, proc.stderr.read()


def test_the_payloads_ready_is_passed_on_after_the_exec(busybox_root, tmp_path):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    send = ("import os, socket, time\nwhile not os.path.exists('/slim-go'): time.sleep(0.05)\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
            "s.sendto(b'STATUS=almost\\nREADY=1', '/run/host/notify'); time.sleep(1)")
    got = []
    for link in ("lib", "lib64"):  # the host's python3 from its /usr
        (busybox_root / link).symlink_to(f"usr/{link}")
    try:
        with service(busybox_root, "--console=pipe", "--notify-ready=yes", *HOST_PYTHON,
                     "/usr/bin/python3", "-c", send, env={"NOTIFY_SOCKET": path}) as proc:
            slimmed(proc)
            (busybox_root / "slim-go").touch()
            while proc.poll() is None:
                with contextlib.suppress(socket.timeout):
                    got.append(sock.recv(4096).decode())
            assert proc.returncode == 0, proc.stderr.read()
    finally:
        sock.close()
    assert "STATUS=almost" in got
    assert any("READY=1" in m.split("\n") for m in got), got


def launcher(directory: Path) -> Path:
    """A `#!` launcher like the installed /usr/bin/nspawnpy, running this checkout."""
    path = directory / "nspawnpy"
    path.write_text(f"#!{PYTHON} -IS\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
                    "from nspawnpy.__main__ import run_and_exit\nrun_and_exit()\n")
    path.chmod(0o755)
    return path


def test_a_launchers_name_and_command_line_survive_the_exec(busybox_root, tmp_path):
    program = launcher(tmp_path)
    with service(busybox_root, "--console=pipe", "/bin/sh", "-c", "sleep 2; exit 5",
                 program=program) as proc:
        before = slimmed(proc)
        assert before["comm"] == "nspawnpy\n"
        assert Path(f"/proc/{proc.pid}/comm").read_text() == "nspawnpy\n"
        assert Path(f"/proc/{proc.pid}/cmdline").read_bytes() == before["cmdline"]
        assert proc.wait(timeout=30) == 5, proc.stderr.read()


def test_a_failed_exec_carries_on_in_the_set_up_image(busybox_root, tmp_path):
    program = launcher(tmp_path)
    with service(busybox_root, "--console=pipe", "/bin/sh", "-c", "sleep 2.5; exit 6",
                 program=program) as proc:
        wait_for(lambda: (STATE / busybox_root.name).exists(), step=0.005, what="the record")
        program.chmod(0o644)  # the exec fails: EACCES
        time.sleep(1.5)
        assert "_ctypes" in maps(proc.pid)   # still the set-up image
        assert proc.wait(timeout=30) == 6, proc.stderr.read()
        assert proc.stderr.read() == b""


def test_with_a_stub_init_the_supervisor_keeps_its_set_up_image(busybox_root):
    # -a's stub shares the set-up image's pages with us; after our exec it would hold them alone
    with service(busybox_root, "--console=pipe", "-a", "/bin/sh", "-c", "sleep 2.5; exit 5") as proc:
        wait_for(lambda: (STATE / busybox_root.name).exists(), step=0.005, what="the record")
        time.sleep(1.8)
        assert "_ctypes" in maps(proc.pid)
        assert proc.wait(timeout=30) == 5, proc.stderr.read()


def test_the_handover_crosses_as_typed_records_and_refuses_anything_else():
    from nspawnpy.supervisor import handover as h
    from nspawnpy.supervisor.cleanups import Cleanup
    from nspawnpy.supervisor.console import RelayState
    record = h.Handover(
        "web", h.LoopSettings(True, True, None, True, False), 42, 5, 6, 7, None,
        RelayState(8, "interactive", 9, [1, 2, 3, 4, 5, 6, [b"\x03", 0]], (1.5,), False, True),
        None, False, None, 43, 10,
        (Cleanup("tunnel", ("/run/x", 11), (11,)), Cleanup("record", ("web", 42))), (12,))
    again = h.decode(h.encode(record))
    assert repr(again) == repr(record)
    assert sorted(h.carried_fds(again)) == [5, 6, 7, 8, 9, 10, 11, 12]
    for bad in (b"", b"junk", __import__("marshal").dumps((0, (), ()))):
        with pytest.raises(ValueError):
            h.decode(bad)


def test_a_settled_supervisor_on_a_disk_image_keeps_its_lock_and_leaves_nothing(tmp_path):
    import diskimage
    import rootfs
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("no loop devices here (/dev/loop-control)")
    if subprocess.run(["which", "mkfs.ext4"], capture_output=True).returncode != 0:
        pytest.skip("mkfs.ext4 is missing (e2fsprogs)")
    image = diskimage.ext4(tmp_path / "slim.raw", rootfs.busybox_tree(tmp_path / "tree"))
    with testhost.ScratchCgroup("slim") as cg:
        proc = subprocess.Popen([PYTHON, "-m", "nspawnpy", "--register=no", "-q", "--keep-unit",
                                 "--console=pipe", "-i", str(image), "/bin/sleep", "60"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=ENV, preexec_fn=cg.enter)
        try:
            slimmed(proc)
            second = subprocess.run([PYTHON, "-m", "nspawnpy", "--register=no", "-q",
                                     "--console=pipe", "-i", str(image), "/bin/true"],
                                    capture_output=True, text=True, env=ENV, timeout=60)
            assert second.stderr.strip() == f"Disk image {image} is currently busy."
        finally:
            proc.kill()
            proc.wait()
        wait_for(lambda: scratch_children(cg) == [], timeout=15, what="cgroups removed")
    wait_for(lambda: leftovers(str(tmp_path)) == [], timeout=15, what="loop devices to go")
