"""systemd-machined's view of running machines, merged into ours where a system bus exists
(machines started by systemd-nspawn or registered by other managers show up too).
dbus-next is imported only here."""

import os

from .state import SYSTEM_BUS, Machine

MACHINED, PATH = "org.freedesktop.machine1", "/org/freedesktop/machine1"
MANAGER, MACHINE = "org.freedesktop.machine1.Manager", "org.freedesktop.machine1.Machine"


def merge(machines: dict, only: str | None = None) -> None:
    """Mark ours that machined knows, add the ones only machined knows (class container)."""
    if not os.path.exists(SYSTEM_BUS):
        return
    import asyncio
    try:
        listed = asyncio.run(_list(only))
    except Exception:  # noqa: BLE001 - no machined (or no bus): our own view stands
        return
    for name, props in listed.items():
        if name in machines:
            machines[name].registered = True
            machines[name].unit = machines[name].unit or props.get("Unit", "")
            continue
        machines[name] = Machine(
            name=name, state="running", leader=props.get("Leader") or None,
            root=props.get("RootDirectory") or None, uuid=bytes(props.get("Id", b"")).hex() or None,
            started_usec=props.get("Timestamp") or None, unit=props.get("Unit", ""),
            registered=True, source="machined", service=props.get("Service", ""),
            boot=False)


async def _list(only):
    from dbus_next import BusType, Message, MessageType
    from dbus_next.aio import MessageBus
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(Message(destination=MACHINED, path=PATH, interface=MANAGER,
                                       member="ListMachines"))
        if reply.message_type == MessageType.ERROR:
            return {}
        found = {}
        for name, klass, _service, path in reply.body[0]:
            if klass != "container" or (only is not None and name != only):
                continue
            props = await bus.call(Message(
                destination=MACHINED, path=path, interface="org.freedesktop.DBus.Properties",
                member="GetAll", signature="s", body=[MACHINE]))
            if props.message_type != MessageType.ERROR:
                found[name] = {k: v.value for k, v in props.body[0].items()}
        return found
    finally:
        bus.disconnect()
