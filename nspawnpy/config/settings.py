"""The settings table: each setting declared once, with its command-line spellings,
its `.nspawn` [Section] Key, parser, default, trust rule, precedence group and help.

The command-line parser (cli.py), the `.nspawn` reader (nspawnfile.py), `--help`
and the man page's option list are all derived from OPTIONS.

Runs in: the host side; also imported by packaging/ to make the man page and completion.
"""

from . import mountspec as m, values as p
from .fields import Fields

# How a value is stored: "value" (last one wins), "list" (appends; an empty
# file assignment resets it), "flag" (command line takes no argument and stores
# `const`; the file key, if any, is parsed with `parse`).


class Option:
    __slots__ = ("dest", "long", "short", "section", "key", "parse", "kind", "default",
                 "trusted", "group", "metavar", "help", "arg", "const", "topic", "store")

    def __init__(self, dest, long=None, short=None, *, key=None, parse=p.string, kind="value",
                 default=None, trusted=False, group=None, metavar=None, help="",
                 arg="required", const=True, topic="", store=None):
        self.dest = dest
        self.long = long
        self.short = short
        self.section, _, self.key = key.partition("/") if key else (None, "", None)
        self.key = self.key or None
        self.parse = parse
        self.kind = kind
        self.default = default
        self.trusted = trusted          # an untrusted .nspawn file may not set it
        self.group = group or dest      # command line beats file per group
        self.metavar = metavar
        self.help = help
        self.arg = "none" if kind == "flag" else arg
        self.const = const
        self.topic = topic
        self.store = store              # custom store(settings, value, from_file)

    def spelled(self) -> str:
        if self.long:
            return f"--{self.long}"
        return f"-{self.short}"


def _rlimit_store(name):
    def store(settings, value, from_file=False):
        settings.rlimits[name] = value
    return store


def _rlimit_cli_store(settings, value, from_file=False):
    name, limits = value
    settings.rlimits[name] = limits
    settings.cli_groups.add(f"rlimit_{name}")   # each limit is its own precedence group


def _share_system(settings, value, from_file=False):
    # nspawn 252 still takes the old option: it says so and shares what
    # $SYSTEMD_NSPAWN_SHARE_SYSTEM=1 shares
    import sys
    sys.stderr.write("Please do not use --share-system anymore, use $SYSTEMD_NSPAWN_SHARE_* "
                     "instead.\n")
    settings.share_system = True


def _private_users_U(settings, value, from_file=False):
    import os
    if os.path.exists("/proc/self/ns/user"):
        settings.private_users = "pick"
        settings.private_users_ownership = "auto"


def _syscall_store(settings, value, from_file=False):
    kind, names = value
    (settings.syscall_deny if kind == "deny" else settings.syscall_allow).extend(names)


def _caps_add(settings, value, from_file=False):
    settings.capability |= value


def _caps_drop(settings, value, from_file=False):
    settings.drop_capability |= value


def _caps_ambient(settings, value, from_file=False):
    settings.ambient_capability |= value


G, IMG, EXE, ID, PROP, UNS, NET, SEC, RES, INT, MNT, IO, CRED = (
    "General", "Image", "Execution", "System identity", "Properties", "User namespacing",
    "Networking", "Security", "Resources", "Integration", "Mounts", "Input/Output", "Credentials")

O = Option


def _mount(dest: str, key: str, parse, metavar: str, help: str) -> Option:
    """A mount option: --DEST (dashes for underscores) and [Files] KEY, a trusted list."""
    return O(dest, dest.replace("_", "-"), key=f"Files/{key}", parse=parse, kind="list",
             default=[], trusted=True, group="mounts", metavar=metavar, topic=MNT, help=help)


def _mount_pair(dest: str, key: str, parse, metavar: str, noun: str, help: str) -> list:
    """--X and --X-ro ([Files] KEY and KEYReadOnly): the same spec, writable and read-only."""
    return [_mount(dest, key, parse, metavar, help),
            _mount(f"{dest}_ro", f"{key}ReadOnly", parse, metavar,
                   f"Similar, but creates a read-only {noun} mount")]
OPTIONS = [
    # General
    O("help", "help", "h", kind="flag", topic=G, help="Show this help"),
    O("version", "version", kind="flag", topic=G, help="Print the version string"),
    O("quiet", "quiet", "q", kind="flag", default=False, topic=G,
      help="Do not show status information"),
    O("no_pager", "no-pager", kind="flag", default=False, topic=G, help="Do not pipe output into a pager"),
    O("settings", "settings", parse=p.settings_mode, default="yes", topic=G, metavar="BOOLEAN",
      help="Load additional settings from .nspawn file (yes, no, trusted, override)"),
    # Image
    O("directory", "directory", "D", parse=p.host_path, metavar="PATH", topic=IMG,
      help="Root directory for the container"),
    O("template", "template", parse=p.host_path, metavar="PATH", topic=IMG,
      help="Initialize root directory from template directory, if missing"),
    O("ephemeral", "ephemeral", "x", key="Exec/Ephemeral", kind="flag", parse=p.boolean,
      default=False, trusted=True, topic=IMG,
      help="Run container with snapshot of root directory, and remove it after exit"),
    O("image", "image", "i", parse=p.host_path, metavar="PATH", topic=IMG,
      help="Root file system disk image (or device node) for the container"),
    O("oci_bundle", "oci-bundle", parse=p.host_path, metavar="PATH", topic=IMG,
      help="OCI bundle directory"),
    O("read_only", "read-only", key="Files/ReadOnly", kind="flag", parse=p.boolean, default=False,
      topic=IMG, help="Mount the root directory read-only"),
    O("volatile", "volatile", key="Files/Volatile", parse=p.volatile, default="no", arg="optional",
      const="yes", metavar="MODE", topic=IMG,
      help="Run the system in volatile mode (yes, no, state, overlay)"),
    O("root_hash", "root-hash", metavar="HASH", topic=IMG, help="Specify verity root hash for root disk (refused: nspawnpy sets up no dm-verity)"),
    O("root_hash_sig", "root-hash-sig", metavar="SIG", topic=IMG,
      help="Specify pkcs7 signature of root hash for verity (refused, as --root-hash=)"),
    O("verity_data", "verity-data", metavar="PATH", topic=IMG,
      help="Specify hash device for verity (refused, as --root-hash=)"),
    O("pivot_root", "pivot-root", key="Exec/PivotRoot", parse=m.pivot_root, metavar="PATH[:PATH]",
      topic=IMG, help="Pivot root to given directory in the container"),
    # Execution
    O("boot", "boot", "b", key="Exec/Boot", kind="flag", parse=p.boolean, default=False,
      group="start", topic=EXE, help="Boot up full system (i.e. invoke init)"),
    O("as_pid2", "as-pid2", "a", key="Exec/ProcessTwo", kind="flag", parse=p.boolean, default=False,
      group="start", topic=EXE, help="Maintain a stub init as PID1, invoke binary as PID2"),
    O("share_system", "share-system", kind="flag", default=False, store=_share_system, topic=EXE,
      help="Deprecated: share the host's IPC, PID and UTS namespaces "
           "(use $SYSTEMD_NSPAWN_SHARE_SYSTEM=1)"),
    O("parameters", key="Exec/Parameters", parse=p.word_list, kind="list", default=[], group="start",
      topic=EXE, help="Command line (or init arguments with Boot=yes)"),
    O("chdir", "chdir", key="Exec/WorkingDirectory", parse=p.absolute_path, metavar="PATH",
      topic=EXE, help="Set working directory in the container"),
    O("setenv", "setenv", "E", key="Exec/Environment", parse=p.environment, kind="list", default=[],
      metavar="NAME[=VALUE]", topic=EXE, help="Pass an environment variable to PID 1"),
    O("user", "user", "u", key="Exec/User", parse=p.user_name, metavar="USER", topic=EXE,
      help="Run the command under specified user or UID"),
    O("kill_signal", "kill-signal", key="Exec/KillSignal", parse=p.signal, metavar="SIGNAL",
      topic=EXE, help="Select signal to use for shutting down PID 1"),
    O("notify_ready", "notify-ready", key="Exec/NotifyReady", parse=p.boolean, default=False,
      metavar="BOOLEAN", topic=EXE, help="Receive notifications from the child init process"),
    O("suppress_sync", "suppress-sync", key="Exec/SuppressSync", parse=p.boolean, default=False,
      metavar="BOOLEAN", topic=EXE, help="Suppress any form of disk data synchronization"),
    # System identity
    O("machine", "machine", "M", parse=p.machine_name, metavar="NAME", topic=ID,
      help="Set the machine name for the container"),
    O("hostname", "hostname", key="Exec/Hostname", parse=p.hostname, metavar="NAME", topic=ID,
      help="Override the hostname for the container"),
    O("uuid", "uuid", key="Exec/MachineID", parse=p.uuid, metavar="UUID", trusted=True, topic=ID,
      help="Set a specific machine UUID for the container"),
    # Properties
    O("slice", "slice", "S", parse=p.slice_name, metavar="SLICE", topic=PROP,
      help="Place the container in the specified slice"),
    O("property", "property", parse=p.property_assignment, kind="list", default=[],
      metavar="NAME=VALUE", topic=PROP, help="Set scope unit property"),
    O("register", "register", parse=p.register, default="yes", metavar="BOOLEAN", topic=PROP,
      help="Register container as machine"),
    O("keep_unit", "keep-unit", kind="flag", default=False, topic=PROP,
      help="Do not register a scope for the machine, reuse the service unit nspawn is running in"),
    # User namespacing
    O("private_users", "private-users", key="Exec/PrivateUsers", parse=p.private_users,
      default="no", arg="optional", const="yes", trusted=True, group="userns", metavar="MODE",
      topic=UNS, help="Run within user namespace (no, yes, pick, identity, UID[:COUNT])"),
    O("private_users_ownership", "private-users-ownership", key="Files/PrivateUsersOwnership",
      parse=p.ownership, default=None, trusted=True, group="userns", metavar="MODE", topic=UNS,
      help="Adjust ('chown') or map ('map') OS tree ownership to private UID/GID range"),
    O("private_users_ownership", "private-users-chown", kind="flag", const="chown", group="userns",
      key="Files/PrivateUsersChown", parse=lambda v: "chown" if p.boolean(v) else "off",
      trusted=True, topic=UNS, help="Equivalent to --private-users-ownership=chown"),
    O("private_users", short="U", kind="flag", group="userns", store=_private_users_U, topic=UNS,
      help="Equivalent to --private-users=pick and --private-users-ownership=auto"),
    # Networking
    O("private_network", "private-network", key="Network/Private", kind="flag", parse=p.boolean,
      default=False, trusted=True, group="network", topic=NET,
      help="Disable network in container"),
    O("network_interfaces", "network-interface", key="Network/Interface", parse=p.ifname_list,
      kind="list", default=[], trusted=True, group="network", metavar="INTERFACE", topic=NET,
      help="Assign an existing network interface to the container"),
    O("network_macvlan", "network-macvlan", key="Network/MACVLAN", parse=p.ifname_list,
      kind="list", default=[], trusted=True, group="network", metavar="INTERFACE", topic=NET,
      help="Create a macvlan network interface based on an existing network interface"),
    O("network_ipvlan", "network-ipvlan", key="Network/IPVLAN", parse=p.ifname_list,
      kind="list", default=[], trusted=True, group="network", metavar="INTERFACE", topic=NET,
      help="Create an ipvlan network interface based on an existing network interface"),
    O("network_veth", "network-veth", "n", key="Network/VirtualEthernet", kind="flag",
      parse=p.boolean, default=False, trusted=True, group="network", topic=NET,
      help="Add a virtual Ethernet connection between host and container"),
    O("network_veth_extra", "network-veth-extra", key="Network/VirtualEthernetExtra",
      parse=p.veth_extra, kind="list", default=[], trusted=True, group="network",
      metavar="HOSTIF[:CONTAINERIF]", topic=NET,
      help="Add an additional virtual Ethernet link between host and container"),
    O("network_bridge", "network-bridge", key="Network/Bridge", parse=p.ifname, trusted=True,
      group="network", metavar="INTERFACE", topic=NET,
      help="Add a virtual Ethernet connection to the container and attach it to an existing bridge"),
    O("network_zone", "network-zone", key="Network/Zone", parse=p.zone, trusted=True,
      group="network", metavar="NAME", topic=NET,
      help="Similar, but attach the new interface to an automatically managed bridge interface"),
    O("network_namespace_path", "network-namespace-path", parse=p.absolute_path, group="network",
      metavar="PATH", topic=NET, help="Set network namespace to the one represented by the given path"),
    O("ports", "port", "p", key="Network/Port", parse=p.port, kind="list", default=[], trusted=True,
      metavar="[PROTOCOL:]HOSTPORT[:CONTAINERPORT]", topic=NET,
      help="Expose a container IP port on the host"),
    # Security
    O("capability", "capability", key="Exec/Capability", parse=p.capabilities, default=0,
      trusted=True, group="caps", store=_caps_add, metavar="CAP", topic=SEC,
      help="In addition to the default, retain specified capability"),
    O("drop_capability", "drop-capability", key="Exec/DropCapability", parse=p.capabilities,
      default=0, group="caps", store=_caps_drop, metavar="CAP", topic=SEC,
      help="Drop the specified capability from the default set"),
    O("ambient_capability", "ambient-capability", key="Exec/AmbientCapability",
      parse=p.capabilities, default=0, trusted=True, group="caps", store=_caps_ambient,
      metavar="CAP", topic=SEC, help="Sets the specified capability for the started process"),
    O("no_new_privileges", "no-new-privileges", key="Exec/NoNewPrivileges", parse=p.boolean,
      default=False, metavar="BOOLEAN", topic=SEC, help="Set PR_SET_NO_NEW_PRIVS flag for container payload"),
    O("syscall_allow", "system-call-filter", key="Exec/SystemCallFilter", parse=p.syscall_filter,
      default=[], group="seccomp", store=_syscall_store, metavar="LIST", topic=SEC,
      help="Configure system call filter"),
    O("selinux_context", "selinux-context", "Z", metavar="SECLABEL", topic=SEC,
      help="Set the SELinux security context to be used by processes in the container"),
    O("selinux_apifs_context", "selinux-apifs-context", "L", metavar="SECLABEL", topic=SEC,
      help="Set the SELinux security context to be used by API/tmpfs file systems"),
    # Resources
    O("rlimits", "rlimit", parse=p.rlimit, default={}, store=_rlimit_cli_store,
      metavar="NAME=LIMIT", topic=RES, help="Set a resource limit for the payload"),
    O("oom_score_adjust", "oom-score-adjust", key="Exec/OOMScoreAdjust", parse=p.oom_score_adjust,
      trusted=True, metavar="VALUE", topic=RES, help="Adjust the OOM score value for the payload"),
    O("cpu_affinity", "cpu-affinity", key="Exec/CPUAffinity", parse=p.cpu_set, trusted=True,
      metavar="CPUS", topic=RES, help="Adjust the CPU affinity of the container"),
    O("personality", "personality", key="Exec/Personality", parse=p.personality, metavar="ARCH",
      topic=RES, help="Pick personality for this container"),
    # Integration
    O("resolv_conf", "resolv-conf", key="Exec/ResolvConf", parse=p.resolv_conf, default="auto",
      metavar="MODE", topic=INT, help="Select mode of /etc/resolv.conf initialization"),
    O("timezone", "timezone", key="Exec/Timezone", parse=p.timezone, default="auto",
      metavar="MODE", topic=INT, help="Select mode of /etc/localtime initialization"),
    O("link_journal", "link-journal", key="Exec/LinkJournal", parse=p.link_journal,
      default="auto", trusted=True, metavar="MODE", topic=INT,
      help="Link up guest journal, one of no, auto, guest, host, try-guest, try-host"),
    O("link_journal", short="j", kind="flag", const="try-guest", topic=INT,
      help="Equivalent to --link-journal=try-guest"),
    # Mounts
    *_mount_pair("bind", "Bind", m.bind, "PATH[:PATH[:OPTIONS]]", "bind",
                 "Bind mount a file or directory from the host into the container"),
    _mount("inaccessible", "Inaccessible", p.absolute_path, "PATH",
           "Over-mount file node with inaccessible node to mask it"),
    _mount("tmpfs", "TemporaryFileSystem", m.tmpfs, "PATH:[OPTIONS]",
           "Mount an empty tmpfs to the specified directory"),
    *_mount_pair("overlay", "Overlay", m.overlay, "PATH[:PATH...]:PATH", "overlay",
                 "Create an overlay mount from the host to the container"),
    O("bind_user", "bind-user", key="Files/BindUser", parse=p.bind_user, kind="list", default=[],
      trusted=True, metavar="NAME", topic=MNT, help="Bind user from host to container"),
    # Input/Output
    O("console", "console", parse=p.console_mode, metavar="MODE", topic=IO,
      help="Select how stdin/stdout/stderr and /dev/console are set up for the container"),
    O("console", "pipe", "P", kind="flag", const="pipe", topic=IO,
      help="Equivalent to --console=pipe"),
    # Credentials
    O("set_credential", "set-credential", key="Exec/SetCredential", parse=p.credential_set,
      kind="list", default=[], group="credentials", metavar="ID:VALUE", topic=CRED,
      help="Pass a credential with literal value to container"),
    O("load_credential", "load-credential", key="Exec/LoadCredential", parse=p.credential_load,
      kind="list", default=[], trusted=True, group="credentials", metavar="ID:PATH", topic=CRED,
      help="Load credential to pass to container from file or AF_UNIX stream socket"),
]

# The [Exec] LimitXXX= keys: one row each, all stored in `rlimits`.
for _name in p.RLIMITS:
    OPTIONS.append(O("rlimits", key=f"Exec/Limit{_name}", parse=p.rlimit_value, trusted=True,
                     group=f"rlimit_{_name}", store=_rlimit_store(_name), topic=RES,
                     help=f"RLIMIT_{_name} for the payload"))

# Network keys that exist only in .nspawn files' [Network] section are all above;
# the file's SystemCallFilter= deny list is allowed untrusted (see nspawnfile.py).

NETWORK_DESTS = ("private_network", "network_interfaces", "network_macvlan", "network_ipvlan",
                 "network_veth", "network_veth_extra", "network_bridge", "network_zone",
                 "network_namespace_path")


class Settings(Fields):
    """Every setting's current value, starting from the table's defaults. Its fields are
    declared, with their types, in config/fields.py (generated from the table; the packaging
    test fails when it is out of date)."""

    def __init__(self):
        for option in OPTIONS:
            if not hasattr(self, option.dest):
                default = option.default
                setattr(self, option.dest, default.copy() if isinstance(default, (list, dict))
                        else default)
        self.syscall_deny = []
        self.cli_groups = set()        # groups the command line set (beats a file's)

    def store(self, option: Option, value, from_file: bool = False) -> None:
        if option.store:
            option.store(self, value, from_file)
        elif option.kind == "list":
            target = getattr(self, option.dest)
            target.extend(value if isinstance(value, list) else [value])
        else:
            setattr(self, option.dest, value)

    @property
    def private_net(self) -> bool:
        """Any network option implies a private network namespace, as in nspawn."""
        return any(getattr(self, dest) for dest in NETWORK_DESTS if dest != "network_namespace_path")

    def network_options_beyond_private(self) -> bool:
        """Network options other than --private-network (which v252 lets
        --network-namespace-path= go with: the joined namespace is then treated as private)."""
        return any(getattr(self, dest) for dest in NETWORK_DESTS
                   if dest not in ("private_network", "network_namespace_path"))


def by_topic() -> list[tuple[str, list[Option]]]:
    """The command-line options grouped under their --help/man page headings, in table order."""
    topics: dict[str, list[Option]] = {}
    for option in OPTIONS:
        if option.long or option.short:
            topics.setdefault(option.topic, []).append(option)
    return list(topics.items())


def by_long() -> dict:
    return {o.long: o for o in OPTIONS if o.long}


def by_short() -> dict:
    return {o.short: o for o in OPTIONS if o.short}


def by_key() -> dict:
    return {(o.section, o.key): o for o in OPTIONS if o.key}
