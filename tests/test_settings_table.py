"""The settings table is the single source: --help, the man page, the CLI parser and the
`.nspawn` reader all agree with it; bad input for every option family is one line, exit 1."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import leftovers
from nspawnpy.config import cli, settings as table
from nspawnpy.errors import UserError

REPO = Path(__file__).resolve().parent.parent
MISSING = "/var/tmp/nspawnpy-table-missing-dir"


def test_help_lists_every_option(run_nspawnpy):
    out = run_nspawnpy("--help", check=0).stdout
    for option in table.OPTIONS:
        if option.long:
            assert f"--{option.long}" in out, option.long
        if option.short:
            assert f"-{option.short}" in out, option.short


def test_help_covers_systemd_nspawn_options(run_nspawnpy):
    exe = shutil.which("systemd-nspawn")
    if not exe:
        pytest.skip("systemd-nspawn is not installed")
    import re
    theirs = set(re.findall(r"--[a-z0-9-]+", subprocess.run([exe, "--help"], capture_output=True,
                                                            text=True).stdout))
    ours = set(re.findall(r"--[a-z0-9-]+", run_nspawnpy("--help", check=0).stdout))
    assert theirs - ours == set()


def test_man_page_is_generated_from_the_table_and_up_to_date():
    r = subprocess.run(["/usr/bin/python3", str(REPO / "packaging/make-manpage.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    page = (REPO / "packaging/nspawnpy.1").read_text()
    for option in table.OPTIONS:
        if option.long:
            assert "\\-\\-" + option.long.replace("-", "\\-") in page, option.long
        if option.key:
            assert option.key in page, option.key


def test_table_is_consistent():
    longs = [o.long for o in table.OPTIONS if o.long]
    shorts = [o.short for o in table.OPTIONS if o.short]
    keys = [(o.section, o.key) for o in table.OPTIONS if o.key]
    assert len(longs) == len(set(longs))
    assert len(shorts) == len(set(shorts))
    assert len(keys) == len(set(keys))
    for option in table.OPTIONS:
        assert option.help, option.dest
        assert option.section in (None, "Exec", "Files", "Network"), option.key
        assert option.kind in ("value", "list", "flag")
        assert option.long or option.short or option.key
    # Every [Network] key is trusted-only and in the network group (except Port=, its own).
    for option in table.OPTIONS:
        if option.section == "Network":
            assert option.trusted
            assert option.group == ("ports" if option.key == "Port" else "network")


def test_defaults_come_from_the_table():
    s = table.Settings()
    assert s.settings == "yes" and s.volatile == "no" and s.resolv_conf == "auto"
    assert s.timezone == "auto" and s.bind == [] and s.rlimits == {}
    other = table.Settings()
    other.bind.append("x")
    assert s.bind == []  # no shared mutable defaults


@pytest.mark.parametrize("argv,dest,value", [
    (["-bq"], "boot", True),
    (["-Dfoo"], "directory", str(Path("foo").resolve())),
    (["--dir", "/srv"], "directory", "/srv"),
    (["--volatile"], "volatile", "yes"),
    (["--volatile=state"], "volatile", "state"),
    (["--private-users"], "private_users", "yes"),
    (["-j"], "link_journal", "try-guest"),
    (["-P"], "console", "pipe"),
    (["--private-users-chown"], "private_users_ownership", "chown"),
    (["--resolv-conf=yes"], "resolv_conf", "auto"),
    (["--timezone=no"], "timezone", "off"),
    (["--settings=0"], "settings", "no"),
])
def test_getopt_rules(argv, dest, value):
    assert getattr(cli.parse_args(argv), dest) == value


def test_options_stop_at_first_non_option():
    s = cli.parse_args(["-q", "/bin/sh", "-c", "--boot"])
    assert s.parameters == ["/bin/sh", "-c", "--boot"] and s.boot is False
    s = cli.parse_args(["--", "-b"])
    assert s.parameters == ["-b"]


def test_ambiguous_abbreviation_is_an_error():
    with pytest.raises(UserError, match="ambiguous"):
        cli.parse_args(["--network-v", "x"])


# Bad input: one case (at least) per option family, through the real CLI, on a tree that
# could run (so each case fails because of its value, not for want of a tree), and the
# error line names the option (or, for a conflict, nspawn's wording of it).
BAD_ARGS = [
    ["--settings=maybe"], ["--bogus"], ["-Y"], ["--quiet=yes"],
    ["--volatile=sometimes"], ["--pivot-root=rel"], ["--chdir=rel"], ["-E", "1X=y"],
    ["--user="], ["--kill-signal=SIGFOO"], ["--kill-signal=rtmin+3"], ["--notify-ready=maybe"],
    ["--rlimit=nofile=5"], ["--capability=sys_time"],
    ["--suppress-sync=maybe"], ["--machine=a_b"], ["--hostname=-x"], ["--uuid=123"],
    ["--uuid=00000000000000000000000000000000"], ["--slice=foo"], ["--property=novalue"],
    ["--register=maybe"], ["--private-users=many"], ["--private-users-ownership=sideways"],
    ["--network-interface=a/b"], ["--network-macvlan=" + "x" * 20], ["--network-bridge=a b"],
    ["--network-zone=a/b"], ["--network-veth-extra=a:b:c"], ["--port=tcp:99999"],
    ["--network-namespace-path=rel"], ["--capability=CAP_NOPE"], ["--drop-capability=nope"],
    ["--ambient-capability=CAP_NOPE"], ["--no-new-privileges=maybe"],
    ["--system-call-filter=bad!name"], ["--rlimit=NOFILE"], ["--rlimit=NOPE=1"],
    ["--rlimit=NOFILE=5:4"], ["--oom-score-adjust=-1001"], ["--cpu-affinity=3-1"],
    ["--personality=sparc"], ["--resolv-conf=sideways"], ["--timezone=mars"], ["--link-journal=up"],
    ["--bind=/a:/b:c:d"], ["--bind=/a:/b:badopt"], ["--bind-ro=+rel:/x"], ["--tmpfs=rel"],
    ["--inaccessible=rel"], ["--overlay=/a"], ["--overlay-ro=/a:rel"], ["--bind-user=a/b"],
    ["--console=sideways"], ["--set-credential=noval"], ["--set-credential=a/b:x"],
    ["--load-credential=id"], ["--load-credential=a:"],
    ["--boot", "--as-pid2"], ["--read-only", "--volatile"], ["--ephemeral", "--volatile=state"],
    ["--port=80"], ["--network-bridge=br0", "--network-zone=z"],
    ["--boot", "--ambient-capability=CAP_CHOWN"], ["--keep-unit", "--slice=a.slice"],
    ["--boot", "--user=alice"], ["--network-namespace-path=/run/netns/x", "--network-veth"],
]
# What the error line says instead of the first option's name (nspawn's own wording).
NAMED_AS = {"-Y": "'Y'", "--ambient-capability=CAP_CHOWN": "AmbientCapability="}


def named(args: list[str]) -> str:
    """The option the error must name: the first one (the last for a --boot conflict)."""
    option = args[-1] if args[0] == "--boot" and len(args) > 1 else args[0]
    return NAMED_AS.get(option, option.split("=")[0])


@pytest.fixture(scope="module")
def runnable_root():
    """One tree that could run /bin/true: a case that fails must fail for its value."""
    from conftest import _remove_scratch, _scratch_dir
    import rootfs
    d = _scratch_dir("bad")
    try:
        yield rootfs.busybox_tree(d / "bad-args")
    finally:
        _remove_scratch(d)


def test_the_tree_runs_without_a_bad_argument(run_nspawnpy, runnable_root):
    r = run_nspawnpy("--register=no", "-q", "--console=pipe", "-D", runnable_root, "/bin/true")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("args", BAD_ARGS, ids=[" ".join(a)[:40] for a in BAD_ARGS])
def test_bad_input_is_one_line_naming_the_option_exit_1(run_nspawnpy, runnable_root, args):
    r = run_nspawnpy("--register=no", "-q", "--console=pipe", "-D", runnable_root, *args,
                     "/bin/true")
    assert r.returncode == 1, (args, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert named(args) in lines[0], (args, lines[0])
    assert "Traceback" not in r.stderr
    assert [x for x in leftovers() if not x.startswith("cgroup ")] == []


def test_bad_input_is_rejected_in_process():
    for args in BAD_ARGS:
        try:
            s = cli.parse_args(list(args))
        except UserError:
            continue
        from nspawnpy.config.conflicts import check_conflicts
        if args[0] == "--user=":
            continue
        with pytest.raises(UserError):
            check_conflicts(s)


def test_missing_directory_is_one_line(run_nspawnpy):
    r = run_nspawnpy("--register=no", "-q", "-D", MISSING, "/bin/true")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
