"""Every accepted difference between nspawnpy and systemd-nspawn 252 in the differential
harness, with its reason.  Two kinds:

  explained  permanent: a deliberate improvement, or a fact of this machine;
  open       a real difference not fixed yet (the goal is none); each names its issue item.

An entry matches a scenario name and a fact key by shell-style patterns (fnmatch).  The harness
fails on a difference that no entry matches, and on an entry that matches no difference in the
scenarios it covers (so this list stays true).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Known:
    kind: str          # "explained" | "open"
    scenarios: str     # fnmatch pattern over scenario names
    fact: str          # fnmatch pattern over fact keys
    reason: str


def _open(scenarios: str, fact: str, reason: str) -> Known:
    return Known("open", scenarios, fact, reason)


def _explained(scenarios: str, fact: str, reason: str) -> Known:
    return Known("explained", scenarios, fact, reason)


# The user namespace scenarios (-U, --private-users=..., PrivateUsers= in a file).
USERNS = "*userns*"
# Scenarios where one tool refuses or fails: every fact differs, so one entry covers them.
WHOLE = "*"

KNOWN: list[Known] = [
    # --- explained (first: a specific reason wins over a general open entry) ----------
    _explained("*ephemeral*", "mountinfo./#0.*",
               "deliberate: -x runs on an overlay of the tree with an upper layer beside it; "
               "nspawn 252 makes a full copy on non-btrfs file systems"),
    _explained("*overlay*", "mountinfo.*#0.super",
               "host-side scratch directories (overlay upper/work, empty bind sources) have "
               "other names than nspawn's; the layers themselves are compared by the rest"),
    _explained("bind-empty-source", "mountinfo./mnt/scratch#0.root",
               "host-side scratch directory name for an empty bind source"),
    _explained("*inaccessible*", "mountinfo.*",
               "deliberate: --inaccessible= masks with nodes in the container's own "
               "/run/host/inaccessible (as nspawn >= 254), not the host's "
               "/run/systemd/inaccessible"),
    _explained("suite-big-settings-file", "mountinfo./var#0.super",
               "host-side scratch directory names of Overlay=+/var::/var's temporary upper"),
    _explained("suite-big-settings-file", "mountinfo./opt/*",
               "deliberate: Inaccessible= masks with the container's /run/host/inaccessible"),
    _explained("suite-big-settings-file", "mountinfo.*.propagation",
               "deliberate (as --inaccessible=): the masks are binds from /run/host/inaccessible, "
               "so they are peers of /run's group, which then is named after them"),

    # --- whole scenarios where only one tool runs the payload -------------------------------

    # --- issue 9 #3: propagation and /run/host/incoming ------------------------------------
    _explained("bind-container-relative", "mountinfo./mnt/etc#0.propagation",
               "a deliberate improvement: the container's root is switched to with pivot_root "
               "(nspawn 252 moves it onto / and chroots, which a chroot break-out escapes); "
               "pivot_root takes the root out of its peer group (made private for the switch, "
               "as a bind of a part of it is its peer), so a bind of a path inside the tree "
               "(+SRC) is shared in a group of its own where nspawn's shares the root's"),

    # --- issue 9 #4: mount options and stacking ------------------------------------------


    # --- issue 9 #5: /dev, -U ----------------------------------------------------------------

    # --- issue 9 #7: -a stub init ------------------------------------------------------------
    _explained("*as-pid2*", "self.pid1_exe",
               "a fact of a Python implementation: the -a stub is PID 1 of the interpreter "
               "(/usr/bin/python3.11), where nspawn's is its own binary; its comm and command "
               "line are (sd-stubinit) as nspawn's, and nothing else of it differs"),

]


def matches(k: Known, scenario: str, fact: str) -> bool:
    return fnmatch.fnmatchcase(scenario, k.scenarios) and fnmatch.fnmatchcase(fact, k.fact)


def match(scenario: str, fact: str) -> Known | None:
    """The first entry that accepts *fact* differing in *scenario*."""
    return next((k for k in KNOWN if matches(k, scenario, fact)), None)


def write_report(path: str, results) -> None:
    """The open (and unlisted) differences for the helpers fixing them: grouped by entry, then
    by fact and values, with the scenarios where each occurs."""
    groups: dict[str, dict[tuple[str, str, str], list[str]]] = {}
    for r in results:
        for fact, (theirs, ours) in r.differences.items():
            k = match(r.scenario, fact)
            if k and k.kind == "explained":
                continue
            if "probe.complete" in r.differences and not fact.startswith(("exit.", "probe.")):
                continue  # one tool refused: its outcome says it all
            title = f"[open] {k.reason}" if k else "[UNLISTED]"
            groups.setdefault(title, {}).setdefault((fact, theirs, ours), []).append(r.scenario)
    count = sum(len(v) for g in groups.values() for v in g.values())
    lines = [f"Differential harness report: {len(results)} scenarios, {count} open or unlisted "
             f"differences (scenario x fact; a refused scenario counts its outcome only).", ""]
    for title, facts in sorted(groups.items()):
        lines.append(title)
        for (fact, theirs, ours), scenarios in sorted(facts.items()):
            lines += [f"  {fact}   [{len(scenarios)}: {' '.join(scenarios)}]",
                      f"      nspawn:   {theirs}", f"      nspawnpy: {ours}"]
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))
