"""Turn the probe's raw report (probe.sh) into facts: a flat {key: value} dict, normalised so
that two runs of the same tool on the same tree and options give the same facts.

Normalised (each is legitimately random per run, or names a scratch path that differs between
harness runs but not between the two tools of one comparison):
  * mount IDs, parent IDs and anonymous device numbers (0:N): allocated by the kernel per mount;
  * peer group numbers (shared:N, master:N, propagate_from:N): named after the group's first
    member in mount point order, so only which mounts share a group is compared;
  * /dev/pts/N: pty numbers depend on what else runs on the machine;
  * pipe:[N], socket:[N], anon_inode inode numbers and namespace inode numbers (the latter are
    turned into "host"/"private" by comparing with the host's own);
  * random 128-bit ids (container_uuid, a generated machine-id, boot_id temp file suffixes);
  * the scratch tree path, the machine name and the harness's scratch cgroup names.
"""

from __future__ import annotations

import os
import re

UUID_RE = re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b")
# A random 64-bit suffix of a name (.#proc-kmsgXXXXXXXXXXXXXXXX, -x's machine-XXXXXXXXXXXXXXXX):
# never a value of its own (capability and signal masks stand after blanks and are kept).
HEX16_RE = re.compile(r"(?<=[^\s:])[0-9a-f]{16}(?![0-9a-f])")


class Context:
    """What the normaliser must know about one comparison: the paths and names both runs
    share, and the values the scenario chose (which are kept, not normalised)."""

    def __init__(self, tree: str, scratch: str, machine: str, given_ids: tuple[str, ...] = ()):
        self.tree = tree
        self.scratch = scratch
        self.machine = machine
        self.given_ids = tuple(i.replace("-", "").lower() for i in given_ids)
        self.host_ns = host_namespaces()
        with open("/proc/sys/kernel/random/boot_id") as f:
            self.host_boot_id = f.read().strip()

    def text(self, s: str) -> str:
        """Normalise one value."""
        s = s.replace("\r", "")
        s = s.replace(self.tree, "<tree>").replace(self.scratch, "<scratch>")
        s = re.sub(re.escape(self.machine) + r"(?![\w-])", "<machine>", s)
        s = re.sub(r"nspawnpy-fixture-[a-z]+-\d+-[0-9a-f]{6}", "<scratch-cgroup>", s)
        # nspawn 252 without a cgroup namespace names whichever unmounted controller its hash
        # table yields first (it differs between its own runs)
        s = re.sub(r"(Failed to read link /sys/fs/cgroup/)\w+:", r"\1<controller>:", s)
        s = re.sub(r"/dev/pts/\d+|(?<![\w/])pts/\d+", lambda m: re.sub(r"\d+$", "N", m[0]), s)
        s = re.sub(r"(pipe|socket|anon_inode:\[?\w*\]?):\[\d+\]", r"\1:[N]", s)
        # systemd's PrivateTmp= directories' mkdtemp suffix (a booted Debian's services)
        s = re.sub(r"(systemd-private-\S+?\.service)-\w{6}\b", r"\1-XXXXXX", s)
        s = UUID_RE.sub(self._id, s)
        return HEX16_RE.sub("<hex>", s)

    def _id(self, m: re.Match) -> str:
        return "<given-id>" if m[0].replace("-", "").lower() in self.given_ids else "<random-id>"


def host_namespaces() -> dict[str, str]:
    d = "/proc/self/ns"
    return {n: os.readlink(os.path.join(d, n)) for n in os.listdir(d)}


def sections(report: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = None
    for line in report.replace("\r", "").splitlines():
        if line.startswith("@@ "):
            current = out.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return out


def facts(report: str, ctx: Context) -> dict[str, str]:
    """All facts of one probe report."""
    secs = sections(report)
    result: dict[str, str] = {"probe.complete": "yes" if "end" in secs else "no"}
    for name, lines in secs.items():
        parse = PARSERS.get(name, _parse_words)
        for key, value in parse(lines, ctx):
            key = f"{name}.{ctx.text(key)}"
            while key in result:
                key += "+"
            # (trailing blanks: nspawn's stub init pads its renamed argv to the old length)
            result[key] = ctx.text(value).rstrip()
    if "ns" in secs and result.get("ns.net") == "host":
        # With the host's network the interfaces are the machine's own, and other tests add and
        # remove links concurrently: nothing to compare.
        result = {k: v for k, v in result.items() if not k.startswith("net.")}
    return result


def _parse_words(lines, ctx):
    """KEY VALUE... lines."""
    for line in lines:
        key, _, value = line.partition(" ")
        yield key, value


def _parse_self(lines, ctx):
    for key, value in _parse_words(lines, ctx):
        if key == "pid1_environ":  # (the variable the harness runs nspawnpy's checkout with)
            value = " ".join(v for v in value.split() if not v.startswith("PYTHONPATH="))
        if key == "boot_id":  # random per boot and per container: only whose it is counts
            value = "host's" if value == ctx.host_boot_id else \
                "own" if UUID_RE.fullmatch(value) else value
        yield key, value


def _parse_bars(lines, ctx):
    """PATH|rest lines."""
    for line in lines:
        key, _, value = line.partition("|")
        yield key, value


def _parse_status(lines, ctx):
    for line in lines:
        key, _, value = line.partition(":")
        yield key, " ".join(value.split())


def _parse_limits(lines, ctx):
    for line in lines[1:]:
        m = re.match(r"(.+?)\s{2,}(\S+)\s+(\S+)", line)
        if m:
            yield m[1], f"{m[2]} {m[3]}"


def _parse_environ(lines, ctx):
    for line in lines:
        key, _, value = line.partition("=")
        if key == "JOURNAL_STREAM":  # DEVICE:INODE of the service's journal socket
            value = value.split(":")[0] + ":N"
        yield key, value


def _parse_ns(lines, ctx):
    for line in lines:
        key, _, link = line.partition(" ")
        host = ctx.host_ns.get(key)
        yield key, "host" if link == host else "private"


def _parse_cgroup(lines, ctx):
    for line in lines:
        _hid, ctrl, path = line.split(":", 2)
        yield ctrl or "unified", path


def _parse_runhost(lines, ctx):
    for key, value in _parse_bars(lines, ctx):
        if key.endswith("/container-uuid"):
            value = value.split("|sha256=")[0]  # its content is the random uuid
        yield key, value


def _parse_etc(lines, ctx):
    for key, value in _parse_bars(lines, ctx):
        if key == "/etc/machine-id":
            value = value.split("|sha256=")[0]  # compared through machine-id.content
        yield key, value


def _parse_syscalls(lines, ctx):
    for line in lines:
        key, _, value = line.partition(" => ")
        yield key.replace(" ", "_"), value


def _parse_net(lines, ctx):
    for line in lines:
        first, _, rest = line.partition(" ")
        if first in ("route", "route6"):
            yield f"{first}:{' '.join(rest.split())}", "present"
        elif first.endswith(":"):
            yield f"link:{first[:-1]}", " ".join(rest.split())
        else:
            family, _, addr = rest.strip().partition(" ")
            yield f"addr:{first}:{family}", " ".join(addr.split())


PARSERS = {
    "self": _parse_self,
    "setpriv": lambda lines, ctx: _parse_status(lines, ctx),
    "status": _parse_status,
    "limits": _parse_limits,
    "environ": _parse_environ,
    "ns": _parse_ns,
    "cgroup": _parse_cgroup,
    "dev": _parse_bars,
    "runhost": _parse_runhost,
    "etc": _parse_etc,
    "root": _parse_bars,
    "syscalls": _parse_syscalls,
    "net": _parse_net,
}


# ---------------------------------------------------------------------------------------------
# mountinfo


def _unescape(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def _parse_mountinfo(lines, ctx):
    mounts = []
    for line in lines:
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        f = left.split()
        fstype, source, sup = (right.split() + ["", "", ""])[:3]
        mounts.append({"id": f[0], "parent": f[1], "dev": f[2], "root": _unescape(f[3]),
                       "mp": _unescape(f[4]), "opts": f[5], "optional": f[6:],
                       "fstype": fstype, "source": source, "super": sup})
    # Stacking order at one mount point follows the parent chain (a mount over another at the
    # same place has the lower one as parent); file order is the tie-break.
    stack: dict[str, int] = {}
    for m in mounts:
        m["stack"] = stack.get(m["mp"], 0)
        stack[m["mp"]] = m["stack"] + 1
    # A peer group is named after its first member in mount point order ("shared:@/proc#0"),
    # so one mount that joins another group does not renumber every group after it; a group
    # with no member in this namespace (master:N of the host's) is "outsideK", K by first use.
    ordered = sorted(mounts, key=lambda m: (m["mp"], m["stack"]))
    groups: dict[str, str] = {}
    for m in ordered:
        for tag in m["optional"]:
            kind, _, n = tag.partition(":")
            if kind == "shared":
                groups.setdefault(n, f"@{m['mp']}#{m['stack']}")
    outside = 0
    for m in ordered:
        for tag in m["optional"]:
            n = tag.partition(":")[2]
            if n and n not in groups:
                outside += 1
                groups[n] = f"outside{outside}"

    def renumber(tag: str) -> str:
        kind, _, n = tag.partition(":")
        return f"{kind}:{groups[n]}" if n else tag

    for m in ordered:
        key = f"{m['mp']}#{m['stack']}"
        yield f"{key}.fstype", m["fstype"]
        yield f"{key}.source", m["source"]
        yield f"{key}.root", HEX16_RE.sub("<hex>", m["root"])
        yield f"{key}.dev", "anon" if m["dev"].startswith("0:") else m["dev"]
        yield f"{key}.options", m["opts"]
        yield f"{key}.super", m["super"]
        yield f"{key}.propagation", " ".join(renumber(t) for t in m["optional"]) or "private"
    yield "count", str(len(mounts))


PARSERS["mountinfo"] = _parse_mountinfo
