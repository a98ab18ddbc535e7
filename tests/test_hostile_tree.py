"""A hostile image: symlinks (absolute ones, and ../ ones that climb out of the tree when the
host follows them) and FIFOs, devices, sockets or directories where something is written,
created, bound or mounted in the tree, each with the options that touch that path.

Every case runs under systemd-nspawn 252 and nspawnpy on identical trees and checks that
  (a) the host is untouched: the canary directory the links point at stays byte-identical
      (names, types, modes, owners, contents, times) and nothing is mounted on it;
  (b) nothing is left behind: no mounts below the test's directory, no process of the tree;
  (c) the outcome equals nspawn's: exit status, what the payload sees of the paths concerned,
      and the messages (tree and canary paths written as TREE and CANARY).
Where nspawn itself follows a link out to the host (writes there, or reads the host's file),
nspawnpy stays inside the tree: those cases are listed in STRICTER with the reason, and of (c)
only the exit status is compared. Where nspawn hangs (NSPAWN_HANGS), nspawnpy must finish, and
nspawn is not run.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest

import rootfs
from conftest import leftovers, skip_unless
from testhost import ScratchCgroup, run_systemd_nspawn, systemd_nspawn

COMMON = ("--register=no", "--keep-unit", "-q", "--console=pipe")
MACHINE_ID = "4f6e8c2a51d34b7e9a0c1d2e3f405162"   # the canary's: the tree must never pick it up
JOURNAL_ID = "0badc0de51d34b7e9a0c1d2e3f405163"   # the tree's own, for --link-journal
SHOW = ("for f in {paths}; do "
        "if [ -L $f ]; then echo $f link; elif [ -d $f ]; then echo $f dir $(ls -A $f | head -5); "
        "elif [ -f $f ]; then echo $f file $(head -c 200 $f | md5sum | cut -c1-8); "
        "elif [ -p $f ]; then echo $f fifo; elif [ -c $f ]; then echo $f chr; "
        "elif [ -S $f ]; then echo $f sock; else echo $f missing; fi; done; "
        "case ${{container_uuid:-none}} in {machine_id}) echo uuid=canary;; none) echo uuid=none;; "
        "*) echo uuid=own;; esac; "
        "grep -c ' - ' /proc/self/mountinfo >/dev/null; true")

# Where nspawn 252 follows a link in the tree out to the host (reads or writes there), or
# hangs, nspawnpy stays in the tree and finishes. name -> (why, whether the exit status is
# still nspawn's, whether nspawn writes to the host there).
READS_MACHINE_ID = "nspawn reads the tree's /etc/machine-id through the link, on the host"
WRITES_JOURNAL = ("nspawn makes /var/log/journal/ID through the tree's link, on the host "
                  "(nspawnpy makes it in the tree)")
LOOPS = ("; from inside the tree the link at /var is a loop (the canary is below /var/tmp): "
         "nspawnpy fails cleanly (Failed to create /var: Too many levels of symbolic links), "
         "as nspawn's own rule for a journal directory it cannot make says")
BINDS_HOST = ("nspawn resolves the '+' source through the link on the host and binds the "
              "host's directory into the container; in the tree it does not exist, and "
              "nspawnpy fails with nspawn's message for a missing source")
NSPAWN_HANGS = {
    "resolv-fifo-copy": "nspawn opens the FIFO at /etc/resolv.conf for writing and blocks",
    "machine-id-fifo": "nspawn opens the FIFO at /etc/machine-id for reading and blocks",
    "userns-bind-user-group-fifo": "nspawn opens the FIFO at /etc/group for reading and blocks "
                                   "(nspawnpy refuses a user database that is no regular file)",
}
STRICTER = {
    **{f"etc-{kind}-{opts}": (READS_MACHINE_ID, True, False) for kind in ("link", "dotdot")
       for opts in ("resolv-conf-copy-host-timezone-copy",
                    "resolv-conf-replace-host-timezone-symlink",
                    "resolv-conf-bind-host-timezone-bind", "resolv-conf-delete-timezone-delete")},
    **{name: (READS_MACHINE_ID, True, False) for name in (
        "userns-etc-link", "ephemeral-etc-link", "volatile-overlay-etc-link")},
    "machine-id-link": (READS_MACHINE_ID, True, False),
    "machine-id-dotdot": (READS_MACHINE_ID, True, False),
    **{f"{where}-{kind}-link-journal-{mode}": (WRITES_JOURNAL + (LOOPS if loop else ""),
                                               not loop, True)
       for where in ("var-log-journal", "var") for kind in ("link", "dotdot")
       for mode in ("try-guest", "guest", "host")
       for loop in [where == "var"]},
    **{name: ("nspawn writes /run/host's files through the tree's /run link into the host's "
              "directory", True, True)
       for name in ("run-link", "run-dotdot", "run-link-private-network", "userns-run-link",
                    "credentials-run-link", "userns-bind-user-run-link",
                    "userns-bind-user-run-dotdot")},
    **{name: ("nspawn makes the device nodes and links of /dev through the tree's /dev link in "
              "the host's directory, then fails (Failed to allocate a pty); nspawnpy's /dev is "
              "in the tree and the container runs", False, True)
       for name in ("dev-link", "dev-dotdot")},
    **{name: (BINDS_HOST, False, False) for name in (
        "bind-plus-source-link", "bind-plus-source-dotdot", "bind-ro-plus-source-inside-link",
        "overlay-ro-plus-lower-link", "overlay-ro-plus-lower-dotdot")},
}
# Where both fail cleanly, with other words: why.
SAME_EXIT_ONLY = {
    "volatile-state-var-link": "the link at /var is a loop in the tree (the canary is below "
                               "/var/tmp): nspawn mounts on the link itself and fails with "
                               "ENOTDIR, nspawnpy resolves it and fails with ELOOP",
}
# Where nspawn 252 fails on its own and nspawnpy runs: why.
NSPAWN_FAILS = {
    **{f"overlay-plus-upper-{kind}": "nspawn hands overlayfs the '+' upper layer's path, "
       "which the kernel follows through the link to the host's directory (here on another "
       "mount than the work dir nspawn made in the tree: EINVAL; on the same one, the host's "
       "directory would be the upper layer); nspawnpy's upper layer is resolved in the tree"
       for kind in ("link", "dotdot")},
    "sys-link-private-network": "nspawn mounts /sys's tmpfs where the link leads in the tree, "
                                "then remounts the literal /sys (the link) read-only: EINVAL",
}


def canary_contents(canary: Path) -> None:
    canary.mkdir()
    (canary / "keep").write_text("keep\n")
    (canary / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    (canary / "localtime").write_text("canary zone\n")
    (canary / "machine-id").write_text(MACHINE_ID + "\n")
    (canary / "passwd").write_text("root:x:0:0::/root:/bin/sh\nalice:x:4242:4242::/:/bin/sh\n"
                                   "daemon:x:60514:60514::/:/bin/sh\n")  # for --bind-user=
    (canary / "journal").mkdir()
    (canary / "sub").mkdir()
    (canary / "sub/file").write_text("sub\n")


def snapshot(canary: Path) -> dict:
    """Everything about the canary tree that a write, create, chown or mount would change."""
    seen = {}
    for top, dirs, files in os.walk(canary):
        for name in sorted(dirs + files) + ["."]:
            path = os.path.join(top, name)
            st = os.lstat(path)
            content = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            seen[os.path.relpath(path, canary)] = (st.st_mode, st.st_uid, st.st_gid, st.st_size,
                                                   st.st_mtime_ns, content)
    return seen


def apply(tree: Path, canary: Path, setup) -> None:
    for op, where, *arg in setup:
        path = tree / where.lstrip("/")
        if os.path.lexists(path) and op != "file":
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        if op == "link":       # absolute: the host reads it as the canary itself
            os.symlink(str(canary) + (arg[0] if arg else ""), path)
        elif op == "dotdot":   # relative, climbing out of the tree when the host follows it
            depth = len(path.relative_to(tree).parts) - 1 + len(tree.parts)
            os.symlink("../" * depth + str(canary).lstrip("/") + (arg[0] if arg else ""), path)
        elif op == "fifo":
            os.mkfifo(path)
        elif op == "chr":
            os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 3))
        elif op == "sock":
            with socket.socket(socket.AF_UNIX) as s:
                s.bind(str(path))
        elif op == "dir":
            path.mkdir()
            (path / "inside").write_text("x\n")
        elif op == "file":
            path.write_text(arg[0])


def case(name, setup, options, paths, probe=None):
    return pytest.param(setup, options, paths, probe, id=name)


ETC = ("/etc", "/etc/resolv.conf", "/etc/localtime")
RESOLV, LOCALTIME = ("/etc/resolv.conf",), ("/etc/localtime",)
CASES = [
    # /etc itself leads out of the tree
    *[case(f"etc-{kind}-{'-'.join(o.strip('-').replace('=', '-') for o in opts)}",
           [(kind, "/etc")], opts, ETC)
      for kind in ("link", "dotdot")
      for opts in (("--resolv-conf=copy-host", "--timezone=copy"),
                   ("--resolv-conf=replace-host", "--timezone=symlink"),
                   ("--resolv-conf=bind-host", "--timezone=bind"),
                   ("--resolv-conf=delete", "--timezone=delete"))],
    # the files in /etc lead out of the tree
    *[case(f"resolv-{kind}-{mode}", [(kind, "/etc/resolv.conf", "/resolv.conf")],
           (f"--resolv-conf={mode}",), RESOLV)
      for kind in ("link", "dotdot")
      for mode in ("copy-host", "replace-host", "bind-host", "delete")],
    *[case(f"localtime-{kind}-{mode}", [(kind, "/etc/localtime", "/localtime")],
           (f"--timezone={mode}",), LOCALTIME)
      for kind in ("link", "dotdot") for mode in ("copy", "bind", "symlink", "delete")],
    # something else than a file where a file is written
    *[case(f"resolv-{kind}-{mode}", [(kind, "/etc/resolv.conf")], (f"--resolv-conf={mode}-host",),
           RESOLV)
      for kind in ("fifo", "chr", "sock", "dir") for mode in ("copy", "replace", "bind")],
    *[case(f"localtime-{kind}-{mode}", [(kind, "/etc/localtime")], (f"--timezone={mode}",),
           LOCALTIME)
      for kind in ("fifo", "chr", "sock", "dir") for mode in ("copy", "bind")],
    # machine-id: the canary's ID must not become the container's
    case("machine-id-link", [("link", "/etc/machine-id", "/machine-id")], (), ()),
    case("machine-id-dotdot", [("dotdot", "/etc/machine-id", "/machine-id")], (), ()),
    case("machine-id-fifo", [("fifo", "/etc/machine-id")], (), ()),
    case("machine-id-chr", [("chr", "/etc/machine-id")], (), ()),
    case("machine-id-dir", [("dir", "/etc/machine-id")], (), ()),
    # the journal directory and the directories above it
    *[case(f"{where.strip('/').replace('/', '-')}-{kind}-link-journal-{mode}",
           [("file", "/etc/machine-id", JOURNAL_ID + "\n"), (kind, where, sub)],
           (f"--link-journal={mode}",), ("/var/log/journal",))
      for where, sub in (("/var/log/journal", "/journal"), ("/var", ""))
      for kind in ("link", "dotdot") for mode in ("try-guest", "guest", "host")],
    # the API file systems' mount points
    *[case(f"{where.strip('/')}-{kind}", [(kind, where, "/sub")], (), (where,))
      for where in ("/run", "/dev", "/tmp", "/proc", "/sys") for kind in ("link", "dotdot")],
    case("run-link-private-network", [("link", "/run", "/sub")], ("--private-network",), ("/run",)),
    case("sys-link-private-network", [("link", "/sys", "/sub")], ("--private-network",), ("/sys",)),
    # custom mounts: destinations and container-relative sources
    *[case(f"bind-dest-{kind}", [(kind, "/mnt")], ("--bind=/usr/share/zoneinfo:/mnt/x",),
           ("/mnt", "/mnt/x"))
      for kind in ("link", "dotdot")],
    *[case(f"bind-file-onto-{kind}", [(kind, "/etc/target")],
           ("--bind-ro=/etc/os-release:/etc/target",), ("/etc/target",))
      for kind in ("fifo", "chr", "sock", "dir")],
    case("bind-dir-onto-file", [("file", "/etc/target", "x\n")],
         ("--bind-ro=/usr/share/zoneinfo:/etc/target",), ("/etc/target",)),
    *[case(f"tmpfs-dest-{kind}", [(kind, "/mnt")], ("--tmpfs=/mnt/x",), ("/mnt", "/mnt/x"))
      for kind in ("link", "dotdot")],
    *[case(f"bind-plus-source-{kind}", [(kind, "/evil", "/sub")], ("--bind=+/evil:/mnt",),
           ("/mnt", "/mnt/file"))
      for kind in ("link", "dotdot")],
    case("bind-ro-plus-source-inside-link", [("link", "/evil", "/sub")],
         ("--bind-ro=+/evil/file:/f",),
         ("/f",)),
    *[case(f"overlay-ro-plus-lower-{kind}", [(kind, "/lower", "/sub")],
           ("--overlay-ro=+/lower:/mnt",), ("/mnt", "/mnt/file"))
      for kind in ("link", "dotdot")],
    *[case(f"overlay-plus-upper-{kind}", [("dir", "/lower"), (kind, "/upper", "/sub")],
           ("--overlay=+/lower:+/upper:/mnt",), ("/mnt", "/mnt/file", "/mnt/inside"))
      for kind in ("link", "dotdot")],
    case("overlay-dest-link", [("dir", "/lower"), ("dir", "/upper"), ("link", "/mnt")],
         ("--overlay=+/lower:+/upper:/mnt/x",), ("/mnt", "/mnt/x/inside")),
    *[case(f"inaccessible-{kind}", [(kind, "/etc/evil", "/keep")], ("--inaccessible=/etc/evil",),
           ("/etc/evil",))
      for kind in ("link", "dotdot")],
    case("pivot-root-link", [("link", "/newroot", "/sub")], ("--pivot-root=/newroot",), ()),
    case("user-passwd-link", [("link", "/etc/passwd", "/passwd")], ("-u", "alice"), ()),
    case("chdir-link", [("link", "/work", "/sub")], ("--chdir=/work",), ()),
    case("credentials-run-link", [("link", "/run", "/sub")], ("--set-credential=a:b",),
         ("/run/host/credentials/a",)),
    # PID 1 as the user namespace's root, reaching the tree through a descriptor
    *[case(f"userns-{name}", setup, ("-U", *options), paths) for name, setup, options, paths in (
        ("etc-link", [("link", "/etc")], ("--resolv-conf=copy-host", "--timezone=copy"), ETC),
        ("resolv-link-copy", [("link", "/etc/resolv.conf", "/resolv.conf")],
         ("--resolv-conf=copy-host",), RESOLV),
        ("localtime-fifo-copy", [("fifo", "/etc/localtime")], ("--timezone=copy",), LOCALTIME),
        ("run-link", [("link", "/run", "/sub")], (), ("/run",)),
        ("tmp-dotdot", [("dotdot", "/tmp", "/sub")], (), ("/tmp",)),
        ("bind-dest-link", [("link", "/mnt")], ("--bind=/usr/share/zoneinfo:/mnt/x",),
         ("/mnt", "/mnt/x")),
        # --bind-user=: records and home under a /run that leads out; the tree's user
        # database read through a link (the canary's has daemon, at the UID it would get)
        *[(f"bind-user-run-{kind}", [(kind, "/run", "/sub")], ("--bind-user=daemon",),
           ("/run", "/run/host/userdb", "/run/host/home/daemon")) for kind in ("link", "dotdot")],
        *[(f"bind-user-passwd-{kind}", [(kind, "/etc/passwd", "/passwd")],
           ("--bind-user=daemon",), ("/run/host/userdb",)) for kind in ("link", "dotdot")],
        ("bind-user-group-fifo", [("fifo", "/etc/group")], ("--bind-user=daemon",),
         ("/run/host/userdb",)))],
    # the -U ownership walk meets links to the host: it changes them, never what they name
    *[case(f"chown-walk-{kind}", [(kind, "/hostdir"), (kind, "/etc/hostfile", "/keep")],
           ("--private-users=pick", "--private-users-ownership=chown"), ("/hostdir",))
      for kind in ("link", "dotdot")],
    # the tree as an overlay: the writes land in the upper layer, still resolved in the tree
    case("ephemeral-etc-link", [("link", "/etc")],
         ("-x", "--resolv-conf=copy-host", "--timezone=copy"), ETC),
    case("volatile-overlay-etc-link", [("link", "/etc")],
         ("--volatile=overlay", "--resolv-conf=copy-host", "--timezone=copy"), ETC),
    case("volatile-state-var-link", [("link", "/var", "/sub")], ("--volatile=state",), ("/var",)),
]


@pytest.fixture
def scratch():
    d = Path(f"/var/tmp/nspawnpy-test-hostile-{os.getpid()}-{secrets.token_hex(3)}")
    d.mkdir()
    try:
        yield d
    finally:
        assert leftovers(d) == [], "mounts left below the test directory"
        rootfs.rmtree(d)


def run(tool, tree: Path, options, paths, timeout=60):
    m = MACHINE_ID
    dashed = f"{m[:8]}-{m[8:12]}-{m[12:16]}-{m[16:20]}-{m[20:]}"
    script = SHOW.format(paths=" ".join(paths) or "/", machine_id=dashed)
    args = [*COMMON, "-D", str(tree), *options, "/bin/sh", "-c", script]
    if tool == "nspawn":
        return run_systemd_nspawn(args, timeout=timeout)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    # --keep-unit from a cgroup of our own, as nspawn is run: not one other tests share
    with ScratchCgroup("hostile") as cg:
        r = subprocess.run(["/usr/bin/python3", "-m", "nspawnpy", *args], capture_output=True,
                           text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL,
                           preexec_fn=cg.enter)
        stray = [str(d) for top in cg.dirs for d in top.iterdir() if d.is_dir()]
        assert stray == [], "nspawnpy left cgroups"
    return r


def outcome(r, tree: Path, canary: Path) -> tuple:
    def clean(text):
        return text.replace(str(tree), "TREE").replace(str(canary), "CANARY")
    # nspawn 252 cannot remove its propagation directory from /run on this host; its parent
    # adds "Child died too early." to any failure of the child, where nspawnpy's one-line rule
    # (tests/test_launcher.py) says the child's reason only.
    messages = [clean(line) for line in r.stderr.splitlines()
                if "Attempted to remove disk file system" not in line
                and line != "Child died too early."]
    return r.returncode, clean(r.stdout), messages


def processes_of(tree: Path) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if str(tree).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            pass
    return found


def attempt(tool, scratch: Path, setup, options, paths, template: bool = False):
    """Run `tool` on a fresh hostile tree (or one made from a hostile --template);
    (outcome, whether the canary changed)."""
    canary = scratch / "canary"
    if canary.exists():
        shutil.rmtree(canary)
    canary_contents(canary)
    machine = "bb-" + scratch.name[-6:]  # the same for both tools, unique to the test
    tree = scratch / tool / machine
    hostile = rootfs.busybox_tree(scratch / tool / ("template" if template else machine))
    apply(hostile, canary, setup)
    if template:
        options = (f"--template={hostile}", *options)
    before = snapshot(canary)
    try:
        r = run(tool, tree, options, paths)
        result = outcome(r, tree, canary)
    except subprocess.TimeoutExpired:
        result = "timeout"
    finally:
        _remove_journal_links()
    touched = snapshot(canary) != before or leftovers(canary) != []
    assert processes_of(tree) == [], f"{tool} left processes of the tree"
    assert leftovers(scratch) == [], f"{tool} left mounts"
    return result, touched


def _remove_journal_links() -> None:
    for name in (JOURNAL_ID,):
        link = Path("/var/log/journal", name)
        if link.is_symlink():
            link.unlink()
        elif link.is_dir():
            shutil.rmtree(link)


def test_template_with_links_to_the_host_is_copied_as_links_as_nspawn_does(scratch):
    setup = [("link", "/etc/resolv.conf", "/resolv.conf"), ("dotdot", "/etc/localtime", "/keep"),
             ("link", "/hostdir"), ("dotdot", "/run", "/sub")]
    options = ("--resolv-conf=copy-host", "--timezone=copy")
    paths = ("/etc/resolv.conf", "/etc/localtime", "/hostdir", "/run")
    ours, touched = attempt("ours", scratch, setup, options, paths, template=True)
    assert not touched, "nspawnpy changed the host's canary directory"
    copied = scratch / "ours" / ("bb-" + scratch.name[-6:])
    assert os.readlink(copied / "hostdir") == os.readlink(scratch / "ours/template/hostdir")
    if systemd_nspawn() is None:
        pytest.skip("systemd-nspawn is not installed: host checks only")
    theirs, nspawn_touched = attempt("nspawn", scratch, setup, options, paths, template=True)
    assert nspawn_touched, "nspawn writes /run/host through the copied /run link: STRICTER"
    assert ours[0] == theirs[0]


def test_host_journal_link_leads_into_the_tree_not_where_the_trees_link_points(scratch):
    skip_unless(Path("/var/log/journal").is_dir(), "the host has no /var/log/journal")
    canary = scratch / "canary"
    canary_contents(canary)
    tree = rootfs.busybox_tree(scratch / "ours" / ("bb-" + scratch.name[-6:]))
    apply(tree, canary, [("file", "/etc/machine-id", JOURNAL_ID + "\n"),
                         ("link", "/var/log/journal", "/journal")])
    before = snapshot(canary)
    try:
        r = run("ours", tree, ("--link-journal=guest",), ())
        link = Path("/var/log/journal", JOURNAL_ID)
        target = os.readlink(link)
        made = os.path.realpath(link)
    finally:
        _remove_journal_links()
    assert r.returncode == 0, r.stderr
    assert target == f"{tree}{canary}/journal/{JOURNAL_ID}"   # the link, followed in the tree
    assert made == target and Path(made).is_dir()               # where PID 1 made the journal
    assert snapshot(canary) == before


@pytest.mark.parametrize("mode", ("try-guest", "guest", "host"))
@pytest.mark.parametrize("kind", ("link", "dotdot"))
@pytest.mark.parametrize("linked_before", (False, True), ids=("fresh", "linked-before"))
def test_a_journal_link_to_a_tree_that_fails_to_start_is_removed_unless_it_was_there(
        scratch, mode, kind, linked_before):
    """/var in the tree loops back into it: the guest side fails after the host's link was
    made. The link this run made goes again; one that was there before (a link to this tree
    from an earlier start) stays."""
    skip_unless(Path("/var/log/journal").is_dir(), "the host has no /var/log/journal")
    canary = scratch / "canary"
    canary_contents(canary)
    machine_id = secrets.token_hex(16)  # ours alone: other runs link in /var/log/journal too
    tree = rootfs.busybox_tree(scratch / "ours" / ("bb-" + scratch.name[-6:]))
    apply(tree, canary, [("file", "/etc/machine-id", machine_id + "\n"), (kind, "/var", "")])
    link = Path("/var/log/journal", machine_id)
    earlier = f"{tree}/var/log/journal/{machine_id}"
    if linked_before:
        os.symlink(earlier, link)
    try:
        before = os.lstat(link).st_ino if linked_before else None
        r = run("ours", tree, (f"--link-journal={mode}",), ())
        after = os.lstat(link).st_ino if os.path.lexists(link) else None
    finally:
        if os.path.islink(link):
            link.unlink()
        elif link.is_dir():
            link.rmdir()
    assert r.returncode == 1, r.stderr
    assert "Failed to create /var: Too many levels of symbolic links" in r.stderr
    if mode == "host" and linked_before:
        assert after is None  # host mode replaces a link into the tree, as nspawn does
    else:
        assert after == before, "the host's /var/log/journal changed"


@pytest.mark.parametrize("setup, options, paths, probe", CASES)
def test_hostile_tree_leaves_the_host_alone_as_nspawn_does(request, scratch, setup, options,
                                                          paths, probe):
    skip_unless(Path("/var/log/journal").is_dir() or "--link-journal" not in " ".join(options),
                "the host has no /var/log/journal")
    name = request.node.callspec.id
    ours, touched = attempt("ours", scratch, setup, options, paths)
    assert not touched, "nspawnpy changed the host's canary directory"
    assert ours != "timeout", "nspawnpy hung"
    if systemd_nspawn() is None:
        pytest.skip("systemd-nspawn is not installed: host checks only")
    if name in NSPAWN_HANGS:
        return
    theirs, nspawn_touched = attempt("nspawn", scratch, setup, options, paths)
    if name in STRICTER:
        _why, same_exit, writes_host = STRICTER[name]
        assert nspawn_touched == writes_host, f"STRICTER says otherwise: nspawn {theirs}"
        if same_exit:
            assert ours[0] == theirs[0], f"exit status: nspawnpy {ours}, nspawn {theirs}"
        return
    assert not nspawn_touched, f"nspawn touches the host here: list {name} in STRICTER"
    if name in SAME_EXIT_ONLY:
        assert ours[0] == theirs[0] != 0
        return
    if name in NSPAWN_FAILS:
        assert theirs[0] != 0 and ours[0] == 0
        return
    assert ours == theirs
