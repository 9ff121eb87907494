"""Long image operations say what they do on a terminal, and only there.

* `sbx pull` unpacks the layers (for the caller's default id mapping), as Docker does, so the
  first run of a pulled image unpacks nothing;
* unpacking shows pull-style progress (`abc123def456: Extracting [===>  ] 1.2MB/3.4MB`) when
  stderr is a terminal, and writes nothing extra when it is not.

SBX_PROGRESS_DELAY=0 shows progress at once, however small the layer: the tests check what is
shown, not how long anything takes."""
import json
import os
import sys

import ptyrun
from sbx_image_testlib import SANDBOX_PATH


def _env(**extra):
    e = dict(os.environ)
    e["PYTHONPATH"] = SANDBOX_PATH + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["SBX_PROGRESS_DELAY"] = "0"
    e.update(extra)
    return e


def _sbx(tmp_path, *args, env=None, **kw):
    return ptyrun.run([sys.executable, "-m", "sandbox", *args], env=_env(**(env or {})), cwd=tmp_path, **kw)


def _layer_count(sbx):
    return json.loads(sbx("system", "df", "--format", "json").stdout)["layers"]["count"]


def test_pull_unpacks_so_the_first_run_does_not(sbx, plain_registry, tmp_path):
    ref = f"{plain_registry.host}/test/multi"
    r = sbx("pull", ref, env={"SBX_PROGRESS_DELAY": "0"})
    assert r.returncode == 0, r.stderr
    assert _layer_count(sbx) == 3                       # every layer, unpacked by the pull
    # Not a terminal: pull's plain lines as before, no progress, no escape sequences.
    assert "Extracting" not in r.stdout + r.stderr and "Unpacked" not in r.stdout
    assert "\x1b" not in r.stdout + r.stderr
    # The first run, on a terminal, has nothing left to unpack.
    rc, term, _ = _sbx(tmp_path, "run", "--rm", ref)
    assert (rc, term.replace("\r\n", "\n")) == (0, "hello\n")
    assert _layer_count(sbx) == 3


def test_pull_on_a_terminal_shows_the_unpacking(plain_registry, tmp_path, sbx):
    ref = f"{plain_registry.host}/test/multi"
    rc, term, _ = _sbx(tmp_path, "pull", ref)
    assert rc == 0, term
    assert "Unpacked" in term or "Extracting" in term, term
    assert _layer_count(sbx) == 3


def test_first_run_shows_unpack_progress_on_a_terminal_only(plain_registry, tmp_path):
    """`run` of an image that is not here pulls it, then unpacks it for the run's mapping."""
    ref = f"{plain_registry.host}/test/busybox"
    # stderr a pipe: the command's output only, and no progress anywhere.
    rc, term, err = _sbx(tmp_path, "run", "--rm", ref, "echo", "ran", stderr_pipe=True)
    assert rc == 0, err
    assert term.replace("\r\n", "\n") == "ran\n"
    assert "Extracting" not in err and "\x1b" not in err
    # stderr a terminal (and a fresh store): the layer's extraction is shown, then erased.
    rc, term, _ = _sbx(tmp_path, "run", "--rm", ref, "echo", "ran", env={"SBX_ROOT": str(tmp_path / "store2")})
    assert rc == 0, term
    assert ": Extracting [" in term, term
    assert term.rstrip().endswith("ran"), term
