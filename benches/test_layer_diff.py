"""Layer diff benchmarks: the native diff + tar + digests (sandbox.image.layer.write_layer) on an upperdir of
50k small files and a few large ones, against

* a pure-Python os.walk + tarfile + hashlib implementation (target: native >= 10x faster),
* ``tar -cf - -C upper . | sha256sum`` (uncompressed; target: native <= 1.2x its time),
* ``tar -czf - -C upper .`` (gzip; target: native <= 1.0x its time).

Every variant writes to /dev/null and computes what it has to (the native one: the diffID, and with gzip
the compressed digest too). The page cache is warm (one warm-up round each). A summary of the ratios is
printed at the end of the run. With ``--benchmark-disable`` (CI) the tree is scaled down and each variant
runs once.

Run:  pytest benches/test_diff.py --benchmark-columns=median,iqr,rounds
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import statistics
import subprocess
import tarfile
import time

import pytest

from sandbox.image import layer

FULL_SCALE = {"small": 50_000, "per_dir": 100, "large": 4, "large_mb": 16, "rounds": 3}
CI_SCALE = {"small": 2_000, "per_dir": 100, "large": 2, "large_mb": 1, "rounds": 1}

_times: dict[str, list[float]] = {}
_tree: dict[str, object] = {}

WORDS = b"""lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore
et dolore magna aliqua usr lib share bin etc config python package module import return def class self
0 1 2 3 4 5 6 7 8 9 int char void struct static const unsigned""".split()


def _text(rng: random.Random, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rng.choice(WORDS) for _ in range(12)) + b"\n"
    return bytes(out[:n])


def build_upper(root: str, scale: dict[str, int]) -> dict[str, object]:
    """Small files of 64 B - 4 KiB (text-like, compressible), a few large ones (half random, half text:
    like binaries), 100 files per directory in a two-level hierarchy, some symlinks."""
    rng = random.Random(4)
    os.makedirs(root)
    total = 0
    pool = [_text(rng, 8192) for _ in range(64)]
    for i in range(scale["small"]):
        d = os.path.join(root, f"d{i // (scale['per_dir'] * 20):03d}", f"s{(i // scale['per_dir']) % 20:02d}")
        if i % scale["per_dir"] == 0:
            os.makedirs(d, exist_ok=True)
        size = rng.randint(64, 4096)
        chunk = pool[i % len(pool)]
        off = rng.randint(0, len(chunk) - size)
        with open(os.path.join(d, f"f{i:06d}.txt"), "wb") as f:
            f.write(chunk[off:off + size])
        total += size
        if i % 1000 == 0:
            os.symlink(f"f{i:06d}.txt", os.path.join(d, f"l{i:06d}"))
    big = os.path.join(root, "big")
    os.makedirs(big)
    mb = 1 << 20
    for j in range(scale["large"]):
        with open(os.path.join(big, f"blob{j}.bin"), "wb") as f:
            f.writelines(os.urandom(mb // 2) + _text(rng, mb // 2) if k % 2 == 0 else pool[k % 64] * (mb // 8192)
                         for k in range(scale["large_mb"]))
        total += scale["large_mb"] * mb
    return {"root": root, "files": scale["small"] + scale["large"], "bytes": total}


@pytest.fixture(scope="session")
def scale(request) -> dict[str, int]:
    return CI_SCALE if request.config.getoption("benchmark_disable") else FULL_SCALE


@pytest.fixture(scope="session")
def upper(tmp_path_factory, scale, request) -> str:
    info = build_upper(str(tmp_path_factory.mktemp("diffbench") / "upper"), scale)
    os.sync()  # no writeback of the fresh tree while we measure
    _tree.update(info)
    request.config.pluginmanager.register(_Summary(), "sbx-diff-bench-summary")
    return str(info["root"])


def _run(benchmark, name: str, fn, rounds: int) -> None:
    def timed():
        t = time.perf_counter()
        fn()
        _times.setdefault(name, []).append(time.perf_counter() - t)

    if rounds > 1:
        fn()  # warm-up (page cache, imports)
    benchmark.pedantic(timed, rounds=rounds, iterations=1)


# --- the pure-Python peer ------------------------------------------------------------------------------

class _HashSink:
    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def write(self, b) -> int:  # type: ignore[no-untyped-def]
        self.h.update(b)
        return len(b)


def python_layer(root: str) -> str:
    """What one would write without the native walker: os.walk (sorted), tarfile PAX, hashlib."""
    sink = _HashSink()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        for dp, dns, fns in os.walk(root):
            dns.sort()
            for n in sorted(dns + fns):
                p = os.path.join(dp, n)
                ti = tf.gettarinfo(p, arcname=os.path.relpath(p, root))
                ti.uname = ti.gname = ""
                if ti.isreg():
                    with open(p, "rb") as f:
                        tf.addfile(ti, f)
                else:
                    tf.addfile(ti)
    return "sha256:" + sink.h.hexdigest()


# --- benchmarks ------------------------------------------------------------------------------------------

def test_native_diff_tar(benchmark, upper, scale):
    _run(benchmark, "native", lambda: layer.write_layer(upper, "/dev/null", compression="none"), scale["rounds"])


def test_python_walk_tarfile(benchmark, upper, scale):
    _run(benchmark, "python", lambda: python_layer(upper), max(1, scale["rounds"] - 1))


@pytest.mark.skipif(not shutil.which("tar") or not shutil.which("sha256sum"), reason="GNU tar / coreutils missing")
def test_tar_sha256sum(benchmark, upper, scale):
    cmd = ["sh", "-c", 'tar -cf - -C "$0" . | sha256sum >/dev/null', upper]
    _run(benchmark, "tar|sha256sum", lambda: subprocess.run(cmd, check=True), scale["rounds"])


def test_native_diff_tar_gzip(benchmark, upper, scale):
    _run(benchmark, "native-gzip", lambda: layer.write_layer(upper, "/dev/null", compression="gzip"),
         scale["rounds"])


@pytest.mark.skipif(not shutil.which("tar") or not shutil.which("gzip"), reason="GNU tar / gzip missing")
def test_tar_czf(benchmark, upper, scale):
    cmd = ["sh", "-c", 'tar -czf - -C "$0" . >/dev/null', upper]
    _run(benchmark, "tar -czf", lambda: subprocess.run(cmd, check=True), scale["rounds"])


def test_native_matches_python_listing(upper):
    """Not a benchmark: the native tar holds what the Python one holds (same names, same bodies)."""
    import io

    buf = io.BytesIO()
    layer.write_layer(upper, buf, compression="none")
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        names = [m.name for m in tf]
    want = []
    for dp, dns, fns in os.walk(upper):
        for n in dns + fns:
            want.append(os.path.relpath(os.path.join(dp, n), upper))
    assert sorted(names) == sorted(want)


PAIRS = (
    ("python", "native", ">= 10x", "python / native"),
    ("native", "tar|sha256sum", "<= 1.2x", "native / tar|sha256sum"),
    ("native-gzip", "tar -czf", "<= 1.0x", "native gzip / tar -czf"),
)


class _Summary:
    """Registered by the `upper` fixture: prints the medians and ratios at the end of the run."""

    def pytest_terminal_summary(self, terminalreporter, config):  # type: ignore[no-untyped-def]
        if not _times:
            return
        tr = terminalreporter
        tr.section("layer diff: sbx native vs peers (medians, this run)")
        tr.write_line(f"tree: {_tree.get('files')} files, {int(_tree.get('bytes', 0)) / 2**20:.0f} MiB"
                      + ("  (scaled down: --benchmark-disable)" if config.getoption("benchmark_disable") else ""))
        med = {k: statistics.median(v) for k, v in _times.items()}
        for k, m in sorted(med.items()):
            tr.write_line(f"{k:<16} {m * 1000:10.1f} ms")
        for a, b, target, label in PAIRS:
            if a in med and b in med:
                tr.write_line(f"{label}: {med[a] / med[b]:.2f}x   target {target}")
