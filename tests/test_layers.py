"""The layers of docs/engine.md hold: every import under sandbox/ points down the rank table, and
no module changes the process environment (configuration is passed explicitly, see sandbox/config.py).

The source tree is read, not imported: every `import`/`from ... import`, at top level or inside a
function, absolute or relative, of every .py file (and the `import`/`cimport` lines of the Cython
sources), is resolved to the sandbox module it names and checked against the table."""

import ast
import os
import re
from pathlib import Path

import pytest

#: the checkout's source tree (the tests run beside it; the installed copy has no docs/)
SRC = Path(__file__).resolve().parent.parent / "sandbox"

#: docs/engine.md, "Layers": the rank of each top-level package or module of `sandbox`.
RANKS = {
    "cli": 5, "server": 5, "__main__": 5,
    "containers": 4, "oci": 4, "api": 4, "pytest_plugin": 4, "testing": 4, "__init__": 4,
    "build": 3,
    "runtime": 2, "cgroups": 2, "network": 2,
    "image": 1, "registry": 1,
    "errors": 0, "config": 0, "journal": 0, "progress": 0, "interrupts": 0, "_native": 0, "includes": 0, "_version": 0,
}



def _modules():
    """(path relative to the package's parent, dotted module name) of every source file."""
    out = []
    for p in sorted(SRC.rglob("*")):
        if p.suffix not in (".py", ".pyx", ".pxi", ".pxd") or "__pycache__" in p.parts:
            continue
        rel = p.relative_to(SRC.parent)
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        if p.suffix == ".pxi":  # included into _native.pyx
            parts = ["sandbox", "_native"]
        out.append((p, str(rel), ".".join(parts)))
    return out


def _unit(module):
    """'sandbox.image.store' -> 'image'; 'sandbox' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_package(module):
    return (SRC.parent / module.replace(".", "/") / "__init__.py").exists() or module == "sandbox"


def _exists(module):
    base = SRC.parent / module.replace(".", "/")
    return base.is_dir() or any(base.with_suffix(s).exists() for s in (".py", ".pyx", ".pxd"))


def _resolve_from(module, is_pkg, level, target):
    """The absolute name of `from <level dots><target> import ...` in `module`."""
    if not level:
        return target or ""
    base = module.split(".")
    if not is_pkg:
        base = base[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def _imports_py(path, module):
    """(line, source text, imported sandbox module) of every import in a Python file."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    lines = path.read_text().splitlines()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, is_pkg, node.level, node.module)
            # `from pkg import name` imports pkg.name when that is a module, else pkg itself
            names = [f"{base}.{a.name}" if _exists(f"{base}.{a.name}") else base for a in node.names]
        for name in dict.fromkeys(names):
            if name == "sandbox" or name.startswith("sandbox."):
                yield node.lineno, lines[node.lineno - 1].strip(), name


_CY_IMPORT = re.compile(r"^\s*(?:from\s+(\.*)([\w.]*)\s+c?import\s+([\w, ]+)|c?import\s+([\w.]+))")


def _imports_cython(path, module):
    for n, line in enumerate(path.read_text().splitlines(), 1):
        m = _CY_IMPORT.match(line)
        if not m:
            continue
        if m.group(4):
            names = [m.group(4)]
        else:
            base = _resolve_from(module, False, len(m.group(1)), m.group(2))
            names = [f"{base}.{a.strip()}" if _exists(f"{base}.{a.strip()}") else base
                     for a in m.group(3).split(",")]
        for name in names:
            if name == "sandbox" or name.startswith("sandbox."):
                yield n, line.strip(), name


def _all_imports():
    for path, rel, module in _modules():
        read = _imports_py if path.suffix == ".py" else _imports_cython
        for line, text, name in read(path, module):
            yield rel, module, line, text, name


def test_every_module_has_a_rank():
    """A new top-level package or module must be given its place in docs/engine.md's table."""
    missing = sorted({rel for _, rel, module in _modules() if _unit(module) not in RANKS})
    assert not missing, f"modules without a rank in docs/engine.md (and tests/test_layers.py): {missing}"


def test_the_table_is_the_documented_one():
    doc = SRC.parent / "docs" / "engine.md"
    table = {}
    for line in doc.read_text().split("## Layers", 1)[1].split("\n## ", 1)[0].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            for name in re.findall(r"`sandbox\.?([\w.]*)`", cells[1]):
                table[name or "__init__"] = int(cells[0])
    assert table == RANKS, "docs/engine.md's rank table and RANKS differ"


def test_imports_point_down():
    """Up the table is refused; within a rank, two packages may not import each other (one
    direction only, e.g. registry -> image)."""
    bad = []
    sideways = {}
    for rel, module, line, text, name in _all_imports():
        src, dst = _unit(module), _unit(name)
        if src == dst or src not in RANKS or dst not in RANKS:
            continue
        if RANKS[dst] > RANKS[src]:
            bad.append(f"{rel}:{line}: {text}  (rank {RANKS[src]} {src} -> rank {RANKS[dst]} {dst})")
        elif RANKS[dst] == RANKS[src]:
            sideways.setdefault((src, dst), f"{rel}:{line}: {text}")
    for (src, dst), where in sorted(sideways.items()):
        if (dst, src) in sideways:
            bad.append(f"{where}  ({src} -> {dst}, and back: {sideways[dst, src]})")
    assert not bad, "imports that point up (or both ways) the layers of docs/engine.md:\n" + "\n".join(bad)


def _package_names(package):
    """The names a package's __init__.py defines at top level (None: it has a __getattr__)."""
    init = SRC.parent / package.replace(".", "/") / "__init__.py"
    names = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _missing(path, module):
    """Imports in a Python file of sandbox modules (or package attributes) that do not exist."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("sandbox.") and not _exists(a.name):
                    yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, path.name == "__init__.py", node.level, node.module)
            if base != "sandbox" and not base.startswith("sandbox."):
                continue
            if not _exists(base):
                yield node.lineno, base
                continue
            if not _is_package(base):
                continue
            defined = _package_names(base)
            for a in node.names:
                if not _exists(f"{base}.{a.name}") and defined is not None and a.name not in defined:
                    yield node.lineno, f"{base}.{a.name}"


def test_imports_name_modules_that_exist():
    """A module renamed or removed (runtime/nsworker.py) leaves no import of it behind, even in
    a function that no test happens to call."""
    bad = []
    for path, rel, module in _modules():
        if path.suffix == ".py":
            lines = path.read_text().splitlines()
            bad += [f"{rel}:{n}: {lines[n - 1].strip()}  ({name})" for n, name in _missing(path, module)]
    assert not bad, "imports of sandbox modules that do not exist:\n" + "\n".join(bad)


def test_the_checker_sees_every_kind_of_import(tmp_path):
    """The resolver itself: relative imports at each level, `from pkg import module`, lazy imports."""
    f = tmp_path / "m.py"
    f.write_text("import sandbox.api\n"
                 "from .. import errors\n"
                 "from ..runtime import paths, launch\n"
                 "from . import store\n"
                 "def f():\n"
                 "    if True:\n"
                 "        from .. import progress\n"
                 "    import os\n")
    got = sorted(name for _, _, name in _imports_py(f, "sandbox.image.fake"))
    assert got == ["sandbox.api", "sandbox.errors", "sandbox.image.store", "sandbox.progress",
                   "sandbox.runtime.launch", "sandbox.runtime.paths"]
    assert _resolve_from("sandbox.runtime", True, 1, "paths") == "sandbox.runtime.paths"
    assert _resolve_from("sandbox.runtime.launch", False, 2, "image") == "sandbox.image"


def _environ_writes(path):
    tree = ast.parse(path.read_text(), str(path))
    environ_names = {"environ"} if any(
        isinstance(n, ast.ImportFrom) and n.module == "os" and any(a.name == "environ" for a in n.names)
        for n in ast.walk(tree)) else set()

    def is_environ(node):
        return ((isinstance(node, ast.Attribute) and node.attr == "environ"
                 and isinstance(node.value, ast.Name) and node.value.id == "os")
                or (isinstance(node, ast.Name) and node.id in environ_names))

    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for t in targets:
            if (isinstance(t, ast.Subscript) and is_environ(t.value)) or is_environ(t):
                yield node.lineno
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if is_environ(f.value) and f.attr in ("update", "setdefault", "pop", "popitem", "clear"):
                yield node.lineno
            if isinstance(f.value, ast.Name) and f.value.id == "os" and f.attr in ("putenv", "unsetenv"):
                yield node.lineno


def test_nothing_writes_the_environment():
    """Configuration goes down as arguments and `sandbox.config` contexts: a server serving
    several users' requests in threads cannot have a module write the process environment."""
    bad = []
    for path, rel, _ in _modules():
        if path.suffix != ".py":
            continue
        lines = path.read_text().splitlines()
        bad += [f"{rel}:{n}: {lines[n - 1].strip()}" for n in _environ_writes(path)]
    assert not bad, "modules that change os.environ:\n" + "\n".join(bad)


def test_the_environment_checker_sees_writes(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom os import environ\nos.environ['A'] = '1'\nos.environ.update(B='2')\n"
                 "environ.setdefault('C', '3')\nos.putenv('D', '4')\ndel os.environ['A']\n"
                 "x = os.environ.get('A')\nenv = dict(os.environ)\nenv['A'] = '1'\n")
    assert sorted(_environ_writes(f)) == [3, 4, 5, 6, 7]
