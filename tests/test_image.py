"""-i/--image=: disk images (a bare ext4 file system, GPT images per the Discoverable
Partitions Specification) attached through self-clearing loop devices and mounted in a mount
namespace of nspawnpy's own; -M finding NAME.raw; read-only roots; hostile images refused
with one line naming the image. systemd-nspawn 252 refuses -i on this machine (it wants
udev), so these tests compare a run on an image with a -D run of the same tree."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import diskimage
import rootfs
from conftest import QUIET, leftovers, skip_unless, wait_for

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from differential import facts as factlib  # noqa: E402

PIPE = (*QUIET, "--console=pipe")
pytestmark = pytest.mark.skipif(not os.path.exists("/dev/loop-control"),
                                reason="no loop devices here (/dev/loop-control)")


@pytest.fixture
def scratch(tmp_path_factory):
    d = Path(tmp_path_factory.mktemp("img", numbered=True))
    yield d
    assert leftovers(d) == []


@pytest.fixture
def tree(scratch):
    root = rootfs.busybox_tree(scratch / "tree")
    (root / "etc/os-release").write_text('NAME="ImageOS"\nID=imageos\n')
    return root


@pytest.fixture
def ext4_image(scratch, tree):
    skip_unless(subprocess.run(["which", "mkfs.ext4"], capture_output=True).returncode == 0,
                "mkfs.ext4 is missing (e2fsprogs)")
    return diskimage.ext4(scratch / f"img-{secrets.token_hex(3)}.raw", tree)


@pytest.fixture
def gpt_image(scratch, tree):
    """A GPT image: root (x86-64), /home (holding a marker), swap, and a no-auto /srv."""
    skip_unless(os.uname().machine == "x86_64", "the test image's root type is x86-64's")
    home = scratch / "home-tree"
    (home / "alice").mkdir(parents=True)
    (home / "alice/marker").write_text("from-the-home-partition\n")
    parts = [diskimage.Part(diskimage.ROOT_X86_64, diskimage.ext4(scratch / "root.fs", tree)),
             diskimage.Part(diskimage.HOME, diskimage.ext4(scratch / "home.fs", home, 8)),
             diskimage.Part(diskimage.SWAP, 1 << 20),
             diskimage.Part(diskimage.SRV, diskimage.ext4(scratch / "srv.fs", home, 8),
                            flags=diskimage.FLAG_NO_AUTO)]
    return diskimage.gpt(scratch / f"gpt-{secrets.token_hex(3)}.raw", parts)


def sh(run_nspawnpy, *options, script: str, **kw):
    kw.setdefault("check", None)
    return run_nspawnpy(*PIPE, *options, "/bin/sh", "-c", script, **kw)


def root_mount(run_nspawnpy, *options) -> list[str]:
    """The container's root mount: [options, fstype, source, super options]."""
    r = sh(run_nspawnpy, *options, script="awk '$5 == \"/\"' /proc/self/mountinfo", check=0)
    left, _, right = r.stdout.strip().partition(" - ")
    return [left.split()[5], *right.split()[:3]]


def nothing_left(image: Path, machine: str = "") -> list[str]:
    """Loop devices on the image and its runs' mount points left (after a moment for a
    janitor); *machine*: the runs' machine name, if not the image's."""
    def left():
        points = Path("/tmp").glob(f"nspawnpy-root-{machine or image.name[:-4]}-*")
        return leftovers(str(image.parent)) + sorted(map(str, points))
    try:
        wait_for(lambda: not left(), timeout=10, what="loop devices and mount points to go")
    except AssertionError:
        pass
    return left()


# -- running on an image ---------------------------------------------------------------------

def test_a_command_sees_the_image_files_as_root_and_its_exit_status_passes(run_nspawnpy,
                                                                          ext4_image):
    r = sh(run_nspawnpy, "-i", ext4_image, script="cat /etc/os-release; hostname; id -u; exit 7")
    assert r.returncode == 7, r.stderr
    assert 'NAME="ImageOS"' in r.stdout
    assert r.stdout.split()[-2:] == [ext4_image.name[:-4], "0"]   # machine name: no .raw
    assert nothing_left(ext4_image) == []


def test_the_image_root_is_ext4_from_a_loop_device_with_nodev(run_nspawnpy, ext4_image):
    opts, fstype, source, sup = root_mount(run_nspawnpy, "-i", ext4_image)
    assert fstype == "ext4" and re.fullmatch(r"/proc/self/fd/\d+", source)  # as nspawn names it
    assert opts.split(",")[:2] == ["rw", "nodev"] and "nosuid" not in opts
    assert "discard" not in sup.split(",")   # nspawn 252 asks for none either


def test_read_only_makes_the_loop_device_and_the_root_read_only(run_nspawnpy, ext4_image):
    opts, _, source, sup = root_mount(run_nspawnpy, "--read-only", "-i", ext4_image)
    assert opts.startswith("ro,") and "norecovery" in sup.split(",")
    r = sh(run_nspawnpy, "--read-only", "-i", ext4_image,
           script="touch /x 2>&1; cat /sys/block/${0##*/}/ro 2>/dev/null; echo", check=0)
    assert "Read-only file system" in r.stdout


def test_gpt_root_and_home_partitions_are_mounted_and_swap_and_no_auto_are_not(run_nspawnpy,
                                                                              gpt_image):
    r = sh(run_nspawnpy, "-i", gpt_image,
           script="cat /home/alice/marker; awk '{print $5, $(NF-2)}' /proc/self/mountinfo "
                  "| grep -E '^/(home|srv)? '; ls /srv | wc -l; cat /proc/swaps | wc -l")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "from-the-home-partition"
    assert sorted(lines[1:3]) == ["/ ext4", "/home ext4"]
    assert lines[3:] == ["0", "1"]   # /srv empty (no-auto); no swap in use
    assert nothing_left(gpt_image) == []


def test_the_read_only_partition_flag_makes_the_root_read_only(run_nspawnpy, scratch, tree):
    skip_unless(os.uname().machine == "x86_64", "the test image's root type is x86-64's")
    image = diskimage.gpt(scratch / "ro.raw", [diskimage.Part(
        diskimage.ROOT_X86_64, diskimage.ext4(scratch / "root.fs", tree),
        flags=diskimage.FLAG_READ_ONLY)])
    opts, *_ = root_mount(run_nspawnpy, "-i", image)
    assert opts.startswith("ro,")


def test_a_4k_sector_gpt_and_a_lone_generic_linux_partition_serve_as_root(run_nspawnpy,
                                                                          scratch, tree):
    image = diskimage.gpt(scratch / "generic.raw", [diskimage.Part(
        diskimage.GENERIC, diskimage.ext4(scratch / "root.fs", tree))], sector=4096)
    r = sh(run_nspawnpy, "-i", image, script="cat /etc/os-release")
    assert r.returncode == 0 and "ImageOS" in r.stdout, r.stderr


def test_a_partition_outside_the_usable_area_is_ignored_as_blkid_does(run_nspawnpy, scratch,
                                                                     tree):
    skip_unless(os.uname().machine == "x86_64", "the test image's root type is x86-64's")
    image = _gpt("entry-past-usable")(scratch, tree)   # its /home ends past the usable area
    r = sh(run_nspawnpy, "-i", image, script="awk '$5 == \"/home\"' /proc/self/mountinfo; "
                                              "head -1 /etc/os-release")
    assert r.stdout == 'NAME="ImageOS"\n', r.stderr


def test_a_usr_partition_is_mounted_with_the_root(run_nspawnpy, scratch, tree):
    skip_unless(os.uname().machine == "x86_64", "the test image's root type is x86-64's")
    usr = scratch / "usr-tree"
    (usr / "lib").mkdir(parents=True)
    (usr / "lib/marker").write_text("from-the-usr-partition\n")
    image = diskimage.gpt(scratch / "usr.raw", [
        diskimage.Part(diskimage.ROOT_X86_64, diskimage.ext4(scratch / "root.fs", tree)),
        diskimage.Part(diskimage.USR_X86_64, diskimage.ext4(scratch / "usr.fs", usr, 8))])
    r = sh(run_nspawnpy, "-i", image, script="cat /usr/lib/marker")
    assert r.stdout == "from-the-usr-partition\n", r.stderr


def test_an_mbr_image_boots_its_one_bootable_linux_partition(run_nspawnpy, scratch, tree):
    image = diskimage.mbr(scratch / "mbr.raw", diskimage.ext4(scratch / "root.fs", tree))
    r = sh(run_nspawnpy, "-i", image, script="cat /etc/os-release")
    assert "ImageOS" in r.stdout, r.stderr
    image = diskimage.mbr(scratch / "mbr-not-bootable.raw", scratch / "root.fs", bootable=False)
    r = sh(run_nspawnpy, "-i", image, script="true", check=1)
    assert r.stderr.strip() == f"{image}: No suitable root partition found in image."


def test_an_image_file_that_may_not_be_written_is_used_read_only(run_nspawnpy, ext4_image):
    if subprocess.run(["chattr", "+i", ext4_image], capture_output=True).returncode != 0:
        pytest.skip("chattr +i does not work here")
    try:
        opts, *_ = root_mount(run_nspawnpy, "-i", ext4_image)
        assert opts.startswith("ro,")
    finally:
        subprocess.run(["chattr", "-i", ext4_image], check=True)


def test_boot_needs_an_init_and_the_message_names_the_image(run_nspawnpy, scratch, tree):
    (tree / "sbin/init").unlink()
    image = diskimage.ext4(scratch / "noinit.raw", tree)
    r = run_nspawnpy(*PIPE, "-b", "-i", image, check=1)
    assert r.stderr.startswith(f"Image {image} lacks an init system"), r.stderr
    assert nothing_left(image) == []


def test_private_users_map_the_image_root_through_an_idmapped_mount(run_nspawnpy, ext4_image):
    r = sh(run_nspawnpy, "-U", "-i", ext4_image,
           script="cat /proc/self/uid_map; stat -c %u /etc/passwd; touch /etc/made; "
                  "awk '$5 == \"/\" {print $6}' /proc/self/mountinfo")
    assert r.returncode == 0, r.stderr
    base, uid, options = r.stdout.split()[1], r.stdout.split()[3], r.stdout.split()[4]
    assert int(base) >= 0x80000 and uid == "0" and "idmapped" in options.split(",")
    r = sh(run_nspawnpy, "-i", ext4_image, script="stat -c %u /etc/made")
    assert r.stdout == "0\n"   # written as the container's root, stored as the image's root


def test_volatile_state_keeps_the_image_read_only_under_a_fresh_var(run_nspawnpy, ext4_image):
    r = sh(run_nspawnpy, "--volatile=state", "-i", ext4_image,
           script="touch /etc/x 2>/dev/null || echo ro; touch /var/x && echo var-rw")
    assert r.stdout.split() == ["ro", "var-rw"], r.stderr


def test_the_guest_journal_link_of_an_image_goes_with_its_mounts(run_nspawnpy, scratch, tree):
    machine_id = secrets.token_hex(16)
    (tree / "etc/machine-id").write_text(machine_id + "\n")
    (tree / "var/log/journal").mkdir(parents=True)
    image = diskimage.ext4(scratch / "journal.raw", tree)
    link = Path(f"/var/log/journal/{machine_id}")
    try:
        r = sh(run_nspawnpy, "--link-journal=guest", "-i", image,
               script=f"test -d /var/log/journal/{machine_id} && echo made")
        assert r.stdout == "made\n", r.stderr
        assert not os.path.lexists(link)   # it would lead into the gone mount point
    finally:
        if link.is_symlink():
            link.unlink()


@pytest.mark.parametrize("tool, make", [
    ("mksquashfs", lambda tree, out: ["mksquashfs", tree, out, "-noappend", "-quiet"]),
    ("mkfs.erofs", lambda tree, out: ["mkfs.erofs", out, tree]),
])
def test_squashfs_and_erofs_images_run_read_only(run_nspawnpy, scratch, tree, tool, make):
    skip_unless(subprocess.run(["which", tool], capture_output=True).returncode == 0,
                f"{tool} is missing (squashfs-tools, erofs-utils)")
    image = scratch / f"{tool}.raw"
    subprocess.run(make(str(tree), str(image)), check=True, capture_output=True)
    opts, fstype, *_ = root_mount(run_nspawnpy, "-i", image)
    assert (opts.split(",")[0], fstype) == ("ro", {"mksquashfs": "squashfs"}.get(tool, "erofs"))
    r = sh(run_nspawnpy, "-i", image, script="cat /etc/os-release")
    assert "ImageOS" in r.stdout
    assert nothing_left(image) == []


def kernel_has(fstype: str) -> bool:
    with open("/proc/filesystems") as f:
        return any(line.split()[-1] == fstype for line in f if line.strip())


def test_an_xbootldr_goes_to_boot_and_the_esp_to_efi(run_nspawnpy, scratch, tree):
    skip_unless(os.uname().machine == "x86_64", "the test image's root type is x86-64's")
    parts = [diskimage.Part(diskimage.ROOT_X86_64, diskimage.ext4(scratch / "root.fs", tree)),
             diskimage.Part(diskimage.XBOOTLDR, diskimage.ext4(scratch / "boot.fs", None, 8))]
    expected = ["/boot ext4"]
    have_vfat = kernel_has("vfat") and subprocess.run(["which", "mkfs.vfat"],
                                                      capture_output=True).returncode == 0
    if have_vfat:   # (this kernel may lack vfat: then the XBOOTLDR alone)
        esp = scratch / "esp.fs"
        subprocess.run(["mkfs.vfat", "-C", str(esp), "8192"], check=True, capture_output=True)
        parts.append(diskimage.Part(diskimage.ESP, esp))
        expected.append("/efi vfat")
    image = diskimage.gpt(scratch / "esp.raw", parts)
    r = sh(run_nspawnpy, "-i", image,
           script="awk '$5 ~ /^\\/(efi|boot)$/ {print $5, $(NF-2)}' /proc/self/mountinfo")
    assert sorted(r.stdout.splitlines()) == expected, r.stderr


def test_a_file_system_the_kernel_lacks_is_one_line_naming_the_image(run_nspawnpy, scratch,
                                                                     tree):
    skip_unless(os.uname().machine == "x86_64", "the test image's root type is x86-64's")
    skip_unless(not kernel_has("vfat") and subprocess.run(
        ["which", "mkfs.vfat"], capture_output=True).returncode == 0,
        "needs mkfs.vfat and a kernel without vfat")
    esp = scratch / "esp.fs"
    subprocess.run(["mkfs.vfat", "-C", str(esp), "8192"], check=True, capture_output=True)
    image = diskimage.gpt(scratch / "novfat.raw", [
        diskimage.Part(diskimage.ROOT_X86_64, diskimage.ext4(scratch / "root.fs", tree)),
        diskimage.Part(diskimage.ESP, esp)])
    r = sh(run_nspawnpy, "-i", image, script="true", check=1)
    assert r.stderr.strip() == f"Failed to mount image {image} (ESP, vfat): No such device"
    assert nothing_left(image) == []


def test_boot_runs_busybox_init_from_the_image(run_nspawnpy, scratch, tree):
    (tree / "etc/inittab").write_text("::sysinit:/bin/echo booted-from-image\n"
                                      "::once:/bin/poweroff\n::shutdown:/bin/true\n")
    image = diskimage.ext4(scratch / "boot.raw", tree)
    r = run_nspawnpy(*PIPE, "-b", "-i", image, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "booted-from-image" in r.stdout
    assert nothing_left(image) == []


def test_machine_name_finds_name_raw_in_var_lib_machines(run_nspawnpy, tree):
    name = f"nspawnpy-test-img-{secrets.token_hex(3)}"
    os.makedirs("/var/lib/machines", exist_ok=True)
    image = Path(f"/var/lib/machines/{name}.raw")
    diskimage.ext4(image, tree)
    try:
        r = sh(run_nspawnpy, "-M", name, script="hostname; cat /etc/os-release")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[0] == name and "ImageOS" in r.stdout
        assert nothing_left(image, name) == []
    finally:
        image.unlink()


def test_the_nspawn_file_next_to_the_image_is_found_by_its_name(run_nspawnpy, ext4_image):
    settings = ext4_image.parent / (ext4_image.name[:-4] + ".nspawn")
    settings.write_text("[Exec]\nEnvironment=WHERE=next-to-image\nLimitNOFILE=77\n")
    r = run_nspawnpy(*PIPE, "-i", ext4_image, "/bin/sh", "-c", "echo $WHERE", check=0)
    assert r.stdout == "next-to-image\n"
    assert "is not trusted" in r.stderr   # untrusted: LimitNOFILE= is dropped, as for -D


def test_ephemeral_runs_on_a_copy_that_is_gone_at_once(run_nspawnpy, ext4_image):
    before = sorted(p.name for p in ext4_image.parent.iterdir())
    r = sh(run_nspawnpy, "-x", "-i", ext4_image,
           script="echo changed > /etc/os-release; ls -a /proc/self/fd/ >/dev/null; hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(ext4_image.name[:-4] + "-")
    r = sh(run_nspawnpy, "-i", ext4_image, script="cat /etc/os-release", check=0)
    assert "ImageOS" in r.stdout
    assert sorted(p.name for p in ext4_image.parent.iterdir()) == before
    assert nothing_left(ext4_image) == []


def test_a_second_writable_run_on_a_busy_image_is_refused(run_nspawnpy, ext4_image,
                                                          nspawnpy_cmd, nspawnpy_env):
    first = subprocess.Popen([*nspawnpy_cmd, *PIPE, "-i", ext4_image, "/bin/sleep", "30"],
                             env=nspawnpy_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.5)
        r = sh(run_nspawnpy, "-i", ext4_image, script="true", check=1)
        assert r.stderr.strip() == f"Disk image {ext4_image} is currently busy."
    finally:
        first.kill()
        first.wait()
    assert nothing_left(ext4_image) == []


def test_kill_9_of_the_supervisor_leaves_no_loop_device_mount_or_directory(ext4_image,
                                                                          nspawnpy_cmd,
                                                                          nspawnpy_env):
    process = subprocess.Popen([*nspawnpy_cmd, *PIPE, "-i", ext4_image, "/bin/sleep", "60"],
                               env=nspawnpy_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: leftovers(str(ext4_image.parent)), timeout=20, what="the loop device")
        time.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert nothing_left(ext4_image) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_plain_directory_run_imports_none_of_the_image_code(busybox_root, repo):
    code = ("import sys; from nspawnpy.__main__ import main; main(['--register=no','-q',"
            f"'--console=pipe','-D','{busybox_root}','/bin/true']);\n"
            "print(sorted(m for m in sys.modules if m.endswith(('.image', '.gpt', '.imagemount',"
            "'.loopdev'))))")
    r = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(repo)}, timeout=30)
    assert r.stdout.strip().endswith("[]"), r.stdout + r.stderr


def test_a_start_removes_mount_points_of_killed_runs_but_not_those_in_use(run_nspawnpy,
                                                                         ext4_image):
    import fcntl
    stale = Path(f"/tmp/nspawnpy-root-test-stale-{secrets.token_hex(4)}")
    used = Path(f"/tmp/nspawnpy-root-test-used-{secrets.token_hex(4)}")
    for d in (stale, used):
        d.mkdir()
        os.utime(d, (time.time() - 600, time.time() - 600))
    held = os.open(used, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        sh(run_nspawnpy, "-i", ext4_image, script="true", check=0)
        assert (stale.exists(), used.exists()) == (False, True)
    finally:
        os.close(held)
        for d in (stale, used):
            if d.exists():
                d.rmdir()


def test_a_luks_encrypted_root_is_refused_in_one_line(run_nspawnpy, scratch):
    skip_unless(os.uname().machine == "x86_64", "the test image's root type is x86-64's")
    image = diskimage.gpt(scratch / "luks.raw", [diskimage.Part(
        diskimage.ROOT_X86_64, b"LUKS\xba\xbe\0\x02" + bytes((1 << 20) - 8))])
    r = sh(run_nspawnpy, "-i", image, script="true", check=1)
    assert r.stderr.strip() == f"{image}: Encrypted (LUKS) file systems are not supported by " \
                               "nspawnpy."
    assert nothing_left(image) == []


# -- the same view as -D ---------------------------------------------------------------------

# What legitimately differs between -D TREE and -i IMAGE-OF-TREE: the root mount itself (its
# file system, device and options; its root is the file system's own, not a directory of the
# host's). The tree gets a lost+found as mkfs.ext4 gives the image one.
ROOT_MOUNT_FACTS = {"mountinfo./#0.fstype", "mountinfo./#0.source", "mountinfo./#0.dev",
                    "mountinfo./#0.options", "mountinfo./#0.super", "mountinfo./#0.root"}


def test_the_probe_sees_the_same_container_on_the_image_as_on_the_tree(run_nspawnpy, scratch,
                                                                       tree):
    probe = HERE / "differential/probe.sh"
    (tree / "usr/bin/probe").write_bytes(probe.read_bytes())
    os.chmod(tree / "usr/bin/probe", 0o755)
    (tree / "lost+found").mkdir(0o700)
    image = diskimage.ext4(scratch / "probe.raw", tree)
    name = f"img-probe-{secrets.token_hex(3)}"
    ctx = factlib.Context(str(tree), str(scratch), name)
    seen = {}
    for how in (("-D", tree), ("-i", image)):
        r = run_nspawnpy(*PIPE, "-M", name, *how, "/usr/bin/probe", check=0, timeout=60)
        seen[how[0]] = factlib.facts(r.stdout, ctx)
    differing = {k for k in set(seen["-D"]) | set(seen["-i"])
                 if seen["-D"].get(k) != seen["-i"].get(k)}
    assert seen["-i"]["probe.complete"] == "yes"
    assert differing == ROOT_MOUNT_FACTS & differing and "mountinfo./#0.source" in differing, \
        {k: (seen["-D"].get(k), seen["-i"].get(k)) for k in sorted(differing)}


# -- refusals and hostile images -------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    (("-D", "/"), "--directory= and --image= may not be combined."),
    (("--template=/",), "--template= and --image= may not be combined."),
    (("--root-hash=" + "ab" * 32,), "--root-hash= is not supported by nspawnpy yet."),
])
def test_refused_combinations_name_the_option(run_nspawnpy, ext4_image, options, message):
    r = run_nspawnpy(*PIPE, *options, "-i", ext4_image, "/bin/true", check=1)
    assert r.stderr.strip() == message


def _garbage(scratch, tree):
    path = scratch / "garbage.raw"
    path.write_bytes(os.urandom(4 << 20))
    return path


def _ext4_magic_over_garbage(scratch):
    data = bytearray(os.urandom(4 << 20))
    data[0x438:0x43A] = b"\x53\xef"
    path = scratch / "fake-ext4.raw"
    path.write_bytes(bytes(data))
    return path


def _gpt(corrupt, parts=None):
    def make(scratch, tree):
        root = diskimage.Part(diskimage.ROOT_X86_64, diskimage.ext4(scratch / "r.fs", tree, 8))
        home = diskimage.Part(diskimage.HOME, 1 << 20)
        return diskimage.gpt(scratch / f"{corrupt or 'plain'}.raw",
                             parts(scratch) if parts else [root, home], corrupt=corrupt)
    return make


HOSTILE = {
    "garbage": (_garbage, "Couldn't identify a suitable partition table or file system"),
    "empty": (lambda s, t: (s / "empty.raw").write_bytes(b"") or s / "empty.raw",
              "Couldn't identify a suitable partition table or file system"),
    "truncated-gpt": (_gpt("truncate"), "describes a disk larger than the image"),
    "bad-header-crc": (_gpt("header-crc"), "GPT header checksum mismatch"),
    "bad-entries-crc": (_gpt("entries-crc"), "GPT entry array checksum mismatch"),
    "partition-past-eof": (_gpt("past-eof"), "describes a disk larger than the image"),
    "huge-entry-count": (_gpt("count"), "is out of range"),
    "overlapping-partitions": (_gpt("overlap"), "overlap"),
    "no-protective-mbr": (_gpt("no-pmbr"), "GPT without a protective MBR"),
    "entry-array-past-eof": (_gpt("array-past-eof"), "GPT entry array lies outside the image"),
    "ext4-magic-over-garbage": (lambda s, t: _ext4_magic_over_garbage(s),
                                "Failed to mount image"),
    "no-root-partition": (_gpt("", lambda s: [diskimage.Part(diskimage.HOME, 1 << 20),
                                              diskimage.Part(diskimage.SWAP, 1 << 20)]),
                          "No suitable root partition found in image."),
    "root-of-unknown-fs": (_gpt("", lambda s: [diskimage.Part(diskimage.ROOT_X86_64,
                                                              os.urandom(1 << 20))]),
                           "File system type not supported or not known."),
    "two-generic-partitions": (_gpt("", lambda s: [diskimage.Part(diskimage.GENERIC, 1 << 20),
                                                   diskimage.Part(diskimage.GENERIC, 1 << 20)]),
                               "Multiple suitable root partitions found in image."),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_image_gets_one_line_naming_it_and_nothing_is_left(run_nspawnpy, scratch,
                                                                     tree, case):
    skip_unless(os.uname().machine == "x86_64", "the test images' root type is x86-64's")
    make, reason = HOSTILE[case]
    image = make(scratch, tree)
    r = run_nspawnpy(*PIPE, "-i", image, "/bin/true", check=1)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(image) in lines[0] and reason in lines[0], r.stderr
    assert nothing_left(image) == []
