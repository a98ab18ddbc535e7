"""Property tests: thousands of random and mutated `.nspawn` files and argument vectors
(fixed seed) go through the parse/merge/validation layer in-process; the only acceptable
outcomes are success or a UserError (exit 1) — never another exception, never a hang.
A small sample also runs through the real CLI with a missing directory, so nothing starts."""

from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from nspawnpy.config import cli, nspawnfile, settings as table
from nspawnpy.config.conflicts import check_conflicts
from nspawnpy.errors import UserError

REPO = Path(__file__).resolve().parent.parent
SEED = 252
MISSING_DIR = "/var/tmp/nspawnpy-fuzz-missing-directory"

GOOD_VALUES = [
    "yes", "no", "1", "0", "true", "off", "auto", "state", "overlay", "pick", "identity", "65536:65536",
    "/", "/srv", "/mnt/a", "/tmp:/mnt/b", "/a:/b:norbind", "+/etc:/mnt/etc", ":/scratch", "/a:/b:/c",
    "/srv:mode=0700,size=1m", "CAP_SYS_TIME", "CAP_NET_ADMIN,CAP_CHOWN", "all", "SIGTERM", "RTMIN+3",
    "x86", "x86-64", "0-1", "0,1", "100", "-1000", "RLIMIT_NOFILE=10:20", "CORE=infinity", "copy-host",
    "bind-stub", "symlink", "try-guest", "host", "A=1", "HOME", "root", "0123456789abcdef0123456789abcdef",
    "machine-1", "foo.slice", "CPUQuota=10%", "eth0", "eth0:host1", "ve-x:vx", "tcp:80:8080", "udp:53",
    "@clock", "~@mount mount", "interactive", "pipe", "id:value", "id:/etc/hostname", "alice",
]
NASTY = [
    "", " ", ":", "::", ":::", "\\", "\\:", "=", "==", "-", "--", "+", "+rel", "~", "\"", "'", "\"a",
    "a\"", "\\x", "\\u12", "%h", "$FOO", "\n", "\t", "\x00", "\x7f", "é", "\udcff", "☃", "a" * 300,
    "/" * 50, "9" * 30, "-9" * 10, "0x10", "1e9", "nan", "inf", "-", "..", "/..", "../x", "/a/../..",
    "a,b,,c", ",", "infinity:1", "5:4", "RLIMIT_", "CAP_", "SIG", "RTMIN+99", "RTMAX-99",
]


def mutate(rng: random.Random, s: str) -> str:
    ops = rng.randrange(1, 4)
    for _ in range(ops):
        choice = rng.randrange(6)
        i = rng.randrange(len(s) + 1)
        if choice == 0:
            s = s[:i] + rng.choice(NASTY) + s[i:]
        elif choice == 1 and s:
            s = s[:i] + s[i + 1:]
        elif choice == 2:
            s = s[:i] + chr(rng.randrange(1, 0x250)) + s[i:]
        elif choice == 3:
            s = s + s[:i]
        elif choice == 4:
            s = s[:i]
        else:
            s = s.upper() if rng.random() < 0.5 else s.swapcase()
    return s


def value(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.45:
        return rng.choice(GOOD_VALUES)
    if r < 0.7:
        return rng.choice(NASTY)
    return mutate(rng, rng.choice(GOOD_VALUES))


# --- argument vectors ------------------------------------------------------------------------

def random_argv(rng: random.Random, forbidden=()) -> list[str]:
    options = [o for o in table.OPTIONS if (o.long or o.short) and o.dest not in forbidden]
    argv: list[str] = []
    for _ in range(rng.randrange(0, 8)):
        o = rng.choice(options)
        r = rng.random()
        if o.short and (not o.long or r < 0.3):
            if o.arg == "none":
                argv.append(f"-{o.short}")
            elif rng.random() < 0.5:
                argv.append(f"-{o.short}{value(rng)}")
            else:
                argv += [f"-{o.short}", value(rng)]
        elif o.arg == "none":
            argv.append(f"--{o.long}" + ("=x" if rng.random() < 0.05 else ""))
        elif o.arg == "optional" and rng.random() < 0.3:
            argv.append(f"--{o.long}")
        elif rng.random() < 0.6:
            argv.append(f"--{o.long}={value(rng)}")
        else:
            name = o.long[:rng.randrange(2, len(o.long) + 1)]  # getopt abbreviations
            argv += [f"--{name}", value(rng)]
    for _ in range(rng.randrange(0, 2)):
        argv.insert(rng.randrange(len(argv) + 1), rng.choice(
            ["--", "-", "--bogus", "-Y", "--=x", "---", "--bind", "-D", value(rng)]))
    return argv


def check_argv(argv: list[str]) -> None:
    try:
        s = cli.parse_args(argv)
        check_conflicts(s)
        cli.help_text()
    except UserError as e:
        assert e.message and "\n" not in e.message.strip(), repr(e.message)


class Timeout(Exception):
    pass


@pytest.fixture
def deadline():
    """Fail instead of hanging: every case must finish well within a second."""

    def expired(signum, frame):
        raise Timeout("a single case took more than 2 s")

    old = signal.signal(signal.SIGALRM, expired)

    def arm():
        signal.setitimer(signal.ITIMER_REAL, 2.0)

    yield arm
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


def test_random_argv_exit_0_or_1_never_a_traceback(deadline):
    rng = random.Random(SEED)
    for n in range(4000):
        argv = random_argv(rng)
        deadline()
        try:
            check_argv(argv)
        except (Timeout, AssertionError):
            raise
        except BaseException as e:  # noqa: BLE001 - anything else is the bug we look for
            pytest.fail(f"case {n}: {argv!r} raised {type(e).__name__}: {e}")


# --- .nspawn files ---------------------------------------------------------------------------

KEYS = sorted({(o.section, o.key) for o in table.OPTIONS if o.key})
SECTIONS = ["Exec", "Files", "Network", "Exec", "Files", "Nope", "exec", "", "Exec ", "[Exec]"]


def random_file(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randrange(0, 12)):
        r = rng.random()
        if r < 0.15:
            lines.append(f"[{rng.choice(SECTIONS)}]")
        elif r < 0.75:
            section, key = rng.choice(KEYS)
            if rng.random() < 0.1:
                key = mutate(rng, key)
            sep = rng.choice(["=", " = ", "=", "="])
            if rng.random() < 0.3 and not any(l == f"[{section}]" for l in lines[-3:]):
                lines.append(f"[{section}]")
            lines.append(f"{key}{sep}{value(rng)}")
        elif r < 0.8:
            lines.append(rng.choice(["# comment", "; comment", "   # indented", ""]))
        elif r < 0.85:
            lines.append("Parameters=a \\")  # continuation
        elif r < 0.9:
            lines.append(rng.choice(["no equals sign", "=value", "[unterminated", "[]", "\\"]))
        else:
            lines.append(mutate(rng, rng.choice(["Boot=yes", "Bind=/a:/b", "[Files]"])))
    return "\n".join(lines) + rng.choice(["\n", "", "\\", "\n\n"])


def example_files() -> list[str]:
    texts = []
    for path in sorted((REPO / "nspawn-files").glob("*.nspawn")):
        texts.append(path.read_text())
    texts.append("[Exec]\nBoot=yes\nEnvironment=A=1 B=\"x y\"\nCapability=CAP_SYS_TIME\n"
                 "LimitNOFILE=10:20\n[Files]\nBind=/srv:/srv:norbind\nTemporaryFileSystem=/t:mode=0700\n"
                 "Overlay=/a:/b:/c\n[Network]\nVirtualEthernet=yes\nPort=tcp:80:8080\n")
    return texts


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        if not data:
            break
        i = rng.randrange(len(data))
        r = rng.random()
        if r < 0.4:
            data[i] = rng.randrange(256)
        elif r < 0.6:
            del data[i]
        elif r < 0.8:
            data[i:i] = data[rng.randrange(len(data)):][:rng.randrange(1, 40)]
        else:
            lines = bytes(data).split(b"\n")
            rng.shuffle(lines)
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def check_file(path: Path, rng: random.Random) -> None:
    argv = random_argv(rng, forbidden=("help", "version")) if rng.random() < 0.5 else []
    trusted = rng.random() < 0.5
    try:
        s = cli.parse_args(argv)
    except UserError:
        s = cli.parse_args([])
    s.settings = rng.choice(["yes", "trusted", "override"])
    try:
        nspawnfile.merge(s, str(path), trusted)
        check_conflicts(s)
    except UserError as e:
        assert e.message and "\n" not in e.message.strip(), repr(e.message)
        conflict_words = ("combine", "not supported", "may not", "without", "useful", "requires")
        assert e.message.startswith(str(path)) or any(w in e.message for w in conflict_words), \
            e.message


def test_random_and_mutated_files_exit_0_or_1_never_a_traceback(tmp_path, deadline, capsys):
    rng = random.Random(SEED)
    examples = example_files()
    path = tmp_path / "fuzz.nspawn"
    for n in range(3000):
        if n % 2:
            path.write_text(random_file(rng), errors="surrogateescape")
        else:
            path.write_bytes(mutate_bytes(rng, rng.choice(examples).encode()))
        deadline()
        try:
            check_file(path, rng)
        except (Timeout, AssertionError):
            raise
        except BaseException as e:  # noqa: BLE001
            pytest.fail(f"case {n}: {path.read_bytes()!r} raised {type(e).__name__}: {e}")
        capsys.readouterr()


def test_huge_and_binary_files(tmp_path, deadline):
    path = tmp_path / "big.nspawn"
    for data in (b"[Exec]\nParameters=" + b"x" * (2 << 20) + b"\n",
                 b"[Exec]\n" + b"Environment=A=1 \\\n" * 20000,
                 bytes(range(256)) * 64, b"\xff\xfe[Exec]\nBoot=yes\n", b"[Exec]\x00\nBoot=yes\n"):
        path.write_bytes(data)
        deadline()
        try:
            nspawnfile.merge(cli.parse_args([]), str(path), True)
        except UserError as e:
            assert "\n" not in e.message.strip()


# --- the real CLI, with a directory that does not exist ---------------------------------------

FORBIDDEN_CLI = ("directory", "template", "image", "machine", "oci_bundle", "help", "version")


def test_sample_through_the_real_cli(nspawnpy_env):
    rng = random.Random(SEED + 1)
    cases = [["-D", MISSING_DIR, *(a.replace("\x00", "") for a in random_argv(rng, FORBIDDEN_CLI)),
              "/bin/true"] for _ in range(30)]
    for argv in cases:
        r = subprocess.run(["/usr/bin/python3", "-m", "nspawnpy", "--register=no", "-q", *argv],
                           capture_output=True, text=True, env=nspawnpy_env, timeout=30,
                           stdin=subprocess.DEVNULL, cwd="/")
        assert r.returncode in (0, 1), (argv, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr, (argv, r.stderr)
        assert not os.path.exists(MISSING_DIR)
