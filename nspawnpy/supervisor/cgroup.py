"""Where the container's processes live in the cgroup tree, and what of it the
container sees at /sys/fs/cgroup (nspawn-cgroup.c's job).

On a legacy/hybrid host the systemd-managed hierarchy is the v1 name=systemd
one; on a unified host it is cgroup2 at /sys/fs/cgroup. With --keep-unit the
unit's cgroup is split into supervisor/ and payload/ like nspawn does;
otherwise the payload gets a cgroup of its own below ours, which is removed
again when the container is gone.

Runs in: the supervisor (and the janitor for the clean-up); PID 1 mounts what
container_mounts() says.
"""

import errno
import os

ROOT = "/sys/fs/cgroup"


def read_self(pid="self") -> list[tuple[str, str, str]]:
    """(hierarchy id, controllers, path) for each line of /proc/PID/cgroup (ours by default)."""
    with open(f"/proc/{pid}/cgroup") as f:
        return [tuple(line.rstrip("\n").split(":", 2)) for line in f if line.strip()]


def _fstype(path: str):
    """File system type of the topmost mount at *path* in our mount namespace, or None."""
    fstype = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            if left.split()[4] == path:
                fstype = right.split()[0]
    return fstype


def layout(entries=None) -> str:
    """Like systemd's cg_unified_cached(), what is mounted at /sys/fs/cgroup decides:
    /proc/self/cgroup lists every v1 hierarchy mounted anywhere on the machine, also
    inside a container that was given a pure cgroup2 /sys/fs/cgroup."""
    top = _fstype(ROOT)
    if top == "cgroup2":
        return "unified"
    if top is not None:
        return "hybrid" if _fstype(f"{ROOT}/unified") == "cgroup2" else "legacy"
    entries = entries if entries is not None else read_self()
    if all(h == "0" for h, _, _ in entries):
        return "unified"
    return "hybrid" if os.path.isdir(f"{ROOT}/unified") and any(h == "0" for h, _, _ in entries) \
        else "legacy"


def managed(entries) -> list[tuple[str, str]]:
    """(host directory, path in the hierarchy) of the cgroups in `entries` (read_self()) that
    are in the hierarchies systemd manages: cgroup2 on a unified host, name=systemd (and
    the cgroup2 tree at unified/ on a hybrid one) otherwise."""
    kind = layout(entries)
    found = []
    for hierarchy, controllers, path in entries:
        if kind == "unified" and hierarchy == "0":
            found.append((ROOT + path, path))
        elif kind != "unified" and controllers == "name=systemd":
            found.append((f"{ROOT}/systemd{path}", path))
        elif kind == "hybrid" and hierarchy == "0":
            found.append((f"{ROOT}/unified{path}", path))
    return found


def managed_dirs(entries=None) -> list[str]:
    """Host paths of our own cgroup in the hierarchies systemd manages."""
    entries = entries if entries is not None else read_self()
    return [d.rstrip("/") for d, _ in managed(entries) if os.access(d, os.W_OK)]


# Where nspawn looks for the guest's systemd (libsystemd-shared-VERSION.so) to decide
# whether it copes with the hybrid layout (version 233 on).
GUEST_SYSTEMD_DIRS = ("lib/systemd", "lib64/systemd", "usr/lib/systemd", "usr/lib64/systemd",
                      "usr/lib/x86_64-linux-gnu/systemd")
HYBRID_SINCE = 233


def guest_systemd_version(root: str) -> int:
    """The highest systemd version the tree ships (0 for none), found as nspawn finds it."""
    from .. import intree  # the tree's own directories, not where its links lead on the host
    best = 0
    for directory in GUEST_SYSTEMD_DIRS:
        try:
            fd = intree.resolve(root, directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        for name in names:
            best = max(best, _shared_library_version(name))
    return best


def _shared_library_version(name: str) -> int:
    """N of libsystemd-shared-N.so / libsystemd-shared-N-M.so, else 0 (string work, not
    re: importing re and the enum/functools/collections it pulls in took ~4 ms of every
    start)."""
    prefix = "libsystemd-shared-"
    if not name.startswith(prefix):
        return 0
    rest = name[len(prefix):]
    digits = len(rest) - len(rest.lstrip("0123456789"))
    return int(rest[:digits]) if digits and rest[digits:digits + 1] in (".", "-") else 0


def container_mounts(root: str, entries=None, as_pid2: bool = False):
    """What PID 1's mount_cgroups mounts: 'unified', or [(dir, fstype, options, writable)]
    (or ("missing", path): nspawn's failure without a cgroup namespace).

    As nspawn: $SYSTEMD_NSPAWN_UNIFIED_HIERARCHY decides if set; otherwise a unified host
    gives cgroup2, and a hybrid one gives the v1 controllers plus, for a tree whose systemd
    copes with it, the cgroup2 tree at unified/ (its own subtree through the cgroup
    namespace), or for -a, whose PID 1 is our stub; name=systemd comes last."""
    from ..config.environ import env_bool
    entries = entries if entries is not None else read_self()
    kind = layout(entries)
    forced = env_bool("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY")
    if forced is not None:
        kind = "unified" if forced else "legacy"
    if kind == "unified":
        return "unified"
    if not env_bool("SYSTEMD_NSPAWN_USE_CGNS", True):
        missing = unmounted_controller()
        if missing:
            return ("missing", missing)
    result = []
    for hierarchy, controllers, _ in entries:
        if hierarchy != "0" and controllers and not controllers.startswith("name="):
            result.append((controllers, "cgroup", controllers, False))
    # With -a nspawn's own stub is PID 1: the host's layout decides, not the tree's systemd.
    if kind == "hybrid" and (as_pid2 or guest_systemd_version(root) >= HYBRID_SINCE):
        result.append(("unified", "cgroup2", None, True))
    if any(controllers == "name=systemd" for _, controllers, _ in entries):
        result.append(("systemd", "cgroup", "none,name=systemd", True))
    return result


def unmounted_controller():
    """$SYSTEMD_NSPAWN_USE_CGNS=0 on a legacy/hybrid host: nspawn 252 then mounts each of the
    kernel's controllers from where the host has it, and fails (when it mounts the cgroups,
    after the tree is set up) on the first one the host does not mount, as on this kind of
    machine. Returns that one's path, for PID 1 to fail there as nspawn does. (Where every
    controller is mounted nspawn would show the host's hierarchies; nspawnpy keeps the cgroup
    namespace.)"""
    try:
        with open("/proc/cgroups") as f:
            lines = [line.split() for line in f if not line.startswith("#")]
    except OSError:
        return None
    for fields in lines:
        if len(fields) >= 4 and fields[3] == "1" and not os.path.lexists(f"{ROOT}/{fields[0]}"):
            return f"{ROOT}/{fields[0]}"
    return None


def _attach(directory: str, pid: int) -> None:
    with open(f"{directory}/cgroup.procs", "w") as f:
        f.write(str(pid))


def _attach_made(directory: str, pid: int) -> None:
    """mkdir -p and attach; the directory may be shared with concurrent --keep-unit runs
    from the same cgroup (nspawn's payload/ and supervisor/), whose teardown can remove it
    between the two steps: then make it again."""
    for attempt in range(10):
        os.makedirs(directory, exist_ok=True)
        try:
            return _attach(directory, pid)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENODEV) or attempt == 9:
                raise


def remove_tree(directory: str) -> None:
    """rmdir a cgroup and everything below it, deepest first."""
    for top, subdirs, _ in os.walk(directory, topdown=False):
        for sub in subdirs:
            try:
                os.rmdir(os.path.join(top, sub))
            except OSError:
                pass
    try:
        os.rmdir(directory)
    except OSError:
        pass


class Placement:
    """The payload's cgroups: created before the container starts, removed after."""

    def __init__(self, machine: str, keep_unit: bool):
        self.machine, self.keep_unit = machine, keep_unit
        self.created: list[str] = []
        self.supervisor_moved: list[tuple[str, str]] = []

    def attach(self, pid: int) -> None:
        for own in managed_dirs():
            if self.keep_unit:
                payload = f"{own}/payload"
                supervisor = f"{own}/supervisor"
                self.created += [payload, supervisor]
                _attach_made(supervisor, os.getpid())
                self.supervisor_moved.append((own, supervisor))
                _attach_made(payload, pid)
            else:
                payload = f"{own}/nspawnpy-{self.machine}"
                if os.path.isdir(payload):
                    remove_tree(payload)  # left behind by a killed run
                os.mkdir(payload)
                self.created.append(payload)
                _attach(payload, pid)

    def cleanup(self):
        """The Cleanup that undoes what attach() did (also after a failure half-way)."""
        from .cleanups import Cleanup
        return Cleanup("cgroups", (tuple(own for own, _ in self.supervisor_moved),
                                   tuple(self.created)))


def teardown(owns: tuple, created: tuple) -> None:
    """Leave supervisor/ for the unit's own cgroups again (whoever runs it: the supervisor
    or the janitor), then remove the cgroups made, newest first."""
    for own in owns:
        try:
            _attach(own, os.getpid())
        except OSError:
            pass
    for directory in reversed(created):
        remove_tree(directory)


DELEGATED_FILES = ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads", "memory.oom.group",
                   "memory.reclaim", "tasks", "notify_on_release", "cgroup.clone_children")


def delegate_to(pid: int, uid: int) -> None:
    """With a user namespace: hand the payload's cgroup (in the hierarchies systemd manages)
    to the container's root, so a systemd inside can manage its subtree. A cgroup outside
    our cgroup namespace ("/.." paths, e.g. when run through nsenter) is not ours to give."""
    from ..errors import UserError
    for directory, path in managed(read_self(pid)):
        if path in ("", "/") or ".." in path.split("/"):
            continue
        try:
            os.chown(directory, uid, uid)
            for name in DELEGATED_FILES:
                try:
                    os.chown(f"{directory}/{name}", uid, uid)
                except FileNotFoundError:
                    pass
        except OSError as e:
            raise UserError(f"Failed to chown() cgroup {directory}: {e.strerror}") from None
