""".nspawn files: search order, trust, --settings= precedence, syntax and bad input.

Files written to /etc/systemd/nspawn or /run/systemd/nspawn use the busybox tree's unique
machine name (bb-XXXXXX) and are removed afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import DEFAULT_CAPS, leftovers, run_in
from nspawnpy.config import cli, nspawnfile
from nspawnpy.errors import UserError

BASE = ("--register=no", "-q")


@pytest.fixture
def nspawn_files(busybox_root):
    """write(where, text) with where in 'etc', 'run', 'image'; all removed afterwards."""
    name = busybox_root.name
    places = {"etc": Path(f"/etc/systemd/nspawn/{name}.nspawn"),
              "run": Path(f"/run/systemd/nspawn/{name}.nspawn"),
              "image": busybox_root.parent / f"{name}.nspawn"}
    created = []

    def write(where: str, text: str) -> Path:
        path = places[where]
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True)
            created.append(path.parent)
        path.write_text(text)
        return path

    yield write
    for path in places.values():
        path.unlink(missing_ok=True)
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            pass


# --- search order ----------------------------------------------------------------------------

def test_etc_beats_run_beats_image(run_nspawnpy, busybox_root, nspawn_files):
    for where in ("image", "run", "etc"):
        nspawn_files(where, f"[Exec]\nEnvironment=WHERE={where}\n")
    assert run_in(run_nspawnpy, busybox_root, script="echo $WHERE").stdout == "etc\n"
    Path(f"/etc/systemd/nspawn/{busybox_root.name}.nspawn").unlink()
    assert run_in(run_nspawnpy, busybox_root, script="echo $WHERE").stdout == "run\n"
    Path(f"/run/systemd/nspawn/{busybox_root.name}.nspawn").unlink()
    assert run_in(run_nspawnpy, busybox_root, script="echo $WHERE").stdout == "image\n"


def test_file_is_named_after_the_machine(run_nspawnpy, busybox_root):
    (busybox_root.parent / "other.nspawn").write_text("[Exec]\nEnvironment=WHERE=other\n")
    out = run_in(run_nspawnpy, busybox_root, "-M", "other", script="echo $WHERE; hostname").stdout
    assert out == "other\nother\n"


def test_trusted_file_may_bind_and_add_capabilities(run_nspawnpy, busybox_root, nspawn_files):
    src = busybox_root.parent / "src"
    src.mkdir()
    (src / "f").write_text("bound\n")
    nspawn_files("run", f"[Exec]\nCapability=CAP_SYS_TIME\nLimitNOFILE=77\n"
                        f"[Files]\nBindReadOnly={src}:/mnt/src\nTemporaryFileSystem=/mnt/t\n")
    r = run_in(run_nspawnpy, busybox_root, script="cat /mnt/src/f; ulimit -n; grep CapBnd /proc/self/status; "
                                                  "grep -c ' /mnt/t ' /proc/self/mountinfo")
    lines = r.stdout.split("\n")
    assert lines[0] == "bound" and lines[1] == "77"
    assert int(lines[2].split()[1], 16) == DEFAULT_CAPS | 1 << 25
    assert lines[3] == "1"
    assert "not trusted" not in r.stderr


# --- trust: an untrusted file (next to the image) cannot set these ---------------------------

UNTRUSTED_RULES = [
    # (file text, warning fragment, dest, value it must not get)
    ("[Exec]\nEphemeral=yes\n", "Ignoring ephemeral setting", "ephemeral", True),
    ("[Exec]\nCapability=CAP_SYS_TIME\n", "Ignoring Capability= setting", "capability", 1 << 25),
    ("[Exec]\nAmbientCapability=CAP_NET_RAW\n", "Ignoring AmbientCapability= setting",
     "ambient_capability", 1 << 13),
    ("[Exec]\nMachineID=0123456789abcdef0123456789abcdef\n", "Ignoring MachineID= setting", "uuid",
     "0123456789abcdef0123456789abcdef"),
    ("[Exec]\nPrivateUsers=pick\n", "Ignoring PrivateUsers= and PrivateUsersChown= settings",
     "private_users", "pick"),
    ("[Files]\nPrivateUsersOwnership=chown\n", "Ignoring PrivateUsers= and PrivateUsersChown=",
     "private_users_ownership", "chown"),
    ("[Exec]\nLimitNOFILE=77\n", "Ignoring LimitNOFILE= setting", "rlimits", {"NOFILE": (77, 77)}),
    ("[Exec]\nOOMScoreAdjust=100\n", "Ignoring OOMScoreAdjust= setting", "oom_score_adjust", 100),
    ("[Exec]\nCPUAffinity=0\n", "Ignoring CPUAffinity= setting", "cpu_affinity", frozenset({0})),
    ("[Exec]\nLinkJournal=guest\n", "Ignoring journal link setting", "link_journal", "guest"),
    ("[Exec]\nSystemCallFilter=@clock\n", "Ignoring SystemCallFilter= settings", "syscall_allow",
     ["@clock"]),
    ("[Files]\nBind=/srv\n", "Ignoring TemporaryFileSystem=, Bind= and BindReadOnly=", "bind",
     [("/srv", "/srv", ())]),
    ("[Files]\nBindReadOnly=/srv\n", "Ignoring TemporaryFileSystem=, Bind= and BindReadOnly=",
     "bind_ro", [("/srv", "/srv", ())]),
    ("[Files]\nTemporaryFileSystem=/srv\n", "Ignoring TemporaryFileSystem=", "tmpfs",
     [("/srv", "mode=0755")]),
    ("[Files]\nInaccessible=/srv\n", "Ignoring TemporaryFileSystem=", "inaccessible", ["/srv"]),
    ("[Files]\nOverlay=/a:/b:/srv\n", "Ignoring TemporaryFileSystem=", "overlay",
     [(("/a", "/b"), "/srv")]),
    ("[Files]\nOverlayReadOnly=/a:/srv\n", "Ignoring TemporaryFileSystem=", "overlay_ro",
     [(("/a",), "/srv")]),
    ("[Files]\nBindUser=alice\n", "Ignoring bind user setting", "bind_user", ["alice"]),
    ("[Network]\nPrivate=yes\n", "Ignoring network settings", "private_network", True),
    ("[Network]\nVirtualEthernet=yes\n", "Ignoring network settings", "network_veth", True),
    ("[Network]\nZone=foo\n", "Ignoring network settings", "network_zone", "foo"),
    ("[Network]\nMACVLAN=eth0\n", "Ignoring network settings", "network_macvlan", ["eth0"]),
    ("[Network]\nPort=80\n", "Ignoring Port= setting", "ports", ["80"]),
    ("[Exec]\nLoadCredential=a:/etc/hostname\n", "Ignoring LoadCredential= setting",
     "load_credential", [("a", "/etc/hostname")]),
]


def _merge(tmp_path, text, argv=(), trusted=False, name="m.nspawn"):
    path = tmp_path / name
    path.write_text(text)
    settings = cli.parse_args(list(argv))
    nspawnfile.merge(settings, str(path), trusted)
    return settings, str(path)


@pytest.mark.parametrize("text,warning,dest,value", UNTRUSTED_RULES,
                         ids=[r[0].split("\n")[1].split("=")[0] for r in UNTRUSTED_RULES])
def test_untrusted_file_cannot_set(tmp_path, capsys, text, warning, dest, value):
    settings, path = _merge(tmp_path, text)
    err = capsys.readouterr().err
    assert warning in err and f"{path}" in err and "is not trusted." in err
    assert len(err.splitlines()) == 1, err
    assert getattr(settings, dest) != value
    # The same file, trusted (or with --settings=trusted), applies.
    for argv, trusted in (((), True), (("--settings=trusted",), False)):
        settings, _ = _merge(tmp_path, text, argv=argv, trusted=trusted)
        got = getattr(settings, dest)
        if dest in ("capability", "ambient_capability"):
            assert got & value == value
        else:
            assert got == value
        assert "not trusted" not in capsys.readouterr().err


UNTRUSTED_OK = [
    ("[Exec]\nBoot=yes\n", "boot", True),
    ("[Exec]\nHostname=foo\n", "hostname", "foo"),
    ("[Exec]\nDropCapability=CAP_CHOWN\n", "drop_capability", 1),
    ("[Exec]\nSystemCallFilter=~@clock\n", "syscall_deny", ["@clock"]),
    ("[Exec]\nResolvConf=off\nTimezone=off\n", "resolv_conf", "off"),
    ("[Files]\nReadOnly=yes\n", "read_only", True),
    ("[Files]\nVolatile=state\n", "volatile", "state"),
    ("[Exec]\nNoNewPrivileges=yes\nSuppressSync=yes\n", "no_new_privileges", True),
    ("[Exec]\nSetCredential=a:b\n", "set_credential", [("a", b"b")]),
]


@pytest.mark.parametrize("text,dest,value", UNTRUSTED_OK, ids=[r[1] for r in UNTRUSTED_OK])
def test_untrusted_file_may_set(tmp_path, capsys, text, dest, value):
    settings, _ = _merge(tmp_path, text)
    assert getattr(settings, dest) == value
    assert capsys.readouterr().err == ""


def test_untrusted_file_in_container(run_nspawnpy, busybox_root, nspawn_files):
    src = busybox_root.parent / "src"
    src.mkdir()
    path = nspawn_files("image", f"[Exec]\nCapability=CAP_SYS_TIME\nLimitNOFILE=77\n"
                                 f"Environment=OK=yes\n[Files]\nBind={src}:/mnt/src\n"
                                 f"[Network]\nPrivate=yes\n")
    r = run_in(run_nspawnpy, busybox_root, script=(
        "echo $OK; ulimit -n; grep CapBnd /proc/self/status; ls -d /mnt/src 2>/dev/null || echo no-bind; "
        "ls /sys/class/net | grep -c -v '^lo$'"), check=None)
    lines = r.stdout.splitlines()
    assert lines[0] == "yes" and lines[1] != "77"
    assert int(lines[2].split()[1], 16) == DEFAULT_CAPS
    assert lines[3] == "no-bind" and lines[4] != "0"  # host network: more than lo
    for fragment in ("Capability=", "LimitNOFILE=", "Bind=", "network settings"):
        assert any(fragment in line and str(path) in line and line.endswith("is not trusted.")
                   for line in r.stderr.splitlines()), r.stderr


# --- --settings= -----------------------------------------------------------------------------

def test_settings_no_ignores_the_file(run_nspawnpy, busybox_root, nspawn_files):
    nspawn_files("run", "[Exec]\nEnvironment=X=file\n")
    assert run_in(run_nspawnpy, busybox_root, "--settings=no", script="echo ${X:-none}").stdout == "none\n"
    assert run_in(run_nspawnpy, busybox_root, "--settings=false", script="echo ${X:-none}").stdout == "none\n"


def test_command_line_beats_file_by_default(run_nspawnpy, busybox_root, nspawn_files):
    nspawn_files("run", "[Exec]\nEnvironment=X=file\nHostname=filehost\n")
    out = run_in(run_nspawnpy, busybox_root, "-E", "X=cli", script="echo $X; hostname").stdout
    assert out == "cli\nfilehost\n"  # per setting: hostname still comes from the file


def test_override_file_beats_command_line(run_nspawnpy, busybox_root, nspawn_files):
    nspawn_files("run", "[Exec]\nEnvironment=X=file\n")
    out = run_in(run_nspawnpy, busybox_root, "--settings=override", "-E", "X=cli", "--hostname=clihost",
                 script="echo $X; hostname").stdout
    assert out == "file\nclihost\n"


def test_trusted_mode_trusts_file_next_to_image(run_nspawnpy, busybox_root, nspawn_files):
    nspawn_files("image", "[Exec]\nLimitNOFILE=77\n")
    assert run_in(run_nspawnpy, busybox_root, "--settings=trusted", script="ulimit -n").stdout == "77\n"
    r = run_in(run_nspawnpy, busybox_root, script="ulimit -n")
    assert r.stdout != "77\n" and "not trusted" in r.stderr


def test_file_mounts_replace_command_line_mounts_only_with_override(tmp_path):
    text = "[Files]\nTemporaryFileSystem=/from-file\n"
    s, _ = _merge(tmp_path, text, argv=["--bind=/srv:/srv"], trusted=True)
    assert s.tmpfs == [] and s.bind == [("/srv", "/srv", ())]
    s, _ = _merge(tmp_path, text, argv=["--settings=override", "--bind=/srv:/srv"], trusted=True)
    assert s.tmpfs == [("/from-file", "mode=0755")] and s.bind == []


def test_file_start_group_loses_to_command_line(tmp_path):
    text = "[Exec]\nBoot=yes\nParameters=--foo\n"
    s, _ = _merge(tmp_path, text, argv=["-D", "/x", "/bin/true"], trusted=True)
    assert s.boot is False and s.parameters == ["/bin/true"]
    s, _ = _merge(tmp_path, text, argv=["-D", "/x"], trusted=True)
    assert s.boot is True and s.parameters == ["--foo"]


def test_each_rlimit_is_its_own_group(tmp_path):
    s, _ = _merge(tmp_path, "[Exec]\nLimitNOFILE=5\nLimitCORE=6\n", argv=["--rlimit=NOFILE=9"],
                  trusted=True)
    assert s.rlimits == {"NOFILE": (9, 9), "CORE": (6, 6)}


# --- syntax ----------------------------------------------------------------------------------

def test_syntax_comments_continuations_quotes_booleans(tmp_path, capsys):
    text = ("# comment\n; also a comment\n[Exec]\n"
            "Parameters=/bin/echo \"two words\" 'x\\ty' \\\n  tail\n"
            "Environment=A=1\nEnvironment=B=\"spaced value\"\n"
            "Boot=off\nNoNewPrivileges=TRUE\n"
            "[Files]\nReadOnly=t\n[Exec]\nSuppressSync=on\n")
    s, _ = _merge(tmp_path, text, trusted=True)
    assert s.parameters == ["/bin/echo", "two words", "x\\ty", "tail"]  # escapes retained, as v252
    assert s.setenv == ["A=1", "B=spaced value"]
    assert s.boot is False and s.no_new_privileges is True and s.read_only is True
    assert s.suppress_sync is True
    assert capsys.readouterr().err.count("Invalid") == 0


def test_hash_inside_a_value_is_not_a_comment(tmp_path):
    with pytest.raises(UserError) as e:
        _merge(tmp_path, "[Exec]\nHostname=h # not a comment\n", trusted=True)
    assert ":2:" in e.value.message


def test_empty_assignment_resets_lists(tmp_path):
    s, _ = _merge(tmp_path, "[Exec]\nEnvironment=A=1\nEnvironment=\nEnvironment=B=2\n"
                            "Parameters=a b\nParameters=\nParameters=c\n", trusted=True)
    assert s.setenv == ["B=2"] and s.parameters == ["c"]


def test_repeated_list_keys_add_up_and_scalars_last_wins(tmp_path):
    s, _ = _merge(tmp_path, "[Exec]\nCapability=CAP_SYS_TIME\nCapability=CAP_NET_ADMIN\n"
                            "Hostname=a\nHostname=b\n[Files]\nBind=/a\nBind=/b:/c\n", trusted=True)
    assert s.capability == (1 << 25) | (1 << 12)
    assert s.hostname == "b"
    assert [b[1] for b in s.bind] == ["/a", "/c"]


def test_unknown_keys_and_sections_are_warned_with_file_and_line(tmp_path, capsys):
    s, path = _merge(tmp_path, "[Exec]\nBogus=1\n[Nope]\nX=1\n[Files]\nReadOnly=yes\n", trusted=True)
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and "Bogus" in err
    assert f"{path}:3:" in err and "Nope" in err
    assert s.read_only is True


def test_keys_are_case_sensitive(tmp_path, capsys):
    s, path = _merge(tmp_path, "[Exec]\nboot=yes\n", trusted=True)
    assert s.boot is False and f"{path}:2:" in capsys.readouterr().err


V252_KEYS = """Exec.Boot Network.Port Exec.User Exec.ResolvConf Exec.PivotRoot Network.Private
Network.Zone Network.VirtualEthernet Exec.OOMScoreAdjust Exec.Parameters Exec.SystemCallFilter
Network.Interface Files.Inaccessible Files.BindUser Exec.ProcessTwo Exec.Environment
Exec.PrivateUsers Exec.Timezone Exec.LimitCORE Exec.NoNewPrivileges Exec.LimitNOFILE
Exec.LimitMEMLOCK Files.PrivateUsersChown Exec.LimitNICE Exec.LimitSTACK Exec.LimitRTPRIO
Exec.AmbientCapability Files.BindReadOnly Exec.Ephemeral Exec.LimitLOCKS Exec.LinkJournal
Files.PrivateUsersOwnership Network.VirtualEthernetExtra Files.ReadOnly Exec.LimitNPROC
Exec.LimitRTTIME Exec.SuppressSync Files.Overlay Files.Volatile Exec.LimitFSIZE Exec.Personality
Exec.LimitMSGQUEUE Exec.DropCapability Exec.Capability Files.OverlayReadOnly Exec.LimitAS
Exec.LimitRSS Network.IPVLAN Exec.KillSignal Exec.WorkingDirectory Exec.Hostname Exec.MachineID
Files.Bind Exec.CPUAffinity Exec.LimitCPU Exec.LimitDATA Network.MACVLAN Exec.NotifyReady
Network.Bridge Files.TemporaryFileSystem Exec.LimitSIGPENDING""".split()


def test_every_v252_key_is_known(tmp_path, capsys):
    from nspawnpy.config.settings import by_key
    keys = by_key()
    missing = [k for k in V252_KEYS if tuple(k.split(".")) not in keys]
    assert missing == []


# --- bad values ------------------------------------------------------------------------------

BAD_FILES = [
    "[Exec]\nBoot=maybe\n", "[Exec]\nLimitNOFILE=abc\n", "[Exec]\nOOMScoreAdjust=5000\n",
    "[Exec]\nCapability=CAP_NOPE\n", "[Exec]\nKillSignal=SIGNOPE\n", "[Exec]\nPersonality=arm\n",
    "[Exec]\nMachineID=xyz\n", "[Exec]\nHostname=-bad\n", "[Exec]\nResolvConf=sideways\n",
    "[Exec]\nTimezone=mars\n", "[Exec]\nLinkJournal=up\n", "[Exec]\nWorkingDirectory=rel\n",
    "[Exec]\nPivotRoot=rel\n", "[Exec]\nCPUAffinity=x-y\n", "[Exec]\nEnvironment=1BAD=x\n",
    "[Exec]\nPrivateUsers=bogus\n", "[Exec]\nParameters=\"unterminated\n",
    "[Files]\nVolatile=sometimes\n", "[Files]\nBind=/a:rel\n", "[Files]\nTemporaryFileSystem=rel\n",
    "[Files]\nOverlay=/onlyone\n", "[Files]\nInaccessible=rel\n", "[Files]\nBind=\n",
    "[Files]\nPrivateUsersOwnership=sideways\n", "[Network]\nZone=a/b\n",
    "[Network]\nPort=notaport\n", "[Network]\nInterface=a/b\n", "[Network]\nBridge=" + "x" * 20 + "\n",
    "[Network]\nVirtualEthernetExtra=a:b:c/d\n", "[Exec]\nSetCredential=nocolon\n",
]


@pytest.mark.parametrize("text", BAD_FILES, ids=[t.split("\n")[1][:30] for t in BAD_FILES])
def test_bad_value_in_file_is_one_line_with_file_and_line(run_nspawnpy, busybox_root, nspawn_files,
                                                          text):
    path = nspawn_files("run", "# leading comment\n" + text)
    r = run_nspawnpy(*BASE, "-D", busybox_root, "/bin/true")
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}:3:"), r.stderr
    assert "Traceback" not in r.stderr
    assert [x for x in leftovers() if not x.startswith("cgroup ")] == []


def test_override_file_parameters_keep_command_line_boot(tmp_path):
    s, _ = _merge(tmp_path, "[Exec]\nParameters=--debug\n", argv=["--settings=override", "-b"],
                  trusted=True)
    assert s.boot is True and s.parameters == ["--debug"]
    s, _ = _merge(tmp_path, "[Exec]\nProcessTwo=yes\n", argv=["--settings=override", "-b", "/x"],
                  trusted=True)
    assert s.boot is False and s.as_pid2 is True and s.parameters == ["/x"]


def test_override_file_network_replaces_command_line_network(tmp_path):
    s, _ = _merge(tmp_path, "[Network]\nMACVLAN=eth0\n", argv=["--settings=override", "-n"],
                  trusted=True)
    assert s.network_macvlan == ["eth0"] and s.network_veth is False
    s, _ = _merge(tmp_path, "[Network]\nMACVLAN=eth0\n", argv=["-n"], trusted=True)
    assert s.network_macvlan == [] and s.network_veth is True


def test_trusted_machine_id_reaches_the_container(run_nspawnpy, busybox_root, nspawn_files):
    nspawn_files("run", "[Exec]\nMachineID=0123456789abcdef0123456789abcdef\n")
    out = run_in(run_nspawnpy, busybox_root, script="cat /run/host/container-uuid").stdout
    assert out == "01234567-89ab-cdef-0123-456789abcdef\n"


def test_bare_environment_name_in_file_is_not_copied_from_host(run_nspawnpy, busybox_root,
                                                               nspawn_files):
    nspawn_files("image", "[Exec]\nEnvironment=FOO\nEnvironment=BAR=1\n")
    r = run_nspawnpy(*BASE, "-D", busybox_root, "/bin/sh", "-c", "echo ${FOO-unset} $BAR",
                     env={"FOO": "host"}, check=0)
    assert r.stdout == "unset 1\n"


UNTRUSTED_EVERYTHING = (
    "[Exec]\nEphemeral=yes\nCapability=CAP_SYS_TIME\nAmbientCapability=CAP_CHOWN\n"
    "MachineID=0123456789abcdef0123456789abcdef\nPrivateUsers=yes\nLimitCORE=1\nLimitNOFILE=100\n"
    "OOMScoreAdjust=1\nCPUAffinity=0\nLinkJournal=guest\nSystemCallFilter=@clock\n"
    "[Files]\nBind=/srv\nTemporaryFileSystem=/t\nInaccessible=/x\nOverlay=/a:/b\nBindUser=alice\n"
    "PrivateUsersOwnership=chown\n[Network]\nPort=80\nVirtualEthernet=yes\nZone=z\n")


def test_differential_untrusted_warnings(systemd_nspawn, run_nspawnpy, busybox_root, nspawn_files):
    nspawn_files("image", UNTRUSTED_EVERYTHING)
    args = ["--register=no", "-q", "-D", str(busybox_root), "/bin/true"]
    theirs = systemd_nspawn(["--keep-unit", *args], check=None).stderr
    ours = run_nspawnpy(*args, check=None).stderr

    def ignoring(text):
        return [line for line in text.splitlines() if line.startswith("Ignoring")]
    assert ignoring(ours) == ignoring(theirs)
    assert len(ignoring(ours)) >= 12


def test_differential_unknown_keys_and_sections(systemd_nspawn, run_nspawnpy, busybox_root,
                                                nspawn_files):
    nspawn_files("image", "[Exec]\nBogus=1\nboot=yes\n[Foo]\nX=1\n[Files]\nNope=2\n")
    args = ["--register=no", "-q", "-D", str(busybox_root), "/bin/true"]
    theirs = systemd_nspawn(["--keep-unit", *args], check=None)
    ours = run_nspawnpy(*args, check=None)

    def unknown(text):
        return sorted(line for line in text.splitlines() if "Unknown" in line)
    assert unknown(ours.stderr) == unknown(theirs.stderr)
    assert len(unknown(ours.stderr)) == 4
    assert ours.returncode == theirs.returncode == 0
