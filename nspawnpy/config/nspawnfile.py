"""Find, read and merge the machine's `.nspawn` file, with nspawn's trust and
precedence rules (`--settings=yes|no|trusted|override`).

Runs in: the host side, before anything is set up.
"""

import os
import sys

from . import values as p
from ..errors import UserError
from .settings import OPTIONS, Settings, by_key

TRUSTED_DIRS = ("/etc/systemd/nspawn", "/run/systemd/nspawn")
SECTIONS = ("Exec", "Files", "Network")
# Keys whose empty assignment resets the list; other empty list values are errors.
RESETTABLE = {"parameters", "setenv", "network_interfaces", "network_macvlan", "network_ipvlan",
              "oom_score_adjust"}


# What nspawn says when an untrusted file sets something it may not, by dest
# (a whole precedence group shares one message).
_MOUNTS = "Ignoring TemporaryFileSystem=, Bind= and BindReadOnly= settings, file {} is not trusted."
_NETWORK = "Ignoring network settings, file {} is not trusted."
UNTRUSTED = {
    "ephemeral": "Ignoring ephemeral setting, file {} is not trusted.",
    "capability": "Ignoring Capability= setting, file {} is not trusted.",
    "ambient_capability": "Ignoring AmbientCapability= setting, file {} is not trusted.",
    "uuid": "Ignoring MachineID= setting, file {} is not trusted.",
    "bind": _MOUNTS, "bind_ro": _MOUNTS, "tmpfs": _MOUNTS, "overlay": _MOUNTS,
    "overlay_ro": _MOUNTS, "inaccessible": _MOUNTS,
    "private_network": _NETWORK, "network_interfaces": _NETWORK, "network_macvlan": _NETWORK,
    "network_ipvlan": _NETWORK, "network_veth": _NETWORK, "network_veth_extra": _NETWORK,
    "network_bridge": _NETWORK, "network_zone": _NETWORK,
    "ports": "Ignoring Port= setting, file {} is not trusted.",
    "private_users": "Ignoring PrivateUsers= and PrivateUsersChown= settings, file {} is not trusted.",
    "private_users_ownership":
        "Ignoring PrivateUsers= and PrivateUsersChown= settings, file {} is not trusted.",
    "bind_user": "Ignoring bind user setting, file {} is not trusted.",
    "syscall_allow": "Ignoring SystemCallFilter= settings, file {} is not trusted.",
    "oom_score_adjust": "Ignoring OOMScoreAdjust= setting, file '{}' is not trusted.",
    "cpu_affinity": "Ignoring CPUAffinity= setting, file '{}' is not trusted.",
    "link_journal": "Ignoring journal link setting, file '{}' is not trusted.",
    "load_credential": "Ignoring LoadCredential= setting, file '{}' is not trusted.",
}


def untrusted_message(option, path: str) -> str:
    if option.dest == "rlimits":
        return f"Ignoring {option.key}= setting, file '{path}' is not trusted."
    template = UNTRUSTED.get(option.dest, f"Ignoring {option.key}= setting, file {{}} is not trusted.")
    return template.format(path)


def warn(message: str) -> None:
    sys.stderr.write(message + "\n")


def find(machine: str, root: str | None) -> tuple[str, bool] | None:
    """(path, trusted) of the file that applies, or None."""
    for directory in TRUSTED_DIRS:
        path = f"{directory}/{machine}.nspawn"
        if os.path.exists(path):
            return path, True
    if root:
        path = f"{os.path.dirname(root.rstrip('/')) or '/'}/{machine}.nspawn"
        if os.path.exists(path):
            return path, False
    return None


def _file_value(option, assignment):
    value = assignment.value
    if option.dest == "bind_user":
        return _bind_users(assignment)
    if option.dest == "setenv":
        words = p.split_words(value, retain_escape=True)
        for word in words:
            name = word.partition("=")[0]
            p.environment(name + "=")  # validates the name; a bare NAME unsets it, as nspawn
        return words
    if option.dest in ("capability", "drop_capability", "ambient_capability"):
        return p.capabilities(" ".join(p.split_words(value, unquote=False, unescape=False)))
    return option.parse(value)


def _bind_users(assignment) -> list:
    """BindUser='s blank-separated names; as in nspawn, a bad one is warned about and ends the
    line (the names before it stay)."""
    names = []
    for name in assignment.value.split():
        try:
            names += p.bind_user(name)
        except ValueError:
            warn(f"{assignment.where()}: User name '{name}' not valid, ignoring.")
            break
    return names


def read(path: str) -> tuple[Settings, set]:
    """Parse the file into a fresh Settings; returns it and the dests it set."""
    keys = by_key()
    result = Settings()
    seen: set = set()
    from .ini import read_unit_file  # only when there is a file to read
    for a in read_unit_file(path, sections=SECTIONS):
        option = keys.get((a.section, a.key))
        if option is None:
            warn(f"{a.where()}: Unknown key '{a.key}' in section [{a.section}], ignoring.")
            continue
        if a.value == "" and option.dest in RESETTABLE:
            setattr(result, option.dest, [] if option.kind == "list" else None)
            seen.add(option)
            continue
        try:
            value = _file_value(option, a)
        except ValueError as e:
            raise UserError(f"{a.where()}: Invalid {a.key}= value '{p.shown(a.value)}': "
                            f"{p.shown(str(e))}.") from None
        result.store(option, value, from_file=True)
        seen.add(option)
    return result, seen


def merge(settings: Settings, path: str, trusted: bool) -> None:
    """Apply the file's values where the command line did not win (or always, with
    override). A group the file touches replaces the command line's group whole."""
    mode = settings.settings
    trusted = trusted or mode == "trusted"
    file_settings, seen = read(path)
    warnings = {}
    for group in dict.fromkeys(o.group for o in seen):
        if group in settings.cli_groups and mode != "override":
            continue
        if group == "seccomp":
            _merge_syscalls(settings, file_settings, trusted, path, warnings)
            continue
        for member in (o for o in OPTIONS if o.group == group and o.key):
            if not _applies(member, seen):
                continue
            if member.trusted and not trusted:
                if member in seen:
                    warnings.setdefault(untrusted_message(member, path), _warning_rank(member))
                continue
            value = getattr(file_settings, member.dest)
            if member.dest in ("capability", "drop_capability", "ambient_capability"):
                setattr(settings, member.dest, getattr(settings, member.dest) | value)
            elif member.dest == "rlimits":
                name = member.key.removeprefix("Limit")
                if name in file_settings.rlimits:
                    settings.rlimits[name] = file_settings.rlimits[name]
            else:
                setattr(settings, member.dest, _copy(value))
    for message in sorted(warnings, key=warnings.get):
        warn(message)


# Groups a file replaces whole (a value the file leaves unset is reset); in the
# others each key the file sets replaces just that setting.
WHOLE_GROUPS = {"network", "mounts", "userns", "credentials"}
START_MODE = {"boot", "as_pid2"}   # Boot= and ProcessTwo= are one setting: the start mode


def _applies(member, seen) -> bool:
    if member.group in WHOLE_GROUPS or member in seen:
        return True
    return member.dest in START_MODE and any(o.dest in START_MODE for o in seen)


def _warning_rank(option) -> float:
    """nspawn reports untrusted settings in a fixed order; the UNTRUSTED table follows it."""
    order = list(UNTRUSTED)
    if option.dest == "rlimits":
        return order.index("oom_score_adjust") - 1 + p.RLIMITS.index(option.key[5:]) / 100
    return order.index(option.dest) if option.dest in order else len(order)


def _merge_syscalls(settings, file_settings, trusted, path, warnings) -> None:
    if file_settings.syscall_allow:
        if trusted:
            settings.syscall_allow.extend(file_settings.syscall_allow)
        else:
            warnings[UNTRUSTED["syscall_allow"].format(path)] = list(UNTRUSTED).index("syscall_allow")
    settings.syscall_deny.extend(file_settings.syscall_deny)


def _copy(value):
    return value.copy() if isinstance(value, (list, dict)) else value
