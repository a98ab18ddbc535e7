"""Every file-system, execution and security setting takes effect inside a real
container (busybox trees), plus differential checks against systemd-nspawn 252."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import DEFAULT_CAPS, leftovers, run_in, skip_unless, stop

BASE = ("--register=no", "-q")
CAP_CHOWN, CAP_NET_RAW, CAP_SYS_TIME = 0, 13, 25


@pytest.fixture
def inside(run_nspawnpy, busybox_root):
    """inside(*options, script=..., check=0) -> stdout of `sh -c script` in the container."""

    def run(*options, script="true", check=0, env=None, root=None):
        return run_in(run_nspawnpy, root or busybox_root, *options, script=script, check=check,
                      env=env).stdout

    return run


def stray(name: str | None = None) -> list[str]:
    """leftovers(), ignoring cgroups of other machines (other test sessions run concurrently)."""
    return [x for x in leftovers() if not x.startswith("cgroup ") or (name and name in x)]


def mountinfo_line(text: str, where: str) -> list[str] | None:
    """The last mountinfo entry for *where* as (mount options, fstype, super options)."""
    found = None
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) > 5 and fields[4] == where:
            found = [fields[5], *right.split()[:1], right.split()[2] if len(right.split()) > 2 else ""]
    return found


def cap_mask(status: str, field: str) -> int:
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1], 16)
    raise AssertionError(f"{field} missing in {status!r}")


# --- the root --------------------------------------------------------------------------------

def test_read_only_root_cannot_be_written(inside, busybox_root):
    out = inside("--read-only", script="touch /x 2>/dev/null; echo rc=$?; touch /tmp/y && echo tmp-ok")
    assert "rc=1" in out and "tmp-ok" in out
    assert not (busybox_root / "x").exists()


def merge_usr(root: Path) -> None:
    """Turn a busybox tree into a merged-/usr one (/bin -> usr/bin, /sbin -> usr/sbin)."""
    for name in ("bin", "sbin"):
        for entry in (root / name).iterdir():
            os.rename(entry, root / "usr" / name / entry.name)
        (root / name).rmdir()
        (root / name).symlink_to(f"usr/{name}")


def test_volatile_yes_is_tmpfs_root_with_read_only_usr(inside, busybox_root):
    merge_usr(busybox_root)
    out = inside("--volatile=yes", script=(
        "touch /x && echo root-rw; touch /usr/x 2>/dev/null || echo usr-ro; "
        "grep -E ' / ' /proc/self/mountinfo; ls /"))
    assert "root-rw" in out and "usr-ro" in out
    assert " - tmpfs " in out
    assert "home" not in out.split() and "mnt" not in out.split()  # only /usr comes from the tree
    assert "bin" in out.split()  # compatibility links into /usr, as nspawn makes them
    assert not (busybox_root / "x").exists()


def test_volatile_yes_refuses_unmerged_usr(run_nspawnpy, busybox_root):
    r = run_nspawnpy(*BASE, "-D", busybox_root, "--volatile=yes", "/bin/true")
    assert r.returncode == 1 and "merged" in r.stderr and len(r.stderr.splitlines()) == 1


def test_volatile_state_has_tmpfs_var_on_read_only_root(inside, busybox_root):
    out = inside("--volatile=state", script=(
        "touch /var/v && echo var-rw; touch /x 2>/dev/null || echo root-ro; grep ' /var ' "
        "/proc/self/mountinfo"))
    assert "var-rw" in out and "root-ro" in out and " - tmpfs " in out
    assert not (busybox_root / "var/v").exists()


def test_volatile_overlay_writes_vanish(inside, busybox_root):
    out = inside("--volatile=overlay", script="echo hi > /etc/new && cat /etc/new; grep ' / ' /proc/self/mountinfo")
    assert "hi" in out and " - overlay " in out
    assert not (busybox_root / "etc/new").exists()
    assert stray(busybox_root.name) == []


def test_ephemeral_leaves_nothing(inside, busybox_root):
    out = inside("-x", script="echo eph > /etc/eph; cat /etc/eph; hostname")
    assert out.splitlines()[0] == "eph"
    hostname = out.splitlines()[1]
    assert hostname.startswith(busybox_root.name + "-") and len(hostname) > len(busybox_root.name) + 8
    assert not (busybox_root / "etc/eph").exists()
    assert [p for p in os.listdir(busybox_root.parent) if p.startswith(".#")] == []
    assert stray(busybox_root.name) == []


def _ephemeral_dirs(parent: Path) -> list[str]:
    return [p for p in os.listdir(parent) if p.startswith(".#")]


def test_ephemeral_layer_removed_after_kill_9(nspawnpy_cmd, nspawnpy_env, busybox_root):
    proc = subprocess.Popen([*nspawnpy_cmd, *BASE, "-D", str(busybox_root), "-x", "--console=pipe",
                             "/bin/sh", "-c", "echo ready; exec sleep 60"],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env=nspawnpy_env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert len(_ephemeral_dirs(busybox_root.parent)) == 1
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 15
        while _ephemeral_dirs(busybox_root.parent) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _ephemeral_dirs(busybox_root.parent) == []
        assert stray(busybox_root.name) == []
    finally:
        stop(proc)


def test_stale_ephemeral_layer_removed_at_next_start(inside, busybox_root):
    stale = busybox_root.parent / f".#{busybox_root.name}.ephemeral-0123456789abcdef"
    (stale / "upper").mkdir(parents=True)
    inside("-x")
    assert _ephemeral_dirs(busybox_root.parent) == []


def test_template_populates_missing_directory(run_nspawnpy, busybox_root):
    target = busybox_root.parent / "from-template"
    out = run_nspawnpy(*BASE, "-D", target, f"--template={busybox_root}", "/bin/cat",
                       "/etc/os-release", check=0).stdout
    assert "ID=" in out
    assert (target / "bin/busybox").exists()
    assert (target / "home/alice").stat().st_uid == 1000


def test_template_populates_empty_directory_but_not_a_full_one(run_nspawnpy, busybox_root):
    target = busybox_root.parent / "empty"
    target.mkdir()
    run_nspawnpy(*BASE, "-D", target, f"--template={busybox_root}", "/bin/true", check=0)
    assert (target / "etc/os-release").exists()
    (busybox_root / "etc/marker").write_text("new\n")
    run_nspawnpy(*BASE, "-D", target, f"--template={busybox_root}", "/bin/true", check=0)
    assert not (target / "etc/marker").exists()


def test_missing_template_is_one_line_and_creates_nothing(run_nspawnpy, busybox_root):
    target = busybox_root.parent / "never"
    r = run_nspawnpy(*BASE, "-D", target, f"--template={busybox_root.parent}/nope", "/bin/true")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not target.exists()


def test_pivot_root_new_root_gets_api_mounts(inside, busybox_root):
    new = busybox_root / "new"
    (new / "usr/bin").mkdir(parents=True)
    (new / "bin").mkdir()
    shutil.copy2(busybox_root / "bin/busybox", new / "bin/busybox")
    for applet in ("sh", "ls", "cat", "grep"):
        os.symlink("busybox", new / "bin" / applet)
    out = inside("--pivot-root=/new:/oldroot", script="ls /; ls /oldroot/etc; grep -c ' /proc ' /proc/self/mountinfo")
    names = out.split()
    assert "oldroot" in names and "os-release" in names and "proc" in names
    out = inside("--pivot-root=/new", script="ls /; ls -A /oldroot | wc -l")
    assert "home" not in out.split() and out.split()[-1] == "0"


# --- custom mounts ---------------------------------------------------------------------------

@pytest.fixture
def hostdir(busybox_root):
    d = busybox_root.parent / "hostdir"
    (d / "sub").mkdir(parents=True)
    (d / "file").write_text("data\n")
    return d


def test_bind_and_bind_ro(inside, hostdir):
    out = inside(f"--bind={hostdir}:/mnt/rw", f"--bind-ro={hostdir}:/mnt/ro", script=(
        "cat /mnt/rw/file; echo w > /mnt/rw/new; touch /mnt/ro/x 2>/dev/null || echo ro-denied"))
    assert "data" in out and "ro-denied" in out
    assert (hostdir / "new").read_text() == "w\n"


def test_bind_norbind_does_not_carry_submounts(inside):
    # Sorted by destination, the tmpfs on /a/sub exists before /b and /c are bound from /a.
    out = inside("--tmpfs=/a/sub", "--bind=+/a:/b:norbind", "--bind=+/a:/c",
                 script="cut -d' ' -f5 /proc/self/mountinfo")
    mounts = out.split()
    assert "/a/sub" in mounts and "/c/sub" in mounts and "/b" in mounts
    assert "/b/sub" not in mounts


def test_bind_relative_source_is_from_cwd(run_nspawnpy, busybox_root, hostdir, nspawnpy_cmd,
                                         nspawnpy_env):
    r = subprocess.run([*nspawnpy_cmd, *BASE, "-D", str(busybox_root), "--bind=hostdir:/mnt/rel",
                        "/bin/cat", "/mnt/rel/file"], cwd=hostdir.parent, env=nspawnpy_env,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "data\n"


def test_bind_plus_is_container_relative(inside):
    out = inside("--bind=+/etc:/mnt/etc", script="cat /mnt/etc/os-release")
    assert "ID=" in out


def test_bind_empty_source_is_a_fresh_directory(inside):
    out = inside("--bind=:/mnt/scratch", script="ls -A /mnt/scratch | wc -l; touch /mnt/scratch/x && echo ok")
    assert out.split() == ["0", "ok"]
    assert [p for p in os.listdir("/var/tmp") if p.startswith("nspawnpy-") and
            os.path.isdir(f"/var/tmp/{p}/bind0")] == []


def test_bind_file(inside, hostdir):
    out = inside(f"--bind-ro={hostdir}/file:/etc/motd", script="cat /etc/motd")
    assert out == "data\n"


def test_tmpfs_with_options(inside):
    out = inside("--tmpfs=/mnt/t:mode=0700,size=1m", "--tmpfs=/srv",
                 script="stat -c %a /mnt/t /srv; grep -E ' /mnt/t | /srv ' /proc/self/mountinfo")
    lines = out.splitlines()
    assert lines[:2] == ["700", "755"]
    assert "size=1024k" in out


def test_inaccessible_masks_file_and_directory(inside, busybox_root):
    out = inside("--inaccessible=/etc/passwd", "--inaccessible=/home", script=(
        "stat -c '%a %s' /etc/passwd; ls -A /home | wc -l; touch /home/x 2>/dev/null || echo denied"))
    assert out.split() == ["0", "0", "0", "denied"]
    assert (busybox_root / "etc/passwd").stat().st_size > 0


def test_overlay_writes_go_to_upper(inside, busybox_root):
    lower, upper = busybox_root.parent / "lower", busybox_root.parent / "upper"
    lower.mkdir()
    upper.mkdir()
    (lower / "l").write_text("L\n")
    (busybox_root / "mnt").mkdir()  # nspawn makes an overlay's mount point, not its parents
    inside(f"--overlay={lower}:{upper}:/mnt/o", script="cat /mnt/o/l; echo n > /mnt/o/n")
    assert (upper / "n").read_text() == "n\n" and not (lower / "n").exists()
    out = inside(f"--overlay-ro={lower}:{upper}:/mnt/o",
                 script="cat /mnt/o/l /mnt/o/n; touch /mnt/o/z 2>/dev/null || echo ro")
    assert out.split() == ["L", "n", "ro"]


def test_overlay_empty_upper_and_container_relative_lower(inside, busybox_root):
    out = inside("--overlay=+/etc::/etc", script="echo z > /etc/zz; cat /etc/zz /etc/os-release")
    assert out.startswith("z\n") and "ID=" in out
    assert not (busybox_root / "etc/zz").exists()


def test_overlay_container_relative_upper_takes_the_writes_and_its_work_dir_goes(inside,
                                                                                busybox_root):
    (busybox_root / "lower").mkdir()
    (busybox_root / "lower/l").write_text("L\n")
    (busybox_root / "upper").mkdir()
    out = inside("--overlay=+/lower:+/upper:/mnt", script="cat /mnt/l; echo n > /mnt/n")
    assert out == "L\n" and (busybox_root / "upper/n").read_text() == "n\n"
    assert not (busybox_root / "lower/n").exists()
    assert [p for p in os.listdir(busybox_root) if p.startswith(".#")] == []


def test_mounts_are_ordered_by_destination(inside, hostdir):
    # Given in the "wrong" order: the bind below the tmpfs must still be visible.
    out = inside(f"--bind-ro={hostdir}:/mnt/t/inner", "--tmpfs=/mnt/t", script="cat /mnt/t/inner/file")
    assert out == "data\n"


# --- /etc files ------------------------------------------------------------------------------

HOST_RESOLV = Path("/etc/resolv.conf")


@pytest.mark.parametrize("mode", ["off", "delete", "copy-host", "replace-host", "bind-host", "auto",
                                  "copy-static"])
def test_resolv_conf_modes(inside, busybox_root, mode):
    skip_unless(HOST_RESOLV.exists(), "host has no /etc/resolv.conf")
    (busybox_root / "etc/resolv.conf").write_text("# image\n")
    script = "cat /etc/resolv.conf 2>/dev/null || echo missing; grep -c ' /etc/resolv.conf ' /proc/self/mountinfo"
    out = inside(f"--resolv-conf={mode}", script=script, check=None).splitlines()
    host = HOST_RESOLV.read_text().splitlines()
    if mode == "off":
        assert out[0] == "# image"
    elif mode == "delete":
        assert out[0] == "missing"
    elif mode == "copy-static":
        if not Path("/usr/lib/systemd/resolv.conf").exists():
            pytest.skip("no static resolv.conf on the host")
        assert "127.0.0.53" in "\n".join(out)
    else:
        assert out[:len(host)] == host
        assert out[-1] == ("1" if mode == "bind-host" else "0")


def test_resolv_conf_replace_host_overwrites_symlink(inside, busybox_root):
    resolv = busybox_root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.symlink_to("/run/nothing")
    inside("--resolv-conf=copy-host")
    assert resolv.is_symlink()
    inside("--resolv-conf=replace-host")
    assert not resolv.is_symlink() and resolv.read_text() == HOST_RESOLV.read_text()


@pytest.mark.parametrize("mode", ["off", "delete", "copy", "bind", "symlink", "auto"])
def test_timezone_modes(inside, busybox_root, mode):
    skip_unless(os.path.exists("/etc/localtime"), "host has no /etc/localtime")
    zone = os.path.realpath("/etc/localtime")
    tz = busybox_root / "etc/localtime"
    tz.unlink(missing_ok=True)
    tz.write_text("image")
    if mode == "symlink":
        (busybox_root / "usr/share/zoneinfo").mkdir(parents=True)
    out = inside(f"--timezone={mode}", script=(
        "if [ -L /etc/localtime ]; then echo link $(readlink /etc/localtime); "
        "elif [ -e /etc/localtime ]; then echo file $(md5sum < /etc/localtime | cut -c1-32); "
        "else echo missing; fi; grep -c ' /etc/localtime ' /proc/self/mountinfo"), check=None).split()
    import hashlib
    host_sum = hashlib.md5(Path(zone).read_bytes()).hexdigest()
    if mode == "off":
        assert out[:2] == ["file", hashlib.md5(b"image").hexdigest()]
    elif mode == "delete":
        assert out[0] == "missing"
    elif mode == "copy":
        assert out[:3] == ["file", host_sum, "0"]
    elif mode == "bind":
        assert out[:3] == ["file", host_sum, "1"]
    elif mode == "symlink":
        # The zone file is missing in the image: nspawn falls back to a bind mount.
        assert out[:2] == ["file", host_sum]
    elif mode == "auto":
        assert out[1] == host_sum or out[0] == "link"


# --- execution, identity, resources ----------------------------------------------------------

def test_suppress_sync_makes_fsync_a_no_op(run_nspawnpy, busybox_root, tmp_path):
    skip_unless(shutil.which("gcc"), "gcc is not installed")
    src = tmp_path / "probe.c"
    src.write_text("#include <stdio.h>\n#include <errno.h>\n#include <unistd.h>\n"
                   "int main(void){int p[2];pipe(p);errno=0;int r=fsync(p[0]);"
                   "printf(\"%d %d\\n\",r,errno);return 0;}\n")
    r = subprocess.run(["gcc", "-static", "-O1", "-o", str(busybox_root / "probe"), str(src)],
                       capture_output=True)
    skip_unless(r.returncode == 0, "cannot build a static probe")
    assert run_nspawnpy(*BASE, "-D", busybox_root, "/probe", check=0).stdout == "-1 22\n"
    assert run_nspawnpy(*BASE, "-D", busybox_root, "--suppress-sync=yes", "/probe",
                        check=0).stdout == "0 0\n"


def test_rlimit(inside):
    out = inside("--rlimit=RLIMIT_NOFILE=100:200", "--rlimit=CORE=infinity", "--rlimit=RLIMIT_NOFILE=101:201",
                 script="ulimit -n; ulimit -Hn; ulimit -c")
    assert out.split() == ["101", "201", "unlimited"]


def test_rlimit_infinity_settles_for_the_closest_allowed(inside):
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    out = inside("--rlimit=RLIMIT_NOFILE=infinity", script="ulimit -Hn").strip()
    assert out == "unlimited" or int(out) >= hard


def test_setenv_of_unset_variable_unsets_it(inside):
    out = inside("-E", "FROMHOST", "-E", "HOME", "-E", "LANG=x", script="echo ${FROMHOST-unset} ${HOME-unset} $LANG",
                 env={"HOME": "/hosthome"})
    assert out == "unset /hosthome x\n"


def test_chdir_to_missing_directory_is_one_line(run_nspawnpy, busybox_root):
    r = run_nspawnpy(*BASE, "-D", busybox_root, "--chdir=/nonexistent", "/bin/true")
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [
        "Failed to change to specified working directory /nonexistent: No such file or directory"]


def test_oom_score_adjust(inside):
    assert inside("--oom-score-adjust=123", script="cat /proc/self/oom_score_adj") == "123\n"


def test_cpu_affinity(inside):
    cpus = sorted(os.sched_getaffinity(0))
    skip_unless(len(cpus) >= 2, "needs two CPUs")
    out = inside(f"--cpu-affinity={cpus[-1]}", script="grep Cpus_allowed_list /proc/self/status")
    assert out.split()[-1] == str(cpus[-1])


def test_personality(inside):
    skip_unless(os.uname().machine == "x86_64", "x86-64 host only")
    assert inside("--personality=x86", script="uname -m").strip() in ("i686", "i386")
    assert inside("--personality=x86-64", script="uname -m").strip() == "x86_64"


def test_no_new_privileges(inside):
    assert "NoNewPrivs:\t0" in inside(script="cat /proc/self/status")
    assert "NoNewPrivs:\t1" in inside("--no-new-privileges=yes", script="cat /proc/self/status")


def test_capabilities(inside):
    status = inside("--capability=CAP_SYS_TIME", "--drop-capability=CAP_CHOWN",
                    "--ambient-capability=CAP_NET_RAW", script="cat /proc/self/status")
    assert cap_mask(status, "CapBnd") == (DEFAULT_CAPS | 1 << CAP_SYS_TIME) & ~(1 << CAP_CHOWN)
    assert cap_mask(status, "CapAmb") == 1 << CAP_NET_RAW
    default = inside(script="cat /proc/self/status")
    assert cap_mask(default, "CapBnd") == DEFAULT_CAPS and cap_mask(default, "CapAmb") == 0
    everything = inside("--capability=all", script="cat /proc/self/status")
    assert cap_mask(everything, "CapBnd") == cap_mask(Path("/proc/self/status").read_text(), "CapBnd")
    none = inside("--drop-capability=all", script="cat /proc/self/status")
    assert cap_mask(none, "CapBnd") == 0


def test_credentials(inside, busybox_root):
    secret = busybox_root.parent / "secret"
    secret.write_bytes(b"s3cret")
    out = inside(f"--load-credential=disk:{secret}", "--set-credential=lit:a\\nb",
                 script=("echo $CREDENTIALS_DIRECTORY; stat -c '%a %n' /run/host/credentials "
                         "/run/host/credentials/*; cat /run/host/credentials/disk; echo; "
                         "cat /run/host/credentials/lit; echo; (echo x > /run/host/credentials/new) "
                         "2>/dev/null || echo ro"))
    lines = out.splitlines()
    assert lines[0] == "/run/host/credentials"
    assert lines[1:4] == ["500 /run/host/credentials", "400 /run/host/credentials/disk",
                          "400 /run/host/credentials/lit"]
    assert lines[4:] == ["s3cret", "a", "b", "ro"]
    assert "CREDENTIALS_DIRECTORY" not in inside(script="env")


def test_environment_chdir_hostname_uuid(inside):
    out = inside("-E", "A=1", "--setenv=B=two words", "-E", "FROMHOST", "--chdir=/etc",
                 "--hostname=other-name", "--uuid=0123456789abcdef0123456789abcdef",
                 script="echo $A; echo $B; echo $FROMHOST; pwd; hostname; cat /run/host/container-uuid; echo $container_uuid",
                 env={"FROMHOST": "yes"})
    assert out.splitlines() == ["1", "two words", "yes", "/etc", "other-name",
                                "01234567-89ab-cdef-0123-456789abcdef",
                                "01234567-89ab-cdef-0123-456789abcdef"]


def test_machine_id_of_image_wins_over_uuid(inside, busybox_root):
    (busybox_root / "etc/machine-id").write_text("fedcba9876543210fedcba9876543210\n")
    out = inside("--uuid=0123456789abcdef0123456789abcdef", script="echo $container_uuid")
    assert out.strip() == "fedcba98-7654-3210-fedc-ba9876543210"


def _start_waiting(nspawnpy_cmd, nspawnpy_env, root, *options):
    script = "trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.05; done"
    proc = subprocess.Popen([*nspawnpy_cmd, *BASE, "-D", str(root), "--console=pipe", *options,
                             "/bin/sh", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env=nspawnpy_env)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_kill_signal_goes_to_pid1_on_sigterm(nspawnpy_cmd, nspawnpy_env, busybox_root):
    proc = _start_waiting(nspawnpy_cmd, nspawnpy_env, busybox_root, "--kill-signal=SIGUSR1")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert "got-usr1" in out
    assert proc.returncode == 7


def test_without_kill_signal_sigterm_kills(nspawnpy_cmd, nspawnpy_env, busybox_root):
    proc = _start_waiting(nspawnpy_cmd, nspawnpy_env, busybox_root)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert "got-usr1" not in out
    assert proc.returncode == 1


def test_environment_and_parameters_from_file(run_nspawnpy, busybox_root):
    settings = busybox_root.parent / f"{busybox_root.name}.nspawn"
    settings.write_text('[Exec]\nEnvironment=A="x y" B=2\nEnvironment=C=3\n'
                        'Parameters=/bin/sh -c "echo $A/$B/$C; pwd"\nWorkingDirectory=/root\n')
    r = run_nspawnpy(*BASE, "-D", busybox_root, check=0)
    assert r.stdout == "x y/2/3\n/root\n"
    # The command line's command beats the file's Parameters=.
    assert run_nspawnpy(*BASE, "-D", busybox_root, "/bin/echo", "cli", check=0).stdout == "cli\n"


# --- failures leave nothing behind -----------------------------------------------------------

@pytest.mark.parametrize("options", [
    ["--bind=/nonexistent-src:/mnt/x"],
    ["--inaccessible=/nonexistent"],
    ["--load-credential=a:/nonexistent"],
    ["--tmpfs=/mnt/t", "--bind=/nonexistent-src:/mnt/t/x"],
    ["--overlay=/nonexistent-lower:/mnt/o", "--tmpfs=/mnt/t"],
])
def test_failing_mount_is_one_line_and_leaves_nothing(run_nspawnpy, busybox_root, options):
    r = run_nspawnpy(*BASE, "-D", busybox_root, *options, "/bin/true")
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert stray(busybox_root.name) == []


# --- differential: what the container sees ---------------------------------------------------

DIFF_MOUNTS = ("/proc", "/proc/sys", "/proc/sys/net", "/proc/acpi", "/proc/bus", "/proc/fs",
               "/proc/irq", "/sys", "/sys/block", "/sys/bus", "/sys/class", "/sys/dev", "/sys/devices",
               "/sys/kernel", "/dev", "/dev/shm", "/dev/pts", "/dev/mqueue", "/run", "/tmp")
DIFF_SCRIPT = "cat /proc/self/mountinfo; echo ===; grep -E '^Cap' /proc/self/status; echo ===; env | sort"


def _sections(out: str) -> tuple[str, str, dict]:
    mounts, caps, env = out.split("===\n")
    return mounts, caps, dict(line.split("=", 1) for line in env.splitlines() if "=" in line)


def _mount_view(mountinfo: str) -> dict:
    view = {}
    for where in DIFF_MOUNTS:
        entry = mountinfo_line(mountinfo, where)
        if entry:
            # size= depends on RAM and is the same for both; keep everything.
            view[where] = entry
    return view


@pytest.mark.parametrize("options", [[], ["--read-only"], ["--private-network"],
                                     ["--chdir=/etc", "-E", "X=1", "--hostname=h1"], ["-a"],
                                     ["--ambient-capability=CAP_NET_RAW"], ["--no-new-privileges=yes"],
                                     ["--capability=CAP_SYS_TIME", "--drop-capability=CAP_KILL"]])
def test_differential_api_mounts_caps_env(systemd_nspawn, run_nspawnpy, busybox_root, options):
    args = ["--register=no", "-q", "-D", str(busybox_root), "--console=pipe",
            "--setenv=TERM=dumb", *options, "/bin/sh", "-c", DIFF_SCRIPT]
    theirs = systemd_nspawn(["--keep-unit", *args], check=0).stdout
    ours = run_nspawnpy(*args, check=0).stdout
    t_mounts, t_caps, t_env = _sections(theirs)
    o_mounts, o_caps, o_env = _sections(ours)
    assert _mount_view(o_mounts) == _mount_view(t_mounts)
    assert o_caps == t_caps
    for env in (t_env, o_env):
        env.pop("container_uuid", None)
    assert o_env == t_env


@pytest.mark.parametrize("options", [["--tmpfs=/mnt/t:size=1m"], ["--tmpfs=/srv"]])
def test_differential_custom_tmpfs(systemd_nspawn, run_nspawnpy, busybox_root, options):
    where = options[0].split("=", 1)[1].split(":")[0]
    args = ["--register=no", "-q", "-D", str(busybox_root), "--console=pipe", *options,
            "/bin/sh", "-c", "cat /proc/self/mountinfo; stat -c %a " + where]
    theirs = systemd_nspawn(["--keep-unit", *args], check=0).stdout
    ours = run_nspawnpy(*args, check=0).stdout
    assert mountinfo_line(ours, where) == mountinfo_line(theirs, where)
    assert ours.split()[-1] == theirs.split()[-1]


@pytest.mark.parametrize("failing", ["--load-credential=a:/nonexistent", "--bind=/nonexistent-src:/x"])
def test_ephemeral_layer_removed_when_start_fails(run_nspawnpy, busybox_root, failing):
    r = run_nspawnpy(*BASE, "-D", busybox_root, "-x", failing, "/bin/true")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert _ephemeral_dirs(busybox_root.parent) == []
    assert stray(busybox_root.name) == []


def test_overlay_upper_on_another_file_system(inside, busybox_root):
    import secrets as _secrets
    skip_unless(os.path.isdir("/dev/shm"), "no /dev/shm")
    lower = busybox_root.parent / "lower"
    lower.mkdir()
    (lower / "l").write_text("L\n")
    upper = Path(f"/dev/shm/nspawnpy-test-upper-{_secrets.token_hex(3)}")
    upper.mkdir()
    (busybox_root / "mnt").mkdir()  # nspawn makes an overlay's mount point, not its parents
    try:
        out = inside(f"--overlay={lower}:{upper}:/mnt/o", script="echo n > /mnt/o/n; cat /mnt/o/l")
        assert out == "L\n" and (upper / "n").read_text() == "n\n"
        assert [p for p in os.listdir("/dev/shm") if p.startswith(".#" + upper.name)] == []
    finally:
        shutil.rmtree(upper)


def test_idmap_bind_without_user_namespace_is_refused(run_nspawnpy, busybox_root, hostdir):
    r = run_nspawnpy(*BASE, "-D", busybox_root, f"--bind={hostdir}:/mnt/a:idmap", "/bin/true")
    # nspawn 252's two lines (tests/test_refusals_vs_nspawn.py compares them with it)
    assert r.returncode == 1 and r.stderr.splitlines() == [
        "Failed to write UID map: Invalid argument",
        f"Failed to map ids for bind mount {busybox_root}/mnt/a: Invalid argument"], r.stderr
    assert stray(busybox_root.name) == []


ETC_SCRIPT = ("for f in /etc/resolv.conf /etc/localtime; do if [ -L $f ]; then echo $f link "
              "$(readlink $f); elif [ -e $f ]; then echo $f $(stat -c '%a %s %Y' $f); else echo $f "
              "missing; fi; echo mounts $(grep -c \" $f \" /proc/self/mountinfo); done")


@pytest.mark.parametrize("options", [[], ["--read-only"], ["--volatile=state"], ["--volatile=overlay"],
                                     ["--resolv-conf=replace-host", "--timezone=copy"],
                                     ["--resolv-conf=bind-host", "--timezone=bind"],
                                     ["--resolv-conf=delete", "--timezone=delete"]])
def test_differential_etc_files(systemd_nspawn, run_nspawnpy, busybox_root, options):
    skip_unless(HOST_RESOLV.exists() and os.path.exists("/etc/localtime"), "host lacks /etc files")
    (busybox_root / "etc/localtime").write_text("image\n")  # real images have both files
    (busybox_root / "etc/resolv.conf").write_text("# image\n")
    twin = busybox_root.parent / (busybox_root.name + "-twin")
    shutil.copytree(busybox_root, twin, symlinks=True)
    args = ["--register=no", "-q", "--console=pipe", *options, "/bin/sh", "-c", ETC_SCRIPT]
    theirs = systemd_nspawn(["--keep-unit", "-D", str(twin), *args], check=None)
    ours = run_nspawnpy("-D", busybox_root, *args, check=None)
    assert ours.stdout == theirs.stdout, (ours.stderr, theirs.stderr)
