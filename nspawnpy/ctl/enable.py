"""nspawnpyctl enable|disable NAME: boot the machine with the system (nspawnpy@NAME.service
under machines.target) through systemctl, where systemd is the init system."""

import os
import subprocess

from . import state
from ..errors import UserError

HELP = "start a machine now and at boot, or stop doing so (systemd hosts)"
HELP_ENABLE = "start a machine now and at every boot (systemctl enable --now nspawnpy@NAME)"
HELP_DISABLE = "stop a machine and no longer start it at boot"


def add_arguments(parser, verb) -> None:
    parser.add_argument("name", metavar="NAME")


def systemctl(*args) -> None:
    try:
        result = subprocess.run(["systemctl", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("systemctl is not installed.") from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        raise UserError(f"systemctl {' '.join(args)} failed: {lines[-1]}")


def run(args) -> int:
    state.require_root()
    state.check_name(args.name)
    if not os.path.isdir("/run/systemd/system"):
        raise UserError(f"systemd is not the init system here; run the machine with "
                        f"'nspawnpy -b -M {args.name}' instead of {args.verb}.")
    unit = f"nspawnpy@{args.name}.service"
    if args.verb == "enable":
        if state.find_tree(args.name) is None:
            raise UserError(f"No machine '{args.name}' known.")
        systemctl("enable", "machines.target")
        systemctl("enable", "--now", unit)
    else:
        systemctl("disable", "--now", unit)
    return 0
