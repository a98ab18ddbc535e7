"""nspawnpyctl list: the running machines (ours and machined's), --all adds stopped trees."""

from . import netinfo, output, state
from .cli import add_json

HELP = "list running machines (--all: also the stopped trees in the image search path)"


def add_arguments(parser, verb) -> None:
    parser.add_argument("--all", "-a", action="store_true", help="include stopped machines")
    add_json(parser)


def describe(machine) -> dict:
    running = machine.state == "running"
    return {
        "name": machine.name, "state": machine.state,
        "leader": machine.leader if running else None, "root": machine.root,
        "unit": machine.unit or None, "machined": machine.registered,
        "source": machine.source, "boot": machine.boot,
        "addresses": netinfo.addresses(machine.leader) if running and machine.leader else [],
    }


def run(args) -> int:
    state.require_root()
    machines = state.running()
    if args.all:
        machines.update(state.stopped_trees(skip=set(machines)))
    rows = [describe(m) for _, m in sorted(machines.items())]
    if args.json != "off":
        output.emit_json(rows, args.json)
        return 0
    output.table(["MACHINE", "STATE", "LEADER", "MACHINED", "UNIT", "ADDRESSES"], [
        [r["name"], r["state"], r["leader"] or "-", "yes" if r["machined"] else "no",
         r["unit"] or "-", ",".join(r["addresses"]) or "-"] for r in rows])
    if not rows:
        return 0
    return 0
