"""Helpers for benches/test_images.py: test images built offline, a loopback registry, rootless podman
with throw-away storage, fresh directories per round, and the sbx/peer ratio printout.

The image builders and the registry come from tests/image/sbx_image_testlib.py (no sbx code in them),
loaded by path so that the benchmarks and the image tests build their images the same way.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest

HERE = Path(__file__).resolve().parent
TESTLIB = HERE.parent / "tests" / "image" / "sbx_image_testlib.py"
CGROUP_CONTROLLERS = "/sys/fs/cgroup/unified/cgroup.controllers"


def image_testlib() -> Any:
    """tests/image/sbx_image_testlib.py as the module ``sbx_image_testlib`` (shared with the image tests)."""
    mod = sys.modules.get("sbx_image_testlib")
    if mod is None:
        if not TESTLIB.is_file():
            pytest.skip(f"{TESTLIB} is missing (run the benchmarks from a source checkout)")
        spec = importlib.util.spec_from_file_location("sbx_image_testlib", TESTLIB)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["sbx_image_testlib"] = mod
        spec.loader.exec_module(mod)
    return mod


# --- content ------------------------------------------------------------------------------------------

def random_layer(prefix: str, files: int, size: int, dirs: int = 1) -> bytes:
    """An uncompressed layer tar of ``files`` files of ``size`` random (incompressible) bytes each,
    spread over ``dirs`` directories under ``prefix``."""
    lib = image_testlib()
    ents = [lib.Entry(prefix, "dir")]
    per_dir = max(1, -(-files // dirs))
    for i in range(files):
        d = f"{prefix}/d{i // per_dir:03d}"
        if i % per_dir == 0:
            ents.append(lib.Entry(d, "dir"))
        ents.append(lib.Entry(f"{d}/f{i:05d}", "file", os.urandom(size)))
    return lib.make_tar(ents)


def tar_of_dir(root: str) -> bytes:
    """A layer tar of the directory tree ``root`` (sorted, owned by 0:0, fixed mtime)."""
    import io

    buf = io.BytesIO()

    def norm(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        ti.mtime = 1_700_000_000
        return ti

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, root)
            if rel != ".":
                tf.add(dirpath, arcname=rel, recursive=False, filter=norm)
            for name in sorted(filenames) + sorted(d for d in dirnames if os.path.islink(os.path.join(dirpath, d))):
                tf.add(os.path.join(dirpath, name), arcname=os.path.normpath(os.path.join(rel, name)),
                       recursive=False, filter=norm)
    return buf.getvalue()


# --- processes ----------------------------------------------------------------------------------------

def check_run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    """Run ``cmd`` quietly; raise with its stderr if it fails (the body of every timed CLI round)."""
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.decode(errors='replace').strip()}")


def try_run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> str | None:
    """None if ``cmd`` succeeds, else a one-line reason."""
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{cmd[0]}: {e}"
    if p.returncode == 0:
        return None
    lines = [s.strip() for s in (p.stderr.strip() or p.stdout.strip()).splitlines() if s.strip()]
    main = [s for s in lines if "hint:" not in s] or lines
    return f"exit {p.returncode}: " + (main[-1] if main else "no output")[:300]


class FreshDirs:
    """``setup`` for ``benchmark.pedantic``: each round gets a new, not yet existing path under ``base``;
    the previous round's is removed first, outside the timing, by ``remove`` (default: rmtree)."""

    def __init__(self, base: Path, remove: Callable[[list[Path]], None] | None = None) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.remove = remove or (lambda paths: [shutil.rmtree(p, ignore_errors=True) for p in paths])
        self.n = 0
        self.last: Path | None = None

    def __call__(self) -> tuple[tuple[Path], dict[str, Any]]:
        self.flush()
        os.sync()  # every round starts without a backlog of dirty pages (fsync costs depend on it)
        self.n += 1
        self.last = self.base / f"r{self.n}"
        return (self.last,), {}

    def flush(self) -> None:
        if self.last is not None:
            self.remove([self.last])
            self.last = None


class Podman:
    """Rootless podman with everything temporary: HOME, XDG dirs and XDG_RUNTIME_DIR (so its own pause
    process, stopped at close()), and a separate --root/--runroot per named store.

    crun (podman's runtime here) refuses hybrid cgroup hosts unless /sys/fs/cgroup/unified/cgroup.controllers
    reads empty; :meth:`cgroup_workaround` bind-mounts an empty file over it inside podman's own (pause
    process's) mount namespace, which every later podman command of this instance joins. The host is not
    touched."""

    def __init__(self, workdir: Path) -> None:
        self.exe = shutil.which("podman") or "/usr/bin/podman"
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        # podman wants short runroot paths (< 50 characters): keep them in /tmp.
        self.short = Path(tempfile.mkdtemp(prefix="sbxbp-"))
        home = workdir / "home"
        (self.short / "xdg").mkdir(mode=0o700)
        home.mkdir(exist_ok=True)
        self.env = dict(os.environ, HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
                        XDG_DATA_HOME=str(home / ".local/share"), XDG_RUNTIME_DIR=str(self.short / "xdg"))
        for v in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "REGISTRY_AUTH_FILE"):
            self.env.pop(v, None)
        self.stores: list[str] = []
        self.driver: list[str] = []

    def choose_driver(self) -> str:
        """Native overlay (kernel >= 5.11 in a user namespace) when it works, else podman's own default
        (vfs here: no storage.conf). Returns a description for the printout."""
        self.driver = ["--storage-driver", "overlay"]
        desc = self.info("probe-overlay")
        if not desc:
            self.driver = []
            desc = self.info("probe-default")
        return desc

    def args(self, store: str) -> list[str]:
        if store not in self.stores:
            self.stores.append(store)
        return [self.exe, "--root", str(self.workdir / store), "--runroot", str(self.short / store),
                *self.driver, "--cgroup-manager", "cgroupfs", "--events-backend", "none"]

    def cmd(self, store: str, *args: str) -> list[str]:
        return [*self.args(store), *args]

    def info(self, store: str) -> str:
        p = subprocess.run(self.cmd(store, "info", "--format",
                                    "{{.Store.GraphDriverName}} {{.Host.OCIRuntime.Name}} {{.Version.Version}}"),
                           capture_output=True, text=True, env=self.env, timeout=60)
        return p.stdout.strip() if p.returncode == 0 else ""

    def cgroup_workaround(self) -> str | None:
        try:
            if not os.path.exists(CGROUP_CONTROLLERS) or not open(CGROUP_CONTROLLERS).read().strip():
                return None
        except OSError:
            return None
        empty = self.short / "empty"
        empty.write_text("")
        return try_run(self.cmd("admin", "unshare", "mount", "--bind", str(empty), CGROUP_CONTROLLERS), env=self.env)

    def remove(self, paths: list[Path]) -> None:
        """Remove store directories: files owned by subordinate ids need podman's user namespace."""
        if not paths:
            return
        runroots = [str(self.short / p.name) for p in paths]
        subprocess.run(self.cmd("admin", "unshare", "rm", "-rf", *map(str, paths), *runroots),
                       capture_output=True, env=self.env, timeout=120)

    def close(self) -> None:
        stores = [self.workdir / s for s in self.stores if s != "admin"]
        self.remove(stores)
        pidfile = self.short / "xdg" / "libpod" / "tmp" / "pause.pid"
        if self.stores:
            self.remove([self.workdir / "admin"])
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid > 0:
            try:
                os.kill(pid, signal.SIGTERM)  # the pause process this instance started (own XDG_RUNTIME_DIR)
            except OSError:
                pass
        shutil.rmtree(self.short, ignore_errors=True)


# --- the ratio printout -------------------------------------------------------------------------------

class RatioReport:
    """A plugin object (registered by test_images.py) printing the medians of this file's benchmarks,
    sbx/peer ratios against their targets, throughput where a size is known, and what was not measured."""

    TITLE = "sbx images / peers (medians, this run)"

    def __init__(self, pairs: list[tuple[str, str, float | None]]) -> None:
        self.pairs = pairs
        self.names = sorted({n for p in pairs for n in p[:2]})
        self.sizes: dict[str, int] = {}
        self.notes: dict[str, str] = {}
        self.info: list[str] = []

    def not_measured(self, name: str, reason: str) -> None:
        self.notes[name] = reason
        pytest.skip(reason)

    def medians(self, config: Any) -> dict[str, float]:
        bs = getattr(config, "_benchmarksession", None)
        med: dict[str, float] = {}
        for b in getattr(bs, "benchmarks", None) or ():
            if getattr(b, "stats", None) is not None and b.name in self.names:
                try:
                    med[b.name] = b.stats.median
                except ValueError:  # statistics.StatisticsError: a benchmark that failed has no rounds
                    self.notes.setdefault(b.name, "it failed before any round was timed")
        return med

    def lines(self, config: Any) -> list[str]:
        med = self.medians(config)
        out: list[str] = []
        for name in self.names:
            if name in med:
                extra = ""
                if name in self.sizes and med[name] > 0:
                    extra = f"   {self.sizes[name] / 1e6 / med[name]:7.1f} MB/s of {self.sizes[name] / 1e6:.1f} MB"
                out.append(f"{name:<28} {med[name] * 1000:10.1f} ms{extra}")
        for a, b, target in self.pairs:
            if a in med and b in med and med[b] > 0:
                r = med[a] / med[b]
                t = f"   target <= {target}x {'ok' if r <= target else 'MISSED'}" if target else ""
                out.append(f"{a} / {b}: {r:.2f}x{t}")
        for name, why in sorted(self.notes.items()):
            out.append(f"not measured: {name}: {why}")
        out.extend(self.info if med else ())
        return out

    def pytest_terminal_summary(self, terminalreporter: Any, config: Any) -> None:
        lines = self.lines(config)
        if lines:
            terminalreporter.section(self.TITLE)
            for line in lines:
                terminalreporter.write_line(line)
