"""Host-side helpers for the tests: scratch cgroups, the real systemd-nspawn, leftovers, and the
systemd *test host* (a Debian container booted with systemd-nspawn, see TESTHOST.md).

Test infrastructure may use systemd-nspawn; nspawnpy itself may not.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import hangdiag
import rootfs

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Cgroups made by the fixtures carry this prefix; leftovers() reports other nspawnpy* cgroups.
FIXTURE_CGROUP_PREFIX = "nspawnpy-fixture-"
NSPAWN_RUNTIME = Path("/run/systemd/nspawn")
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GUEST_ENV = {"PATH": GUEST_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb",
             "SYSTEMD_PAGER": "", "PAGER": "cat", "SYSTEMD_COLORS": "0"}
NSPAWNPY_WRAPPER = """\
#!/bin/sh
exec env PYTHONPATH=/opt/nspawnpy /usr/bin/python3 -m nspawnpy "$@"
"""
LINK_PREFIXES = ("ve-", "vb-", "vz-", "mv-", "iv-")


class CommandFailed(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return (f"{self.cmd!r} exited with {self.returncode}\n"
                f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}")


def check_result(r: subprocess.CompletedProcess, check) -> subprocess.CompletedProcess:
    """check=True: must be 0; check=int: must be that status; None/False: anything goes."""
    if check is None or check is False:
        return r
    want = 0 if check is True else check
    if r.returncode != want:
        raise CommandFailed(r.returncode, r.args, r.stdout, r.stderr)
    return r


# ---------------------------------------------------------------------------------------------
# cgroups


def _fstype(path: Path) -> str | None:
    """File system type of the mount at *path* (the topmost one), or None."""
    fstype = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            if _unescape(left.split()[4]) == str(path):
                fstype = right.split()[0]
    return fstype


def cgroup_hierarchies() -> list[tuple[Path, str]]:
    """(mount point, controller key in /proc/PID/cgroup) of the hierarchies nspawn uses:
    the unified one and, on legacy/hybrid hosts, the name=systemd one."""
    if _fstype(CGROUP_ROOT) == "cgroup2":
        return [(CGROUP_ROOT, "")]
    out = []
    if _fstype(CGROUP_ROOT / "systemd") == "cgroup":
        out.append((CGROUP_ROOT / "systemd", "name=systemd"))
    if _fstype(CGROUP_ROOT / "unified") == "cgroup2":
        out.append((CGROUP_ROOT / "unified", ""))
    return out


def own_cgroup(key: str, pid: int | str = "self") -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if ctrls == key:
                return path
    return "/"


class ScratchCgroup:
    """A cgroup of our own in every hierarchy systemd-nspawn looks at, for starting nspawn in
    (systemd-nspawn 252 --keep-unit leaves payload/supervisor cgroups next to itself)."""

    def __init__(self, label: str = "cg"):
        self.name = f"{FIXTURE_CGROUP_PREFIX}{label}-{os.getpid()}-{secrets.token_hex(3)}"
        self.dirs = [mnt / own_cgroup(key).lstrip("/") / self.name
                     for mnt, key in cgroup_hierarchies()]
        for d in self.dirs:
            d.mkdir()

    def enter(self) -> None:
        """Move the calling process in (usable as a Popen preexec_fn)."""
        for d in self.dirs:
            with open(d / "cgroup.procs", "w") as f:
                f.write("0")

    def pids(self) -> set[int]:
        pids: set[int] = set()
        for d in self.dirs:
            for root, _dirs, files in os.walk(d):
                if "cgroup.procs" in files:
                    with contextlib.suppress(OSError):
                        pids |= {int(p) for p in Path(root, "cgroup.procs").read_text().split()}
        return pids

    def kill_all(self, timeout: float = 10) -> set[int]:
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for p in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            killed |= pids
            time.sleep(0.05)
        return killed

    def remove(self) -> None:
        """Kill whatever is left inside and remove the cgroup with all its children."""
        self.kill_all()
        for d in self.dirs:
            if not d.exists():
                continue
            for root, dirs, _files in sorted(os.walk(d), key=lambda t: -len(t[0])):
                for attempt in range(50):
                    try:
                        os.rmdir(root)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:  # EBUSY while the last processes are reaped
                        time.sleep(0.05)
                else:
                    os.rmdir(root)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def reap_stale(scratch: Path = Path("/var/tmp")) -> list[str]:
    """Clean up after fixture owners that died without tearing down (SIGKILLed pytest):
    their scratch cgroups (killing what still runs there, e.g. an orphaned test host) and
    their /var/tmp/nspawnpy-test-* directories.  Only owners whose PID is gone are touched."""
    reaped = []
    pat = re.compile(re.escape(FIXTURE_CGROUP_PREFIX) + r"[a-z]+-(\d+)-[0-9a-f]{6}$")
    for mnt, key in cgroup_hierarchies():
        base = mnt / own_cgroup(key).lstrip("/")
        for d in base.glob(FIXTURE_CGROUP_PREFIX + "*"):
            m = pat.match(d.name)
            if m and not _pid_alive(int(m.group(1))):
                cg = ScratchCgroup.__new__(ScratchCgroup)
                cg.name, cg.dirs = d.name, [d]
                cg.remove()
                reaped.append(str(d))
    for d in scratch.glob("nspawnpy-test-*"):
        m = re.match(r"nspawnpy-test-[a-z]+-(\d+)-", d.name)
        if m and not _pid_alive(int(m.group(1))) and not leftovers(d):
            for sub in d.iterdir():
                with contextlib.suppress(OSError):
                    st = sub.stat()
                    (NSPAWN_RUNTIME / f"locks/inode-{st.st_dev}:{st.st_ino}").unlink(
                        missing_ok=True)
            rootfs.rmtree(d)
            reaped.append(str(d))
    for d in (NSPAWN_RUNTIME / "propagate").glob("testhost-*"):
        m = re.fullmatch(r"testhost-(?:v2-)?(\d+)", d.name)
        if m and not _pid_alive(int(m.group(1))):
            clean_nspawn_runtime(d.name)
            reaped.append(str(d))
    return reaped


# ---------------------------------------------------------------------------------------------
# The installed systemd-nspawn (for comparisons and for the test host)


def systemd_nspawn() -> str | None:
    return shutil.which("systemd-nspawn")


def nspawn_machine_name(args: list[str]) -> str | None:
    """The machine name systemd-nspawn will use for *args* (-M, else basename of -D)."""
    name = directory = None
    it = iter(args)
    for a in it:
        if a in ("-M", "--machine"):
            name = next(it, None)
        elif a.startswith("--machine="):
            name = a.split("=", 1)[1]
        elif a in ("-D", "--directory"):
            directory = next(it, None)
        elif a.startswith("--directory="):
            directory = a.split("=", 1)[1]
        elif a.startswith("-D") and len(a) > 2:
            directory = a[2:]
        elif not a.startswith("-"):
            break
    if name:
        return name
    if directory:
        return re.sub(r"[^a-zA-Z0-9.-]", "", os.path.basename(os.path.normpath(directory)))
    return None


def clean_nspawn_runtime(name: str | None) -> None:
    """Remove what systemd-nspawn 252 leaves in /run for machine *name* (/run is no tmpfs here)."""
    if not name:
        return
    for d in (NSPAWN_RUNTIME / "propagate" / name, NSPAWN_RUNTIME / "unix-export" / name):
        if d.is_dir() and not os.path.ismount(d):
            shutil.rmtree(d, ignore_errors=True)


def run_systemd_nspawn(args: list[str], *, input: str | None = None, timeout: float = 60,
                       check=None) -> subprocess.CompletedProcess:
    """Run the installed systemd-nspawn with *args* from a scratch cgroup, and clean up after
    it (cgroups, /run/systemd/nspawn/propagate/NAME).  Pass --register=no --keep-unit yourself
    (there is no bus here)."""
    exe = systemd_nspawn()
    if exe is None:
        raise FileNotFoundError("systemd-nspawn is not installed (apt-get install systemd-container)")
    cmd = [exe, *args]
    with ScratchCgroup("nspawn") as cg:
        try:
            r = hangdiag.run(cmd, timeout, input=input, cgroups=cg.dirs, preexec_fn=cg.enter,
                             stdin=None if input is not None else subprocess.DEVNULL)
        finally:
            clean_nspawn_runtime(nspawn_machine_name(args))
    return check_result(r, check)


# ---------------------------------------------------------------------------------------------
# leftovers


def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def wait_for(condition, timeout: float = 30.0, step: float = 0.05, what: str = "condition"):
    """Poll *condition* until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def loop_devices(roots: list[str]) -> list[str]:
    """Attached loop devices whose backing file lies below one of *roots*."""
    found = []
    for backing in sorted(Path("/sys/block").glob("loop*/loop/backing_file")):
        with contextlib.suppress(OSError):
            path = backing.read_text().strip()
            if any(path.startswith(r + "/") for r in roots):
                found.append(f"loop device {backing.parent.parent.name} ({path})")
    return found


def leftovers(under: str | Path | None = None) -> list[str]:
    """Describe what nspawnpy runs may have left on the host: mounts below /var/tmp, /tmp or
    /run/nspawnpy, ve-/vb-/vz-/mv-/iv- network links, nspawnpy* cgroups (except the
    fixtures' own), loop devices backed by a file below those directories or
    /var/lib/machines, and -i's mount point directories (/tmp/nspawnpy-root-*).  With
    *under*, only mounts and loop devices below that path count.  Tests assert ``== []``."""
    found: list[str] = []
    roots = [str(under).rstrip("/")] if under else ["/var/tmp", "/tmp", "/run/nspawnpy"]
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            mp = _unescape(left.split()[4])
            if any(mp == r or mp.startswith(r + "/") for r in roots):
                found.append(f"mount {mp} ({right.split()[0]})")
    found += loop_devices(roots if under else roots + ["/var/lib/machines"])
    if under:
        return found
    found += [f"image mount point /tmp/{name}" for name in sorted(os.listdir("/tmp"))
              if name.startswith("nspawnpy-root-")]
    with contextlib.suppress(FileNotFoundError):
        for link in sorted(os.listdir("/sys/class/net")):
            if link.startswith(LINK_PREFIXES):
                found.append(f"link {link}")
    seen: set[Path] = set()
    for mnt in sorted(p for p in CGROUP_ROOT.iterdir() if p.is_dir()) if CGROUP_ROOT.is_dir() else []:
        real = mnt.resolve()
        if real in seen:
            continue
        seen.add(real)
        for root, dirs, _files in os.walk(mnt):
            for d in list(dirs):
                if d.startswith(FIXTURE_CGROUP_PREFIX):
                    dirs.remove(d)
                elif d.startswith("nspawnpy"):
                    found.append(f"cgroup {os.path.join(root, d)}")
                    dirs.remove(d)
    return found


# ---------------------------------------------------------------------------------------------
# The test host


class TestHost:
    """A Debian bookworm test host booted with systemd-nspawn, with the checkout at /opt/nspawnpy
    (read-only) and /usr/local/bin/nspawnpy.  Use .run() to run commands inside (nsenter)."""

    __test__ = False  # not a pytest test class

    def __init__(self, repo: Path, workdir: Path, machine: str | None = None,
                 unified: bool = False):
        self.repo = Path(repo)
        # unified=True: nspawn gives the test host a pure cgroup v2 tree
        # (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1) instead of this machine's hybrid layout.
        self.unified = unified
        self.workdir = Path(workdir)
        self.root = self.workdir / "root"
        # The owner's PID in the name lets reap_stale() clean up after a killed session.
        self.machine = machine or f"testhost-{'v2-' if unified else ''}{os.getpid()}"
        self.log_path = self.workdir / "console.log"
        self.proc: subprocess.Popen | None = None
        self.leader: int | None = None
        self.cgroup: ScratchCgroup | None = None
        self.timings: dict[str, float] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, boot_timeout: float = 60) -> "TestHost":
        exe = systemd_nspawn()
        if exe is None:
            raise FileNotFoundError("systemd-nspawn is not installed")
        t0 = time.monotonic()
        rootfs.testhost_tree(self.root)
        self.timings["restore"] = time.monotonic() - t0
        wrapper = self.root / "usr/local/bin/nspawnpy"
        wrapper.parent.mkdir(parents=True, exist_ok=True)
        wrapper.write_text(NSPAWNPY_WRAPPER)
        wrapper.chmod(0o755)
        (self.root / "opt/nspawnpy").mkdir(parents=True, exist_ok=True)

        self.cgroup = ScratchCgroup("testhost")
        cmd = [exe, "-b", "-D", str(self.root), "-M", self.machine, "--register=no",
               "--keep-unit", "--console=read-only", "--private-network",
               f"--bind-ro={self.repo}:/opt/nspawnpy"]
        t0 = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, preexec_fn=self.cgroup.enter,
                                         env={"PATH": os.environ.get("PATH", GUEST_PATH),
                                              "LANG": "C.UTF-8",
                                              **({"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
                                                 if self.unified else {})})
        deadline = t0 + boot_timeout
        self.leader = self._find_leader(deadline)
        state = ""
        while time.monotonic() < deadline:
            r = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"test host not up after {boot_timeout}s (state {state!r})\n"
                               + self.console())
        if state not in ("running", "degraded"):
            raise RuntimeError(f"test host failed to boot (state {state!r}, nspawn "
                               f"{self.proc.returncode})\n" + self.console())
        self.timings["boot"] = time.monotonic() - t0
        return self

    def _find_leader(self, deadline: float) -> int:
        assert self.proc is not None
        ours = os.readlink("/proc/self/ns/pid")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited with {self.proc.returncode}\n"
                                   + self.console())
            with contextlib.suppress(OSError):
                kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
                for k in kids.split():
                    with contextlib.suppress(OSError):
                        if (os.readlink(f"/proc/{k}/ns/pid") != ours
                                and Path(f"/proc/{k}/comm").read_text().strip() == "systemd"):
                            return int(k)
            time.sleep(0.02)
        raise RuntimeError("no container leader found\n" + self.console())

    def console(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30) -> list[str]:
        """Power off, wait, kill leftovers, remove cgroup, runtime leftovers and the tree.
        Returns a list of problems found on the way (empty when all was clean)."""
        problems: list[str] = []
        t0 = time.monotonic()
        if self.proc is not None and self.proc.poll() is None:
            if self.leader:
                with contextlib.suppress(Exception):
                    self.run(["systemctl", "poweroff"], check=False, timeout=10)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                problems.append(f"test host did not power off within {timeout}s")
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self.timings["stop"] = time.monotonic() - t0
        if self.cgroup is not None:
            killed = self.cgroup.kill_all()
            if killed:
                problems.append(f"processes left in the test host cgroup: {sorted(killed)}")
            self.cgroup.remove()
            self.cgroup = None
        clean_nspawn_runtime(self.machine)
        with contextlib.suppress(OSError):
            st = os.stat(self.root)
            Path(NSPAWN_RUNTIME / f"locks/inode-{st.st_dev}:{st.st_ino}").unlink(missing_ok=True)
        mounts = leftovers(self.workdir)
        if mounts:
            problems.append(f"mounts left: {mounts}")
        else:
            rootfs.rmtree(self.workdir)
        return problems

    # -- inside -------------------------------------------------------------------------------

    def nsenter(self) -> list[str]:
        assert self.leader
        return ["nsenter", "-t", str(self.leader), "-a", "-r", "-w"]

    def run(self, cmd: str | list[str], timeout: float = 60, check=True,
            input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run *cmd* (a shell string or an argv list) inside the test host via nsenter."""
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        r = subprocess.run([*self.nsenter(), *argv], input=input, text=True,
                           capture_output=True, timeout=timeout,
                           stdin=None if input is not None else subprocess.DEVNULL,
                           env={**GUEST_ENV, **(env or {})})
        r.args = argv
        return check_result(r, check)

    def stop_unit(self, unit: str, timeout: float = 60) -> None:
        """Stop a unit inside and forget its failure, whatever state it is in."""
        self.run(["systemctl", "stop", unit], check=False, timeout=timeout)
        self.run(["systemctl", "reset-failed", unit], check=False)

    def wait_until(self, check: str, timeout: float = 30) -> str:
        """Run the shell snippet *check* in the test host until it succeeds; its output."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.run(check, check=False, timeout=30)
            if r.returncode == 0:
                return r.stdout
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for: {check}\n{r.stdout}{r.stderr}")
            time.sleep(0.2)

    def install_units(self) -> list[str]:
        """Install /opt/nspawnpy/units/* into /etc/systemd/{system,network} and daemon-reload.
        Returns the installed names."""
        src = self.repo / "units"
        installed = []
        for f in sorted(src.iterdir()) if src.is_dir() else []:
            if f.name.startswith("."):
                continue
            kind = "network" if f.suffix in (".network", ".netdev", ".link") else "system"
            dest = self.root / "etc/systemd" / kind / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            if f.is_dir():
                shutil.copytree(f, dest)
            else:
                shutil.copy2(f, dest)
            installed.append(f.name)
        self.run(["systemctl", "daemon-reload"])
        return installed
