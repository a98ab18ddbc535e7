"""The differential harness: every scenario of the matrix (scenarios.py) runs under
systemd-nspawn 252 and under nspawnpy on the same tree, and everything the payload can observe
(probe.sh, facts.py) must be the same, except the differences listed in known_differences.py.

Set NSPAWNPY_DIFF_REPORT=FILE to also write the open differences to FILE after a full run.
"""

from __future__ import annotations

import os
import shutil

import pytest

from differential import known_differences
from differential.compare import format_difference, run_scenario
from differential.scenarios import SCENARIOS

pytestmark = pytest.mark.skipif(not shutil.which("systemd-nspawn"),
                                reason="systemd-nspawn is not installed (systemd-container)")

RESULTS: dict[str, object] = {}


def _tree_available(scenario) -> None:
    if scenario.tree == "debian":
        import rootfs
        if not shutil.which("debootstrap"):
            pytest.skip("debootstrap is not installed")
        try:
            rootfs.debian_tarball()
        except rootfs.RootfsUnavailable as e:
            pytest.skip(f"Debian tree unavailable: {e}")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_payload_sees_what_it_sees_under_systemd_nspawn(scenario):
    _tree_available(scenario)
    result = run_scenario(scenario, SCENARIOS.index(scenario))
    RESULTS[scenario.name] = result
    assert not result.problems, result.problems
    if len(result.refused_by) < 2:  # (both refusing is compared by status and message)
        assert result.facts_compared > 300, "the probe reported too little"
    unlisted = [format_difference(f, *values) for f, values in result.differences.items()
                if known_differences.match(scenario.name, f) is None]
    assert not unlisted, (f"{len(unlisted)} differences from systemd-nspawn that "
                          "known_differences.py does not list:\n" + "\n".join(unlisted))


def test_every_listed_difference_still_occurs():
    """An entry that no longer matches anything is stale: remove it (or it hides a regression
    into a different difference).  Judged only over a run of every scenario it covers."""
    if any(s.name not in RESULTS for s in SCENARIOS):
        pytest.skip("only judged when every scenario ran")
    report = os.environ.get("NSPAWNPY_DIFF_REPORT")
    if report:
        known_differences.write_report(report, list(RESULTS.values()))
    # (an entry counts where it is the one that accepts a difference: one that only ever
    # matches differences an earlier entry already accepts is as stale)
    used = {id(known_differences.match(r.scenario, f))
            for r in RESULTS.values() for f in r.differences}
    stale = [k for k in known_differences.KNOWN if id(k) not in used]
    assert not stale, "entries that match no difference any more:\n" + "\n".join(
        f"  [{k.kind}] {k.scenarios} {k.fact}: {k.reason}" for k in stale)
