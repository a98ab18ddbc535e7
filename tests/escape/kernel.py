"""Attempts on the kernel's global facilities: modules, devices, keys, bpf, perf, kexec,
reboot, the clock, swap, accounting, quotas, I/O ports, personality, userfaultfd."""

import ctypes
import os
import struct
import time

from . import probe
from .probe import (ESCAPED, MNT_DETACH, REACHED, REBOOT_MARKER, REFUSED, WORK, attempt,
                     canary_reachable_at, contained, errname, in_host_pid_ns,
                     mknod_anywhere, mount, open_device, private_mount_ns, report, sc,
                     sysctl_value, verdict, worst, write_file)


@attempt()
def init_module(cfg):
    """init_module(2) with a fake module image"""
    image = b"\x7fELF" + bytes(60)
    r, err = sc("init_module", image, len(image), "")
    return verdict(err), errname(err)


@attempt()
def finit_module(cfg):
    """finit_module(2) of a file that is not a module"""
    fd = os.open("/etc/os-release", os.O_RDONLY | os.O_CLOEXEC)
    r, err = sc("finit_module", fd, "", 0)
    return verdict(err), errname(err)


@attempt()
def usermode_helper_sysctls(cfg):
    """write kernel.core_pattern and kernel.modprobe (host-wide helpers run as host root)
    with their own values"""
    outcomes, details = [], []
    for knob in ("kernel/core_pattern", "kernel/modprobe"):
        value = sysctl_value("/proc", knob)
        if value is not None:
            err = write_file(f"/proc/sys/{knob}", value)
            outcomes.append(verdict(err))
            details.append(f"{knob}: {errname(err)}")
    return worst(*outcomes), "; ".join(details) or "none readable"


def use_device(name, mode, dev, flags, use):
    """mknod + open + *use*(fd): escaped if all of it works."""
    fd, detail, failed = open_device(name, mode, dev, flags)
    if fd is None:
        return failed, detail
    try:
        use(fd)
        return ESCAPED, detail + ", used it"
    except OSError as e:
        return REACHED, detail + f", use: {errname(e.errno)}"
    finally:
        os.close(fd)


@attempt()
def dev_mem_read(cfg):
    """mknod /dev/mem (c 1:1) and read it"""
    return use_device("mem", 0o20600, os.makedev(1, 1), os.O_RDONLY,
                      lambda fd: os.pread(fd, 16, 0))


@attempt()
def dev_kmsg_write(cfg):
    """write a marker to the container's /dev/kmsg (escaped if it lands in the host's log)"""
    err = write_file("/dev/kmsg", f"nspawnpy-escape-{cfg['token']} {probe.CURRENT}\n")
    return contained(err)


@attempt()
def mknod_kmsg_write(cfg):
    """mknod the kernel log device (c 1:11) and write a marker to it"""
    marker = f"nspawnpy-escape-{cfg['token']} {probe.CURRENT}\n".encode()
    return use_device("kmsg", 0o20600, os.makedev(1, 11), os.O_WRONLY,
                      lambda fd: os.write(fd, marker))


@attempt()
def host_disk_read(cfg):
    """mknod the host's root block device and read its first sector"""
    major, minor = cfg["host_disk"]
    return use_device("disk", 0o60600, os.makedev(major, minor), os.O_RDONLY,
                      lambda fd: os.pread(fd, 512, 0))


@attempt()
def host_disk_mount(cfg):
    """mknod the host's root block device, mount it and append to the host's canary file"""
    private_mount_ns()
    major, minor = cfg["host_disk"]
    path, err = mknod_anywhere("disk", 0o60600, os.makedev(major, minor))
    if path is None:
        return verdict(err, REACHED), f"mknod: {errname(err)}"
    target = os.path.join(WORK, "hostfs")
    os.makedirs(target, exist_ok=True)
    err = mount(path, target, cfg["host_fstype"], 0)
    os.unlink(path)
    if err:
        return verdict(err, REACHED), f"mknod ok, mount: {errname(err)}"
    wrote = canary_reachable_at(target + cfg["canary_rel"], cfg)
    sc("umount2", target, MNT_DETACH)
    return ESCAPED, f"mounted the host disk; canary written: {wrote}"


@attempt()
def keyctl_host_keyring(cfg):
    """read the host root's user keyring (the test put a key there) and add a key to it"""
    KEY_SPEC_USER_KEYRING = -4
    r, err = sc("keyctl", 10, KEY_SPEC_USER_KEYRING, "user", cfg["key_desc"], 0)   # SEARCH
    outcome = ESCAPED if err == 0 else verdict(err, REACHED)
    payload = b"planted"
    _, err_add = sc("add_key", "user", cfg["key_planted"], payload, len(payload),
                    KEY_SPEC_USER_KEYRING)
    # a key in the container's own keyring is no escape; the test looks for it on the host
    outcome = worst(outcome, REACHED if err_add == 0 else verdict(err_add))
    return outcome, f"search: {errname(err)}, add_key: {errname(err_add)}"


@attempt()
def bpf_map_create(cfg):
    """bpf(BPF_MAP_CREATE) of a one-entry array map"""
    attr = struct.pack("=IIII", 2, 4, 4, 1) + bytes(112)
    fd, err = sc("bpf", 0, attr, len(attr))
    if fd >= 0:
        os.close(fd)
    return verdict(err), errname(err)


@attempt()
def perf_event_open_system_wide(cfg):
    """perf_event_open(2) of a CPU clock counter for every process on CPU 0"""
    attr = struct.pack("=IIQ", 1, 128, 0) + bytes(112)
    fd, err = sc("perf_event_open", attr, -1, 0, -1, 0)
    if fd >= 0:
        os.close(fd)
    return verdict(err), errname(err)


@attempt()
def kexec_unload(cfg):
    """kexec_load(2) and kexec_file_load(2) with nothing to load (that unloads: harmless)"""
    _, err = sc("kexec_load", 0, 0, 0, 0)
    _, err_file = sc("kexec_file_load", -1, -1, 0, 0, 1)   # KEXEC_FILE_UNLOAD
    return worst(verdict(err), verdict(err_file)), f"{errname(err)}, {errname(err_file)}"


LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2 = 0xfee1dead, 672274793


@attempt()
def reboot_cad_off(cfg):
    """reboot(LINUX_REBOOT_CMD_CAD_OFF) (host-wide Ctrl-Alt-Del setting)"""
    if in_host_pid_ns(cfg):
        return ESCAPED, "in the host's PID namespace: not tried"
    _, err = sc("reboot", LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, 0, 0)
    return verdict(err), errname(err)


def reboot_container(cfg, cmd):
    """reboot(2) for real: only ends the container's PID namespace.  Never called in the host's
    PID namespace; a marker in the tree stops an in-place restart from looping."""
    if in_host_pid_ns(cfg) or os.getpid() != 1:
        return ESCAPED if in_host_pid_ns(cfg) else REFUSED, "not tried: not PID 1 of a PID ns"
    if os.path.exists(REBOOT_MARKER):
        return REFUSED, "restarted in place"
    with open(REBOOT_MARKER, "w") as f:
        f.write("1")
    report(probe.CURRENT, REACHED, "calling reboot(2)", wait=False)
    _, err = sc("reboot", LINUX_REBOOT_MAGIC1, LINUX_REBOOT_MAGIC2, cmd, 0)
    return verdict(err, REACHED), f"reboot returned: {errname(err)}"


@attempt("reboot-poweroff")
def reboot_power_off(cfg):
    """reboot(LINUX_REBOOT_CMD_POWER_OFF): must end only the container"""
    return reboot_container(cfg, 0x4321FEDC)


@attempt("reboot-restart")
def reboot_restart(cfg):
    """reboot(LINUX_REBOOT_CMD_RESTART): must end only the container"""
    return reboot_container(cfg, 0x01234567)


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


@attempt()
def clock_settime_realtime(cfg):
    """clock_settime(CLOCK_REALTIME) to the current time"""
    now = time.time()
    ts = Timespec(int(now), int((now % 1) * 1e9))
    _, err = sc("clock_settime", 0, ctypes.byref(ts))
    return verdict(err), errname(err)


@attempt()
def settimeofday_now(cfg):
    """settimeofday(2) to the current time"""
    now = time.time()
    tv = Timespec(int(now), int((now % 1) * 1e6))
    _, err = sc("settimeofday", ctypes.byref(tv), 0)
    return verdict(err), errname(err)


@attempt()
def userfaultfd(cfg):
    """userfaultfd(2)"""
    fd, err = sc("userfaultfd", os.O_CLOEXEC | os.O_NONBLOCK)
    if fd >= 0:
        os.close(fd)
    return verdict(err, REACHED), errname(err)


@attempt()
def swapon_file(cfg):
    """swapon(2) a file that holds no swap signature"""
    path = os.path.join(WORK, "swapfile")
    with open(path, "wb") as f:
        f.write(bytes(65536))
    os.chmod(path, 0o600)
    _, err = sc("swapon", path, 0)
    return verdict(err), errname(err)


@attempt()
def acct_on(cfg):
    """acct(2): turn process accounting on (it is off again at once if that worked)"""
    path = os.path.join(WORK, "acct")
    open(path, "w").close()
    _, err = sc("acct", path)
    if err == 0:
        sc("acct", 0)
    return verdict(err), errname(err)


@attempt()
def quotactl_quotaoff(cfg):
    """quotactl(Q_QUOTAOFF) (privileged) on a device that does not exist"""
    _, err = sc("quotactl", (0x800003 << 8) | 0, "/dev/escape-none", 0, 0)
    return verdict(err, REACHED), errname(err)


@attempt()
def ioperm_iopl(cfg):
    """ioperm(2) for port 0x80 and iopl(3) (nothing is written to a port)"""
    _, err = sc("ioperm", 0x80, 1, 1)
    _, err_iopl = sc("iopl", 3)
    return worst(verdict(err), verdict(err_iopl)), f"ioperm {errname(err)}, iopl {errname(err_iopl)}"


@attempt()
def personality_tricks(cfg):
    """personality(2): READ_IMPLIES_EXEC|ADDR_NO_RANDOMIZE and PER_LINUX32"""
    old, _ = sc("personality", 0xFFFFFFFF)
    results = []
    for persona in (0x0400000 | 0x0040000, 0x0008):
        r, err = sc("personality", persona)
        now, _ = sc("personality", 0xFFFFFFFF)
        results.append(REACHED if now == persona else REFUSED)
        sc("personality", old)
    return worst(*results), f"set: {results}"
