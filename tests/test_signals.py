"""SIGTERM (systemctl stop) at any moment of set-up — -U chown, network, cgroup split, boot —
ends as with nspawn: the container is stopped, the exit status is nspawn's and nothing is left
behind. Each start mode is stopped at many random moments after nspawnpy caught its signals.
"""

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

import testhost
from conftest import PYTHON, REPO, leftovers, processes_in_pid_namespace, skip_unless, wait_for

RUNS_PER_MODE = 12
SIGTERM_BIT = 1 << (signal.SIGTERM - 1)


def catches_sigterm(pid: int) -> bool:
    """The tool has taken charge of SIGTERM: caught (nspawnpy's main()) or blocked (nspawn)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("SigCgt:", "SigBlk:")) and int(line.split()[1], 16) & SIGTERM_BIT:
                    return True
    except FileNotFoundError:
        pass
    return False


def locked_the_tree(pid: int, root: Path) -> bool:
    """nspawnpy took the tree's flock, early in set-up (before the container exists)."""
    inode = os.stat(root).st_ino
    with open("/proc/locks") as f:
        return any(fields[4] == str(pid) and fields[5].endswith(f":{inode}")
                   for fields in (line.split() for line in f) if len(fields) > 5)


def processes_running(marker: str) -> list[int]:
    """The payloads `/bin/sleep MARKER` (not nspawnpy, whose command line names it too)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if f.read() == f"/bin/sleep\0{marker}\0".encode():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def own_leftovers(root: Path) -> list[str]:
    """leftovers() that belong to this tree's machine (other helpers' tests run meanwhile)."""
    machine = root.name
    return [item for item in leftovers() if machine in item or str(root) in item]


def stop_during_setup(root: Path, args: list[str], within: float, marker: str,
                      signum: int = signal.SIGTERM):
    """Start nspawnpy, SIGTERM it at a random moment in the first *within* seconds after it
    locked the tree (again after 3 s if the payload ignored the kill signal)."""
    # From a cgroup of its own: --keep-unit splits the caller's cgroup (payload/, supervisor/),
    # and concurrent runs from one cgroup would share those.
    with testhost.ScratchCgroup("sigterm") as cg:
        p = subprocess.Popen([PYTHON, "-m", "nspawnpy", "--register=no", "-q", *args, "-D",
                              str(root), "/bin/sleep", marker], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=cg.enter)
        wait_for(lambda: locked_the_tree(p.pid, root) or p.poll() is not None, step=0.001)
        time.sleep(random.uniform(0, within))
        p.send_signal(signum)
        try:
            _, err = p.communicate(timeout=3)
        except subprocess.TimeoutExpired:  # a booted init may not handle the kill signal yet
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=30)
        left = scratch_children(cg)
    return p.returncode, err + "".join(f"\nleft cgroup {d}" for d in left)


def big_tree(root: Path, files: int = 30000) -> None:
    """Enough inodes that shifting the tree's owners (-U chown) takes a while."""
    bulk = root / "usr/share/bulk"
    for i in range(files // 100):
        d = bulk / f"d{i}"
        d.mkdir(parents=True)
        for j in range(100):
            (d / f"f{j}").touch()


MODES = {
    "plain": (["--console=pipe"], 0.3),
    "as-pid2": (["--console=pipe", "-a"], 0.3),
    "pty-console": (["--console=read-only"], 0.3),
    "keep-unit": (["--console=pipe", "--keep-unit"], 0.3),
    "veth": (["--console=pipe", "-n"], 0.5),
    "userns-chown": (["--console=pipe", "--private-users-ownership=chown"], 0.6),
    "boot": (["--console=pipe", "-b"], 0.5),
}


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_at_any_moment_of_setup_stops_the_container_and_leaves_nothing(busybox_root, mode):
    args, within = MODES[mode]
    if mode == "userns-chown":
        big_tree(busybox_root)
    if mode == "boot":
        (busybox_root / "etc/inittab").write_text("::sysinit:/bin/sleep 3600\n")
    failures = []
    for run in range(RUNS_PER_MODE):
        extra = []
        if mode == "userns-chown":  # a new range each run, so each run shifts the whole tree
            extra = [f"--private-users={(0x100000 + 0x10000 * (run % 2))}:65536"]
        marker = f"{random.randint(10**6, 10**7)}"
        status, err = stop_during_setup(busybox_root, [*args, *extra], within, marker)
        expected = (0, 1) if mode == "boot" else (1,)  # a booted init may halt in time
        if status not in expected or (status == 1 and "terminated by signal KILL" not in err):
            failures.append(f"run {run}: status {status}: {err!r}")
        if mode == "boot":
            marker = "3600"
        try:
            wait_for(lambda: not processes_running(marker), timeout=10)
        except AssertionError:
            failures.append(f"run {run}: payload still running")
        left = own_leftovers(busybox_root)
        if left:
            failures.append(f"run {run}: left {left}")
    assert failures == []
    if mode == "userns-chown":  # never half-shifted: every inode belongs to one range
        owners = {os.lstat(os.path.join(d, name)).st_uid // 65536
                  for d, dirs, files in os.walk(busybox_root) for name in dirs + files}
        assert len(owners) == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP], ids=["SIGINT", "SIGHUP"])
def test_sigint_and_sighup_during_setup_stop_the_container_as_sigterm_does(busybox_root, signum):
    # nspawn 252 handles SIGINT so; it dies of SIGHUP and leaves the payload running (README).
    failures = []
    for run in range(RUNS_PER_MODE // 2):
        marker = f"{random.randint(10**6, 10**7)}"
        status, err = stop_during_setup(busybox_root, ["--console=pipe"], 0.3, marker, signum)
        if status != 1 or "terminated by signal KILL" not in err:
            failures.append(f"run {run}: status {status}: {err!r}")
        try:
            wait_for(lambda: not processes_running(marker), timeout=10)
        except AssertionError:
            failures.append(f"run {run}: payload still running")
        if own_leftovers(busybox_root):
            failures.append(f"run {run}: left {own_leftovers(busybox_root)}")
    assert failures == []


def test_sigterm_during_setup_exits_as_systemd_nspawn_does(busybox_root):
    skip_unless(testhost.systemd_nspawn(), "systemd-nspawn is not installed")
    for delay in (0.0, 0.01, 0.05, 0.2):
        results = []
        for tool in ([testhost.systemd_nspawn(), "--keep-unit"], [PYTHON, "-m", "nspawnpy"]):
            with testhost.ScratchCgroup("sigterm") as cg:
                p = subprocess.Popen([*tool, "--register=no", "-q", "--console=pipe", "-D",
                                      str(busybox_root), "/bin/sleep", "100"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=cg.enter,
                                     env={**os.environ, "PYTHONPATH": str(REPO)})
                wait_for(lambda: catches_sigterm(p.pid) or p.poll() is not None, step=0.001)
                time.sleep(delay)
                p.send_signal(signal.SIGTERM)
                _, err = p.communicate(timeout=20)
                testhost.clean_nspawn_runtime(busybox_root.name)
            lines = [line for line in err.splitlines() if not line.startswith("Attempted to remove")]
            results.append((p.returncode, lines))
        assert results[0] == results[1] == (1, [f"Container {busybox_root.name} terminated by "
                                                "signal KILL."])


# -- SIGKILL of the supervisor -------------------------------------------------------------

KILL_MODES = {
    "plain": [],
    "user": ["-u", "nobody"],
    "as-pid2": ["-a"],
    "boot": ["-b"],
    "userns": ["-U"],
    "keep-unit": ["--keep-unit"],
    "user-userns": ["-u", "nobody", "-U"],
    "user-keep-unit": ["-u", "nobody", "--keep-unit"],
    "as-pid2-user": ["-a", "-u", "nobody"],
    "as-pid2-userns-keep-unit": ["-a", "-U", "--keep-unit"],
    "boot-keep-unit": ["-b", "--keep-unit"],
    "boot-userns-keep-unit": ["-b", "-U", "--keep-unit"],
    "user-veth-ephemeral": ["-u", "nobody", "-n", "--ephemeral"],
}


def pid_namespace_of(marker: str) -> str:
    pids = wait_for(lambda: processes_running(marker), what=f"payload {marker}")
    return os.readlink(f"/proc/{pids[0]}/ns/pid")


def scratch_children(cg) -> list[str]:
    """What the run made below its (scratch) cgroup: --keep-unit's payload/ and supervisor/."""
    return [os.path.join(root, d) for top in cg.dirs for root, dirs, _ in os.walk(top) for d in dirs]


@pytest.mark.parametrize("mode", KILL_MODES)
def test_sigkill_of_the_supervisor_takes_the_container_and_leaves_nothing(busybox_root, mode):
    marker = f"{random.randint(10**6, 10**7)}"
    args = ["--console=pipe", *KILL_MODES[mode], "-D", str(busybox_root)]
    payload = [] if "-b" in args else ["/bin/sleep", marker]
    (busybox_root / "etc/inittab").write_text(f"::sysinit:/bin/sleep {marker}\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with testhost.ScratchCgroup("kill") as cg:
        p = subprocess.Popen([PYTHON, "-m", "nspawnpy", "--register=no", "-q", *args, *payload],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=env, preexec_fn=cg.enter)
        try:
            namespace = pid_namespace_of(marker)
        finally:
            p.kill()
            p.wait()
        wait_for(lambda: not processes_in_pid_namespace(namespace), timeout=15, what="the container's end")
        wait_for(lambda: own_leftovers(busybox_root) == [], timeout=15, what="clean-up")
        wait_for(lambda: scratch_children(cg) == [], timeout=15, what="cgroups removed")
        # The tree's lock went with it: it starts again at once.
        again = [a for a in args if a not in ("-b", "--ephemeral")] + ["/bin/true"]
        r = subprocess.run([PYTHON, "-m", "nspawnpy", "--register=no", "-q", *again],
                           capture_output=True, text=True, timeout=60, env=env, preexec_fn=cg.enter)
        assert r.returncode == 0, r.stderr
    assert own_leftovers(busybox_root) == []


# -- with registration (machined, inside the systemd test host) ---------------------------

# Runs inside the test host: start nspawnpy registered, SIGTERM it at a random moment after it
# locked the tree, and report its status, stderr and whether machined/systemd still list it.
STOP_REGISTERED = r'''
import json, os, random, signal, subprocess, sys, time
tree, name, runs, extra = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
inode = os.stat(tree).st_ino
def locked(pid):
    with open("/proc/locks") as f:
        return any(l.split()[4] == str(pid) and l.split()[5].endswith(f":{inode}") for l in f)
results = []
for run in range(runs):
    p = subprocess.Popen(["nspawnpy", "-q", "--console=pipe", *extra, "-D", tree, "-M", name,
                          "/bin/sleep", "100"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not locked(p.pid) and p.poll() is None:
        time.sleep(0.001)
    time.sleep(random.uniform(0, 0.5))
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    time.sleep(0.2)
    listed = subprocess.run(["machinectl", "show", name], capture_output=True).returncode == 0
    scope = subprocess.run(["systemctl", "is-active", "-q", f"machine-{name}.scope"]).returncode == 0
    sleeping = subprocess.run(["pgrep", "-x", "sleep"], capture_output=True).stdout.split()
    results.append([p.returncode, err, listed, scope, len(sleeping)])
print(json.dumps(results))
'''


@pytest.mark.parametrize("extra", [[], ["--keep-unit"]], ids=["scope", "keep-unit"])
def test_sigterm_during_registration_unregisters_and_stops(testhost, extra):
    import json
    name = f"sigreg{len(extra)}"
    tree = f"/var/lib/machines/{name}"
    import rootfs
    rootfs.busybox_tree(testhost.root / tree.lstrip("/"))
    command = ["python3", "-c", STOP_REGISTERED, tree, name, str(RUNS_PER_MODE), *extra]
    if extra:  # --keep-unit: from a unit of its own, as nspawnpy@.service runs it
        command = ["systemd-run", "--wait", "--pipe", "-q", "--property=Delegate=yes",
                   f"--unit=sigreg-{name}", *command]
    results = json.loads(testhost.run(command, timeout=300).stdout)
    expected = [1, f"Container {name} terminated by signal KILL.\n", False, False, 0]
    assert results == [expected] * RUNS_PER_MODE


def test_processes_are_signalled_only_through_pidfds():
    """A PID may have been reused by the time it is signalled; a pidfd names one process.
    Only signals to ourselves (os.kill(os.getpid(), ...)) go by number, and the --as-pid2
    stub's to its own child before reaping it (nspawn's stub holds no fd; neither does ours)."""
    import ast
    offenders = []
    for path in sorted((REPO / "nspawnpy").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("kill", "killpg")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "os"
                    and "getpid" not in ast.unparse(node.args[0])
                    and "unreaped child" not in path.read_text().splitlines()[node.lineno - 1]):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []


@pytest.mark.parametrize("mode", ["user", "userns", "as-pid2", "user-keep-unit"])
def test_sigkill_of_a_registered_supervisor_unregisters_and_ends_the_container(testhost, mode):
    import rootfs
    name = f"kill-{mode}"
    tree = f"/var/lib/machines/{name}"
    rootfs.busybox_tree(testhost.root / tree.lstrip("/"))
    options = {"user": "-u nobody", "userns": "-U", "as-pid2": "-a",
               "user-keep-unit": "-u nobody --keep-unit"}[mode]
    start = f"nspawnpy -q --console=pipe {options} -D {tree} -M {name} /bin/sleep 4711"
    if "--keep-unit" in options:  # from a unit of its own, as nspawnpy@.service runs it
        start = (f"systemd-run -q --unit=kill-{mode} --property=Delegate=yes "
                 f"--property=KillMode=none {start}")
    testhost.run(f"{start} >/dev/null 2>&1 </dev/null &")
    try:
        testhost.wait_until(f"machinectl show {name} -p State --value | grep -qx running")
        testhost.wait_until("pgrep -f '^/bin/sleep 4711$'")
        leader = testhost.run(["machinectl", "show", name, "-p", "Leader", "--value"]).stdout
        supervisor = testhost.run(["ps", "-o", "ppid=", "-p", leader.strip()]).stdout.strip()
        testhost.run(["kill", "-KILL", supervisor])  # not the janitor: its own fork
        testhost.wait_until(f"! machinectl show {name} >/dev/null 2>&1", timeout=20)
        testhost.wait_until("! pgrep -f '^/bin/sleep 4711$'", timeout=20)
        testhost.wait_until(f"! systemctl is-active -q machine-{name}.scope", timeout=20)
    finally:
        testhost.run(["machinectl", "kill", name, "-s", "KILL"], check=False)
        testhost.run(["systemctl", "stop", f"kill-{mode}.service"], check=False)
