"""What sbx says about images that are not in the store (issue 14): Docker's 'Unable to find image
... locally' first, then the pull error naming the image; a FROM error carries its Dockerfile line;
--pull always never claims the image was missing.  A registry that refuses connections
(127.0.0.1:1) stands for any unreachable or unknown one, so the tests are the same offline."""
import os
import subprocess
import sys

import pytest

from sbx_image_testlib import SANDBOX_PATH

GONE = "127.0.0.1:1/team/app:2"


@pytest.fixture
def sbx_cli(tmp_path):
    def _run(*args, timeout=120):
        e = dict(os.environ)
        e["PYTHONPATH"] = SANDBOX_PATH + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
        return subprocess.run([sys.executable, "-m", "sandbox", *map(str, args)], capture_output=True, text=True,
                              env=e, timeout=timeout, cwd=tmp_path, stdin=subprocess.DEVNULL)
    return _run


def _one_error(r):
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 125 and "Traceback" not in r.stderr, r.stderr
    assert lines and lines[0].startswith("sbx: ") and all(ln.startswith("sbx: hint: ") for ln in lines[1:]), r.stderr
    return lines[0]


def test_run_of_a_missing_image_names_it(sbx_cli):
    line = _one_error(sbx_cli("run", "--rm", GONE, "true"))
    assert line.startswith(f"sbx: Unable to find image '{GONE}' locally"), line
    assert line.count(GONE) == 2 and "127.0.0.1:1" in line  # then the pull's own error, naming the image


def test_pull_always_never_says_not_found_locally(sbx_cli, plain_registry):
    ref = f"{plain_registry.host}/test/busybox"
    first = sbx_cli("run", "--rm", ref, "true")
    assert first.returncode == 0, first.stderr
    assert f"Unable to find image '{ref}' locally" in first.stderr      # it was missing: pulled
    again = sbx_cli("run", "--rm", "--pull", "always", ref, "true")
    assert again.returncode == 0, again.stderr
    assert "locally" not in again.stderr and f"Pulling {ref}" in again.stderr
    local = sbx_cli("run", "--rm", ref, "true")
    assert local.returncode == 0 and local.stderr == "", local.stderr


def test_from_a_missing_image_names_the_line(sbx_cli, tmp_path):
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"# base\n\nFROM {GONE} AS base\nRUN true\n")
    line = _one_error(sbx_cli("build", "-q", ctx))
    assert line.startswith(f"sbx: Dockerfile:3: Unable to find image '{GONE}' locally"), line


def test_python_image_of_a_missing_image_names_it():
    import sandbox
    with pytest.raises(sandbox.SandboxError) as e:
        sandbox.run(["true"], image=GONE)
    assert str(e.value).startswith(f"Unable to find image '{GONE}' locally") and str(e.value).count(GONE) == 2


def test_python_run_none_means_the_image_default_command(plain_registry):
    import sandbox
    r = sandbox.run(None, image=f"{plain_registry.host}/test/multi", capture_output=True, text=True)
    assert (r.returncode, r.stdout) == (0, "hello\n")   # its Cmd: cat /etc/hello
