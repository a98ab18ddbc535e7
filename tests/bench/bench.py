#!/usr/bin/python3
"""nspawnpy vs systemd-nspawn: cold start (plain and --keep-unit), supervisor peak RSS, host memory
per running machine, Debian boot to multi-user, read-only console throughput.

Run as root from the repository root:

    /usr/bin/python3 tests/bench/bench.py [--json FILE] [--runs N] [--rounds N] [--repeat N] [--size BYTES] [--only NAME]

Everything happens on one freshly built busybox tree (tests/rootfs.py) under /var/tmp, which is
removed afterwards.  systemd-nspawn runs with --register=no --keep-unit from a scratch cgroup
(tests/testhost.py's ScratchCgroup) so the payload/supervisor cgroups it leaves behind go away
with that cgroup; new /run/systemd/nspawn/*/MACHINE entries are removed too.

This is a report, not a test: it always exits 0 (unless it cannot run at all, e.g. not root).
See README.md next to this file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

sys.path.insert(0, str(Path(__file__).resolve().parent))

import boot  # noqa: E402
import memory  # noqa: E402
import rootfs  # noqa: E402
from procs import describe_tree, proc_status  # noqa: E402,F401
from testhost import ScratchCgroup  # noqa: E402

PYTHON = "/usr/bin/python3"
INSTALLED = "/usr/bin/nspawnpy"
INSTALLED_PACKAGE = Path("/usr/lib/python3/dist-packages/nspawnpy")
# --checkout: what the installed /usr/bin/nspawnpy (packaging/nspawnpy) does, with the
# checkout first on the path through PYTHONPATH.
CHECKOUT = [PYTHON, "-S", "-c", "import sys; sys.path.append('/usr/lib/python3/dist-packages'); "
            "from nspawnpy.__main__ import run_and_exit; run_and_exit()"]
NSPAWN_RUNTIME = Path("/run/systemd/nspawn")

TARGETS = {
    "cold_start": ("ratio <= 0.4", lambda r: r <= 0.4),
    "cold_start_keep_unit": ("ratio <= 0.4", lambda r: r <= 0.4),
    "peak_rss": ("ratio <= 1.1", lambda r: r <= 1.1),
    "memory_10": ("ratio <= 1.5", lambda r: r <= 1.5),
    "memory_50": ("ratio <= 1.5", lambda r: r <= 1.5),
    "boot": ("ratio <= 0.75", lambda r: r <= 0.75),
    "throughput": ("ratio >= 1.0", lambda r: r >= 1.0),
}
MEASUREMENTS = ("cold_start", "peak_rss", "memory", "boot", "throughput")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# environment


def bench_env(checkout: bool) -> dict:
    """The environment both managers run in.  PYTHONDONTWRITEBYTECODE is dropped: with it set,
    Python ignores nothing but also never writes .pyc files, and an environment that sets it
    is not what an installed package sees (pip byte-compiles on install)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if checkout:
        env["PYTHONPATH"] = str(REPO)
    return env


def compile_package(env: dict) -> None:
    subprocess.run([PYTHON, "-m", "compileall", "-q", "nspawnpy"], cwd=REPO, env=env, check=True)


class Managers:
    """Command lines of the two managers for a tree."""

    def __init__(self, tree: Path, nspawnpy: list[str]):
        self.tree = str(tree)
        self.nspawnpy_bin = nspawnpy
        self.nspawn_bin = shutil.which("systemd-nspawn")

    def nspawnpy(self, *payload: str, tree: Path | None = None, keep_unit: bool = False) -> list[str]:
        return self.nspawnpy_bin + ["--register=no", *(["--keep-unit"] if keep_unit else []),
                                    "-q", "-D", str(tree or self.tree), *payload]

    def nspawn(self, *payload: str, tree: Path | None = None) -> list[str]:
        return [self.nspawn_bin, "--register=no", "--keep-unit", "-q", "-D",
                str(tree or self.tree), *payload]

    def service_nspawnpy(self, tree: Path, *args: str) -> list[str]:
        """The service case, as nspawnpy@.service starts it: --keep-unit."""
        return self.nspawnpy(*args, tree=tree, keep_unit=True)

    def service_nspawn(self, tree: Path, *args: str) -> list[str]:
        return self.nspawn(*args, tree=tree)


def installed_matches_checkout() -> str:
    """Whether the installed package's sources are the checkout's ("yes", or what differs)."""
    if not INSTALLED_PACKAGE.is_dir():
        return "not installed"
    ours = {p.relative_to(REPO / "nspawnpy"): p.read_bytes()
            for p in (REPO / "nspawnpy").rglob("*.py")}
    theirs = {p.relative_to(INSTALLED_PACKAGE): p.read_bytes()
              for p in INSTALLED_PACKAGE.rglob("*.py")}
    differ = sorted(str(k) for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    return "yes" if not differ else f"no ({len(differ)} files differ: {', '.join(differ[:5])})"


def revision() -> str:
    """Commit of the checkout being measured, "+dirty" when nspawnpy/ has local changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "nspawnpy"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "") if head else "unknown"
    except OSError:
        return "unknown"


def nspawn_version(path: str | None) -> str:
    if not path:
        return "missing"
    out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "?"


# ---------------------------------------------------------------------------------------------
# 1. cold start


def bench_cold_start(m: Managers, env: dict, cg: ScratchCgroup, runs: int, rounds: int,
                     workdir: Path) -> dict:
    hyperfine = shutil.which("hyperfine")
    if not hyperfine:
        return {"skipped": "hyperfine is not installed"}
    if not m.nspawn_bin:
        return {"skipped": "systemd-nspawn is not installed"}
    import shlex
    commands = [("nspawnpy", m.nspawnpy("/bin/true")),
                ("nspawnpy --keep-unit", m.nspawnpy("/bin/true", keep_unit=True)),
                ("systemd-nspawn", m.nspawn("/bin/true")),
                # Context only: the interpreter's own start-up, the floor for a Python manager.
                ("python3 floor", [PYTHON, "-c", "pass"])]
    # hyperfine runs its commands one after the other; on a shared machine the load drifts
    # between them.  Several rounds with the order rotated, times pooled, cancel that out.
    pooled: dict[str, list[float]] = {name: [] for name, _ in commands}
    exit_codes: dict[str, set] = {name: set() for name, _ in commands}
    exports = []
    for rnd in range(rounds):
        order = commands[rnd % len(commands):] + commands[:rnd % len(commands)]
        export = workdir / f"hyperfine-{rnd + 1}.json"
        cmd = [hyperfine, "-N", "--warmup", "3", "--runs", str(runs), "--export-json",
               str(export), "--style", "basic"]
        for name, argv in order:
            cmd += ["-n", name, shlex.join(argv)]
        log(f"cold start round {rnd + 1}/{rounds}: " + " ".join(shlex.quote(c) for c in cmd))
        # hyperfine (and so both managers) runs inside the scratch cgroup.
        r = subprocess.run(cmd, env=env, preexec_fn=cg.enter, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sys.stderr.write(r.stdout)
        if r.returncode != 0:
            return {"skipped": f"hyperfine failed with status {r.returncode}"}
        data = json.loads(export.read_text())
        exports.append(data)
        for entry in data["results"]:
            pooled[entry["command"]] += entry["times"]
            exit_codes[entry["command"]] |= set(entry.get("exit_codes") or [])
    res = {}
    for name, times in pooled.items():
        ms = [t * 1e3 for t in times]
        res[name] = {"mean_ms": statistics.fmean(ms), "stddev_ms": statistics.stdev(ms),
                     "median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms),
                     "runs": len(ms), "exit_codes": sorted(exit_codes[name])}
    a, b = res["nspawnpy"], res["systemd-nspawn"]
    return {"nspawnpy": a, "systemd-nspawn": b, "python3_floor": res.get("python3 floor"),
            "nspawnpy_keep_unit": res["nspawnpy --keep-unit"],
            "unit": "ms (mean)", "rounds": rounds, "runs_per_round": runs,
            "value_nspawnpy": a["mean_ms"], "value_nspawn": b["mean_ms"],
            "ratio": a["mean_ms"] / b["mean_ms"],
            "ratio_median": a["median_ms"] / b["median_ms"],
            "ratio_min": a["min_ms"] / b["min_ms"],
            "hyperfine_exports": exports}


# ---------------------------------------------------------------------------------------------
# helpers: running a manager with stdout to a pipe


class Drain(threading.Thread):
    """Reads a pipe to its end, counting bytes (and keeping the first few)."""

    def __init__(self, fd: int):
        super().__init__(daemon=True)
        self.fd, self.count, self.head = fd, 0, b""
        self.first = self.last = None

    def run(self) -> None:
        buf = bytearray(1 << 17)  # reused: a fresh large bytes object per read costs mmap/munmap
        while True:
            n = os.readv(self.fd, [buf])
            if not n:
                break
            now = time.monotonic()
            if self.first is None:
                self.first = now
            self.last = now
            self.count += n
            if len(self.head) < 256:
                self.head += bytes(buf[:min(n, 256)])
        os.close(self.fd)


def start(cmd: list[str], env: dict, cg: ScratchCgroup | None) -> tuple[subprocess.Popen, Drain]:
    r, w = os.pipe()
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=w,
                         stderr=subprocess.PIPE, preexec_fn=cg.enter if cg else None)
    os.close(w)
    d = Drain(r)
    d.start()
    return p, d


# ---------------------------------------------------------------------------------------------
# 2. peak RSS of the supervisor


def rss_one(cmd: list[str], env: dict, cg: ScratchCgroup | None, sleep_s: float) -> dict:
    p, d = start(cmd, env, cg)
    t0 = time.monotonic()
    samples, tree = [], []
    while p.poll() is None:
        st = proc_status(p.pid)
        if "VmHWM" in st:
            samples.append((time.monotonic() - t0, st["VmHWM"], st["VmRSS"]))
        # Near the end of the payload's sleep: note the process tree once.
        if not tree and time.monotonic() - t0 > sleep_s * 0.75:
            tree = describe_tree(p.pid)
        time.sleep(0.02)
    err = p.stderr.read().decode(errors="replace")
    p.wait()
    d.join()
    # VmHWM grows within one image, but an exec (nspawnpy's settled supervisor execs into
    # its slim loop) starts it again: the peak is the largest over the whole lifetime.
    late = [s for s in samples if s[0] > sleep_s * 0.75] or samples
    return {"status": p.returncode, "elapsed_s": time.monotonic() - t0,
            "VmHWM_kB": max((s[1] for s in samples), default=0),
            "VmRSS_kB": max(s[2] for s in late) if late else 0, "samples": len(samples),
            "tree": tree, "stderr": err.strip()[-500:]}


def bench_rss(m: Managers, env: dict, cg: ScratchCgroup, repeat: int) -> dict:
    if not m.nspawn_bin:
        return {"skipped": "systemd-nspawn is not installed"}
    sleep_s = 2.0
    res: dict = {}
    for name, cmd in (("nspawnpy", m.nspawnpy("/bin/sleep", "2")),
                      ("systemd-nspawn", m.nspawn("/bin/sleep", "2"))):
        runs = []
        for _ in range(repeat):
            runs.append(rss_one(cmd, env, cg, sleep_s))
            log(f"rss {name}: status={runs[-1]['status']} VmHWM={runs[-1]['VmHWM_kB']} kB "
                f"VmRSS={runs[-1]['VmRSS_kB']} kB "
                f"host-side children={[t['Name'] for t in runs[-1]['tree'] if t['side'] == 'host']}")
            if runs[-1]["status"] != 0:
                log(f"  stderr: {runs[-1]['stderr']}")
        res[name] = {
            "VmHWM_kB": statistics.median(r["VmHWM_kB"] for r in runs),
            "VmRSS_kB": statistics.median(r["VmRSS_kB"] for r in runs),
            "statuses": [r["status"] for r in runs],
            "runs": runs,
            # host-side processes besides the supervisor (janitor, nspawn's helpers, ...)
            "extra_host_processes": [
                {k: t.get(k) for k in ("pid", "Name", "VmHWM", "VmRSS", "cmdline")}
                for t in runs[-1]["tree"] if t["side"] == "host"],
            "container_processes": [
                {k: t.get(k) for k in ("pid", "Name", "VmRSS", "cmdline")}
                for t in runs[-1]["tree"] if t["side"] == "container"],
        }
    # Context only: a bare interpreter sleeping (the floor for any Python supervisor).
    floor = rss_one([PYTHON, "-c", "import time; time.sleep(1)"], env, None, 1.0)
    res["python3_floor"] = {"VmHWM_kB": floor["VmHWM_kB"], "VmRSS_kB": floor["VmRSS_kB"]}
    a, b = res["nspawnpy"]["VmHWM_kB"], res["systemd-nspawn"]["VmHWM_kB"]
    res.update({"unit": "kB VmHWM", "value_nspawnpy": a, "value_nspawn": b,
                "ratio": a / b if b else float("nan")})
    return res


# ---------------------------------------------------------------------------------------------
# 3. read-only console throughput


def throughput_one(cmd: list[str], env: dict, cg: ScratchCgroup | None) -> dict:
    t0 = time.monotonic()
    p, d = start(cmd, env, cg)
    err = p.stderr.read().decode(errors="replace")
    p.returncode, cpu = wait_rusage(p)
    d.join()
    t1 = time.monotonic()
    stream = (d.last - d.first) if d.first is not None else 0.0
    return {"status": p.returncode, "bytes": d.count, "wall_s": t1 - t0, "stream_s": stream,
            "MBps": d.count / (t1 - t0) / 1e6, "stderr": err.strip()[-500:], **cpu}


def wait_rusage(p: subprocess.Popen) -> tuple[int, dict]:
    """Reap *p* with wait4: exit code and the CPU time of the manager and the descendants it
    reaped (the supervisor's relay work dominates; the payload's head is the same for both)."""
    _, status, ru = os.wait4(p.pid, 0)
    return os.waitstatus_to_exitcode(status), {"user_s": ru.ru_utime, "sys_s": ru.ru_stime}


def bench_throughput(m: Managers, env: dict, cg: ScratchCgroup, size: int | None,
                     repeat: int) -> dict:
    if not m.nspawn_bin:
        return {"skipped": "systemd-nspawn is not installed"}

    def payload(n: int) -> list[str]:
        return ["/bin/sh", "-c", f"head -c {n} /dev/zero"]

    if size is None:
        # Calibrate on systemd-nspawn: at least ~1.5 s of wall time there.
        size = 50_000_000
        while True:
            r = throughput_one(m.nspawn(*payload(size)), env, cg)
            log(f"calibrate: {size} bytes via systemd-nspawn in {r['wall_s']:.2f} s")
            if r["status"] != 0 or r["bytes"] != size:
                log(f"  unexpected: status {r['status']}, {r['bytes']} bytes; {r['stderr']}")
            if r["wall_s"] >= 1.0 or size >= 16_000_000_000:
                if r["wall_s"] < 1.5:
                    size = int(size * 1.5 / max(r["wall_s"], 0.1))
                break
            size = int(size * min(10.0, 1.6 / max(r["wall_s"], 0.05)))
        size = -(-size // 1_000_000) * 1_000_000
    res: dict = {"size_bytes": size}
    runs: dict[str, list] = {"nspawnpy": [], "systemd-nspawn": []}
    # Interleave so drift (thermal, page cache, noisy neighbours) hits both alike.
    for i in range(repeat):
        for name, cmd in (("nspawnpy", m.nspawnpy(*payload(size))),
                          ("systemd-nspawn", m.nspawn(*payload(size)))):
            r = throughput_one(cmd, env, cg)
            runs[name].append(r)
            log(f"throughput {name} #{i + 1}: {r['bytes']} bytes in {r['wall_s']:.2f} s "
                f"= {r['MBps']:.0f} MB/s (status {r['status']})")
            if r["status"] != 0 or r["bytes"] != size:
                log(f"  unexpected: status {r['status']}, {r['bytes']} of {size} bytes; "
                    f"{r['stderr']}")
    for name, rs in runs.items():
        res[name] = {"MBps": statistics.median(r["MBps"] for r in rs),
                     "MBps_best": max(r["MBps"] for r in rs),
                     "MBps_all": [round(r["MBps"], 1) for r in rs],
                     "wall_s": [round(r["wall_s"], 3) for r in rs],
                     "cpu_s": [round(r["user_s"] + r["sys_s"], 3) for r in rs],
                     "cpu_per_GB_s": statistics.median(
                         (r["user_s"] + r["sys_s"]) / max(r["bytes"], 1) * 1e9 for r in rs),
                     "bytes": [r["bytes"] for r in rs],
                     "statuses": [r["status"] for r in rs]}
    pairs = [x["MBps"] / y["MBps"] for x, y in zip(runs["nspawnpy"], runs["systemd-nspawn"])
             if y["MBps"]]
    res["pair_ratios"] = [round(r, 3) for r in pairs]
    a, b = res["nspawnpy"]["MBps"], res["systemd-nspawn"]["MBps"]
    # Medians of interleaved runs: best-of-N was tried and flips with one lucky run when the
    # machine is shared; the medians kept their order over repeated bench runs.
    am, bm = res["nspawnpy"]["MBps_best"], res["systemd-nspawn"]["MBps_best"]
    res.update({"unit": "MB/s (median)", "value_nspawnpy": a, "value_nspawn": b,
                "ratio": a / b if b else float("nan"),
                # each nspawnpy run against the nspawn run right after it (same conditions)
                "ratio_pairs_median": statistics.median(pairs) if pairs else float("nan"),
                "ratio_best": am / bm if bm else float("nan"),
                })
    return res


# ---------------------------------------------------------------------------------------------
# host hygiene around systemd-nspawn


def runtime_entries() -> set[Path]:
    out: set[Path] = set()
    if NSPAWN_RUNTIME.is_dir():
        for sub in NSPAWN_RUNTIME.iterdir():
            out.add(sub)
            if sub.is_dir():
                out.update(sub.iterdir())
    return out


def clean_runtime(before: set[Path], trees: list[Path]) -> list[str]:
    removed = []
    machines = {t.name for t in trees}
    locks = [NSPAWN_RUNTIME / "locks" / f"inode-{st.st_dev}:{st.st_ino}"
             for st in (t.stat() for t in trees if t.exists())]
    for lock in locks:  # systemd-nspawn's locks for our trees, if left behind
        if lock not in before and lock.exists():
            with contextlib.suppress(OSError):
                lock.unlink()
                removed.append(str(lock))
    for p in sorted(runtime_entries() - before, key=lambda p: -len(str(p))):
        # Only what appeared during the run: /run/systemd/nspawn/propagate/MACHINE and the like
        # (and the directories above them if we made those appear).
        with contextlib.suppress(OSError):
            if p.name in machines:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(str(p))
            elif p.parent == NSPAWN_RUNTIME and p.is_dir() and not any(p.iterdir()):
                p.rmdir()  # fails harmlessly if someone else's entry appeared meanwhile
                removed.append(str(p))
    if NSPAWN_RUNTIME.is_dir() and NSPAWN_RUNTIME not in before and not any(NSPAWN_RUNTIME.iterdir()):
        with contextlib.suppress(OSError):
            NSPAWN_RUNTIME.rmdir()
            removed.append(str(NSPAWN_RUNTIME))
    return removed


# ---------------------------------------------------------------------------------------------
# report


def table(results: dict) -> str:
    rows = [("metric", "nspawnpy", "systemd-nspawn", "ratio", "target", "result")]
    fmt = {"cold_start": ("cold start /bin/true (mean ms)", "{:.1f}"),
           "cold_start_keep_unit": ("cold start --keep-unit /bin/true (mean ms)", "{:.1f}"),
           "peak_rss": ("supervisor peak RSS (VmHWM kB)", "{:.0f}"),
           **{key: (f"host PSS per machine, {key[7:]} running (kB)", "{:.0f}")
              for key in sorted(results, key=len) if key.startswith("memory_")},
           "boot": ("Debian boot to READY=1 (median s)", "{:.2f}"),
           "throughput": ("ro console throughput (MB/s median)", "{:.0f}")}
    for key, (label, f) in fmt.items():
        r = results.get(key)
        target, ok = TARGETS.get(key, TARGETS["memory_10"])
        if not r or "skipped" in r:
            rows.append((label, "-", "-", "-", target, "SKIP"))
            continue
        passed = ok(r["ratio"])
        r["target"], r["pass"] = target, passed
        rows.append((label, f.format(r["value_nspawnpy"]), f.format(r["value_nspawn"]),
                     f"{r['ratio']:.2f}", target, "PASS" if passed else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def details(results: dict) -> str:
    out = []
    cs = results.get("cold_start", {})
    if "skipped" in cs:
        out.append(f"cold start: SKIPPED ({cs['skipped']})")
    elif cs:
        for k in ("nspawnpy", "nspawnpy_keep_unit", "systemd-nspawn"):
            v = cs[k]
            out.append(f"cold start {k}: mean {v['mean_ms']:.1f} ± {v['stddev_ms']:.1f} ms, "
                       f"median {v['median_ms']:.1f}, min {v['min_ms']:.1f}, "
                       f"max {v['max_ms']:.1f} ({v['runs']} runs, exit codes {v['exit_codes']})")
        out.append(f"cold start: {cs['rounds']} hyperfine rounds x {cs['runs_per_round']} runs, "
                   f"order rotated, times pooled; ratio of means {cs['ratio']:.2f}, of medians "
                   f"{cs['ratio_median']:.2f}, of minima {cs['ratio_min']:.2f}")
        floor = cs.get("python3_floor")
        if floor:
            out.append(f"cold start context: '{PYTHON} -c pass' alone takes {floor['mean_ms']:.1f} ms "
                       f"(median {floor['median_ms']:.1f}); nspawnpy spends "
                       f"{cs['nspawnpy']['mean_ms'] - floor['mean_ms']:.1f} ms on top of that")
    for key, mod in (("memory", memory), ("boot", boot)):
        r = results.get(key, {})
        if "skipped" in r:
            out.append(f"{key}: SKIPPED ({r['skipped']})")
        elif r:
            out += mod.describe(r)
    rss = results.get("peak_rss", {})
    if "skipped" in rss:
        out.append(f"peak RSS: SKIPPED ({rss['skipped']})")
    elif rss:
        for k in ("nspawnpy", "systemd-nspawn"):
            v = rss[k]
            extra = ", ".join(f"{e['Name']}[{e['pid']}] RSS {e['VmRSS']} kB"
                              for e in v["extra_host_processes"]) or "none"
            inside = ", ".join(f"{e['Name']}" for e in v["container_processes"]) or "none"
            out.append(f"peak RSS {k}: VmHWM {v['VmHWM_kB']:.0f} kB, VmRSS {v['VmRSS_kB']:.0f} kB "
                       f"(statuses {v['statuses']}); other host-side processes: {extra}; "
                       f"container: {inside}")
    if rss.get("python3_floor"):
        f = rss["python3_floor"]["VmHWM_kB"]
        b = rss["systemd-nspawn"]["VmHWM_kB"]
        out.append(f"peak RSS context: a bare sleeping '{PYTHON}' has VmHWM {f} kB "
                   f"(= {f / b:.2f} x systemd-nspawn's supervisor); nspawnpy adds "
                   f"{rss['nspawnpy']['VmHWM_kB'] - f:.0f} kB on top of that")
    tp = results.get("throughput", {})
    if "skipped" in tp:
        out.append(f"throughput: SKIPPED ({tp['skipped']})")
    elif tp:
        out.append(f"throughput payload: head -c {tp['size_bytes']} /dev/zero")
        for k in ("nspawnpy", "systemd-nspawn"):
            v = tp[k]
            out.append(f"throughput {k}: median {v['MBps']:.0f} MB/s, best {v['MBps_best']:.0f}, "
                       f"runs {v['MBps_all']} MB/s, "
                       f"wall {v['wall_s']} s, CPU (manager + reaped children) {v['cpu_s']} s "
                       f"= {v['cpu_per_GB_s']:.2f} CPU-s/GB, statuses {v['statuses']}")
        out.append(f"throughput ratio of best runs: {tp['ratio_best']:.2f}; median of the "
                   f"back-to-back pair ratios {tp['ratio_pairs_median']:.2f} "
                   f"(pairs: {tp['pair_ratios']})")
    return "\n".join(out)


def keep_unit_figures(cs: dict) -> dict:
    """The --keep-unit row of the cold start table (same hyperfine runs)."""
    if "skipped" in cs:
        return cs
    a, b = cs["nspawnpy_keep_unit"]["mean_ms"], cs["systemd-nspawn"]["mean_ms"]
    return {"value_nspawnpy": a, "value_nspawn": b, "ratio": a / b,
            "ratio_median": cs["nspawnpy_keep_unit"]["median_ms"] / cs["systemd-nspawn"]["median_ms"]}


def measure_boot(m: Managers, env: dict, tree: Path, boots: int) -> dict:
    try:
        rootfs.debian_tree(tree)
    except rootfs.RootfsUnavailable as e:
        return {"skipped": f"no Debian tree: {e}"}
    log(f"boot: Debian tree at {tree}, {boots} timed boots each")
    return boot.bench_boot(m.service_nspawnpy, m.service_nspawn, tree, env, boots)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="FILE", help="also save the results as JSON")
    ap.add_argument("--runs", type=int, default=30, help="hyperfine runs per command (>= 20)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="hyperfine rounds (command order rotated each round, times pooled)")
    ap.add_argument("--repeat", type=int, default=7,
                    help="repetitions of the RSS and throughput measurements (median is used)")
    ap.add_argument("--size", type=int, default=None,
                    help="throughput payload size in bytes (default: calibrated so that "
                         "systemd-nspawn takes >= 1.5 s)")
    ap.add_argument("--only", choices=MEASUREMENTS, action="append",
                    help="run only this measurement (repeatable)")
    ap.add_argument("--machines", type=int, action="append",
                    help="machines running at once for the memory measure (repeatable; "
                         "default 10 and 50)")
    ap.add_argument("--boots", type=int, default=3,
                    help="timed Debian boots per manager (after one warm-up boot each)")
    ap.add_argument("--checkout", action="store_true",
                    help=f"run nspawnpy from this checkout instead of the installed {INSTALLED}")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench.py must run as root", file=sys.stderr)
        return 1
    args.runs = max(args.runs, 20)
    args.rounds = max(args.rounds, 1)
    only = set(args.only or MEASUREMENTS)
    counts = sorted(set(args.machines or (10, 50)))
    if not args.checkout and not os.path.exists(INSTALLED):
        print(f"{INSTALLED} is missing: install the package (packaging/install.sh) or pass "
              "--checkout", file=sys.stderr)
        return 1

    env = bench_env(args.checkout)
    if args.checkout:
        compile_package(env)
        log("byte-compiled nspawnpy (python3 -m compileall -q nspawnpy)")

    nspawn_bin = shutil.which("systemd-nspawn")
    results: dict = {
        "host": {"nproc": os.cpu_count(), "kernel": os.uname().release,
                 "python": sys.version.split()[0], "systemd_nspawn": nspawn_version(nspawn_bin),
                 "hyperfine": (subprocess.run(["hyperfine", "--version"], capture_output=True,
                                              text=True).stdout.strip()
                               if shutil.which("hyperfine") else "missing"),
                 "nspawnpy": "checkout" if args.checkout else INSTALLED,
                 "installed_matches_checkout": installed_matches_checkout(),
                 "loadavg_before": os.getloadavg(), "nspawnpy_revision": revision()},
    }
    if not nspawn_bin:
        log("systemd-nspawn is not installed: comparisons are skipped")

    workdir = Path(tempfile.mkdtemp(prefix="nspawnpy-bench-", dir="/var/tmp"))
    machine = f"bench{os.getpid()}"
    tree = workdir / machine
    trees = [tree]
    before = runtime_entries()
    cg = None
    try:
        rootfs.busybox_tree(tree)
        log(f"busybox tree at {tree}")
        cg = ScratchCgroup("bench")
        m = Managers(tree, CHECKOUT if args.checkout else [INSTALLED])
        # Sanity: both run the payload at all.
        for name, cmd in (("nspawnpy", m.nspawnpy("/bin/true")),
                          ("systemd-nspawn", m.nspawn("/bin/true") if nspawn_bin else None)):
            if cmd:
                r = subprocess.run(cmd, env=env, preexec_fn=cg.enter, capture_output=True,
                                   text=True, stdin=subprocess.DEVNULL)
                if r.returncode != 0:
                    log(f"WARNING: {name} /bin/true exited {r.returncode}: {r.stderr.strip()}")
        if "cold_start" in only:
            results["cold_start"] = bench_cold_start(m, env, cg, args.runs, args.rounds, workdir)
            results["cold_start_keep_unit"] = keep_unit_figures(results["cold_start"])
        if "peak_rss" in only:
            results["peak_rss"] = bench_rss(m, env, cg, args.repeat)
        if "memory" in only and nspawn_bin:
            log(f"memory: {counts} machines running /bin/sleep")
            trees += [rootfs.busybox_tree(workdir / f"{machine}m{i}") for i in range(max(counts))]
            res = memory.bench_memory(m.service_nspawnpy, m.service_nspawn, trees[1:], env, counts)
            results["memory"] = res
            for n in counts:
                results[f"memory_{n}"] = res.get(n, res)
        if "boot" in only and nspawn_bin:
            results["boot"] = measure_boot(m, env, workdir / f"{machine}deb", args.boots)
            trees.append(workdir / f"{machine}deb")
        if "throughput" in only:
            results["throughput"] = bench_throughput(m, env, cg, args.size, args.repeat)
    finally:
        if cg:
            killed = cg.kill_all()
            if killed:
                log(f"killed leftover processes {sorted(killed)}")
            cg.remove()
        removed = clean_runtime(before, trees)
        if removed:
            log(f"removed systemd-nspawn leftovers: {removed}")
        for t in trees:
            if t.exists():
                rootfs.rmtree(t)
        shutil.rmtree(workdir, ignore_errors=True)

    results["host"]["loadavg_after"] = os.getloadavg()
    print()
    print(f"host: {results['host']['nproc']} CPUs, load average before/after "
          f"{results['host']['loadavg_before'][0]:.2f}/{results['host']['loadavg_after'][0]:.2f}"
          f", {results['host']['systemd_nspawn']}, Python {results['host']['python']}, "
          f"nspawnpy {results['host']['nspawnpy_revision']}")
    print(details(results))
    print()
    print(table(results))
    print(f"\nnspawnpy measured: {results['host']['nspawnpy']}; installed package == checkout: "
          f"{results['host']['installed_matches_checkout']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"results saved to {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
