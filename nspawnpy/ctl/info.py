"""nspawnpyctl info NAME: state, leader, start time, root, addresses, and what the machine
uses (CPU, memory, tasks, block I/O, link bytes). A stopped machine is just 'stopped'."""

from . import netinfo, output, state, usage
from .cli import add_json

HELP = "show a machine's state, addresses and resource usage"


def add_arguments(parser, verb) -> None:
    parser.add_argument("name", metavar="NAME")
    add_json(parser)


def collect(machine) -> dict:
    info = {"name": machine.name, "state": machine.state, "root": machine.root}
    if machine.state != "running":
        return info
    info.update({
        "leader": machine.leader, "supervisor": machine.supervisor,
        "started_usec": machine.started_usec, "uuid": machine.uuid, "boot": machine.boot,
        "unit": machine.unit or None, "machined": machine.registered, "source": machine.source,
        "user_namespace": list(machine.userns) if machine.userns else None,
        "addresses": netinfo.addresses(machine.leader, include_link_local=True),
        "links": netinfo.link_bytes(machine.leader),
        "host_links": netinfo.host_link_bytes(machine.links),
    })
    info["usage"] = usage.usage(machine.leader, machine.supervisor)
    return info


def run(args) -> int:
    state.require_root()
    machine = state.lookup(args.name)
    if machine is None:
        from ..errors import UserError
        raise UserError(f"No machine '{args.name}' known.")
    info = collect(machine)
    if args.json != "off":
        output.emit_json(info, args.json)
        return 0
    pairs = [("Name", info["name"]), ("State", info["state"]), ("Root", info["root"] or "-")]
    if machine.state == "running":
        u = info["usage"]
        pairs += [
            ("Leader", info["leader"]), ("Since", output.timestamp(info["started_usec"])),
            ("Unit", info["unit"] or "-"), ("Machined", "yes" if info["machined"] else "no"),
            ("Addresses", ", ".join(info["addresses"]) or "-"),
            ("CPU time", f"{u['cpu_usec'] / 1e6:.2f}s"), ("Memory", output.size(u["memory_bytes"])),
            ("Tasks", u["tasks"]),
            ("Block I/O", f"read {output.size(u['io_read_bytes'])}, "
                          f"written {output.size(u['io_write_bytes'])}"),
        ]
        for name, counts in {**info["links"], **info["host_links"]}.items():
            pairs.append((f"Link {name}", f"RX {output.size(counts['rx_bytes'])}, "
                                          f"TX {output.size(counts['tx_bytes'])}"))
    output.block(pairs)
    return 0
