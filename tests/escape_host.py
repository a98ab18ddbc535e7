"""The host side of the escape suite (tests/test_escape.py): what the container must not
touch, set up by the test, and the checks that notice when it did (and undo it)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

from escape import probe
from testhost import FIXTURE_CGROUP_PREFIX, systemd_nspawn

PYTHON = "/usr/bin/python3"
CANARY_TEXT = "canary\n"



_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
NR_ADD_KEY, NR_KEYCTL, NR_NAME_TO_HANDLE_AT = 248, 250, 303
KEY_SPEC_USER_KEYRING, KEYCTL_SEARCH, KEYCTL_INVALIDATE = -4, 10, 21


def _syscall(nr, *args):
    conv = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return _libc.syscall(ctypes.c_long(nr), *conv)


def _ident(path) -> list[int]:
    st = os.stat(path)
    return [st.st_dev, st.st_ino]


def _file_handle(path: str) -> list:
    """[handle_type, hex bytes] of name_to_handle_at(2) for *path*."""
    h = probe.FileHandle(128, 0)
    mount_id = ctypes.c_int()
    if _syscall(NR_NAME_TO_HANDLE_AT, -100, ctypes.c_char_p(path.encode()), ctypes.byref(h),
                ctypes.byref(mount_id), 0) != 0:
        raise OSError(ctypes.get_errno(), "name_to_handle_at")
    return [h.handle_type, bytes(h.f_handle[:h.handle_bytes]).hex()]


def _mount_of(path: str) -> tuple[str, str]:
    """(mount point, fs type) of the mount holding *path*."""
    best = ("/", "")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            mp = left.split()[4]
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best[0]):
                best = (mp, right.split()[0])
    return best


def _cgroup_roots() -> list[Path]:
    roots, seen = [], set()
    for d in sorted(Path("/sys/fs/cgroup").iterdir()):
        if d.is_dir() and not d.is_symlink() and (d / "cgroup.procs").exists():
            real = d.resolve()
            if real not in seen:
                seen.add(real)
                roots.append(d)
    if (Path("/sys/fs/cgroup") / "cgroup.procs").exists():
        roots.append(Path("/sys/fs/cgroup"))
    return roots


class Host:
    """What the attempts aim at, set up on the host by the test, and the checks that see them."""

    def __init__(self, scratch: Path, tree: Path):
        self.scratch, self.tree = scratch, tree
        self.token = os.urandom(4).hex()
        self.canary = scratch / "canary"
        self.canary.write_text(CANARY_TEXT)
        self.hostname = socket.gethostname()
        self.knobs = {p: Path(p).read_text() for p in self._knob_paths()}
        # What the probe writes to the numeric knobs: ours alone, so that a concurrent run
        # of this suite, whose writes land here too, is not taken for our container's.
        self.knob_value = 20000 + int(self.token[:4], 16) % 10000
        self.swaps = Path("/proc/swaps").read_text()
        self.clock_offset = time.time() - time.monotonic()
        self.dummy = self._start_dummy()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(f"\0nspawnpy-escape-{self.token}")
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.key_desc = f"nspawnpy-escape-{self.token}"
        self.key_id = _syscall(NR_ADD_KEY, b"user", self.key_desc.encode(), b"secret", 6,
                               KEY_SPEC_USER_KEYRING)
        self.cgroup_name = (f"{FIXTURE_CGROUP_PREFIX}esccanary-{os.getpid()}-"
                            f"{self.token[:6]}")
        self.cgroups = [root / self.cgroup_name for root in _cgroup_roots()]
        for d in self.cgroups:
            d.mkdir()
        self.hostbin = scratch / "hostbin"
        self.hostbin.mkdir(mode=0o755)
        suid = self.hostbin / "py-suid"
        shutil.copy(tree / "usr/bin/python3.11", suid)
        os.chown(suid, 0, 0)
        os.chmod(suid, 0o4755)
        self.world_writable = self.hostbin / "world-writable"
        self.world_writable.write_text(CANARY_TEXT)
        self.world_writable.chmod(0o666)
        self.kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    @staticmethod
    def _knob_paths() -> list[str]:
        paths = [f"/proc/sys/{probe.PRINTK_BURST}", f"/sys/{probe.KSM_PAGES}",
                 "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe"]
        paths += [str(root / "release_agent") for root in _cgroup_roots()
                  if (root / "release_agent").exists()]
        return [p for p in paths if os.path.exists(p)]

    def _start_dummy(self) -> subprocess.Popen:
        return subprocess.Popen([PYTHON, "-c", "import time; time.sleep(3600)", self.token],
                                stdin=subprocess.DEVNULL)

    def config(self, pty: int | None = None) -> dict:
        mountpoint, fstype = _mount_of(str(self.canary))
        st = os.stat(self.canary)
        binaries = [os.path.realpath(PYTHON), os.path.realpath(sys.executable)]
        binaries += [os.path.realpath(p) for p in [systemd_nspawn()] if p]
        return {
            "token": self.token,
            "knob_value": self.knob_value,
            "canary": str(self.canary),
            "canary_id": _ident(self.canary),
            "canary_rel": "/" + os.path.relpath(self.canary, mountpoint),
            "canary_handle": _file_handle(str(self.canary)),
            "host_fsroot_id": _ident(mountpoint),
            "host_disk": [os.major(st.st_dev), os.minor(st.st_dev)],
            "host_fstype": fstype,
            "host_ns": {t: _ident(f"/proc/self/ns/{t}") for t in probe.NS_TYPES
                        if os.path.exists(f"/proc/self/ns/{t}")},
            "host_binaries": [[*_ident(b), b] for b in sorted(set(binaries))],
            "dummy_pid": self.dummy.pid,
            "abstract": f"nspawnpy-escape-{self.token}",
            "key_desc": self.key_desc,
            "key_planted": f"nspawnpy-escape-planted-{self.token}",
            "cgroup_canaries": ["/" + self.cgroup_name],
            "suid_binary": "/escape-host/py-suid",
            "host_pty": _ident(f"/proc/self/fd/{pty}") if pty is not None else None,
        }

    def start_run(self, group: str) -> None:
        os.lseek(self.kmsg, 0, os.SEEK_END)

    def check(self, attempt: str) -> list[tuple[str, str]]:
        """What the last attempt changed on the host, as (outcome, description); undone."""
        found = [(probe.ESCAPED, c) for check in (
            self._check_canary, self._check_hostname, self._check_knobs, self._check_dummy,
            self._check_kmsg, self._check_listener, self._check_keyring, self._check_cgroups,
            self._check_swap_and_clock) for c in check()]
        if attempt == "suid_file_created_in_tree":
            found += self._check_suid_copy()
        return found

    def _check_canary(self):
        for path in (self.canary, self.world_writable):
            text = path.read_text()
            if text != CANARY_TEXT:
                path.write_text(CANARY_TEXT)
                yield f"host file {path.name} written: {text[len(CANARY_TEXT):]!r}"
        marker = self.tree / probe.READ_ONLY_MARKER.lstrip("/")
        if marker.exists():
            marker.unlink()
            yield "file written to a --read-only tree"

    def _check_hostname(self):
        if socket.gethostname() != self.hostname:
            name = socket.gethostname()
            socket.sethostname(self.hostname)
            yield f"host name changed to {name}"

    def _check_knobs(self):
        """Our value in a numeric knob, or any change to the others (which the probe writes
        with their own values)."""
        for path, value in self.knobs.items():
            now = Path(path).read_text()
            numeric = value.strip().isdigit()
            if now.strip() == str(self.knob_value) or (not numeric and now != value):
                Path(path).write_text(value if value.strip() else "\n")
                yield f"{path} changed from {value!r} to {now!r}"

    def _check_dummy(self):
        if self.dummy.poll() is not None:
            self.dummy = self._start_dummy()
            yield "host dummy process killed"
            return
        status = Path(f"/proc/{self.dummy.pid}/status").read_text()
        tracer = next(l.split()[1] for l in status.splitlines() if l.startswith("TracerPid:"))
        if tracer != "0":
            yield f"host dummy process traced by {tracer}"

    def _check_kmsg(self):
        while True:
            try:
                record = os.read(self.kmsg, 8192).decode(errors="replace")
            except BlockingIOError:
                return
            except BrokenPipeError:   # the ring buffer wrapped: read on
                continue
            if self.token in record or "sysrq: HELP" in record:
                yield f"host kernel log got: {record.split(';', 1)[-1].strip()}"

    def _check_listener(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    msg = conn.recv(200).decode(errors="replace")
            yield f"abstract socket in the host's network namespace reached ({msg})"

    def _check_keyring(self):
        planted = f"nspawnpy-escape-planted-{self.token}".encode()
        key = _syscall(NR_KEYCTL, KEYCTL_SEARCH, KEY_SPEC_USER_KEYRING, b"user", planted, 0)
        if key >= 0:
            _syscall(NR_KEYCTL, KEYCTL_INVALIDATE, key)
            yield "key planted in host root's user keyring"

    def _check_cgroups(self):
        for d in self.cgroups:
            for child in sorted((p for p in d.rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):
                    child.rmdir()
                yield f"cgroup made in the host's {child}"
            nor = d / "notify_on_release"
            if nor.exists() and nor.read_text().strip() != "0":
                nor.write_text("0")
                yield f"{nor} set"
            procs = (d / "cgroup.procs").read_text().split()
            if procs:
                yield f"processes {procs} moved into the host's {d}"

    def _check_swap_and_clock(self):
        if Path("/proc/swaps").read_text() != self.swaps:
            yield "host swap changed"
        if abs(time.time() - time.monotonic() - self.clock_offset) > 5:
            yield "host clock changed"

    def _check_suid_copy(self):
        path = self.tree / probe.WORK.lstrip("/") / "suid-copy"
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(path)
            path.unlink()
            if st.st_uid == 0 and st.st_mode & stat.S_ISUID:
                yield probe.REACHED, "setuid file owned by the host's root on the host disk"

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.dummy.kill()
            self.dummy.wait()
        self.listener.close()
        os.close(self.kmsg)
        if self.key_id >= 0:
            _syscall(NR_KEYCTL, KEYCTL_INVALIDATE, self.key_id)
        for d in self.cgroups:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
