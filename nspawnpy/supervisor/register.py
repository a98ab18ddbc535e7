"""Registration with systemd-machined over the system bus (nspawn-register.c's job).

With --keep-unit the machine is the unit we already run in (RegisterMachineWithNetwork);
otherwise machined creates machine-NAME.scope for the payload (CreateMachineWithNetwork)
with nspawn's scope properties plus --slice= and --property=. The machine is unregistered
on every exit; errors there are ignored, as nspawn does.

machined's "service" column: nspawnpy registers as "nspawnpy" so that `machinectl list`
tells its machines from systemd-nspawn's; $SYSTEMD_NSPAWN_CONTAINER_SERVICE overrides it
as it does for nspawn. The payload-facing `container=` value stays "systemd-nspawn"
(plan/build.py: SERVICE), which is what guests test for.

dbus-next is imported only here. Registering with --keep-unit and unregistering each run a
short asyncio loop; when machined creates the scope, a thread stays connected as the
scope's Controller (machinectl terminate then reaches us as RequestStop, which becomes
SIGTERM for ourselves). The supervisor's own loop is a plain poll() loop.

Runs in: the supervisor (registration is planned on the host side before clone).
"""

import os

from ..config.values import parse_boolean, signal, size_bytes, timespan_usec
from ..errors import UserError
from ..record import Record

SERVICE = "nspawnpy"
MACHINED = "org.freedesktop.machine1"
MACHINED_PATH = "/org/freedesktop/machine1"
MANAGER = "org.freedesktop.machine1.Manager"
SIGRTMIN, SIGTERM = 34, 15
UINT64_MAX = 2**64 - 1
# Devices a container may use besides the standard pseudo-devices (DevicePolicy=closed).
DEVICE_ALLOW = [("/dev/net/tun", "rwm"), ("char-pts", "rw")]


class Registration(Record):
    """What machined is told; planned (and its properties checked) before the container
    exists, done by the supervisor once PID 1 and the links exist."""
    machine: str
    uuid: str
    root: str
    service: str
    keep_unit: bool        # register the unit we run in; else machined makes a scope
    properties: tuple      # the scope's properties (none with --keep-unit)

    @classmethod
    def from_settings(cls, settings, machine: str, uuid: str, root: str) -> "Registration":
        keep_unit = settings.keep_unit
        return cls(machine, uuid, root,
                   os.environ.get("SYSTEMD_NSPAWN_CONTAINER_SERVICE") or SERVICE, keep_unit,
                   () if keep_unit else tuple(scope_properties(settings)))

    @property
    def makes_scope(self) -> bool:
        """Whether machined creates the payload's cgroup (a machine-NAME.scope)."""
        return not self.keep_unit

    def register(self, pid: int, ifindexes: list):
        """Register PID 1 (host PID) with the interfaces made for it; returns the cleanup."""
        machine_id = bytes.fromhex(self.uuid)
        if self.keep_unit:
            _run(_register(self.machine, "RegisterMachineWithNetwork", "sayssusai",
                           [self.machine, machine_id, self.service, "container", pid, self.root,
                            list(ifindexes)]))
        else:
            _create_with_controller(self.machine, [
                self.machine, machine_id, self.service, "container", pid, self.root,
                list(ifindexes), list(self.properties)])
        from .cleanups import Cleanup
        return Cleanup("machined", (self.machine,))


def unregister(machine: str) -> None:
    _stop_controller()
    try:
        _run(_call_ignoring_errors(machine))
    except Exception:  # noqa: BLE001 - nspawn ignores failures here too
        pass


# ---------------------------------------------------------------------------------------------
# D-Bus plumbing


def _run(coroutine):
    import asyncio
    return asyncio.run(coroutine)


class _BusError(Exception):
    def __init__(self, name: str, text: str):
        super().__init__(text)
        self.name, self.text = name, text


async def _connect():
    from dbus_next import BusType
    from dbus_next.aio import MessageBus
    try:
        return await MessageBus(bus_type=BusType.SYSTEM).connect()
    except Exception as e:  # noqa: BLE001 - every way of not reaching the bus reads the same
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise UserError(f"Failed to register machine: cannot connect to the system bus: {reason}; "
                        "use --register=no to run without systemd-machined.") from None


async def _call(bus, member: str, signature: str = "", body=(), interface: str = MANAGER,
                path: str = MACHINED_PATH):
    from dbus_next import Message, MessageType
    reply = await bus.call(Message(destination=MACHINED, path=path, interface=interface,
                                   member=member, signature=signature, body=list(body)))
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else reply.error_name
        raise _BusError(reply.error_name, text)
    return reply.body


_controller = None  # (thread, its event loop, its bus) while the scope's Controller is connected


def _stop_controller() -> None:
    """Disconnect the Controller and wait for its thread to end: a reboot in place clones the
    next PID 1 with a raw clone(), which must find no other thread (glibc's copy of a live
    one can hang the child, e.g. -U's setgroups() waiting for it)."""
    global _controller
    if _controller is None:
        return
    thread, loop, bus = _controller
    _controller = None
    if thread.is_alive():  # (not in the janitor: a fork has only the forking thread)
        try:
            loop.call_soon_threadsafe(bus.disconnect)
        except RuntimeError:
            pass  # its loop has just closed
        thread.join(5)


def _create_with_controller(machine: str, body: list) -> None:
    """CreateMachineWithNetwork from a thread that stays connected as the scope's Controller:
    stopping the scope (machinectl terminate) then sends us RequestStop instead of signalling
    the payload, and we turn it into SIGTERM for ourselves, i.e. nspawn's halt sequence."""
    import queue
    import threading
    outcome: queue.Queue = queue.Queue()

    async def serve() -> None:
        from dbus_next import MessageType, Variant
        bus = None
        try:
            bus = await _connect()
            body[-1] = [*body[-1], ["Controller", Variant("s", bus.unique_name)]]
            await _register(machine, "CreateMachineWithNetwork", "sayssusaia(sv)", body, bus)
        except BaseException as e:  # noqa: BLE001 - handed to the supervisor's thread
            if bus is not None:
                bus.disconnect()
            outcome.put(e)
            return

        def on_message(message) -> None:
            if message.message_type == MessageType.SIGNAL and message.member == "RequestStop" \
                    and message.interface == "org.freedesktop.systemd1.Scope":
                os.kill(os.getpid(), SIGTERM)

        bus.add_message_handler(on_message)
        global _controller
        import asyncio
        _controller = (threading.current_thread(), asyncio.get_running_loop(), bus)
        outcome.put(None)
        await bus.wait_for_disconnect()

    threading.Thread(target=lambda: _run(serve()), name="machine-controller", daemon=True).start()
    error = outcome.get()
    if error is not None:
        raise error


async def _register(machine: str, member: str, signature: str, body: list, bus=None) -> None:
    own_bus = bus is None
    bus = bus or await _connect()
    try:
        try:
            await _call(bus, member, signature, body)
            return
        except _BusError as e:
            if e.name != "org.freedesktop.machine1.MachineExists":
                raise UserError(_failure(e)) from None
        # A registration left behind by a crashed run (or a fast restart) must not block
        # this one: forget it if its leader is gone, then try once more.
        stale = await _stale_leader(bus, machine)
        if stale is None:
            raise UserError(f"Failed to register machine: machine '{machine}' already exists "
                            "and is running; pick another name with --machine=.")
        try:
            await _call(bus, "UnregisterMachine", "s", [machine])
        except _BusError:
            pass
        try:
            await _call(bus, member, signature, body)
        except _BusError as e:
            raise UserError(_failure(e)) from None
    finally:
        if own_bus:
            bus.disconnect()


async def _stale_leader(bus, machine: str):
    """The dead leader PID of an existing registration, or None if it is alive."""
    try:
        (path,) = await _call(bus, "GetMachine", "s", [machine])
        (leader,) = await _call(bus, "Get", "ss", ["org.freedesktop.machine1.Machine", "Leader"],
                                interface="org.freedesktop.DBus.Properties", path=path)
    except _BusError:
        return 0  # it vanished meanwhile
    pid = leader.value
    return None if pid and _alive(pid) else pid


def _alive(pid: int) -> bool:
    """Whether *pid* runs (a zombie leader counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


async def _call_ignoring_errors(machine: str) -> None:
    bus = await _connect()
    try:
        await _call(bus, "UnregisterMachine", "s", [machine])
    except _BusError:
        pass
    finally:
        bus.disconnect()


def _failure(e: _BusError) -> str:
    hint = ""
    if e.name in ("org.freedesktop.DBus.Error.ServiceUnknown",
                  "org.freedesktop.DBus.Error.NameHasNoOwner",
                  "org.freedesktop.systemd1.NoSuchUnit") or "masked" in e.text:
        hint = "; use --register=no to run without systemd-machined"
    return f"Failed to register machine: {e.text.rstrip('.')}{hint}."


# ---------------------------------------------------------------------------------------------
# Scope properties (what nspawn passes to CreateMachine, plus --slice= and --property=)


def scope_properties(settings) -> list:
    from dbus_next import Variant
    props = []
    if settings.slice:
        props.append(["Slice", Variant("s", settings.slice)])
    props.append(["DevicePolicy", Variant("s", "closed")])
    props.append(["DeviceAllow", Variant("a(ss)", [list(d) for d in DEVICE_ALLOW])])
    kill_signal = settings.kill_signal
    if kill_signal is None and settings.boot:
        kill_signal = SIGRTMIN + 3
    if kill_signal:
        props.append(["KillMode", Variant("s", "mixed")])
        props.append(["KillSignal", Variant("i", kill_signal)])
    for assignment in settings.property:
        props.append(property_variant(assignment))
    return props


def _scalable(parse):
    """MemoryMax=/TasksMax= style: parse(value), a percentage (-> NAMEScale) or infinity."""
    def convert(name: str, value: str):
        if value == "infinity":
            return name, "t", UINT64_MAX
        if value.endswith("%"):
            return name + "Scale", "u", int(float(value[:-1]) / 100 * (2**32 - 1))
        return name, "t", parse(value)
    return convert


_limit, _tasks = _scalable(size_bytes), _scalable(int)


def _signal(name: str, value: str):
    return name, "i", signal(value)


def _cpu_quota(name: str, value: str):
    if not value.endswith("%"):
        raise ValueError(value)
    return "CPUQuotaPerSecUSec", "t", int(float(value[:-1]) * 10000)


def _weight(name: str, value: str):
    number = int(value)
    if not 1 <= number <= 10000:
        raise ValueError(value)
    return name, "t", number


def _device_allow(name: str, value: str):
    path, _, access = value.partition(" ")
    return name, "a(ss)", [[path, access.strip() or "rwm"]]


def _timespan(name: str, value: str):
    return name.removesuffix("Sec") + "USec", "t", timespan_usec(value)


PROPERTY_PARSERS = {
    **{n: _limit for n in ("MemoryMax", "MemoryHigh", "MemoryLow", "MemoryMin",
                           "MemorySwapMax", "MemoryLimit")},
    "TasksMax": _tasks,
    "CPUQuota": _cpu_quota,
    **{n: _weight for n in ("CPUWeight", "StartupCPUWeight", "IOWeight", "StartupIOWeight")},
    **{n: (lambda name, value: (name, "t", int(value))) for n in ("CPUShares", "StartupCPUShares",
                                                              "BlockIOWeight")},
    **{n: (lambda name, value: (name, "b", parse_boolean(value)))
       for n in ("CPUAccounting", "MemoryAccounting", "TasksAccounting", "IOAccounting",
                 "IPAccounting", "BlockIOAccounting", "Delegate", "SendSIGHUP", "SendSIGKILL")},
    **{n: (lambda name, value: (name, "s", value))
       for n in ("Description", "Slice", "DevicePolicy", "KillMode", "CollectMode",
                 "ManagedOOMSwap", "ManagedOOMMemoryPressure", "OOMPolicy")},
    **{n: _signal for n in ("KillSignal", "FinalKillSignal", "RestartKillSignal",
                            "WatchdogSignal")},
    **{n: _timespan for n in ("RuntimeMaxSec", "TimeoutStopSec", "RuntimeRandomizedExtraSec")},
    "DeviceAllow": _device_allow,
}


def property_variant(assignment: str) -> list:
    """NAME=VALUE from --property= as a ["Name", Variant] pair of StartTransientUnit."""
    from dbus_next import Variant
    name, _, value = assignment.partition("=")
    name, value = name.strip(), value.strip()
    parser = PROPERTY_PARSERS.get(name)
    if parser is None:
        raise UserError(f"Unknown assignment: {assignment} (nspawnpy supports --property= for "
                        "memory, CPU, tasks, IO, device, kill and timeout settings).")
    try:
        key, signature, parsed = parser(name, value)
    except (ValueError, KeyError):
        raise UserError(f"Failed to parse {name}= value '{value}'.") from None
    return [key, Variant(signature, parsed)]
