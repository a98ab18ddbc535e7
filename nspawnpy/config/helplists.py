"""OPTION=help: the options whose values nspawn 252 lists on request (one per line, in its
order, exit 0), instead of parsing "help" as a value.

Runs in: the host side, while the command line is parsed.
"""

_ORDERED = {
    "resolv-conf": ("off", "copy-host", "copy-static", "copy-uplink", "copy-stub",
                    "replace-host", "replace-static", "replace-uplink", "replace-stub",
                    "bind-host", "bind-static", "bind-uplink", "bind-stub", "delete", "auto"),
    "timezone": ("off", "copy", "bind", "symlink", "delete", "auto"),
    "console": ("autopipe", "interactive", "passive", "pipe", "read-only"),
    "volatile": ("no", "yes", "state", "overlay"),
    "private-users-ownership": ("off", "chown", "map", "auto"),
}
_CAPABILITY_OPTIONS = ("capability", "drop-capability", "ambient-capability")


def listed(option: str) -> tuple | None:
    """The values `--OPTION=help` lists, or None if nspawn takes "help" as a value there."""
    if option in _ORDERED:
        return _ORDERED[option]
    if option in _CAPABILITY_OPTIONS:
        from ..pid1.caps import NAMES
        return NAMES
    from . import values
    if option == "kill-signal":
        return tuple(values.signal_name(n) for n in range(values.SIGRTMAX + 1))
    if option == "rlimit":
        return values.RLIMITS
    return None


class ListRequested(Exception):
    """`--OPTION=help` was given: print `text` and leave with status 0."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


def check(option: str, value) -> None:
    """Raise ListRequested when *value* asks for the list of *option*'s values."""
    if value == "help":
        names = listed(option)
        if names is not None:
            raise ListRequested("".join(f"{name}\n" for name in names))
