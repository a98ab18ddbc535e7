"""Compare one scenario (or all) from the command line, without pytest:

    /usr/bin/python3 tests/differential/compare.py [SCENARIO...] [--report FILE]

prints every difference, marks the listed ones, and with --report writes the open ones (the
format of /work/diff-report.txt)."""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from differential import harness, known_differences  # noqa: E402
from differential.scenarios import BY_NAME, SCENARIOS  # noqa: E402

SCRATCH = Path("/var/tmp")


@dataclass
class Result:
    scenario: str
    facts_compared: int
    differences: dict[str, tuple[str, str]]
    problems: list[str]
    outputs: dict[str, str]
    refused_by: tuple[str, ...] = ()   # the tools whose payload never ran the whole probe


def new_world(scenario: harness.Scenario, index: int) -> harness.World:
    scratch = Path(tempfile.mkdtemp(prefix=f"nspawnpy-test-diff-{os.getpid()}-", dir=SCRATCH))
    scratch.rmdir()  # build_world makes it afresh for each tool
    return harness.World(scratch=scratch, machine=f"df-{secrets.token_hex(3)}-{index}",
                         tree_kind=scenario.tree)


def run_scenario(scenario: harness.Scenario, index: int = 0) -> Result:
    """Run *scenario* under both tools in one world (rebuilt for each) and compare."""
    world = new_world(scenario, index)
    runs, problems = {}, []
    for tool in ("nspawn", "nspawnpy"):
        try:
            runs[tool] = harness.run_tool(tool, scenario, world)
        finally:
            problems += [f"{tool}: {p}" for p in harness.tear_down_world(world)]
    theirs, ours = runs["nspawn"].facts, runs["nspawnpy"].facts
    return Result(scenario.name, len(set(theirs) | set(ours)), harness.compare(ours, theirs),
                  problems, {t: r.output for t, r in runs.items()},
                  tuple(t for t, r in runs.items() if r.facts["probe.complete"] != "yes"))


def format_difference(fact: str, theirs: str, ours: str) -> str:
    return f"    {fact}\n        nspawn:   {theirs}\n        nspawnpy: {ours}"


def main(argv: list[str]) -> int:
    report = None
    if "--report" in argv:
        i = argv.index("--report")
        report = argv[i + 1]
        del argv[i:i + 2]
    chosen = [BY_NAME[n] for n in argv] if argv else SCENARIOS
    results = []
    for i, s in enumerate(chosen):
        r = run_scenario(s, i)
        results.append(r)
        print(f"== {s.name}: {r.facts_compared} facts, {len(r.differences)} differ", flush=True)
        for fact, (theirs, ours) in r.differences.items():
            entry = known_differences.match(s.name, fact)
            tag = f"[{entry.kind}]" if entry else "[UNLISTED]"
            print(f"  {tag} " + format_difference(fact, theirs, ours).lstrip())
        for p in r.problems:
            print(f"  PROBLEM {p}")
    if report:
        known_differences.write_report(report, results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
