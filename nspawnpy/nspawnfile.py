"""Find, read and merge the machine's `.nspawn` file, with nspawn's trust and
precedence rules (`--settings=yes|no|trusted|override`)."""

import os
import sys

from . import parse as p
from .errors import UserError
from .settings import OPTIONS, Settings, by_key
from .unitfile import read_unit_file, split_words

TRUSTED_DIRS = ("/etc/systemd/nspawn", "/run/systemd/nspawn")
SECTIONS = ("Exec", "Files", "Network")
# Keys whose empty assignment resets the list; other empty list values are errors.
RESETTABLE = {"parameters", "setenv", "network_interfaces", "network_macvlan", "network_ipvlan",
              "oom_score_adjust"}


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
    if option.dest == "setenv":
        words = split_words(value, retain_escape=True)
        for word in words:
            if "=" not in word:
                raise ValueError(f"'{word}' is not a NAME=VALUE assignment")
            p.environment(word)
        return words
    if option.dest in ("capability", "drop_capability", "ambient_capability"):
        return p.capabilities(" ".join(split_words(value, unquote=False, unescape=False)))
    return option.parse(value)


def read(path: str) -> tuple[Settings, set]:
    """Parse the file into a fresh Settings; returns it and the dests it set."""
    keys = by_key()
    result = Settings()
    seen: set = set()
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
            raise UserError(f"{a.where()}: Invalid {a.key}= value '{a.value}': {e}.") from None
        result.store(option, value, from_file=True)
        seen.add(option)
    return result, seen


def merge(settings: Settings, path: str, trusted: bool) -> None:
    """Apply the file's values where the command line did not win (or always, with
    override). A group the file touches replaces the command line's group whole."""
    mode = settings.settings
    trusted = trusted or mode == "trusted"
    file_settings, seen = read(path)
    for group in dict.fromkeys(o.group for o in seen):
        if group in settings.cli_groups and mode != "override":
            continue
        if group == "seccomp":
            _merge_syscalls(settings, file_settings, trusted, path)
            continue
        for member in (o for o in OPTIONS if o.group == group and o.key):
            if member.trusted and not trusted:
                if member in seen:
                    warn(f"Ignoring {member.key}= setting, file {path} is not trusted.")
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


def _merge_syscalls(settings, file_settings, trusted, path) -> None:
    if file_settings.syscall_allow:
        if trusted:
            settings.syscall_allow.extend(file_settings.syscall_allow)
        else:
            warn(f"Ignoring SystemCallFilter= allow list, file {path} is not trusted.")
    settings.syscall_deny.extend(file_settings.syscall_deny)


def _copy(value):
    return value.copy() if isinstance(value, (list, dict)) else value
