"""Compiling Docker's default seccomp profile (sandbox.runtime.seccomp.program): cold (libseccomp
builds the program), from the disk cache (a new process: key + one small file), and from the
in-process cache (a warm API process starting many sandboxes)."""
import os

import pytest

from sandbox.runtime import seccomp

CAPS = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
        "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(seccomp, "_recent", [])
    return tmp_path / "sbx" / "seccomp"


def _forget(cache_dir, disk):
    seccomp._recent.clear()
    if disk and cache_dir.is_dir():
        for f in cache_dir.iterdir():
            os.unlink(f)


def _check(prog):
    assert prog and len(prog) % 8 == 0


def test_seccomp_compile_cold(benchmark, cache_dir):
    prog = benchmark.pedantic(lambda: seccomp.program(seccomp.default_profile(), CAPS),
                              setup=lambda: _forget(cache_dir, True), rounds=30, iterations=1)
    _check(prog)


def test_seccomp_cached_disk(benchmark, cache_dir):
    seccomp.program(seccomp.default_profile(), CAPS)
    prog = benchmark.pedantic(lambda: seccomp.program(seccomp.default_profile(), CAPS),
                              setup=lambda: _forget(cache_dir, False), rounds=200, iterations=1)
    _check(prog)


def test_seccomp_cached_memory(benchmark, cache_dir):
    prog = benchmark(lambda: seccomp.program(seccomp.default_profile(), CAPS))
    _check(prog)
