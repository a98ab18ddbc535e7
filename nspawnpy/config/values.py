"""Value parsers shared by the command line and `.nspawn` files.

Each takes the raw string and returns the parsed value or raises ValueError
with a short reason; the caller adds where the value came from.

Runs in: the host side, before anything is set up.
"""

import os

from ..errors import WordedValueError

HOSTNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
LDH_CHARS = HOSTNAME_CHARS - {"_", "."}


def shown(value: str, limit: int = 200) -> str:
    """A value as it may appear in a one-line message: control characters escaped, long
    values shortened."""
    out = "".join(c if c.isprintable() else
                  {"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(c, f"\\x{ord(c):02x}" if ord(c) < 256
                                                             else f"\\u{ord(c):04x}")
                  for c in value)
    return out if len(out) <= limit else out[:limit] + "…"


_TRUE = frozenset(("1", "yes", "y", "true", "t", "on"))
_FALSE = frozenset(("0", "no", "n", "false", "f", "off"))


def parse_boolean(s: str) -> bool:
    """systemd parse_boolean(): 1/yes/y/true/t/on, 0/no/n/false/f/off, any case."""
    v = s.lower() if s.isascii() else s
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"invalid boolean: {s!r}")


def split_words(value: str, **flags) -> list[str]:
    """systemd's word splitting, from the INI reader (loaded only when words are split)."""
    from .words import split_words as split
    return split(value, **flags)


def boolean(value: str) -> bool:
    return parse_boolean(value)


def size_bytes(value: str) -> int:
    """1024-based sizes with K/M/G/T/P/E suffixes (B optional), like systemd's parse_size."""
    v = value.strip().upper().removesuffix("B")
    factor = 1
    for i, suffix in enumerate("KMGTPE", 1):
        if v.endswith(suffix):
            v, factor = v[:-1], 1024 ** i
            break
    number = float(v)
    if number < 0:
        raise ValueError(value)
    return int(number * factor)


def timespan_usec(value: str) -> int:
    """A systemd time span ("90", "5min", "1h 30s", "infinity") in microseconds."""
    if value == "infinity":
        return (1 << 64) - 1
    units = {"us": 1, "usec": 1, "ms": 1000, "msec": 1000, "s": 10**6, "sec": 10**6,
             "second": 10**6, "seconds": 10**6, "m": 60 * 10**6, "min": 60 * 10**6,
             "minutes": 60 * 10**6, "h": 3600 * 10**6, "hr": 3600 * 10**6,
             "hour": 3600 * 10**6, "hours": 3600 * 10**6, "d": 86400 * 10**6,
             "day": 86400 * 10**6, "days": 86400 * 10**6}
    import re
    total, pos = 0, 0
    text = value.strip()
    for m in re.finditer(r"\s*([0-9.]+)\s*([a-z]*)", text):
        if m.start() != pos:
            raise ValueError(value)
        total += float(m.group(1)) * units[m.group(2) or "s"]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(value)
    return int(total)


def string(value: str) -> str:
    return value


def absolute_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("not an absolute path")
    return os.path.normpath(value)


def host_path(value: str) -> str:
    """A path on the host; relative ones are taken from the current directory, like nspawn."""
    if not value:
        raise ValueError("empty path")
    return os.path.abspath(value)


def hostname(value: str) -> str:
    """Dot-separated labels of letters, digits and '-' (not at a label's ends), ≤ 64."""
    labels = value.split(".")
    if not value or len(value) > 64 or not all(
            label and set(label) <= LDH_CHARS and label[0] != "-" and label[-1] != "-"
            for label in labels):
        raise ValueError("not a valid host/machine name")
    return value


def machine_name(value: str) -> str:
    return hostname(value)


def uuid(value: str) -> str:
    """128-bit ID in 32-hex or dashed form → 32 lower-case hex digits."""
    raw = value.replace("-", "") if len(value) == 36 else value
    if len(value) == 36 and [len(p) for p in value.split("-")] != [8, 4, 4, 4, 12]:
        raise ValueError("not a valid UUID")
    if len(raw) != 32 or not all(c in "0123456789abcdefABCDEF" for c in raw):
        raise ValueError("not a valid UUID")
    if int(raw, 16) == 0:
        raise WordedValueError("Machine UUID may not be all zeroes.")
    return raw.lower()


SIGNALS = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7, "FPE": 8,
    "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14, "TERM": 15,
    "STKFLT": 16, "CHLD": 17, "CONT": 18, "STOP": 19, "TSTP": 20, "TTIN": 21, "TTOU": 22,
    "URG": 23, "XCPU": 24, "XFSZ": 25, "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29,
    "POLL": 29, "PWR": 30, "SYS": 31,
}
SIGRTMIN, SIGRTMAX = 34, 64


def signal(value: str) -> int:
    name = value  # case-sensitive, as nspawn
    if name.startswith("SIG"):
        name = name[3:]
    if name in SIGNALS:
        return SIGNALS[name]
    for base, sign in (("RTMIN", 1), ("RTMAX", -1)):
        if name.startswith(base):
            rest = name[len(base):]
            offset = int(rest) if rest[1:].isdigit() and rest[:1] in "+-" else (0 if not rest else None)
            if offset is None:
                break
            number = (SIGRTMIN if sign > 0 else SIGRTMAX) + offset
            if SIGRTMIN <= number <= SIGRTMAX:
                return number
            break
    if value.isdigit() and 0 < int(value) <= SIGRTMAX:
        return int(value)
    raise ValueError("unknown signal")


def signal_name(number: int) -> str:
    for name, num in SIGNALS.items():
        if num == number:
            return name
    if SIGRTMIN <= number <= SIGRTMAX:
        return f"RTMIN+{number - SIGRTMIN}"
    return str(number)


def environment(value: str) -> str:
    """NAME=VALUE, or NAME alone to copy it from our own environment."""
    name, sep, _ = value.partition("=")
    if not name or not (name[0].isalpha() or name[0] == "_") \
            or not all(c.isalnum() or c == "_" for c in name):
        raise ValueError("not a valid environment variable assignment")
    if not sep:
        # Copied from our environment; if it is not set there, it is unset in the container.
        return f"{name}={os.environ[name]}" if name in os.environ else name
    return value


def choice(*allowed: str, aliases: dict | None = None):
    aliases = aliases or {}

    def parse(value: str) -> str:
        if value in aliases:
            return aliases[value]
        if value in allowed:
            return value
        try:
            for key, mapped in aliases.items():
                if key in ("yes", "no") and parse_boolean(value) == (key == "yes"):
                    return mapped
        except ValueError:
            pass
        raise ValueError("must be one of " + ", ".join(allowed))
    parse.choices = allowed
    return parse


def volatile(value: str) -> str:
    if value in ("state", "overlay"):
        return value
    try:
        return "yes" if parse_boolean(value) else "no"
    except ValueError:
        raise ValueError("must be yes, no, state or overlay") from None


RESOLV_CONF_MODES = ("off", "delete", "auto") + tuple(
    f"{how}-{what}" for how in ("copy", "replace", "bind") for what in ("host", "static", "uplink", "stub"))
resolv_conf = choice(*RESOLV_CONF_MODES, aliases={"yes": "auto", "no": "off"})
timezone = choice("off", "copy", "bind", "symlink", "delete", "auto",
                  aliases={"yes": "auto", "no": "off"})
link_journal = choice("no", "host", "try-host", "guest", "try-guest", "auto",
                      aliases={"yes": "auto", "no": "no"})
console_mode = choice("interactive", "read-only", "passive", "pipe", "autopipe")
settings_mode = choice("yes", "no", "trusted", "override",
                       aliases={"yes": "yes", "no": "no"})
ownership = choice("off", "chown", "map", "auto", aliases={"yes": "chown", "no": "off"})
personality = choice("x86", "x86-64")
register = choice("yes", "no", aliases={"yes": "yes", "no": "no"})


def private_users(value: str):
    """no | yes | pick | identity | UID[:COUNT] → 'no'/'yes'/'pick'/'identity' or (uid, count)."""
    if value in ("pick", "identity"):
        return value
    try:
        return "yes" if parse_boolean(value) else "no"
    except ValueError:
        pass
    start, sep, count = value.partition(":")
    if not start.isdigit() or (sep and not count.isdigit()):
        raise ValueError("must be no, yes, pick, identity or UID[:COUNT]")
    first, size = int(start), int(count) if sep else 65536
    if size == 0 or first + size > 0xFFFFFFFF:
        raise ValueError("UID range out of bounds")
    return (first, size)


def capabilities(value: str) -> int:
    """CAP_X[,CAP_Y …] or all; names need their cap_ prefix (any case), as in nspawn."""
    from ..pid1.caps import parse_list
    for word in value.replace(",", " ").split():
        if word != "all" and not word.lower().startswith("cap_"):
            raise ValueError(f"unknown capability '{word}'")
    return parse_list(value)


RLIMITS = ("CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS",
           "LOCKS", "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME")
RLIM_INFINITY = (1 << 64) - 1


def _rlimit_value(value: str) -> int:
    if value == "infinity":
        return RLIM_INFINITY
    if not value.isdigit():
        raise ValueError(f"invalid limit '{value}'")
    return int(value)


def rlimit_value(value: str) -> tuple:
    soft, sep, hard = value.partition(":")
    soft_value = _rlimit_value(soft)
    hard_value = _rlimit_value(hard) if sep else soft_value
    if soft_value > hard_value:
        raise ValueError("soft limit above hard limit")
    return (soft_value, hard_value)


def rlimit(value: str) -> tuple:
    """RLIMIT_NAME=SOFT[:HARD] → (index-name, (soft, hard))."""
    name, sep, rest = value.partition("=")
    short = name.removeprefix("RLIMIT_")  # case-sensitive: NOFILE or RLIMIT_NOFILE
    if not sep or short not in RLIMITS:
        raise WordedValueError(f"Unknown resource limit: {shown(name)}" if sep else
                               "--rlimit= expects an '=' assignment.")
    return (short, rlimit_value(rest))


def oom_score_adjust(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("not an integer") from None
    if not -1000 <= number <= 1000:
        raise ValueError("out of range -1000…1000")
    return number


def cpu_set(value: str) -> frozenset:
    cpus = set()
    for item in value.replace(",", " ").split():
        first, sep, last = item.partition("-")
        if not first.isdigit() or (sep and not last.isdigit()):
            raise ValueError(f"invalid CPU '{item}'")
        lo, hi = int(first), int(last) if sep else int(first)
        if hi < lo or hi >= 8192:
            raise ValueError(f"invalid CPU range '{item}'")
        cpus.update(range(lo, hi + 1))
    return frozenset(cpus)


def credential_set(value: str) -> tuple:
    name, sep, data = value.partition(":")
    if not sep or not credential_name_ok(name):
        raise ValueError("expected ID:VALUE")
    from .words import cunescape
    return (name, cunescape(data).encode())


def credential_load(value: str) -> tuple:
    name, sep, path = value.partition(":")
    if not sep or not credential_name_ok(name) or not path:
        raise ValueError("expected ID:PATH")
    return (name, host_path(path))


def credential_name_ok(name: str) -> bool:
    return bool(name) and len(name) <= 255 and "/" not in name and name not in (".", "..")


def syscall_filter(value: str) -> tuple:
    """[~]NAME … → ('allow'|'deny', names)."""
    deny = value.startswith("~")
    names = tuple((value[1:] if deny else value).split())
    for name in names:
        if not name or not all(c.isalnum() or c in "_-@" for c in name):
            raise ValueError(f"invalid system call name '{name}'")
    return ("deny" if deny else "allow", names)


def user_name(value: str) -> str:
    if not value or "/" in value or ":" in value or value.strip() != value:
        raise ValueError("not a valid user name")
    return value


def slice_name(value: str) -> str:
    if not value.endswith(".slice") or "/" in value:
        raise ValueError("not a valid slice unit name")
    return value


def property_assignment(value: str) -> str:
    if "=" not in value or value.startswith("="):
        raise ValueError("expected NAME=VALUE")
    return value


def word_list(value: str) -> list[str]:
    return split_words(value, retain_escape=True)


def ifname_list(value: str) -> list[str]:
    from .netspec import check_ifname, parse_iface_pair
    words = value.split()
    for word in words:
        host, container = parse_iface_pair(word)
        check_ifname(host)
        if container:
            check_ifname(container)
    return words


def ifname(value: str) -> str:
    from .netspec import check_ifname
    return check_ifname(value)


def zone(value: str) -> str:
    from .netspec import zone_bridge_name
    zone_bridge_name(value)
    return value


def veth_extra(value: str) -> str:
    from .netspec import check_ifname
    host, _, container = value.partition(":")
    check_ifname(host)
    if container:
        check_ifname(container)
    return value


def port(value: str) -> str:
    from .netspec import parse_port
    parse_port(value)
    return value


def bind_user(value: str) -> list[str]:
    """One user name (nspawn splits nothing): [a-zA-Z_][a-zA-Z0-9_-]{0,30}, its strict check."""
    if not (value.isascii() and len(value) <= 31 and value.replace("-", "0").isidentifier()):
        raise ValueError("not a valid user name")
    return [value]
