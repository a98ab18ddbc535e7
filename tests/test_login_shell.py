"""Without a command, systemd-nspawn 252 runs a login shell: /bin/bash as "-bash", else /bin/sh
as "-sh" (never the shell passwd names), in the home directory unless --chdir= is given;
compared with systemd-nspawn."""

from __future__ import annotations

import pytest

from conftest import run_pipe

SESSION = "echo $0; pwd; tr '\\0' ' ' < /proc/$$/cmdline; echo; echo $HOME $USER\n"
FAKE_BASH = "#!/bin/sh\necho bash-ran \"$@\"; pwd\n"


def _same(run_nspawnpy, systemd_nspawn, tree, *options):
    theirs = systemd_nspawn(["--register=no", "--keep-unit", "-q", "--console=pipe", "-D",
                             str(tree), *options], input=SESSION)
    ours = run_pipe(run_nspawnpy, tree, *options, input=SESSION, check=None)
    noise = "Attempted to remove disk file system"
    said = [line for line in theirs.stderr.splitlines() if noise not in line]
    assert (ours.returncode, ours.stdout, ours.stderr.splitlines()) == (
        theirs.returncode, theirs.stdout, said)
    return ours


@pytest.mark.parametrize("options", [(), ("-u", "alice"), ("--chdir=/tmp",),
                                     ("-u", "alice", "--chdir=/tmp"), ("-a",), ("-U",),
                                     ("-u", "nobody")], ids=" ".join)
def test_login_shell_in_the_home_directory_as_systemd_nspawn(run_nspawnpy, systemd_nspawn,
                                                             busybox_root, options):
    # the passwd shell must not matter
    passwd = busybox_root / "etc/passwd"
    passwd.write_text(passwd.read_text().replace(":/bin/sh\n", ":/bin/false\n"))
    r = _same(run_nspawnpy, systemd_nspawn, busybox_root, *options)
    assert r.stdout.startswith("-sh\n")


def test_bash_first_as_systemd_nspawn(run_nspawnpy, systemd_nspawn, busybox_root):
    bash = busybox_root / "bin/bash"
    bash.write_text(FAKE_BASH)
    bash.chmod(0o755)
    r = _same(run_nspawnpy, systemd_nspawn, busybox_root)
    assert r.stdout == "bash-ran\n/root\n"


def test_no_shell_at_all_fails_as_systemd_nspawn(run_nspawnpy, systemd_nspawn, busybox_root):
    (busybox_root / "bin/sh").unlink()
    r = _same(run_nspawnpy, systemd_nspawn, busybox_root)
    assert r.returncode == 1
    assert r.stderr == "execv(/bin/bash, /bin/bash, /bin/sh) failed: No such file or directory\n"
