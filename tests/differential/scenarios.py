"""The matrix: every option family of systemd-nspawn 252, each run under both tools.

Set-up functions make the host-side files an option names inside the scenario's world (bind
sources, .nspawn files, credentials) and register their removal.  Names on the host that are
not under the world's scratch directory (trusted .nspawn files, links, journal directories)
carry the world's unique machine name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path

from differential.harness import Scenario, World

GIVEN_UUID = "0123456789abcdef0123456789abcdef"
JOURNAL_ID = "5eed0d1ff0c0ffee5eed0d1ff0c0ffee"
TRUSTED_DIR = Path("/etc/systemd/nspawn")


# ---------------------------------------------------------------------------------------------
# set-up helpers


def _sources(world: World) -> None:
    """Host directories and files for --bind/--overlay: src/, lower/, upper/, l1/, l2/."""
    (world.tree / "mnt").mkdir(exist_ok=True)
    for d in ("src", "lower", "upper", "l1", "l2"):
        (world.scratch / d).mkdir(exist_ok=True)
        (world.scratch / d / f"in-{d}").write_text(f"{d}\n")
    (world.scratch / "file.txt").write_text("a bound file\n")


def _tree_as_template(world: World) -> None:
    """The tree moves to scratch/template: -D names a directory --template= makes."""
    world.tree.rename(world.scratch / "template")


def _merged_usr(world: World) -> None:
    """Make the busybox tree merged-/usr (/bin -> usr/bin), as --volatile=yes expects."""
    for d in ("bin", "sbin"):
        src, dst = world.tree / d, world.tree / "usr" / d
        for entry in src.iterdir():
            target = dst / entry.name
            if not os.path.lexists(target):
                entry.rename(target)
        shutil.rmtree(src)
        os.symlink(f"usr/{d}", src)


def _journal_ready(world: World) -> None:
    """A machine id and /var/log/journal in the tree; the host's journal dir is ours to remove."""
    (world.tree / "etc/machine-id").write_text(JOURNAL_ID + "\n")
    (world.tree / "var/log/journal").mkdir(parents=True, exist_ok=True)
    host_dir = Path("/var/log/journal") / JOURNAL_ID

    def remove() -> None:
        if host_dir.is_symlink() or host_dir.is_file():
            host_dir.unlink()
        elif host_dir.is_dir():
            shutil.rmtree(host_dir)

    remove()
    world.cleanups.append(remove)


NSPAWN_FILE = """\
[Exec]
Environment=FROM_FILE=1
WorkingDirectory=/tmp
Capability=CAP_NET_ADMIN
LimitNOFILE=2048:4096
NoNewPrivileges=yes
Hostname=from-file
[Files]
TemporaryFileSystem=/mnt/from-file
Bind={scratch}/src:/mnt/src
ReadOnly=no
[Network]
Private=yes
"""


def _nspawn_file(where: str):
    def setup(world: World) -> None:
        _sources(world)
        text = NSPAWN_FILE.format(scratch=world.scratch)
        if where == "trusted":
            path = TRUSTED_DIR / f"{world.machine}.nspawn"
            TRUSTED_DIR.mkdir(parents=True, exist_ok=True)
            world.cleanups.append(lambda: path.unlink(missing_ok=True))
        else:
            path = world.scratch / f"{world.machine}.nspawn"
        path.write_text(text)
    return setup


RUN_DIR = Path("/run/systemd/nspawn")


def _run_nspawn_file(text: str):
    """A settings file in /run/systemd/nspawn (trusted, like /etc's)."""
    def setup(world: World) -> None:
        _sources(world)
        path = RUN_DIR / f"{world.machine}.nspawn"
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(scratch=world.scratch))
        world.cleanups.append(lambda: path.unlink(missing_ok=True))
    return setup


def _host_inaccessible_nodes(world: World) -> None:
    """systemd-nspawn 252 masks with /run/systemd/inaccessible/*, which systemd as PID 1 makes
    on every systemd host; this machine runs no systemd, so make them as it would (once; never
    removed, as concurrent runs may be using them)."""
    base = Path("/run/systemd/inaccessible")
    if (base / "sock").exists():
        return
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    old = os.umask(0o777)
    try:
        for name, kind in (("reg", stat.S_IFREG), ("dir", None), ("fifo", stat.S_IFIFO),
                           ("chr", stat.S_IFCHR), ("blk", stat.S_IFBLK)):
            with contextlib.suppress(FileExistsError):
                if kind is None:
                    os.mkdir(base / name, 0)
                else:
                    os.mknod(base / name, kind, os.makedev(0, 0))
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(base / "sock"))
    finally:
        os.umask(old)


def _no_machine_id(world: World) -> None:
    (world.tree / "etc/machine-id").unlink()


def _submount_source(world: World) -> None:
    """scratch/binddir with a tmpfs on binddir/subdir: what norbind must not carry along."""
    sub = world.scratch / "binddir/subdir"
    sub.mkdir(parents=True)
    (sub / "file").write_text("outer")
    subprocess.run(["mount", "-t", "tmpfs", "probe-inner", str(sub)], check=True)
    world.cleanups.append(lambda: subprocess.run(["umount", "-l", str(sub)], check=False))
    (sub / "file").write_text("inner")


def _layers(world: World) -> None:
    _sources(world)
    for n in ("1", "2", "3"):
        (world.scratch / n).mkdir()
        (world.scratch / n / f"file{n}").write_text(n)


def _no_getent(world: World) -> None:
    (world.tree / "usr/bin/getent").unlink()


BIG_NSPAWN_FILE = """\
[Exec]
Boot=no
ProcessTwo=no
Parameters=/bin/sh /usr/bin/probe
Environment=FOO=bar
Environment=BAZ="hello world"
User=root
WorkingDirectory=/tmp
Capability=CAP_BLOCK_SUSPEND CAP_BPF CAP_CHOWN
DropCapability=CAP_AUDIT_CONTROL CAP_AUDIT_WRITE
AmbientCapability=CAP_BPF CAP_CHOWN
NoNewPrivileges=no
MachineID=f28f129b51874b1280a89421ec4b4ad4
PrivateUsers=no
NotifyReady=no
SystemCallFilter=@basic-io @chown
SystemCallFilter=~ @clock
LimitNOFILE=1024:2048
LimitRTPRIO=8:16
OOMScoreAdjust=32
CPUAffinity=0,0-1,1
Hostname=nspawn-settings
ResolvConf=copy-host
Timezone=delete
LinkJournal=no
SuppressSync=no
[Files]
ReadOnly=no
Volatile=no
TemporaryFileSystem=/tmp
TemporaryFileSystem=/opt/tmp
Inaccessible=/opt/inaccessible
Inaccessible=/opt/also-inaccessible
Overlay=+/var::/var
[Network]
Private=yes
VirtualEthernet=yes
VirtualEthernetExtra=my-fancy-veth1
"""


def _opt_dirs(world: World) -> None:
    (world.tree / "etc/machine-id").unlink()
    for d in ("opt/tmp", "opt/inaccessible", "opt/also-inaccessible"):
        (world.tree / d).mkdir(parents=True, exist_ok=True)


PROBE_SERVICE = """\
[Unit]
Description=differential probe
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/sh /usr/bin/probe /var/tmp/probe.out
ExecStartPost=/bin/systemctl --no-block poweroff
"""


def _probe_service(world: World) -> None:
    """A booted Debian runs the probe as a service once it is up, then powers off."""
    units = world.tree / "etc/systemd/system"
    (units / "probe.service").write_text(PROBE_SERVICE)
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    os.symlink("../probe.service", wants / "probe.service")


def _credential_file(world: World) -> None:
    (world.scratch / "cred.txt").write_text("secret from a file\n")


def _both(*fns):
    def setup(world: World) -> None:
        for fn in fns:
            fn(world)
    return setup


# ---------------------------------------------------------------------------------------------
# the matrix


def _s(name, *args, **kw) -> Scenario:
    return Scenario(name=name, args=tuple(args), **kw)


BASICS = [
    _s("plain"),
    _s("console-pipe", "--console=pipe"),
    _s("user-root", "-u", "root"),
    _s("user-alice", "-u", "alice"),
    _s("user-nobody", "--user=nobody"),
    _s("user-without-getent", "-u", "alice", setup=_no_getent),
    _s("chdir", "--chdir=/tmp"),
    _s("chdir-user-home", "-u", "alice", "--chdir=/home/alice"),
    _s("setenv", "-E", "FOO=bar", "--setenv=BAZ=with space", "-E", "PATH=/bin:/usr/bin"),
    _s("setenv-from-caller", "-E", "FROMCALLER", env={"FROMCALLER": "caller-value"}),
    _s("as-pid2", "-a"),
    _s("as-pid2-user", "-a", "-u", "alice"),
    _s("boot", "-b", boot_probe=True),
    _s("inherited-fd", pass_fd=True, note="issue 9 #1: a caller's fd must not reach the payload"),
    _s("debian-plain", tree="debian"),
    *[_s(f"debian-boot-service{suffix}", "-b", *extra, command=(), tree="debian",
         setup=_probe_service, report_file="/var/tmp/probe.out")
      for suffix, extra in (("", ()), ("-userns", ("-U",)), ("-veth", ("-n",)))],
]

MOUNTS = [
    _s("read-only", "--read-only"),
    _s("bind", "--bind={scratch}/src:/mnt/src", setup=_sources),
    _s("bind-ro", "--bind-ro={scratch}/src:/srv/data", setup=_sources),
    _s("bind-norbind", "--bind={scratch}/src:/mnt/src:norbind", setup=_sources),
    _s("bind-relative", "--bind=src:/mnt/rel", setup=_sources),
    _s("bind-same-path", "--bind={scratch}/src", setup=_sources),
    _s("bind-file", "--bind-ro={scratch}/file.txt:/etc/motd", setup=_sources),
    _s("bind-container-relative", "--bind=+/etc:/mnt/etc"),
    _s("bind-empty-source", "--bind=:/mnt/scratch"),
    _s("tmpfs", "--tmpfs=/var/cache"),
    _s("tmpfs-options", "--tmpfs=/mnt/t:mode=0700,size=1M"),
    _s("overlay", "--overlay={scratch}/lower:{scratch}/upper:/mnt/ov", setup=_sources),
    _s("overlay-ro", "--overlay-ro={scratch}/l1:{scratch}/l2:/mnt/ov", setup=_sources),
    _s("overlay-empty-upper", "--overlay={scratch}/lower::/mnt/ov", setup=_sources),
    _s("overlay-missing-parent", "--overlay={scratch}/lower:{scratch}/upper:/opt/a/ov",
       setup=_sources),
    _s("inaccessible", "--inaccessible=/etc/os-release", "--inaccessible=/var/tmp",
       setup=_host_inaccessible_nodes),
    _s("volatile-yes", "--volatile=yes", setup=_merged_usr),
    _s("volatile-state", "--volatile=state"),
    _s("volatile-overlay", "--volatile=overlay"),
    _s("ephemeral", "-x"),
    _s("ephemeral-named", "-x", "-M", "{machine}",
       note="a name given with -M is kept (no random suffix)"),
    _s("template", "--template={scratch}/template", setup=_tree_as_template),
]

RESOLV_MODES = ["off", "delete", "copy-host", "copy-static", "copy-uplink", "copy-stub",
                "replace-host", "replace-static", "replace-uplink", "replace-stub", "bind-host",
                "bind-static", "bind-uplink", "bind-stub", "auto"]
ETC = [
    *[_s(f"resolv-conf-{m}", f"--resolv-conf={m}") for m in RESOLV_MODES],
    _s("resolv-conf-auto-read-only", "--resolv-conf=auto", "--read-only"),
    _s("resolv-conf-auto-private-network", "--resolv-conf=auto", "--private-network"),
    *[_s(f"timezone-{m}", f"--timezone={m}")
      for m in ("off", "copy", "bind", "symlink", "delete", "auto")],
    _s("timezone-auto-read-only", "--timezone=auto", "--read-only"),
]

SECURITY = [
    _s("capability-add", "--capability=CAP_NET_ADMIN,CAP_SYS_NICE"),
    _s("capability-drop", "--drop-capability=CAP_CHOWN,CAP_MKNOD"),
    _s("capability-drop-all", "--drop-capability=all"),
    _s("ambient-capability", "-u", "alice", "--ambient-capability=CAP_NET_RAW"),
    _s("no-new-privileges", "--no-new-privileges=yes"),
    _s("system-call-filter-deny", "--system-call-filter=~@swap unshare"),
    _s("system-call-filter-allow", "--system-call-filter=@swap"),
    _s("suppress-sync", "--suppress-sync=yes"),
]

USERNS = [
    _s("userns-U", "-U"),
    _s("userns-pick-chown", "--private-users=pick", "--private-users-ownership=chown"),
    _s("userns-pick-map", "--private-users=pick", "--private-users-ownership=map"),
    _s("userns-identity", "--private-users=identity"),
    _s("userns-explicit-chown", "--private-users=1879048192:65536",
       "--private-users-ownership=chown"),
    _s("userns-U-user-alice", "-U", "-u", "alice"),
    _s("userns-boot", "-U", "-b", boot_probe=True),
    _s("userns-as-pid2", "-U", "-a"),
    _s("userns-read-only", "-U", "--read-only"),
    _s("debian-userns-U", "-U", tree="debian"),
    # --bind-user= with users every Debian host has: daemon (its own group, home /usr/sbin),
    # games (group games, not its UID) and sync (group nogroup: refused).
    _s("userns-bind-user", "-U", "--bind-user=daemon", "--bind-user=games"),
    _s("userns-bind-user-chown", "--private-users=pick", "--private-users-ownership=chown",
       "--bind-user=games", "--chdir=/run/host/home/games"),
    _s("userns-bind-user-nspawn-file", "-U",
       setup=_run_nspawn_file("[Files]\nBindUser=daemon 0bad games\n")),
    _s("userns-bind-user-root", "-U", "--bind-user=root"),
    _s("userns-bind-user-no-private-group", "-U", "--bind-user=sync"),
    _s("userns-bind-user-in-range", "--private-users=identity", "--bind-user=daemon"),
]

RESOURCES = [
    _s("rlimit-nofile", "--rlimit=RLIMIT_NOFILE=4096:8192"),
    _s("rlimit-several", "--rlimit=RLIMIT_CORE=infinity", "--rlimit=RLIMIT_NPROC=1000",
       "--rlimit=RLIMIT_STACK=1048576:2097152"),
    _s("oom-score-adjust", "--oom-score-adjust=100"),
    _s("cpu-affinity", "--cpu-affinity=0"),
    _s("personality-x86", "--personality=x86"),
]

IDENTITY = [
    _s("hostname", "--hostname=probe-host"),
    _s("machine", "-M", "{machine}m"),
    _s("uuid", f"--uuid={GIVEN_UUID}", given_ids=(GIVEN_UUID,)),
    *[_s(f"link-journal-{m}", f"--link-journal={m}", setup=_journal_ready,
         given_ids=(JOURNAL_ID,))
      for m in ("no", "host", "try-host", "guest", "try-guest", "auto")],
]

def _host_link(kind: str, prefix: str):
    """A host link of *kind* named "<prefix><short>" for the scenario, removed afterwards
    (a veth pair, with its peer "dp<short>", stands in for a NIC: this kernel may have no
    dummy links)."""
    def setup(world: World) -> None:
        name = f"{prefix}{world.short}"
        # (a fixed MAC: the link may move into the container, where its address is seen)
        extra = ["peer", "name", f"dp{world.short}"] if kind == "veth" else []
        subprocess.run(["ip", "link", "add", name, "address", "02:00:00:00:5e:01", "type", kind,
                        *extra], check=True)
        subprocess.run(["ip", "link", "set", name, "up"], check=True)
        world.cleanups.append(
            lambda: subprocess.run(["ip", "link", "del", name], capture_output=True))
        _udev_initialized(world, name)
    return setup


def _udev_initialized(world: World, link: str) -> None:
    """systemd-nspawn 252 takes only host links udev has initialized; this machine runs no
    udev, so the link gets the database record udev would write (removed afterwards, with
    the directories if this made them and they are empty)."""
    index = (Path("/sys/class/net") / link / "ifindex").read_text().strip()
    made = [d for d in (Path("/run/udev"), Path("/run/udev/data")) if not d.exists()]
    for d in made:
        d.mkdir(mode=0o755, exist_ok=True)
    record = Path(f"/run/udev/data/n{index}")
    record.write_text("I:1000000\n")

    def remove() -> None:
        record.unlink(missing_ok=True)
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()
    world.cleanups.append(remove)


NETWORK = [
    _s("private-network", "--private-network"),
    _s("network-veth", "-n"),
    _s("network-veth-extra", "--network-veth-extra=vx{short}:host1"),
    _s("network-zone", "--network-zone=z{short}"),
    _s("network-bridge", "--network-bridge=br{short}", setup=_host_link("bridge", "br")),
    _s("network-macvlan", "--network-macvlan=du{short}", setup=_host_link("veth", "du")),
    _s("network-ipvlan", "--network-ipvlan=du{short}", setup=_host_link("veth", "du")),
    _s("network-interface", "--network-interface=du{short}", setup=_host_link("veth", "du")),
    _s("network-interface-missing", "--network-interface=du{short}"),
    _s("userns-private-network", "-U", "--private-network"),
]

FILES = [
    _s("nspawn-file-trusted", setup=_nspawn_file("trusted")),
    _s("nspawn-file-untrusted", setup=_nspawn_file("untrusted")),
    _s("nspawn-file-untrusted-settings-trusted", "--settings=trusted",
       setup=_nspawn_file("untrusted")),
    _s("nspawn-file-override", "--settings=override", "--hostname=from-cli", "-E", "FROM_CLI=1",
       setup=_nspawn_file("trusted")),
    _s("nspawn-file-cli-wins", "--hostname=from-cli", "--bind-ro={scratch}/l1:/mnt/l1",
       setup=_nspawn_file("trusted")),
    _s("nspawn-file-settings-no", "--settings=no", setup=_nspawn_file("trusted")),
]

CONSOLE = [
    _s("console-read-only", "--console=read-only"),
    _s("console-passive", "--console=passive", report_file="/var/tmp/probe.out"),
    _s("console-autopipe", "--console=autopipe"),
    _s("console-interactive-pty", "--console=interactive", console="pty"),
    _s("console-default-pty", console="pty"),
    _s("console-autopipe-pty", "--console=autopipe", console="pty"),
    _s("console-pipe-pty", "--console=pipe", console="pty"),
]

CREDENTIALS = [
    _s("credentials", "--set-credential=cred1:hello\\nworld",
       "--load-credential=cred2:{scratch}/cred.txt", setup=_credential_file),
    _s("credentials-userns", "-U", "--set-credential=cred1:hello", setup=_credential_file),
]

KNOBS = [
    _s("env-api-vfs-writable", env={"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "yes"}),
    _s("env-api-vfs-writable-network", "--private-network",
       env={"SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"}),
    _s("env-unified-hierarchy", env={"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}),
    _s("env-legacy-hierarchy", env={"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "0"}),
    _s("env-no-cgns", env={"SYSTEMD_NSPAWN_USE_CGNS": "0"}),
    _s("env-no-tmpfs-tmp", env={"SYSTEMD_NSPAWN_TMPFS_TMP": "0"}),
    _s("env-container-service", env={"SYSTEMD_NSPAWN_CONTAINER_SERVICE": "probe-manager"}),
    # (not SHARE_NS_UTS: a tool that shares the host's UTS namespace by mistake and still sets
    # the machine's hostname would rename the machine everything else runs on)
    _s("env-share-ns-ipc", env={"SYSTEMD_NSPAWN_SHARE_NS_IPC": "1"}),
    _s("env-share-ns-pid", env={"SYSTEMD_NSPAWN_SHARE_NS_PID": "1"}),
]

# Cases of systemd's own nspawn test suite (v252 era), as facts compared with nspawn here.
SYSTEMD_SUITE = [
    _s("suite-machine-dotted", "--machine={machine}.baz"),
    _s("suite-machine-and-hostname", "--machine={machine}.baz", "--hostname=hello.world.tld"),
    _s("suite-uuid-without-machine-id", "--uuid=deadbeef-dead-dead-beef-000000000000",
       setup=_no_machine_id, given_ids=("deadbeef-dead-dead-beef-000000000000",)),
    *[_s(f"suite-settings-{mode}-machine-id", f"--settings={mode}",
         "--uuid=deadbeef-dead-dead-beef-000000000000",
         setup=_both(_no_machine_id, _run_nspawn_file(
             "[Exec]\nMachineID=deadbeef-dead-dead-beef-111111111111\n")),
         given_ids=("deadbeef-dead-dead-beef-000000000000",
                    "deadbeef-dead-dead-beef-111111111111"))
      for mode in ("yes", "override", "trusted")],
    _s("suite-bind-twice", "--bind={scratch}/src:/foo", "--bind={scratch}/src:/also-foo:noidmap,norbind",
       setup=_sources),
    _s("suite-bind-ro-twice", "--bind-ro={scratch}/src:/foo",
       "--bind-ro={scratch}/src:/bar:noidmap,norbind", setup=_sources),
    _s("suite-inaccessible-var", "--inaccessible=/var", setup=_host_inaccessible_nodes),
    _s("suite-tmpfs-var-options", "--tmpfs=/var:rw,nosuid,noexec"),
    _s("suite-overlay-three", "--overlay={scratch}/1:{scratch}/2:{scratch}/3:/var", setup=_layers),
    _s("suite-overlay-ro-three", "--overlay-ro={scratch}/1:{scratch}/2:{scratch}/3:/var",
       setup=_layers),
    _s("suite-bind-into-tmp", "--bind={scratch}/file.txt:/tmp/bind", setup=_sources),
    _s("suite-norbind-submount", "--bind={scratch}/binddir:/mnt:norbind",
       setup=_both(_sources, _submount_source)),
    _s("suite-rbind-submount", "--bind={scratch}/binddir:/mnt", setup=_both(_sources, _submount_source)),
    _s("suite-big-settings-file", command=(), setup=_both(_opt_dirs, _host_inaccessible_nodes, _run_nspawn_file(BIG_NSPAWN_FILE)),
       given_ids=("f28f129b51874b1280a89421ec4b4ad4",)),
    *[_s(f"suite-settings-userns-{name}",
         setup=_run_nspawn_file(f"[Exec]\nHostname=private-users\nPrivateUsers={value}\n"
                                "[Files]\nPrivateUsersOwnership=auto\n"))
      for name, value in (("explicit", "1879113728:65536"), ("yes", "yes"),
                          ("identity", "identity"), ("pick", "pick"))],
    _s("suite-ephemeral-settings-file", "-x",
       setup=_run_nspawn_file("[Files]\nBindReadOnly={scratch}/file.txt:/tmp/ephemeral-config\n")),
    _s("suite-netns-path-private-network", "--private-network",
       "--network-namespace-path=/proc/self/ns/net"),
    *[_s(f"suite-boot-api-vfs-{vfs}{'-' + extra.strip('-').replace('=', '-') if extra else ''}",
         "-b", *([extra] if extra else []), boot_probe=True,
         env={"SYSTEMD_NSPAWN_API_VFS_WRITABLE": vfs})
      for vfs in ("yes", "network") for extra in ("", "--private-network")],
    # (with -U both are refused by v252; tests/test_upstream_nspawn.py compares the refusals)
    _s("suite-boot-unified-cgns", "-b", boot_probe=True,
       env={"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "yes", "SYSTEMD_NSPAWN_USE_CGNS": "yes"}),
    _s("suite-boot-legacy-no-cgns", "-b", boot_probe=True,
       env={"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "no", "SYSTEMD_NSPAWN_USE_CGNS": "no"}),
]

SCENARIOS = [*BASICS, *MOUNTS, *ETC, *SECURITY, *USERNS, *RESOURCES, *IDENTITY, *NETWORK, *FILES,
             *CONSOLE, *CREDENTIALS, *KNOBS, *SYSTEMD_SUITE]
BY_NAME = {s.name: s for s in SCENARIOS}
assert len(BY_NAME) == len(SCENARIOS), "scenario names must be unique"
