"""settings → ContainerPlan: resolve the tree and the machine, merge the .nspawn file,
check the combinations, and do the host-side preparations (template, ephemeral layer,
UID range, scratch trees, /etc steps, network plan, registration check, tunnel, journal).
Whatever it creates is undone by the plan's cleanups; if building fails half-way, it runs
them itself.

Runs in: the host side, before clone.
"""

import os

from ..errors import UserError
from . import tree as trees
from .container import Console, ContainerPlan, Host, Machine, Mounts, Network, Tree

SERVICE = "systemd-nspawn"   # what the payload sees as container=, as with nspawn


def build(settings) -> ContainerPlan:
    cleanups: list = []
    try:
        return _build(settings, cleanups)
    except BaseException:
        from ..supervisor.cleanups import run_all
        run_all(cleanups)  # best effort, silent: the original error matters
        raise


def _build(settings, cleanups: list) -> ContainerPlan:
    tree, machine_name = _tree(settings, cleanups)
    userns = None
    if settings.private_users not in ("no", None):
        from ..supervisor import userns as userns_
        userns = userns_.resolve(settings, tree.root, machine_name, cleanups)
    bound_users = ()
    if settings.bind_user:  # (conflicts.py: only with a user namespace)
        from . import binduser
        # (--volatile=yes: the container's /etc is a fresh tmpfs, with no user in it)
        bound_users = binduser.resolve(settings.bind_user, None if settings.volatile == "yes"
                                       else tree.root, userns.base, userns.size)
    machine = Machine(machine_name, settings.hostname or machine_name,
                      trees.machine_id(tree.root, settings.uuid),
                      os.environ.get("SYSTEMD_NSPAWN_CONTAINER_SERVICE", SERVICE))
    console = _console(settings)
    kept_caps = trees.kept_capabilities(settings)
    seccomp = seccomp_filters(settings, kept_caps)
    from .mounts import custom_mounts
    custom = custom_mounts(settings, cleanups, tree.root, userns)
    credentials = load_credentials(settings)
    network = _network(settings, machine_name)
    registration = _registration(settings, machine, tree)
    from ..supervisor import propagate  # machinectl bind's tunnel: every container has one
    tunnel = propagate.setup(machine.name, cleanups)
    from .journal import link_journal  # host side now (last: nothing after it can fail)
    steps = _etc_steps(settings, tree) + [s for s in (link_journal(
        settings, tree.root, machine.uuid, cleanups, keep=tree.image is None),) if s]
    from ..supervisor import cgroup
    from ..config import environ
    mounts = Mounts(custom, tuple(steps),
                    cgroup.container_mounts(tree.root, as_pid2=settings.as_pid2), tunnel,
                    environ.api_vfs_writable(), environ.env_bool("SYSTEMD_NSPAWN_TMPFS_TMP", True),
                    environ.env_bool("SYSTEMD_NSPAWN_USE_CGNS", True))
    return ContainerPlan(settings=settings, tree=tree, machine=machine, console=console,
                         mounts=mounts, network=network, host=_host(), userns=userns,
                         bound_users=bound_users,
                         kept_caps=kept_caps, seccomp=seccomp, credentials=credentials,
                         registration=registration, shared_ns=environ.shared_namespaces(settings.share_system),
                         cleanups=cleanups)


def _tree(settings, cleanups: list) -> tuple[Tree, str]:
    """The locked tree and the machine's name (an ephemeral run's gets a random suffix)."""
    from ..config import nspawnfile
    from ..config.conflicts import check_conflicts
    if settings.oci_bundle:  # the bundle's config.json takes the place of a .nspawn file
        from ..config import oci
        oci.apply(settings)
    root, is_image = trees.find_root(settings)
    machine = settings.machine or trees.default_machine_name(
        image_name(root) if is_image else root)
    if settings.settings != "no" and not settings.oci_bundle:
        found = nspawnfile.find(machine, root)
        if found:
            nspawnfile.merge(settings, *found)
    check_conflicts(settings)
    check_selinux(settings)
    if settings.template:
        from .snapshot import populate_from_template
        populate_from_template(settings.template, root)
    lock_fd = ephemeral_dir = image = None
    if is_image:   # its file systems, mounted in a mount namespace of our own
        from ..supervisor.imagemount import mount_image
        image = root
        read_only = settings.read_only or settings.volatile != "no"   # as nspawn mounts it
        root, lock_fd = mount_image(root, machine, read_only, settings.ephemeral, cleanups)
    trees.check_tree(root, settings, image)
    root = os.path.realpath(root)
    from ..config.environ import lock_trees
    if not is_image:
        lock_fd = trees.lock_tree(root) if lock_trees() else None
        if settings.ephemeral:
            from .snapshot import ephemeral_layer
            ephemeral_dir = ephemeral_layer(root, cleanups)
    if settings.ephemeral and not settings.machine:   # a name given with -M is kept (nspawn)
        machine = f"{machine}-{os.urandom(8).hex()}"[:64]
    return Tree(root, lock_fd, ephemeral_dir, image), machine


def image_name(image: str) -> str:
    """An image's machine name: its file name without .raw (nspawn's rule)."""
    base = os.path.basename(image.rstrip("/"))
    return base[:-4] if base.endswith(".raw") and len(base) > 4 else base


def seccomp_filters(settings, kept_caps: int) -> tuple:
    """nspawn's filters for the payload, compiled here, where libseccomp is (PID 1 only loads
    them). A cached build needs neither libseccomp nor the syscall tables."""
    from ..seccomp import cache
    allow, deny = settings.syscall_allow, settings.syscall_deny
    if allow and cache.available():
        from ..seccomp import policy
        for message in policy.plan_warnings(allow, deny):
            os.write(2, (message + "\n").encode())
    caps = {i for i in range(64) if kept_caps >> i & 1}
    return tuple(cache.programs_for(caps, allow, deny, settings.suppress_sync))


def check_selinux(settings) -> None:
    """-Z/-L label the payload and the API file systems; without SELinux nspawn fails at
    setexeccon() or at the first labelled mount. We say why before anything is set up."""
    for label, option in ((settings.selinux_context, "--selinux-context="),
                          (settings.selinux_apifs_context, "--selinux-apifs-context=")):
        if label and not os.path.exists("/sys/fs/selinux/enforce"):
            raise UserError(f"{option}{label}: SELinux is not enabled on this host, "
                            "cannot apply the label.")


def _console(settings) -> Console:
    from ..supervisor import console
    mode = console.choose_mode(settings.console)
    winsize = console.window_size() if mode == "interactive" else (24, 80)
    return Console(mode, winsize, os.environ.get("TERM") or ("vt220" if mode != "pipe" else None))


def _etc_steps(settings, tree: Tree) -> list:
    from ..pid1.etcfiles import resolv_conf_step, timezone_step
    read_only = (settings.read_only or settings.volatile == "state"  # what /etc is on
                 or (tree.image is not None and settings.volatile == "no"
                     and os.statvfs(tree.root).f_flag & os.ST_RDONLY))
    return [step for step in (  # nspawn's order: /etc/localtime first
        timezone_step(settings.timezone, read_only),
        resolv_conf_step(settings.resolv_conf, settings.private_net, read_only)) if step]


def _network(settings, machine: str) -> Network:
    if not (settings.private_net or settings.network_namespace_path):
        return Network()
    from ..supervisor.network import open_netns
    from .network import NetworkPlan
    plan = NetworkPlan.from_settings(settings, machine)
    _check_host_links(plan)
    netns_fd = open_netns(settings.network_namespace_path) if settings.network_namespace_path \
        else None
    return Network(plan, netns_fd, settings.private_net)


def _check_host_links(plan) -> None:
    """Links to move or to stack on must exist before anything is written to the tree, as
    nspawn checks them (in its words) before it sets up anything."""
    for parent, _ in (*plan.interfaces, *plan.macvlan, *plan.ipvlan):
        if not os.path.exists(f"/sys/class/net/{parent}"):
            raise UserError(f"Failed to get device {parent}: No such device")


def _registration(settings, machine: Machine, tree: Tree):
    """machined's registration (checked now, done by the supervisor)."""
    if settings.register != "yes":
        return None
    from ..supervisor.register import Registration
    return Registration.from_settings(settings, machine.name, machine.uuid, tree.root)


def _host() -> Host:
    return Host(host_os_env(), next((p for p in ("/etc/os-release", "/usr/lib/os-release")
                                     if os.path.exists(p)), None), passed_sockets())


def load_credentials(settings) -> tuple:
    credentials = list(settings.set_credential)
    for name, path in settings.load_credential:
        try:
            with open(path, "rb") as f:
                credentials.append((name, f.read()))
        except OSError as e:
            raise UserError(f"Failed to read credential '{name}' from {path}: {e.strerror}") from None
    return tuple(credentials)


def passed_sockets() -> int:
    """Socket activation: the fds our service manager passed us (from 3 on) go on to PID 1."""
    try:
        if int(os.environ.get("LISTEN_PID", "0")) != os.getpid():
            return 0
        count = int(os.environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return 0
    for fd in range(3, 3 + count):
        os.set_inheritable(fd, True)
    return count


def host_os_env() -> dict:
    """container_host_{id,version_id,build_id,variant_id} from the host's os-release."""
    wanted = {"ID", "VERSION_ID", "BUILD_ID", "VARIANT_ID"}
    env = {}
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.strip().partition("=")
                    if key in wanted:
                        env[f"container_host_{key.lower()}"] = value.strip("\"'")
            return env
        except OSError:
            continue
    return env
