"""Invalid option values (the cases systemd's own nspawn test suite tries for every option that
takes a value): nspawnpy refuses exactly what systemd-nspawn 252 refuses.  Each case runs on an
empty tree, so a value wrongly accepted cannot start anything of the host's.  Differences are
listed in known_differences.py under the scenario name "refusal:ARGS" (fact "exit.refused")."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from differential import harness, known_differences

pytestmark = pytest.mark.skipif(not shutil.which("systemd-nspawn"),
                                reason="systemd-nspawn is not installed (systemd-container)")

OPTIONS = (
    "bind", "bind-ro", "bind-user", "chdir", "console", "inaccessible", "kill-signal",
    "link-journal", "load-credential", "network-interface", "network-macvlan",
    "network-ipvlan", "network-veth-extra", "network-bridge", "network-zone",
    "no-new-privileges", "oom-score-adjust", "overlay", "overlay-ro", "personality",
    "pivot-root", "port", "private-users", "private-users-ownership", "register",
    "resolv-conf", "rlimit", "root-hash", "root-hash-sig", "set-credential", "settings",
    "suppress-sync", "timezone", "tmpfs", "uuid",
)
CASES = [f"--{o}" for o in OPTIONS] + [f"--{o}=''" for o in OPTIONS if o != "network-zone"] \
    + [f"--{o}=%$š" for o in OPTIONS if o != "network-zone"] \
    + ["--volatile=", "--volatile=-1", "--rlimit=="]


def _refused(tool: str, option: str, tree: str) -> bool:
    # A bare option takes no command after it (it would take the command as its value); the
    # shell that then runs ends at once on the pipe console with no input.
    command = ["/bin/true"] if "=" in option else []
    cmd = [*harness.tool_command(tool), "--register=no", "--keep-unit", "-q", "-D", tree,
           "--console=pipe", option, *command]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                       env=harness.tool_env(tool, harness.Scenario("refusal")), cwd=tree)
    return r.returncode != 0


@pytest.mark.parametrize("option", CASES)
def test_invalid_value_is_refused_as_by_systemd_nspawn(option):
    scratch = tempfile.mkdtemp(prefix=f"nspawnpy-test-refuse-{os.getpid()}-", dir="/var/tmp")
    tree = os.path.join(scratch, f"rf-{os.getpid()}")
    try:
        refused = {}
        for tool in ("nspawn", "nspawnpy"):
            harness.rootfs.busybox_tree(tree)
            refused[tool] = _refused(tool, option, tree)
            harness.testhost.clean_nspawn_runtime(os.path.basename(tree))
            harness.rootfs.rmtree(tree)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    listed = known_differences.match(f"refusal:{option}", "exit.refused")
    if refused["nspawn"] == refused["nspawnpy"]:
        assert not listed, f"stale entry in known_differences.py: {listed}"
    elif listed:
        pytest.xfail(listed.reason)
    else:
        pytest.fail(f"{option}: systemd-nspawn refused={refused['nspawn']}, "
                    f"nspawnpy refused={refused['nspawnpy']}")
