"""The package's shape: what PID 1's code may import, and how large modules and functions
may grow. PID 1 runs on after pivot_root, when nothing can be imported any more, and must
not drag the supervisor's libraries (D-Bus, netlink, libseccomp) into the container."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "nspawnpy"
# PID 1 may use the standard library, the syscall wrappers, the in-tree path resolver, the
# one-line error type, the supervisor<->PID 1 messages and its own modules; linux, errors and
# protocol import nothing of the package themselves, intree only linux.
PID1_MAY_IMPORT = ("nspawnpy.linux", "nspawnpy.intree", "nspawnpy.errors", "nspawnpy.protocol")
MODULE_LINES, FUNCTION_LINES = 400, 60
# Larger than the limits, with a reason: these may shrink, but not grow.
OVERSIZED = {
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in the file, also those inside functions."""
    package = "nspawnpy." + ".".join(path.relative_to(PACKAGE).parent.parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.rstrip(".").split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # "from . import x" may name a module: count both the package and base.x
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names
                                              if f"{base}.{a.name}".startswith("nspawnpy.")]
    return found


def allowed_in_pid1(module: str) -> bool:
    top = module.split(".")[0]
    if top != "nspawnpy":
        return top in sys.stdlib_module_names
    return (module in ("nspawnpy", "nspawnpy.pid1") or module.startswith("nspawnpy.pid1.")
            or any(module == m or module.startswith(m + ".") for m in PID1_MAY_IMPORT))


def test_pid1_imports_only_the_standard_library_linux_errors_protocol_and_pid1():
    bad = [f"{path.relative_to(REPO)}:{line}: {module}"
           for path in sorted((PACKAGE / "pid1").glob("*.py"))
           for line, module in imported_modules(path) if not allowed_in_pid1(module)]
    assert bad == []


def test_importing_pid1_loads_nothing_else_of_ours_nor_third_party_modules():
    modules = sorted(f"nspawnpy.pid1.{p.stem}" for p in (PACKAGE / "pid1").glob("*.py")
                     if p.stem != "__init__")
    code = (f"import sys; before = set(sys.modules)\nfor m in {modules!r}: __import__(m)\n"
            "print('\\n'.join(sorted(set(sys.modules) - before)))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True)
    loaded = r.stdout.split()
    assert "nspawnpy.pid1.main" in loaded
    assert [m for m in loaded if not allowed_in_pid1(m)] == []


def test_the_rule_tells_allowed_from_forbidden_imports():
    modules = [m for _, m in imported_modules(PACKAGE / "pid1" / "main.py")]
    assert "nspawnpy.linux" in modules and all(allowed_in_pid1(m) for m in modules)
    assert not allowed_in_pid1("nspawnpy.supervisor.network")
    assert not allowed_in_pid1("pyroute2")
    assert not allowed_in_pid1("nspawnpy.seccomp.policy")


def sizes() -> dict:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = str(path.relative_to(PACKAGE))
        text = path.read_text()
        found[name] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = f"{name}:{node.name}"
                found[key] = max(found.get(key, 0), node.end_lineno - node.lineno + 1)
    return found


def test_modules_and_functions_stay_small():
    too_large = []
    for name, lines in sizes().items():
        limit = FUNCTION_LINES if ":" in name else MODULE_LINES
        if lines > max(limit, OVERSIZED.get(name, 0)):
            too_large.append(f"{name}: {lines} lines (limit {max(limit, OVERSIZED.get(name, 0))})")
    assert too_large == []


def test_every_start_step_comes_after_what_it_needs():
    from nspawnpy.supervisor.loop import Supervisor
    produced = set()
    for step, needs, makes in Supervisor.START:
        assert callable(getattr(Supervisor, step)), step
        assert set(needs) <= produced, (step, set(needs) - produced)
        produced |= set(makes)


def test_every_module_says_which_process_runs_it():
    """A "Runs in:" line in each module's docstring (nspawnpyctl's modules: in ctl/'s)."""
    silent = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" or path.parent.name == "ctl":
            continue
        if "Runs in:" not in (ast.get_docstring(ast.parse(path.read_text())) or ""):
            silent.append(str(path.relative_to(REPO)))
    assert "Runs in:" in ast.get_docstring(ast.parse((PACKAGE / "ctl" / "__init__.py").read_text()))
    assert silent == []


def test_every_cleanup_is_registered_as_data():
    """cleanups.append(...) takes a Cleanup record (supervisor/cleanups.py), never a function:
    the janitor and the slim supervisor run the same list, the latter after an exec."""
    functions = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "append" and "cleanups" in ast.unparse(node.func.value) \
                    and node.args and isinstance(node.args[0], (ast.Lambda, ast.Attribute, ast.Name)):
                functions.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert functions == []
