"""The shipped files: generated docs are current, the Debian package holds what a user
needs, and the unit carries systemd-nspawn@.service's directives."""

import shutil
import subprocess
import sys

import pytest

from conftest import REPO

PYTHON = sys.executable


@pytest.mark.parametrize("script", ["make-manpage.py", "make-completion.py",
                                    "make-settings-fields.py"])
def test_generated_files_match_the_settings_table(script):
    r = subprocess.run([PYTHON, str(REPO / "packaging" / script), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_completion_is_valid_bash_and_completes_option_values():
    if not shutil.which("bash"):
        pytest.skip("bash is not installed")
    script = (f"source {REPO}/packaging/nspawnpy.bash; COMP_WORDS=(nspawnpy --console ''); "
              "COMP_CWORD=2; _nspawnpy; echo ${COMPREPLY[@]}")
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["interactive", "read-only", "passive", "pipe", "autopipe"]


def test_debian_package_contains_program_units_and_docs(tmp_path):
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb is not installed")
    deb = subprocess.run(["sh", str(REPO / "packaging/build-deb.sh"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True,
                             check=True).stdout
    for path in ("./usr/bin/nspawnpy", "./usr/lib/python3/dist-packages/nspawnpy/__main__.py",
                 "./lib/systemd/system/nspawnpy@.service",
                 "./lib/systemd/network/79-nspawnpy-ve.network",
                 "./usr/share/man/man1/nspawnpy.1.gz",
                 "./usr/share/bash-completion/completions/nspawnpy",
                 "./usr/share/doc/nspawnpy/examples/macvlan.nspawn",
                 "./usr/bin/nspawnpyctl", "./usr/share/man/man1/nspawnpyctl.1.gz",
                 "./usr/share/bash-completion/completions/nspawnpyctl",
                 "./usr/lib/python3/dist-packages/nspawnpy/ctl/__main__.py",
                 "./usr/share/doc/nspawnpy/copyright", "./usr/share/doc/nspawnpy/changelog.gz"):
        assert path in listing, path
    assert "__pycache__" not in listing
    control = subprocess.run(["dpkg-deb", "-f", deb, "Depends"], capture_output=True,
                             text=True, check=True).stdout
    for dependency in ("python3-pystemd", "python3-dbus-next", "python3-pyroute2", "libseccomp2"):
        assert dependency in control


def test_unit_has_the_directives_of_systemd_nspawn_at_service():
    unit = (REPO / "units/nspawnpy@.service").read_text()
    for line in ("Type=notify", "KillMode=mixed", "Delegate=yes", "Slice=machine.slice",
                 "RestartForceExitStatus=133", "SuccessExitStatus=133", "DevicePolicy=closed",
                 "DeviceAllow=/dev/net/tun rwm", "DeviceAllow=char-pts rw", "PartOf=machines.target",
                 "Before=machines.target", "RequiresMountsFor=/var/lib/machines/%i",
                 "WantedBy=machines.target", "TasksMax=16384"):
        assert line in unit.splitlines(), line
    exec_start = next(l for l in unit.splitlines() if l.startswith("ExecStart="))
    for option in ("--quiet", "--keep-unit", "--boot", "--link-journal=try-guest",
                   "--settings=override", "--machine=%i"):
        assert option in exec_start.split()


def test_lintian_finds_no_errors_in_the_debian_package(tmp_path):
    if not shutil.which("lintian") or not shutil.which("dpkg-deb"):
        pytest.skip("lintian is not installed")
    deb = subprocess.run(["sh", str(REPO / "packaging/build-deb.sh"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    r = subprocess.run(["lintian", "--tag-display-limit", "0", deb], capture_output=True,
                       text=True)
    errors = [line for line in r.stdout.splitlines() if line.startswith("E:")]
    assert errors == [], r.stdout
    maintainer = subprocess.run(["dpkg-deb", "-f", deb, "Maintainer"], capture_output=True,
                                text=True, check=True).stdout.strip()
    assert maintainer == "nspawnpy maintainers <nspawnpy@example.invalid>"


def test_ctl_completion_offers_verbs_options_values_and_machine_names(tmp_path):
    if not shutil.which("bash"):
        pytest.skip("bash is not installed")

    def complete(*words):
        line = " ".join(f"'{w}'" for w in words)
        script = (f"source {REPO}/packaging/nspawnpyctl.bash; COMP_WORDS=(nspawnpyctl {line}); "
                  "COMP_CWORD=${#COMP_WORDS[@]}; COMP_CWORD=$((COMP_CWORD-1)); _nspawnpyctl; "
                  "echo ${COMPREPLY[@]}")
        return subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                              check=True).stdout.split()
    assert {"create", "list", "attach", "checkconfig"} <= set(complete(""))
    assert complete("list", "--json", "") == ["pretty", "short", "off"]
    assert set(complete("stop", "--")) >= {"--timeout", "--kill"}
    assert complete("create", "--distribution", "b") == ["busybox"]
    import os
    import secrets
    tree = f"/var/lib/machines/compl-{secrets.token_hex(3)}"
    os.makedirs(tree)
    try:
        offered = complete("attach", "")
        assert tree.rsplit("/", 1)[1] in offered
        assert not any(name.startswith(".") for name in offered)
    finally:
        os.rmdir(tree)


def test_pip_install_provides_both_commands(tmp_path):
    r = subprocess.run([PYTHON, "-m", "pip", "--version"], capture_output=True)
    if r.returncode != 0:
        pytest.skip("pip is not installed")
    target = tmp_path / "site"
    r = subprocess.run([PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(target), str(REPO)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    for command, expected in (("nspawnpy", "nspawnpy "), ("nspawnpyctl", "nspawnpyctl ")):
        script = target / "bin" / command
        assert script.exists(), command
        out = subprocess.run([PYTHON, str(script), "--version"], capture_output=True, text=True,
                             env=env, cwd=tmp_path)
        assert out.returncode == 0 and out.stdout.startswith(expected), out.stderr
    assert (target / "nspawnpy/ctl/attach.py").exists()
