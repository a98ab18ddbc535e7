"""--oci-bundle=PATH: the part of an OCI runtime bundle's config.json nspawnpy understands,
turned into settings -- the root directory (and whether it is read-only), the hostname, the
process (arguments, environment, working directory) and tmpfs and bind mounts. Any other
member is refused with one line naming it, rather than ignored.

Runs in: the host side, before the tree is looked up.
"""

import os

from ..errors import UserError

TOP = {"ociVersion", "root", "hostname", "process", "mounts", "annotations"}
ROOT = {"path", "readonly"}
PROCESS = {"args", "env", "cwd", "terminal"}
MOUNT = {"destination", "type", "source", "options"}


def apply(settings) -> None:
    """Load the bundle's config.json into *settings* (command-line arguments win)."""
    bundle = settings.oci_bundle
    config = _load(f"{bundle}/config.json")
    _only(config, TOP, "")
    root = config.get("root")
    if not isinstance(root, dict) or not isinstance(root.get("path"), str):
        raise UserError(f"OCI bundle {bundle}: root.path is missing.")
    _only(root, ROOT, "root.")
    settings.directory = os.path.normpath(os.path.join(bundle, root["path"]))
    settings.read_only = settings.read_only or bool(root.get("readonly"))
    if isinstance(config.get("hostname"), str) and not settings.hostname:
        settings.hostname = config["hostname"]
    _process(settings, config.get("process") or {})
    for number, mount in enumerate(config.get("mounts") or ()):
        _mount(settings, bundle, number, mount)


def _load(path: str) -> dict:
    import json
    try:
        with open(path) as f:
            config = json.load(f)
    except OSError as e:
        raise UserError(f"Failed to parse '{path}': {e.strerror}") from None
    except ValueError as e:
        raise UserError(f"Failed to parse '{path}': {e}") from None
    if not isinstance(config, dict) or "ociVersion" not in config:
        raise UserError(f"JSON file '{path}' is not an OCI bundle configuration file. Refusing.")
    return config


def _only(obj: dict, known: set, where: str) -> None:
    unknown = sorted(set(obj) - known)
    if unknown:
        raise UserError(f"OCI bundle field '{where}{unknown[0]}' is not supported by nspawnpy yet.")


def _process(settings, process: dict) -> None:
    _only(process, PROCESS, "process.")
    if process.get("args") and not settings.parameters:
        settings.parameters = [str(a) for a in process["args"]]
    settings.setenv = [str(e) for e in process.get("env") or ()] + settings.setenv
    if process.get("cwd") and not settings.chdir:
        settings.chdir = process["cwd"]


def _mount(settings, bundle: str, number: int, mount: dict) -> None:
    _only(mount, MOUNT, f"mounts[{number}].")
    dest, kind = mount.get("destination"), mount.get("type")
    options = [str(o) for o in mount.get("options") or ()]
    if not isinstance(dest, str) or not dest.startswith("/"):
        raise UserError(f"OCI bundle {bundle}: mounts[{number}].destination is not absolute.")
    if kind == "tmpfs":
        settings.tmpfs.append((os.path.normpath(dest), ",".join(options) or "mode=0755"))
    elif kind == "bind":   # its options are --bind='s, as in nspawn 252
        from .mountspec import BIND_OPTIONS
        for option in options:
            if option not in BIND_OPTIONS:
                raise UserError(f"Invalid bind mount option: {option}")
        source = os.path.normpath(os.path.join(bundle, mount.get("source") or ""))
        settings.bind.append((source, os.path.normpath(dest), tuple(options)))
    else:
        raise UserError(f"OCI bundle mounts of type '{kind}' are not supported by nspawnpy yet.")
