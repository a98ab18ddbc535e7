"""Attempts on processes, namespaces and descriptors: host PIDs, setns, inherited fds,
host binaries and libraries, abstract sockets, setuid binaries, the terminal."""

import errno
import fcntl
import os
import socket
import termios

from . import probe
from .probe import (ALL_BUT_USER_NS, ESCAPED, HIDDEN, INHERITED, PROBE_PID, REACHED,
                     REFUSED, WORK, attempt, canary_reachable_at, climb_out, contained,
                     describe_fd, errname, in_host_pid_ns, main, own_ns, read_file,
                     same_file, sc, try_os, verdict, worst)


def ours(pid):
    """Is *pid* a process we can see (in the container's PID namespace)?"""
    return os.path.exists(f"/proc/{pid}")


def foreign_pids():
    """PIDs that answer kill(pid, 0) but are not in our /proc: processes outside."""
    pid_max = int(read_file("/proc/sys/kernel/pid_max") or 32768)
    return [p for p in range(2, min(pid_max, 1 << 16)) if try_os(os.kill, p, 0)[1] in
            (0, errno.EPERM) and not ours(p)]


@attempt()
def ptrace_host_pid(cfg):
    """PTRACE_ATTACH to the host's dummy process by its host PID (unless that number is one
    of ours)"""
    pid = cfg["dummy_pid"]
    if ours(pid) and cfg["token"] not in (read_file(f"/proc/{pid}/cmdline") or ""):
        return REFUSED, "the number is a process of the container"
    r, err = sc("ptrace", 16, pid, 0, 0)
    if err == 0:
        os.waitpid(pid, 0x40000000)  # __WALL
        sc("ptrace", 17, pid, 0, 0)
    return verdict(err, ESCAPED, HIDDEN), errname(err)


@attempt()
def kill_host_pid(cfg):
    """kill(2) and pidfd_send_signal(2) the host's dummy process by its host PID, and guess
    PIDs: kill(pid, 0) for every PID up to 65536"""
    pid = cfg["dummy_pid"]
    foreign = foreign_pids()
    if ours(pid) and cfg["token"] not in (read_file(f"/proc/{pid}/cmdline") or ""):
        return (ESCAPED if foreign else REFUSED), f"foreign PIDs: {foreign[:10]}"
    _, err = try_os(os.kill, pid, 9)
    fd, err_pidfd = sc("pidfd_open", pid, 0)
    if fd >= 0:
        err_pidfd = sc("pidfd_send_signal", fd, 9, 0, 0)[1]
    outcome = worst(verdict(err, denials=HIDDEN), verdict(err_pidfd, denials=HIDDEN),
                    ESCAPED if foreign else REFUSED)
    return outcome, f"kill: {errname(err)}, pidfd: {errname(err_pidfd)}, foreign PIDs: {foreign[:10]}"


@attempt()
def kill_every_process(cfg):
    """kill(-1, SIGKILL) (the host's dummy process must survive)"""
    if in_host_pid_ns(cfg) or os.getppid() != 1:
        return (ESCAPED, "in the host's PID namespace") if in_host_pid_ns(cfg) else \
               (REFUSED, "skipped: the probe is not PID 1")
    _, err = try_os(os.kill, -1, 9)
    return contained(err)


def host_namespaces_not_joined(cfg):
    """{type: [dev, ino]} of the host namespaces this process is not already in."""
    return {t: ident for t, ident in cfg["host_ns"].items() if ident and own_ns(t) != ident}


@attempt()
def setns_proc_ns(cfg):
    """setns(2) into a host namespace found in /proc/*/ns of any visible process"""
    wanted = host_namespaces_not_joined(cfg)
    found, joined = [], []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        for t, ident in wanted.items():
            path = f"/proc/{pid}/ns/{t}"
            st, _ = try_os(os.stat, path)
            if st is None or not same_file(st, ident):
                continue
            found.append(path)
            fd, err = try_os(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
            if fd is not None and sc("setns", fd, 0)[1] == 0:
                joined.append(path)
    if joined:
        return ESCAPED, f"joined {joined}"
    return (REACHED if found else REFUSED), f"host namespaces visible: {found}"


@attempt()
def setns_pidfd(cfg):
    """pidfd_open(2) every visible process and setns(2) into all its namespaces at once"""
    wanted = host_namespaces_not_joined(cfg)
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        fd, err = sc("pidfd_open", pid, 0)
        if fd < 0:
            continue
        # every namespace type but user (the caller has no caps over a parent user ns)
        sc("setns", fd, ALL_BUT_USER_NS)
        os.close(fd)
    joined = [t for t, ident in wanted.items() if own_ns(t) == ident]
    return (ESCAPED if joined else REFUSED), f"host namespaces joined: {joined}"


def host_object_behind(fd_path, cfg):
    """(outcome, what) for an fd of another process or ours that the container inherited."""
    st, err = try_os(os.stat, fd_path)
    if st is None:
        return REACHED, describe_fd(fd_path)
    target = describe_fd(fd_path)
    for t, ident in cfg["host_ns"].items():
        if ident and same_file(st, ident) and own_ns(t) != ident:
            return ESCAPED, f"{target} (host {t} namespace)"
    if any(same_file(st, b[:2]) for b in cfg["host_binaries"]):
        return ESCAPED, f"{target} (host binary)"
    if target.startswith("anon_inode:[pidfd]"):
        return ESCAPED, f"{target} (pidfd of a process outside)"
    if os.path.isdir(fd_path):
        try:
            os.chdir(fd_path)
            climb_out()
            if canary_reachable_at(cfg["canary"].lstrip("/"), cfg):
                return ESCAPED, f"{target} (directory leading to the host's root)"
        except OSError:
            pass
    return REACHED, target


@attempt("main", "stub")
def inherited_fds(cfg):
    """file descriptors the container inherited from the caller or the manager (the test passes
    a directory fd of the host's / to the tool): climb out through them"""
    leaked = [f"/proc/self/fd/{n}" for n in INHERITED]
    if PROBE_PID != 1 and not in_host_pid_ns(cfg):   # our PID 1 (a stub init) may hold some
        leaked += [f"/proc/1/fd/{n}" for n in (try_os(os.listdir, "/proc/1/fd")[0] or [])
                   if int(n) > 2]
    results = [host_object_behind(p, cfg) for p in leaked]
    return worst(*(o for o, _ in results)), f"fds: {[w for _, w in results]}"


@attempt("main", "stub")
def exe_host_binary(cfg):
    """CVE-2019-5736: a visible process (or fd) whose executable is a host binary (the
    manager's python, systemd-nspawn): open it for writing (nothing is written)"""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        st, _ = try_os(os.stat, f"/proc/{pid}/exe")
        if st is not None and any(same_file(st, b[:2]) for b in cfg["host_binaries"]):
            found.append(f"/proc/{pid}/exe")
    writable = []
    for path in found:
        fd, err = try_os(os.open, path, os.O_WRONLY | os.O_CLOEXEC)
        if fd is not None:
            os.close(fd)
            writable.append(path)
        elif err == errno.ETXTBSY:
            # the classic attack: keep an O_PATH fd and reopen it once the process is gone
            pass
    if writable:
        return ESCAPED, f"writable host binary: {writable}"
    return (REACHED if found else REFUSED), f"host binaries visible: {found}"


@attempt("main", "stub")
def map_files_host_library(cfg):
    """open for writing (nothing is written) a file mapped by a visible process that is not
    the container's file of that name: a host library of a stub init, via /proc/PID/map_files"""
    found, writable = [], []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        entries, _ = try_os(os.listdir, f"/proc/{pid}/map_files")
        for entry in entries or ():
            link = f"/proc/{pid}/map_files/{entry}"
            st, _ = try_os(os.stat, link)
            name = describe_fd(link)
            mine, _ = try_os(os.stat, name)
            if st is None or (mine is not None and same_file(mine, [st.st_dev, st.st_ino])):
                continue
            found.append(name)
            fd, _ = try_os(os.open, link, os.O_WRONLY | os.O_CLOEXEC)
            if fd is not None:
                os.close(fd)
                writable.append(name)
    if writable:
        return ESCAPED, f"writable: {sorted(set(writable))}"
    return (REACHED if found else REFUSED), f"foreign mapped files: {sorted(set(found))}"


@attempt("main", "privnet")
def abstract_socket_to_host(cfg):
    """connect to an abstract AF_UNIX socket the test listens on in the host's network
    namespace (reaching it means sharing the host's network namespace)"""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect("\0" + cfg["abstract"])
        s.sendall(probe.CURRENT.encode())
        return ESCAPED, "connected"
    except OSError as e:
        return REFUSED, errname(e.errno)
    finally:
        s.close()


@attempt("privnet")
def network_namespace_is_hosts(cfg):
    """with a private network, the container's network namespace is not the host's"""
    same = own_ns("net") == cfg["host_ns"]["net"]
    return (ESCAPED if same else REFUSED), "host's" if same else "own"


@attempt()
def suid_host_binary(cfg):
    """as uid 1000, run a setuid-root binary owned by the host's root (bound in read-only)"""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(w, 1)
        os.setgroups([])
        os.setgid(1000)
        os.setuid(1000)
        os.execv(cfg["suid_binary"], [cfg["suid_binary"], "-S", "-c",
                                      "import os; print(os.geteuid())"])
    os.close(w)
    out = os.read(r, 100).decode().strip()
    os.waitpid(pid, 0)
    return (REACHED if out == "0" else REFUSED), f"euid {out or '?'}"


@attempt()
def suid_file_created_in_tree(cfg):
    """create a setuid executable in the tree (the test checks its owner on the host disk)"""
    path = os.path.join(WORK, "suid-copy")
    with open("/usr/bin/true", "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    os.chmod(path, 0o4755)
    return REFUSED, "made; judged on the host"


@attempt("tty")
def tiocsti_console(cfg):
    """TIOCSTI into stdin, /dev/console and /dev/tty: escaped if one of them is the host's
    terminal (the test runs the tool on a pty of its own)"""
    fds = {n: n for n in (0, 1, 2)}
    for path in ("/dev/console", "/dev/tty"):
        fd, _ = try_os(os.open, path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        if fd is not None:
            fds[path] = fd
    outcomes, details = [], []
    for name, fd in fds.items():
        st, _ = try_os(os.fstat, fd)
        host_tty = st is not None and same_file(st, cfg["host_pty"])
        _, err = try_os(fcntl.ioctl, fd, termios.TIOCSTI, b"#")
        details.append(f"{name}: host tty {host_tty}, TIOCSTI {errname(err)}")
        outcomes.append(ESCAPED if host_tty and err == 0 else REACHED if host_tty else REFUSED)
    return worst(*outcomes), "; ".join(details)
