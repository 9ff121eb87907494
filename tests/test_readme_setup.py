"""The README's set-up and benchmark commands work as written.

Set-up command (1) installs sbx into ~/.local/sbx; every later example then calls plain `sbx`,
so the command must leave `sbx` on PATH.  The test runs what follows the installation in
command (1), exactly as written, in a shell whose HOME holds this suite's installed sbx as
~/.local/sbx/bin/sbx and whose PATH has no sbx, then a later README example in the same shell.

The benchmark command must work in the venv of command (1): it installs the `test` extra there
and runs that venv's pytest with pytest-benchmark's options."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import sbxtest

ROOT = Path(__file__).resolve().parents[1]


def _readme():
    p = ROOT / "README.md"
    if not p.is_file():
        pytest.skip("no README.md next to the tests (not a source checkout)")
    return p.read_text()


def _block_after(text, heading):
    i = text.index(heading)
    m = re.compile(r"```sh\n(.*?)```", re.S).search(text, i)
    return m.group(1).strip()


def _installed_sbx():
    exe = Path(sys.executable).parent / "sbx"
    if not os.access(exe, os.X_OK):
        pytest.skip("the sbx script is not installed next to this python (run the suite with scripts/test.sh)")
    return exe


def test_setup_command_puts_sbx_on_path(tmp_path):
    cmd = _block_after(_readme(), "**1. Install sbx")
    parts = cmd.split(" && ")
    i = next(n for n, p in enumerate(parts) if "/.local/sbx/bin/pip install ." in p)
    home = tmp_path / "home"
    (home / ".local/sbx/bin").mkdir(parents=True)
    os.symlink(_installed_sbx(), home / ".local/sbx/bin/sbx")
    example = "sbx run --help"                                   # a later example, as written
    assert f"\n{example}\n" in _readme()
    script = " && ".join(parts[i + 1:] + [example])
    env = {k: v for k, v in os.environ.items() if k not in ("PATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), PATH="/usr/local/bin:/usr/bin:/bin")
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=env, timeout=120,
                       cwd=sbxtest.NEUTRAL_CWD, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{script}\n{r.stdout}\n{r.stderr}"
    assert "hello from " in r.stdout and "Usage: sbx run" in r.stdout, r.stdout


def test_benchmark_command_works_in_the_setup_venv(tmp_path):
    text = _readme()
    cmd = _block_after(text, "## Benchmarks")
    pip, _, pytest_cmd = cmd.partition(" && ")
    # The set-up venv gets the extra that brings pytest and pytest-benchmark ...
    assert pip.split() == ["~/.local/sbx/bin/pip", "install", "'.[test]'"], cmd
    from importlib import metadata
    test_extra = [r for r in metadata.requires("sbx") or () if re.search(r"extra\s*==\s*['\"]test['\"]", r)]
    for want in ("pytest", "pytest-benchmark", "pytest-timeout"):
        assert any(re.match(rf"{want}\b(?!-)", r) for r in test_extra), (want, test_extra)
    # ... and its pytest (here: this suite's venv, installed with that extra) takes the options.
    argv = pytest_cmd.split()
    assert argv[0] == "~/.local/sbx/bin/pytest", cmd
    home = tmp_path / "home"
    (home / ".local/sbx/bin").mkdir(parents=True)
    exe = Path(sys.executable).parent / "pytest"
    if not os.access(exe, os.X_OK):
        pytest.skip("no pytest script next to this python")
    os.symlink(exe, home / ".local/sbx/bin/pytest")
    env = dict(os.environ, HOME=str(home))
    r = subprocess.run(["sh", "-c", pytest_cmd + " --collect-only -q -p no:cacheprovider"], capture_output=True,
                       text=True, env=env, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    assert "test_startup.py" in r.stdout
