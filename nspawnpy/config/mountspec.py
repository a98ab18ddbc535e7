"""Value parsers for the mount options (--bind, --bind-ro, --tmpfs, --overlay,
--overlay-ro, --pivot-root) and their .nspawn keys: nspawn's colon-separated specs.

Runs in: the host side, before anything is set up.
"""

import os

from . import values as v


def _split_colon(value: str) -> list[str]:
    """Split on ':' honouring '\\:' escapes, as nspawn's bind specs do."""
    parts, current, i = [], [], 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            current.append(value[i + 1])
            i += 2
            continue
        if c == ":":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts


BIND_OPTIONS = ("rbind", "norbind", "idmap", "noidmap", "rootidmap")   # v252: no owneridmap


def bind(value: str) -> tuple:
    """SRC[:DST[:OPTS]] → (src, dst, options). '+SRC' is container-relative; '' is a temp dir."""
    parts = _split_colon(value)
    if len(parts) > 3:
        raise ValueError("too many ':'-separated fields")
    src = parts[0]
    dst = parts[1] if len(parts) > 1 else src
    options = tuple(o for o in (parts[2].split(",") if len(parts) > 2 else ()) if o)
    for option in options:
        if option not in BIND_OPTIONS:
            from ..errors import WordedValueError
            raise WordedValueError(f"Invalid bind mount option: {option}")
    if src and not src.startswith("+"):
        src = v.host_path(src)
    if src.startswith("+") and not src[1:].startswith("/"):
        raise ValueError("a '+' source must be an absolute container path")
    if not dst.startswith("/"):
        if src == "" or src.startswith("+"):
            raise ValueError("destination must be an absolute path")
        raise ValueError("destination must be an absolute path")
    return (src, os.path.normpath(dst), options)


def tmpfs(value: str) -> tuple:
    path, _, options = value.partition(":")
    return (v.absolute_path(path), options or "mode=0755")


def overlay(value: str) -> tuple:
    """L1:…:Ln:DST (at least two layers, or one layer + DST) → (layers, dst)."""
    parts = _split_colon(value)
    if len(parts) < 2:
        from ..errors import WordedValueError
        raise WordedValueError("--overlay(-ro)= needs at least two colon-separated directories "
                               "specified.")
    if len(parts) == 2:
        # One layer: it is both the lower and the destination (nspawn's rule).
        layers, dst = [parts[0]], parts[1]
    else:
        layers, dst = parts[:-1], parts[-1]
    checked = []
    for layer in layers:
        if layer.startswith("+"):
            if not layer[1:].startswith("/"):
                raise ValueError("a '+' layer must be an absolute container path")
            checked.append(layer)
        elif layer == "":
            checked.append("")
        else:
            checked.append(v.host_path(layer))
    if not dst.startswith("/"):
        raise ValueError("destination must be an absolute path")
    return (tuple(checked), os.path.normpath(dst))


def pivot_root(value: str) -> tuple:
    new, sep, old = value.partition(":")
    return (v.absolute_path(new), v.absolute_path(old) if sep else None)
