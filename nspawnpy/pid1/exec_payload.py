"""The last steps inside the container, after pivot_root: identity, limits,
environment, user, capabilities, seccomp, stdio — then exec the payload
(or fork it as PID 2 under the stub init with --as-pid2).

Runs in: PID 1, after pivot_root (and the payload's PID 2 with --as-pid2, until exec).
"""

import fcntl
import os
import resource

# Everything used after pivot_root must be imported before it: the package and
# the standard library live on the host, not in the container.
from . import caps, getent, loopback, seccomp_load, stubinit
from .. import errors, linux

BOOT_INITS = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/sbin/init")
# No command: nspawn 252 runs a login shell, bash else sh (not the user's shell from passwd),
# in the home directory; its failure names what it tried (Debian's default shell first).
LOGIN_SHELL = ("-bash",)  # marks argv: no command given
LOGIN_SHELLS = (("/bin/bash", "-bash"), ("/bin/sh", "-sh"))
LOGIN_SHELLS_TRIED = "/bin/bash, /bin/bash, /bin/sh"
PER_LINUX32 = 0x0008
SIGKILL = 9
TIOCSCTTY = 0x540E


def start(plan, console_pts) -> None:
    """Never returns. `console_pts` is /dev/console's pty inside (None with --console=pipe)."""
    s = plan.settings
    if "uts" not in plan.shared_ns:   # the host's UTS namespace keeps its name
        linux.sethostname(plan.machine.hostname)
    if plan.network.private:
        loopback.loopback_up()
    if s.personality == "x86":
        linux.personality(PER_LINUX32)
    apply_limits(s)
    # As nspawn: root by name or number is no user switch at all (no supplementary groups).
    user = _account(s.user) if s.user and s.user not in ("root", "0") else None
    env = build_env(plan, user, s.user)
    argv = s.parameters
    if s.boot:
        argv = [find_init(), *s.parameters]
    elif not argv:
        argv = LOGIN_SHELL
    path = _lookup(argv[0], env)
    if s.chdir:
        try:
            os.chdir(s.chdir)
        except OSError as e:
            raise errors.UserError(f"Failed to change to specified working directory {s.chdir}: "
                                   f"{e.strerror}") from None
    if s.as_pid2:
        # The stub takes on the payload's limits before it forks, as nspawn's: a payload
        # that may ptrace PID 1 finds it no more privileged than itself.
        _limit(plan, console_pts, user)
        stubinit.run(lambda: _exec_payload(plan, console_pts, path, argv, env))
    _limit(plan, console_pts, user)
    _exec_payload(plan, console_pts, path, argv, env)


def _account(name: str):
    """--user= through the container's getent, its home made; a failure ends in nspawn's
    two lines (its parent adds the second to any failure of the child)."""
    try:
        user = getent.resolve(name)
        getent.make_home(user)
    except errors.UserError as e:
        raise errors.UserError(f"{e.message}\nChild died too early.") from None
    return user


def _limit(plan, console_pts, user) -> None:
    """The user, capabilities, seccomp filter and no_new_privs of the payload."""
    s = plan.settings
    if user and console_pts is not None:
        # The console is the user's, as with nspawn (only the container's own pty).
        try:
            os.chown(console_pts, user.uid, user.gid)
        except OSError:
            pass
    take_on_limits(plan.seccomp, plan.kept_caps, user, s.ambient_capability,
                   s.no_new_privileges)
    if user:
        # The credential change cleared the parent-death signal: without it PID 1 would
        # outlive a killed supervisor.
        linux.prctl(linux.PR_SET_PDEATHSIG, SIGKILL)


def _exec_payload(plan, console_pts, path, argv, env) -> None:
    s = plan.settings
    attach_stdio(console_pts)
    keep_only_handed_on_fds(plan.host.listen_fds)
    if s.selinux_context:  # --selinux-context=: the label the payload runs with
        with open("/proc/thread-self/attr/exec", "w") as f:
            f.write(s.selinux_context)
    if argv is LOGIN_SHELL:
        _exec_login_shell(plan, env)
    try:
        os.execve(path, argv, env)
    except OSError as e:
        raise OSError(e.errno, f"execv({path}) failed: {os.strerror(e.errno)}") from None


def _exec_login_shell(plan, env) -> None:
    """nspawn's shell for no command: in the home directory unless --chdir= (as the user,
    and staying in / when it cannot go there), -bash, else -sh."""
    if not plan.settings.chdir:
        try:
            os.chdir(env.get("HOME") or "/root")
        except OSError:
            pass
    error = 0
    for path, name in LOGIN_SHELLS:
        try:
            os.execve(path, [name], env)
        except OSError as e:
            error = e.errno
    raise OSError(error, f"execv({LOGIN_SHELLS_TRIED}) failed: {os.strerror(error)}")


def take_on_limits(seccomp, bounding: int, user, ambient: int, no_new_privs: bool) -> None:
    """The payload's limits in nspawn's order: the seccomp filter; then the user's groups,
    the bounding set made effective and the user's UID (or, as root, the capabilities
    with the ambient ones); then no_new_privs. Also what nspawnpyctl attach takes on."""
    if seccomp:
        seccomp_load.load(seccomp)
    if user:
        os.setgroups(user.groups)
        os.setresgid(user.gid, user.gid, user.gid)
        caps.apply(bounding, 0)
        caps.become_user(user.uid, ambient & bounding)
    else:
        caps.apply(bounding, ambient)
    if no_new_privs:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)


def keep_only_handed_on_fds(listen_fds: int) -> None:
    """Nothing but stdio and the LISTEN_FDS we pass on may reach the payload: not what our
    caller left open, nor anything of ours. Close-on-exec rather than closed, so a failing
    exec can still be reported through the (close-on-exec) sync socket."""
    linux.close_range(3 + listen_fds, flags=linux.CLOSE_RANGE_CLOEXEC)


def attach_stdio(console_pts) -> None:
    """Console modes: the pty slave is stdio and controlling tty; pipe keeps our stdio but
    not our session, as nspawn: a caller's terminal is never the payload's controlling tty
    (whose input it could otherwise fake with TIOCSTI, or get its signals)."""
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader (the -a stub's payload is, by now)
    if console_pts is None:
        return
    fd = os.open(console_pts, os.O_RDWR)
    fcntl.ioctl(fd, TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)


SAFE_NOFILE = 1024  # the highest soft limit select() copes with (FD_SETSIZE)


def apply_limits(s) -> None:
    if "NOFILE" not in s.rlimits and s.settings != "no":
        # As nspawn: the select()-safe soft limit, the hard limit we were given. nspawn
        # sets it with the settings it loads, so --settings=no keeps the caller's limits.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        soft = SAFE_NOFILE if hard == resource.RLIM_INFINITY else min(SAFE_NOFILE, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if s.rlimits:
        for name, (soft, hard) in s.rlimits.items():
            which = getattr(resource, f"RLIMIT_{name}")
            inf = resource.RLIM_INFINITY
            wanted = (inf if soft >= (1 << 64) - 1 else soft, inf if hard >= (1 << 64) - 1 else hard)
            try:
                resource.setrlimit(which, wanted)
            except (ValueError, OSError):
                # Like nspawn, settle for the closest the kernel allows (NOFILE ≤ fs.nr_open).
                _closest_limits(name, wanted)
    if s.oom_score_adjust is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(s.oom_score_adjust))
    if s.cpu_affinity:
        os.sched_setaffinity(0, s.cpu_affinity)


def _closest_limits(name: str, wanted: tuple) -> tuple:
    """The nearest limits we may set: within fs.nr_open for NOFILE, and not above the
    current hard limit when raising it is not allowed (no CAP_SYS_RESOURCE)."""
    which = getattr(resource, f"RLIMIT_{name}")
    inf = resource.RLIM_INFINITY
    caps = [resource.getrlimit(which)[1]]
    if name == "NOFILE":
        try:
            with open("/proc/sys/fs/nr_open") as f:
                caps.insert(0, int(f.read()))
        except (OSError, ValueError):
            pass
    for cap in caps:
        limits = tuple(cap if cap != inf and (v == inf or v > cap) else v for v in wanted)
        try:
            resource.setrlimit(which, limits)
            return limits
        except (ValueError, OSError):
            continue
    return resource.getrlimit(which)


class User:
    __slots__ = ("name", "uid", "gid", "home", "shell", "groups")


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return []


def resolve_user(name: str) -> User:
    """Look the user up in the container's own /etc/passwd and /etc/group (ctl's enter only:
    a container's --user= goes through its getent, pid1/getent.py)."""
    UserError = errors.UserError
    for entry in _read_db("/etc/passwd"):
        if len(entry) >= 7 and (entry[0] == name or (name.isdigit() and entry[2] == name)):
            user = User()
            user.name, user.uid, user.gid = entry[0], int(entry[2]), int(entry[3])
            user.home, user.shell = entry[5] or "/", entry[6] or "/bin/sh"
            user.groups = sorted({user.gid} | {
                int(g[2]) for g in _read_db("/etc/group")
                if len(g) >= 4 and g[2].isdigit() and user.name in g[3].split(",")})
            return user
    raise UserError(f"Failed to resolve user {name}.")


def root_shell() -> str:
    for entry in _read_db("/etc/passwd"):
        if len(entry) >= 7 and entry[2] == "0" and entry[6]:
            return entry[6]
    return "/bin/sh"


def build_env(plan, user, name=None) -> dict:
    """PID 1's environment, in nspawn's order; --setenv wins.  USER and LOGNAME are
    --user= as given (nspawn's: "-u 0" is USER=0)."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "container": plan.machine.service}
    if plan.console.term:
        env["TERM"] = plan.console.term
    if user:
        env.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
    else:
        env.update(HOME="/root", USER=name or "root", LOGNAME=name or "root")
    if not plan.settings.boot:
        env["LANG"] = "C.UTF-8"  # nspawn gives a shell payload a UTF-8 locale, not an init
    env["container_uuid"] = plan.machine.uuid_dashed
    if plan.host.listen_fds:
        env.update(LISTEN_FDS=str(plan.host.listen_fds), LISTEN_PID="1")
    env["NOTIFY_SOCKET"] = "/run/host/notify"
    if plan.credentials:
        env["CREDENTIALS_DIRECTORY"] = "/run/host/credentials"
    env.update(plan.host.env)
    for assignment in plan.settings.setenv:
        key, sep, value = assignment.partition("=")
        if sep:
            env[key] = value
        else:
            env.pop(key, None)  # -E NAME with NAME unset in our environment: unset it
    return env


def _lookup(command: str, env: dict) -> str:
    """Resolve argv[0] on the container's PATH, like execvpe."""
    if "/" in command:
        return command
    for directory in env.get("PATH", "").split(":"):
        candidate = f"{directory}/{command}"
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return command


def find_init() -> str:
    for path in BOOT_INITS:
        if os.access(path, os.X_OK):
            return path
    raise errors.UserError("Failed to find an init system in the container "
                    f"(looked for {', '.join(BOOT_INITS)}).")
