"""The README's examples, run as written: every ```sh block (but the set-up, test-suite and
benchmark commands, which CI itself runs) in order in one bash, then every ```python block.
They get what the set-up command leaves behind (the venv at ~/.local/sbx, `sbx` on PATH) in a
home and a data directory of their own."""

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SETUP_ONLY = ("sudo ", "scripts/test.sh", "pytest benches", "pip install")


def blocks(lang: str) -> list[str]:
    text = README.read_text()
    return [b for b in re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)
            if not any(s in b for s in SETUP_ONLY)]


@pytest.fixture()
def readme_env(tmp_path):
    home = tmp_path / "home"
    (home / ".local").mkdir(parents=True)
    os.symlink(sys.prefix, home / ".local" / "sbx")  # what set-up command (1) makes
    work = tmp_path / "work"
    work.mkdir()
    (work / "hello.txt").write_text("hello\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SBX_", "XDG_DATA", "XDG_CACHE"))}
    env.update(HOME=str(home), SBX_ROOT=str(tmp_path / "store"),
               PATH=f"{os.path.dirname(sys.executable)}:{env.get('PATH', '/usr/bin:/bin')}")
    yield env, work
    subprocess.run([sys.executable, "-m", "sandbox", "system", "reset", "-f"], env=env, cwd=work,
                   capture_output=True, timeout=120)


def test_readme_has_examples():
    assert len(blocks("sh")) >= 4 and blocks("python")


def _run_script(script, env, cwd, timeout):
    """bash -c SCRIPT in a process group of its own, output to files: an example may leave a
    process in the background (`sbx system service &`), which would hold a pipe open and stall
    the read, so whatever the group still holds is ended once the script is done."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(["bash", "-c", script], env=env, cwd=cwd, stdout=out, stderr=err,
                             stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            rc = p.wait(timeout=timeout)
        finally:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            p.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(p.args, rc, out.read(), err.read())


def test_shell_examples_run_as_written(readme_env):
    env, work = readme_env
    script = "set -euxo pipefail\n" + "\n".join(blocks("sh"))
    cp = _run_script(script, env, work, timeout=280)
    detail = f"exit {cp.returncode}\n--- stdout\n{cp.stdout[-4000:]}\n--- stderr\n{cp.stderr[-6000:]}"
    assert cp.returncode == 0, detail
    assert "Traceback" not in cp.stderr, detail
    out = cp.stdout
    # What the comments promise.
    assert "hi\n" in out and "CI=1" in out and "hello.txt" in out
    assert "state\nstate\n" in out  # the kept container's second run saw its first run's change
    assert "V in /tmp" in out
    assert "out\njob exited 3\n3\n" in out and "data\n" in out, detail
    assert "from an image, as root" in out
    assert "built\n" in out and "x\n" in out
    assert re.search(r"^running \[\"seccomp=default\"\]$", out, re.M), detail
    assert re.search(r"^A /new$", out, re.M) and re.search(r"^D /built$", out, re.M), detail
    assert re.search(r"^started$", out, re.M), detail  # sbx logs web
    assert re.search(r"^\d{4}-\d\d-\d\dT[\d:.]+Z up$", out, re.M), detail  # logs --tail 1 -t svc2
    assert re.search(r"^kept$", out, re.M), detail  # the named volume, read through --mount
    assert re.search(r"^127\.0\.0\.1:\d+$", out, re.M), detail  # sbx port web 8080
    assert re.search(r"^db here$", out, re.M), detail  # a container reached another by its alias


def test_python_examples_run_as_written(readme_env):
    env, work = readme_env
    for code in blocks("python"):
        cp = subprocess.run([sys.executable, "-c", code], env=env, cwd=work, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
        assert cp.returncode == 0, f"{code}\n--- stderr\n{cp.stderr}"


@pytest.mark.parametrize("xdg", [True, False], ids=["login-session", "no-XDG_RUNTIME_DIR"])
def test_the_docker_host_the_readme_exports_is_the_service_socket(readme_env, tmp_path, xdg):
    """The README's two commands for Docker clients, then a client's first request to
    $DOCKER_HOST. Without XDG_RUNTIME_DIR (su, sudo, ssh without a session manager) the
    exported unix://$XDG_RUNTIME_DIR/sbx/sbx.sock named no socket: the service listens on its
    runtime root (/tmp/sbx-UID) there."""
    env, work = readme_env
    env = {k: v for k, v in env.items() if k != "XDG_RUNTIME_DIR"}
    if xdg:
        env["XDG_RUNTIME_DIR"] = str(tmp_path / "run")
        os.mkdir(env["XDG_RUNTIME_DIR"], 0o700)
    block = next(b for b in blocks("sh") if "sbx system service &" in b)
    client = ('s=${DOCKER_HOST#unix://}; for i in $(seq 100); do [ -S "$s" ] && break; sleep 0.1; done\n'
              'python3 -c "import socket,sys; c=socket.socket(socket.AF_UNIX); c.connect(sys.argv[1]); '
              'c.sendall(b\'GET /_ping HTTP/1.0\\r\\n\\r\\n\'); print(c.recv(4096).decode())" "$s"\n')
    cp = _run_script("set -euo pipefail\n" + block + client, env, work, timeout=60)
    assert cp.returncode == 0 and "200 OK" in cp.stdout, f"{cp.stdout}\n{cp.stderr}"
