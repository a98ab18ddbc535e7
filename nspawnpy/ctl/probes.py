"""Live probes for nspawnpyctl checkconfig: each tries the real thing -- in a forked child
wherever it changes namespaces or mounts, so the host keeps nothing -- and returns
(works, detail)."""

import os

from .. import linux

NAMESPACES = (("mount", linux.CLONE_NEWNS), ("uts", linux.CLONE_NEWUTS),
              ("ipc", linux.CLONE_NEWIPC), ("pid", linux.CLONE_NEWPID),
              ("network", linux.CLONE_NEWNET), ("user", linux.CLONE_NEWUSER),
              ("cgroup", linux.CLONE_NEWCGROUP), ("time", 0x00000080))


def in_child(probe) -> tuple:
    """Run probe() in a child process; its detail string (or the error) comes back."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        code = 0
        try:
            detail = probe() or ""
        except OSError as e:
            detail, code = e.strerror or str(e), 1
        except Exception as e:  # noqa: BLE001 - any failure is the probe's answer
            detail, code = f"{type(e).__name__}: {e}", 1
        os.write(write_end, detail.encode()[:4000])
        os._exit(code)
    os.close(write_end)
    detail = b""
    while chunk := os.read(read_end, 4096):
        detail += chunk
    os.close(read_end)
    status = os.waitpid(pid, 0)[1]
    return os.waitstatus_to_exitcode(status) == 0, detail.decode(errors="replace")


def namespace(flag: int):
    return lambda: in_child(lambda: linux.unshare(flag))


def user_namespaces() -> tuple:
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        return False, "no /proc/sys/user/max_user_namespaces"
    if limit == 0:
        return False, "max_user_namespaces is 0"
    works, detail = in_child(lambda: linux.unshare(linux.CLONE_NEWUSER))
    return works, f"max {limit}" if works else detail


def cgroups() -> tuple:
    from ..supervisor import cgroup
    kind = cgroup.layout()
    if kind == "unified":
        try:
            with open("/sys/fs/cgroup/cgroup.controllers") as f:
                controllers = f.read().split()
        except OSError as e:
            return False, f"unified, {e.strerror}"
    else:
        with open("/proc/cgroups") as f:
            controllers = [line.split()[0] for line in f
                           if not line.startswith("#") and line.split()[3] == "1"]
    if not cgroup.managed_dirs():
        return False, f"{kind}; no writable systemd/unified hierarchy"
    return True, f"{kind}; controllers: {' '.join(controllers) or 'none'}"


def link_types() -> list:
    """[(kind, works, detail)] for veth, bridge, macvlan, ipvlan in a scratch netns."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            linux.unshare(linux.CLONE_NEWNET)
            results = _try_links()
        except Exception as e:  # noqa: BLE001
            results = [(kind, False, str(e)) for kind in ("veth", "bridge", "macvlan", "ipvlan")]
        os.write(write_end, repr(results).encode())
        os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 4096):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    import ast
    return ast.literal_eval(data.decode())


def _try_links() -> list:
    from pyroute2 import IPRoute
    results = []
    with IPRoute() as ip:
        attempts = (("veth", dict(ifname="chk0", kind="veth", peer="chk1")),
                    ("bridge", dict(ifname="chkbr", kind="bridge")),
                    ("macvlan", dict(ifname="chkmv", kind="macvlan", macvlan_mode="bridge")),
                    ("ipvlan", dict(ifname="chkiv", kind="ipvlan", ipvlan_mode=0)))
        parent = None
        for kind, spec in attempts:
            try:
                if kind in ("macvlan", "ipvlan"):
                    if parent is None:
                        raise OSError(0, "no veth to put it on")
                    spec["link"] = parent
                ip.link("add", **spec)
                if kind == "veth":
                    parent = ip.link_lookup(ifname="chk0")[0]
                results.append((kind, True, ""))
            except Exception as e:  # noqa: BLE001
                results.append((kind, False, getattr(e, "strerror", None) or str(e)))
    return results


def overlayfs() -> tuple:
    import tempfile
    scratch = tempfile.mkdtemp(prefix=".nspawnpy-check-", dir="/run")

    def probe():
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        linux.mount("tmpfs", scratch, "tmpfs")
        for d in ("lower", "upper", "work", "merged"):
            os.mkdir(f"{scratch}/{d}")
        linux.mount("overlay", f"{scratch}/merged", "overlay", 0,
                    f"lowerdir={scratch}/lower,upperdir={scratch}/upper,workdir={scratch}/work")
    try:
        return in_child(probe)
    finally:
        os.rmdir(scratch)


def idmapped_mounts(path: str) -> tuple:
    """An ID-mapped clone of *path*'s mount (what -U with ownership=map uses), detached."""
    while not os.path.isdir(path):
        path = os.path.dirname(path)

    def probe():
        ready_r, ready_w = os.pipe()
        done_r, done_w = os.pipe()
        holder = os.fork()
        if holder == 0:   # holds a user namespace open until we are done with it
            os.close(done_w)
            os.close(ready_r)
            linux.unshare(linux.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.read(done_r, 1)
            os._exit(0)
        os.close(ready_w)
        os.close(done_r)
        try:
            if os.read(ready_r, 1) != b"u":
                return "no user namespace"
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{holder}/{name}", "w") as f:
                    f.write("0 1000000 65536\n")
            userns = os.open(f"/proc/{holder}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            tree = linux.open_tree(path, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC)
            linux.mount_setattr(tree, linux.MOUNT_ATTR_IDMAP, userns)
            return f"on {path}"
        finally:
            os.close(done_w)
            os.waitpid(holder, 0)
    return in_child(probe)


def seccomp() -> tuple:
    from ..seccomp import cache
    if not cache.available():
        return False, "the kernel has no seccomp filters (or SYSTEMD_SECCOMP=0)"
    return True, ""


def library(name: str, version_symbol: str | None = None) -> tuple:
    import ctypes
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return False, f"{name} not found"
    if version_symbol == "seccomp_version":
        class Version(ctypes.Structure):
            _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint),
                        ("micro", ctypes.c_uint)]
        lib.seccomp_version.restype = ctypes.POINTER(Version)
        v = lib.seccomp_version().contents
        return True, f"{v.major}.{v.minor}.{v.micro}"
    return True, name


def systemd_pid1() -> tuple:
    if os.path.isdir("/run/systemd/system"):
        return True, ""
    try:
        with open("/proc/1/comm") as f:
            comm = f.read().strip()
    except OSError:
        comm = "?"
    return False, f"PID 1 is {comm}"


def machined() -> tuple:
    from .state import SYSTEM_BUS
    if not os.path.exists(SYSTEM_BUS):
        return False, "no system bus"
    import asyncio
    from . import machined as m
    try:
        found = asyncio.run(m._list(None))
    except Exception as e:  # noqa: BLE001
        return False, str(e) or type(e).__name__
    return True, f"{len(found)} container(s) registered"


def pidfd() -> tuple:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError as e:
        return False, e.strerror
    return True, ""
