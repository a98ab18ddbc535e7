"""Host-side memory per running machine.

N machines run a sleeping payload at once, each started by its manager with --keep-unit from a
scratch cgroup of its own (the nspawnpy@.service / systemd-nspawn@.service case). Once all are up,
the PSS (/proc/PID/smaps_rollup) of every host-side process of each machine is summed: the
supervisor, its descendants in our PID namespace (janitor, helpers) and anything else in the
machine's scratch cgroup that is not in the container. The figure is that sum divided by N.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from procs import cmdline, descendants, pidns, proc_status, smaps_rollup
from testhost import ScratchCgroup

PAYLOAD = ("/bin/sleep", "3600")
SETTLE_S = 3.0  # steady state: nspawnpy renews its janitor 1 s after the start


class Machine:
    def __init__(self, argv: list[str], env: dict, label: str):
        self.cg = ScratchCgroup(label)
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.err,
                                     preexec_fn=self.cg.enter)

    def host_pids(self) -> list[int]:
        host = pidns("self")
        pids = {self.proc.pid, *descendants(self.proc.pid), *self.cg.pids()}
        return sorted(p for p in pids if pidns(p) == host)

    def payload_running(self) -> bool:
        host = pidns("self")
        return any(proc_status(p).get("Name") == "sleep" and pidns(p) != host
                   for p in descendants(self.proc.pid))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.cg.remove()
        self.err.seek(0)
        self.stderr = self.err.read().decode(errors="replace").strip()[-300:]
        self.err.close()


def measure_tool(make_argv, trees: list[Path], env: dict, label: str) -> dict:
    """Start one machine per tree, wait until every payload runs, sum host-side memory."""
    machines = []
    try:
        for i, tree in enumerate(trees):
            machines.append(Machine(make_argv(tree, *PAYLOAD), env, f"{label}{i}"))
        deadline = time.monotonic() + 60 + 2 * len(trees)
        while not all(m.payload_running() for m in machines):
            dead = [m for m in machines if m.proc.poll() is not None]
            if dead or time.monotonic() > deadline:
                return {"error": f"{len(dead)} machines exited early, status "
                                 f"{dead[0].proc.returncode if dead else 'timeout'}"}
            time.sleep(0.1)
        time.sleep(SETTLE_S)
        return summarize(machines)
    finally:
        for m in machines:
            m.stop()


def summarize(machines: list[Machine]) -> dict:
    n = len(machines)
    totals = {key: 0 for key in ("Pss", "Pss_Anon", "Rss", "Anonymous")}
    per_process: list[dict] = []
    for m in machines:
        for pid in m.host_pids():
            roll = smaps_rollup(pid)
            for key in totals:
                totals[key] += roll.get(key, 0)
            if m is machines[0]:
                per_process.append({"pid": pid, "name": proc_status(pid).get("Name"),
                                    "cmdline": cmdline(pid), **roll})
    counts = [len(m.host_pids()) for m in machines]
    return {"machines": n, "host_processes_per_machine": statistics.median(counts),
            **{f"{key}_kB_per_machine": value / n for key, value in totals.items()},
            "first_machine_processes": per_process}


def python_floor(n: int, env: dict) -> float:
    """Context: PSS (kB) of each of n bare sleeping interpreters, the floor for a Python
    supervisor (one per machine)."""
    procs = [subprocess.Popen(["/usr/bin/python3", "-I", "-S", "-c", "import time; time.sleep(60)"],
                              env=env) for _ in range(n)]
    try:
        time.sleep(SETTLE_S + 0.5)
        return sum(smaps_rollup(p.pid).get("Pss", 0) for p in procs) / n
    finally:
        for p in procs:
            p.kill()
            p.wait()


def bench_memory(nspawnpy_argv, nspawn_argv, trees: list[Path], env: dict, counts) -> dict:
    """Per-machine PSS for each N in *counts*; nspawnpy first, then systemd-nspawn."""
    res = {}
    for n in counts:
        entry = {}
        for name, make in (("nspawnpy", nspawnpy_argv), ("systemd-nspawn", nspawn_argv)):
            entry[name] = measure_tool(make, trees[:n], env, f"mem{n}{name[0]}")
            if "error" in entry[name]:
                return {"skipped": f"{name} with {n} machines: {entry[name]['error']}"}
        a = entry["nspawnpy"]["Pss_kB_per_machine"]
        b = entry["systemd-nspawn"]["Pss_kB_per_machine"]
        entry.update(unit="kB PSS per machine", value_nspawnpy=a, value_nspawn=b,
                     ratio=a / b if b else float("nan"),
                     ratio_anon=(entry["nspawnpy"]["Anonymous_kB_per_machine"]
                                 / max(entry["systemd-nspawn"]["Anonymous_kB_per_machine"], 1)))
        entry["python3_floor_Pss_kB"] = python_floor(n, env)
        res[n] = entry
    return res


def describe(res: dict) -> list[str]:
    out = []
    for n, entry in res.items():
        for name in ("nspawnpy", "systemd-nspawn"):
            v = entry[name]
            procs = ", ".join(f"{p['name']} PSS {p.get('Pss', 0)} kB (anon {p.get('Anonymous', 0)})"
                              for p in v["first_machine_processes"])
            out.append(f"memory N={n} {name}: PSS {v['Pss_kB_per_machine']:.0f} kB/machine, "
                       f"anonymous {v['Anonymous_kB_per_machine']:.0f} kB/machine, RSS "
                       f"{v['Rss_kB_per_machine']:.0f} kB/machine, "
                       f"{v['host_processes_per_machine']:g} host-side processes each "
                       f"(first machine: {procs})")
        floor = entry["python3_floor_Pss_kB"]
        out.append(f"memory N={n}: PSS ratio {entry['ratio']:.2f}, anonymous ratio "
                   f"{entry['ratio_anon']:.2f}; context: {n} bare sleeping 'python3 -I -S' "
                   f"take {floor:.0f} kB PSS each (= {floor / entry['value_nspawn']:.2f} x "
                   f"systemd-nspawn's machine)")
    return out
