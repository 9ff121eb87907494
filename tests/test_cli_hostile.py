"""Every CLI command with hostile arguments: missing and unwritable paths, directories where files
are expected, /proc paths, out-of-range numbers, a full store.  Whatever the input, sbx answers
with its own error (`sbx: ...`, exit 125) or does the job; it never shows a Python traceback.

The table below must name every command the CLI has (test_every_command_is_driven checks that
against the app), so a new command cannot escape this test."""

import os
import re
import subprocess
import tarfile

import pytest

from sbxtest import assert_sbx_error, host_env, sbx, sbx_argv

IMAGE = "hostile:1"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, busybox_rootfs):
    """A store of its own with one image and one stopped container, and a few hostile paths."""
    d = tmp_path_factory.mktemp("hostile")
    env = host_env(SBX_ROOT=str(d / "store"), HOME=str(d))
    tar = d / "rootfs.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
    r = sbx("import", "-c", 'CMD ["true"]', tar, IMAGE, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    r = sbx("run", "--name", "stopped", "--rootfs", busybox_rootfs, "true", env=env)
    assert r.returncode == 0, r.stderr
    ro = d / "ro"
    ro.mkdir(mode=0o555)
    ctx = d / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY missing /\n")
    return {"env": env, "dir": d, "tar": tar, "ro": ro, "ctx": ctx, "rootfs": busybox_rootfs}


OK = (0, 125)  # may also succeed (e.g. an empty list); sbx's own error otherwise


def _cases():
    """(command, argv[, allowed exit codes]) with {rootfs}, {dir}, {ro}, {tar}, {ctx} filled in by
    the test.  The default is exit 125: the input is refused."""
    R = "{rootfs}"
    return [
        ("run", ["run", "--rootfs", "/proc/no-such-dir", "true"]),
        ("run", ["run", "--group-add", "99999999999", "--rootfs", R, "true"]),
        ("run", ["run", "--group-add", "4294967295", "--rootfs", R, "true"]),
        ("run", ["run", "-u", "99999999999", "--rootfs", R, "true"]),
        ("run", ["run", "-u", "0:99999999999", "--rootfs", R, "true"]),
        ("run", ["run", "--ulimit", "nofile=99999999999999999999999", "--rootfs", R, "true"]),
        ("run", ["run", "--ulimit", "nofile=-5", "--rootfs", R, "true"]),
        ("run", ["run", "--tmpfs", "/t:size=99999999999999999999999999", "--rootfs", R, "true"], OK),
        ("run", ["run", "--env-file", "/proc/self/mem", "--rootfs", R, "true"]),
        ("run", ["run", "--env-file", "{dir}", "--rootfs", R, "true"]),
        ("run", ["run", "--env-file", "/dev/zero", "--rootfs", R, "true"]),
        ("run", ["run", "-v", "/proc/no-such:/x", "--rootfs", R, "true"]),
        ("run", ["run", "-w", "relative/dir", "--rootfs", R, "true"]),
        ("run", ["run", "-h", "bad_host!name", "--rootfs", R, "true"]),
        ("run", ["run", "-h", "x" * 65, "--rootfs", R, "true"]),
        ("run", ["run", "--security-opt", "apparmor=unconfined", "--rootfs", R, "true"]),
        ("run", ["run", "--name", "a/b", "--rootfs", R, "true"]),
        ("run", ["run", "--pull", "never", "no-such-image:1"]),
        ("run", ["run", "--platform", "nope", "no-such-image:1"]),
        ("exec", ["exec", "no-such-container", "true"], (1,)),
        ("exec", ["exec", "stopped", "true"], (1,)),
        ("exec", ["exec", "-u", "99999999999", "stopped", "true"]),
        ("ps", ["ps", "--format", "{{.NoSuchField}}"]),
        ("ps", ["ps", "--format", "{{if .ID}}x{{end}}"]),
        ("rm", ["rm", "no-such-container"], (1,)),
        ("start", ["start", "no-such-container"], (1,)),
        ("stop", ["stop", "-t", "99999999999999999999999", "no-such-container"], (1,)),
        ("kill", ["kill", "-s", "65", "stopped"]),
        ("kill", ["kill", "-s", "99999999999999999999", "stopped"]),
        ("kill", ["kill", "-s", "NOSUCHSIG", "stopped"]),
        ("logs", ["logs", "stopped"], (0,)),  # a foreground run's output went to its terminal: no lines
        ("logs", ["logs", "--since", "yesterday-ish", "stopped"]),
        ("logs", ["logs", "--tail", "many", "stopped"]),
        ("create", ["create", "--name", "a/b", "--rootfs", R, "true"]),
        ("create", ["create", "--name", "stopped", "--rootfs", R, "true"]),
        ("create", ["create", "--restart", "sometimes", "--rootfs", R, "true"]),
        ("restart", ["restart", "no-such-container"], (1,)),
        ("wait", ["wait", "no-such-container"], (1,)),
        ("rename", ["rename", "stopped", "a/b"], (1,)),
        ("rename", ["rename", "no-such-container", "x"], (1,)),
        ("attach", ["attach", "stopped"], (1,)),
        ("attach", ["attach", "--detach-keys", "ctrl-ü", "stopped"]),
        ("pause", ["pause", "stopped"], (1,)),
        ("unpause", ["unpause", "stopped"], (1,)),
        ("container", ["container", "no-such-verb"]),
        ("container", ["container", "create", "--rootfs", "/nonexistent-dir", "true"]),
        ("container", ["container", "run", "--rm", "--stop-timeout", "x", "--rootfs", R, "true"]),
        ("container", ["container", "exec", "no-such-container", "true"], (1,)),
        ("container", ["container", "start", "no-such-container"], (1,)),
        ("container", ["container", "stop", "no-such-container"], (1,)),
        ("container", ["container", "restart", "no-such-container"], (1,)),
        ("container", ["container", "kill", "-s", "NOSUCHSIG", "stopped"]),
        ("container", ["container", "wait", "no-such-container"], (1,)),
        ("container", ["container", "rm", "no-such-container"], (1,)),
        ("container", ["container", "rename", "stopped", "stopped"], (1,)),
        ("container", ["container", "attach", "stopped"], (1,)),
        ("container", ["container", "logs", "--until", "5 parsecs", "stopped"]),
        ("container", ["container", "pause", "stopped"], (1,)),
        ("container", ["container", "unpause", "stopped"], (1,)),
        ("container", ["container", "inspect", "--format", "{{.Nope", "stopped"]),
        ("container", ["container", "inspect", "no-such-container"], (1,)),
        ("container", ["container", "ps", "--format", "{{.NoSuchField}}"]),
        ("container", ["container", "diff", "no-such-container"], (1,)),
        ("container", ["container", "commit", "stopped", "Bad//Name"]),
        ("diff", ["diff", "no-such-container"], (1,)),
        ("commit", ["commit", "stopped", "Bad//Name"]),
        ("commit", ["commit", "no-such-container", "x:1"], (1,)),
        ("build", ["build", "/proc/no-such-dir"]),
        ("build", ["build", "-f", "/proc/no-such-file", "{ctx}"]),
        ("build", ["build", "-f", "{dir}", "{ctx}"]),
        ("build", ["build", "-t", "Bad//Name", "{ctx}"]),
        ("build", ["build", "{ctx}"]),
        ("pull", ["pull", "Bad//Name"]),
        ("pull", ["pull", "127.0.0.1:1/nothing:1"]),
        ("push", ["push", "no-such-image:1"]),
        ("push", ["push", "--digestfile", "/proc/no-such/x", IMAGE, "127.0.0.1:1/x:1"]),
        ("images", ["images", "--format", "{{.NoSuchField}}"]),
        ("images", ["images", "Bad//Name"]),
        ("images", ["images", "--filter", "dangling=perhaps"]),
        ("images", ["images", "--filter", "since=no-such-image:1"]),
        ("history", ["history", "no-such-image:1"]),
        ("history", ["history", "--format", "{{.NoSuchField}}", IMAGE]),
        ("image history", ["image", "history", "-q", "Bad//Name"]),
        ("rmi", ["rmi", "no-such-image:1"]),
        ("rmi", ["rmi", "no-such-image:1", "no-such-image:2"]),
        ("tag", ["tag", "no-such-image:1", "x:1"]),
        ("tag", ["tag", IMAGE, "Bad//Name"]),
        ("inspect", ["inspect", "no-such-image:1"], (1,)),  # Docker: No such object, exit 1
        ("inspect", ["inspect", "--format", "{{.NoSuchField", IMAGE]),
        ("login", ["login", "--password-stdin", "-u", "u", "127.0.0.1:1"]),
        ("logout", ["logout", "--authfile", "/proc/no-such/auth.json", "127.0.0.1:1"]),
        ("save", ["save", "-o", "/nonexistent-dir/x.tar", IMAGE]),
        ("save", ["save", "-o", "{dir}", IMAGE]),
        ("save", ["save", "-o", "/proc/x.tar", IMAGE]),
        ("save", ["save", "-o", "/dev/full", IMAGE]),
        ("save", ["save", "-o", "{ro}/x.tar", IMAGE]),
        ("save", ["save", "--format", "oci-dir", "-o", "/proc/x", IMAGE]),
        ("load", ["load", "-i", "/nonexistent-dir/x.tar"]),
        ("load", ["load", "-i", "/proc/self/status"]),
        ("load", ["load", "-i", "/dev/null"]),
        ("load", ["load", "-i", "/dev/zero"]),  # a device: refused, never read for ever
        ("load", ["load", "-i", "{ro}"]),
        ("import", ["import", "/nonexistent-dir/x.tar", "x:1"]),
        ("import", ["import", "/proc/self/status", "x:1"]),
        ("import", ["import", "{dir}", "x:1"]),
        ("import", ["import", "{tar}", "Bad//Name"]),
        ("info", ["info", "--format", "{{.NoSuchField}}"]),
        ("info", ["info", "--format", "{{json .Cgroups"]),
        ("info", ["info", "extra-argument"]),
        ("export", ["export", "-o", "/proc/x", IMAGE]),
        ("export", ["export", "-o", "/dev/full", IMAGE]),
        ("export", ["export", "-o", "{dir}", IMAGE]),
        ("export", ["export", "-o", "{ro}/x.tar", IMAGE]),
        ("image", ["image", "no-such-verb"]),
        ("image", ["image", "prune", "-f", "--no-such-flag"]),
        ("image", ["--root", "{ro}/store", "image", "prune", "-f"], OK),
        ("image", ["image", "ls", "--format", "{{json .Nope}}"]),
        ("image", ["image", "pull", "127.0.0.1:1/nothing:1"]),
        ("image", ["image", "push", "no-such-image:1"]),
        ("image", ["image", "rm", "no-such-image:1"]),
        ("image", ["image", "tag", IMAGE, "Bad//Name"]),
        ("image", ["image", "inspect", "--format", "{{range .}}{{end}}", IMAGE]),
        ("image", ["image", "save", "-o", "/proc/x.tar", IMAGE]),
        ("image", ["image", "load", "-i", "/proc/self/status"]),
        ("image", ["image", "import", "/proc/no-such", "x:1"]),
        ("image", ["image", "export", "-o", "{dir}", IMAGE]),
        ("system", ["system", "check", "--no-such-flag"]),
        ("system", ["--root", "/proc/foo", "system", "check"]),
        ("system", ["--root", "/proc/foo", "system", "df"], OK),
        ("version", ["version", "extra-argument"]),
        ("--root", ["--root", "/proc/foo", "images"], OK),
        ("--root", ["--root", "/proc/foo", "run", "--name", "k", "--rootfs", R, "true"]),
        ("--root", ["--root", "{ro}/store", "tag", IMAGE, "x:1"]),
        ("unshare", ["unshare", "/nonexistent-cmd"], (127,)),
        ("unshare", ["unshare", "--workdir", "/proc/no-such"], (127, 125)),
        ("system", ["system", "reset", "--no-such-flag"]),
        ("system", ["--root", "/proc/foo", "system", "reset", "-f"], OK),
        ("<unknown>", ["toppp"]),
        ("ps", ["ps", "--filter", "status=sleeping"]),
        ("ps", ["ps", "--filter", "before=no-such-container"], (1,)),
        ("ps", ["ps", "-n", "many"]),
        ("cp", ["cp", "a", "b"]),
        ("cp", ["cp", "stopped:/no-such-file", "{dir}/x"], (1,)),
        ("cp", ["cp", "{dir}", "stopped:/etc/passwd"], (1,)),
        ("cp", ["cp", "stopped:/etc/passwd", "/proc/x"], (1, 125)),
        ("cp", ["cp", "-", "stopped:/tmp"], (1,)),  # an empty stream is no tar
        ("cp", ["cp", "stopped:/bin", "{ro}/x"], (1, 125)),
        ("export", ["export", "-o", "{dir}", "stopped"]),
        ("export", ["export", "-o", "/proc/x", "stopped"]),
        ("top", ["top", "stopped"], (1,)),
        ("top", ["top", "no-such-container", "-o", "pid"], (1,)),
        ("container", ["container", "cp", "stopped:/no-such-file", "-"], (1,)),
        ("container", ["container", "export", "no-such-container"], (1,)),
        ("container", ["container", "top", "stopped", "--bad"], (1,)),
        ("container", ["container", "ls", "--filter", "nokey"]),
        ("container", ["container", "list", "-n", "x"]),
        ("container", ["container", "prune", "-f", "--filter", "until=soon"]),
        ("system", ["system", "prune", "-f", "--filter", "name=x"]),
        # issue 10: stats and update
        ("stats", ["stats", "--no-stream", "no-such-container"], (1,)),
        ("stats", ["stats", "--no-stream", "--format", "{{.NoSuchField}}"]),
        ("container stats", ["container", "stats", "--no-stream", "--format", "{{if .ID}}x{{end}}"]),
        ("update", ["update", "--memory", "lots", "stopped"]),
        ("update", ["update", "--cpus", "-1", "stopped"]),
        ("update", ["update", "--pids-limit", "99999999999999999999999", "stopped"]),
        ("update", ["update", "--restart", "sometimes", "stopped"]),
        ("container update", ["container", "update", "--memory", "1m", "no-such-container"], (1, 125)),
        # issue 11: ports and networks
        ("port", ["port", "no-such-container"], (1,)),
        ("port", ["port", "stopped", "99999999/tcp"]),
        ("container port", ["container", "port", "stopped", "80/sctp-ish"]),
        ("network create", ["network", "create", "--subnet", "10.0.0.0/99", "n1"]),
        ("network create", ["network", "create", "--gateway", "10.9.9.1", "--subnet", "10.8.0.0/24", "n2"]),
        ("network create", ["network", "create", "bad/name"]),
        ("network create", ["network", "create", "--label", "=x", "n3"]),
        ("network inspect", ["network", "inspect", "no-such-network"], (1,)),
        ("network ls", ["network", "ls", "--filter", "nope=1"]),
        ("network list", ["network", "list", "--format", "{{.NoSuchField}}"]),
        ("network rm", ["network", "rm", "no-such-network"], (1,)),
        ("network remove", ["network", "remove", "host"], (1, 125)),
        ("network connect", ["network", "connect", "no-such-network", "stopped"], (1,)),
        ("network disconnect", ["network", "disconnect", "no-such-network", "stopped"], (1,)),
        ("network prune", ["network", "prune", "-f", "--filter", "until=whenever"]),
        # named volumes and --mount
        ("volume create", ["volume", "create", "bad/name"]),
        ("volume create", ["volume", "create", "-o", "type=nfs", "v1"]),
        ("volume create", ["volume", "create", "-d", "nfs", "v1"]),
        ("volume inspect", ["volume", "inspect", "no-such-volume"], (1,)),
        ("volume ls", ["volume", "ls", "--filter", "nope=1"]),
        ("volume list", ["volume", "list", "--format", "{{.NoSuchField}}"]),
        ("volume rm", ["volume", "rm", "no-such-volume"], (1,)),
        ("volume remove", ["volume", "remove", "../../etc"], (1,)),
        ("volume prune", ["volume", "prune", "-f", "--filter", "until=whenever"]),
        ("run", ["run", "--mount", "type=bind,src=/proc/no-such,dst=/x", "--rootfs", R, "true"]),
        ("run", ["run", "--mount", "type=volume,src=../../etc,dst=/x", "--rootfs", R, "true"]),
        ("run", ["run", "--mount", "type=bind,src=/tmp,dst=/x,bind-propagation=shared", "--rootfs", R, "true"]),
        ("run", ["run", "--mount", "type=tmpfs,dst=/t,tmpfs-size=99999999999999999999999999", "--rootfs", R, "true"],
         OK),
        ("run", ["run", "--mount", ",,,", "--rootfs", R, "true"]),
        ("run", ["run", "-p", "99999:80", "--rootfs", R, "true"]),
        ("run", ["run", "-p", "80:80/sctp-ish", "--rootfs", R, "true"]),
        ("run", ["run", "--network", "slirp4netns:no_such_option=1", "--rootfs", R, "true"]),
        ("run", ["run", "--network", "container:no-such-container", "--rootfs", R, "true"]),
        ("run", ["run", "--add-host", "nocolon", "--rootfs", R, "true"]),
        ("run", ["run", "--dns", "not-an-ip", "--rootfs", R, "true"]),
        # issue 12: the Docker API service
        ("system service", ["system", "service", "--socket", "tcp://127.0.0.1:2375"]),
        ("system service", ["system", "service", "--timeout", "-5"]),
        ("system service", ["system", "service", "--socket", "unix://{ro}/sbx.sock", "--timeout", "1"], (1, 125)),
        # issue 13: the OCI runtime CLI (its messages say sbx-runc)
        ("oci", ["oci", "state", "no-such-id"], (1,)),
        ("oci", ["oci", "--log-format", "yaml", "list"], (1, 125)),
        ("oci", ["oci", "create", "--bundle", "{dir}", "x1"], (1, 125)),
        ("oci", ["oci", "kill", "no-such-id", "NOSUCHSIG"], (1, 125)),
    ]


def _verb(argv):
    """The command an argv names: 'run', or 'image prune' for a group's command."""
    from sandbox.cli.app import app
    groups = {g.name for g in app.registered_groups}
    i = 0
    while argv[i] in ("--root", "--runroot"):
        i += 2
    return " ".join(argv[i:i + 2]) if argv[i] in groups else argv[i]


def test_every_command_is_driven():
    """The table covers every command the CLI registers, those of `sbx image` and `sbx system` too."""
    from sandbox.cli.app import app
    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    for g in app.registered_groups:
        names |= {f"{g.name} {c.name or c.callback.__name__}" for c in g.typer_instance.registered_commands}
    covered = {_verb(case[1]) for case in _cases()}
    assert names <= covered, f"commands without a hostile case: {sorted(names - covered)}"


@pytest.mark.parametrize("case", _cases(), ids=[" ".join(c[1])[:60] for c in _cases()])
def test_hostile_arguments_never_trace_back(hostile, case):
    argv, codes = case[1], (case[2] if len(case) > 2 else (125,))
    if os.geteuid() == 0 and any("{ro}" in a for a in argv):
        pytest.skip("root writes to read-only directories")
    args = []
    for a in argv:
        for key in ("rootfs", "dir", "ro", "tar", "ctx"):
            a = a.replace("{%s}" % key, str(hostile[key]))
        args.append(a)
    r = sbx(*args, env=hostile["env"], timeout=60)
    detail = f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, detail
    assert r.returncode in codes, detail
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        prefix = "sbx-runc: " if _verb(argv) == "oci" else "sbx: "  # sbx oci is runc's CLI
        assert lines and lines[0].startswith(prefix) and lines[-1].startswith(prefix), detail


# --- the particular cases of the issue, with their messages ------------------------------------------

def test_save_to_missing_directory_names_it(hostile):
    r = sbx("save", "-o", "/nonexistent-dir/x.tar", IMAGE, env=hostile["env"])
    assert_sbx_error(r, 125, "/nonexistent-dir", "No such file or directory")


def test_save_onto_a_directory(hostile, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    r = sbx("save", "-o", out, IMAGE, env=hostile["env"])
    assert_sbx_error(r, 125, str(out), "directory")
    assert list(out.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # no temporary file left beside it


@pytest.mark.parametrize("verb", ["save", "export"])
def test_output_to_a_device_is_written_into_never_replaced(hostile, verb):
    """-o /dev/full: the device gets the bytes (and says it is full); as root, sbx used to rename
    its temporary file over the device node."""
    import stat
    assert_sbx_error(sbx(verb, "-o", "/dev/full", IMAGE, env=hostile["env"]), 125, "No space left on device")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    r = sbx(verb, "-o", "/dev/null", IMAGE, env=hostile["env"])
    assert r.returncode == 0 and stat.S_ISCHR(os.stat("/dev/null").st_mode), r.stderr


def test_export_into_proc(hostile):
    assert_sbx_error(sbx("export", "-o", "/proc/x", IMAGE, env=hostile["env"]), 125, "/proc")


def test_kill_with_a_signal_out_of_range(hostile):
    env = hostile["env"]
    r = sbx("run", "-d", "--name", "victim", "--rootfs", hostile["rootfs"], "sleep", "300", env=env)
    assert r.returncode == 0, r.stderr
    try:
        for sig in ("65", "0", "99999999999999999999", "SIG_IGN"):
            assert_sbx_error(sbx("kill", "-s", sig, "victim", env=env), 125, sig)
        assert "Up" in sbx("ps", "--format", "{{.Status}}", env=env).stdout
    finally:
        sbx("rm", "-f", "victim", env=env)


def test_group_add_out_of_range(hostile):
    r = sbx("run", "--rm", "--group-add", "99999999999", "--rootfs", hostile["rootfs"], "true", env=hostile["env"])
    assert_sbx_error(r, 125, "99999999999")


def test_user_id_out_of_range_is_not_truncated(hostile):
    r = sbx("run", "--rm", "-u", "99999999999", "--rootfs", hostile["rootfs"], "id", "-u", env=hostile["env"])
    assert_sbx_error(r, 125, "99999999999")


def test_system_check_of_a_store_that_does_not_exist():
    r = sbx("--root", "/proc/foo", "system", "check")
    assert_sbx_error(r, 125, "/proc/foo")
    assert "ok" not in r.stdout


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and deletes whatever the permissions")
def test_system_check_repair_on_permission_errors(hostile, tmp_path):
    store = tmp_path / "store"
    env = {**hostile["env"], "SBX_ROOT": str(store)}
    assert sbx("import", hostile["tar"], "x:1", env=env, timeout=120).returncode == 0
    blobs = next(p for p in store.rglob("*") if p.is_dir() and p.name == "sha256")
    blob = max(blobs.iterdir(), key=lambda p: p.stat().st_size)  # the layer
    mode = blob.stat().st_mode
    blob.chmod(0o600)
    with open(blob, "r+b") as f:   # corrupt it: repair must delete it, and cannot
        f.write(b"corrupt")
    blob.chmod(mode)
    dmode = blobs.stat().st_mode
    blobs.chmod(0o500)
    try:
        r = sbx("system", "check", "--repair", env=env, timeout=120)
    finally:
        blobs.chmod(dmode)
    detail = f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    assert "Traceback" not in r.stderr, detail
    assert r.returncode != 0, detail


# --- a full store ------------------------------------------------------------------------------------

FULL_SCRIPT = r"""
set -u
st=$1; tar=$2; rootfs=$3; shift 3
mount -t tmpfs -o size=16m tmpfs "$st" || exit 90
export SBX_ROOT=$st/store
"$@" import "$tar" full:1 >/dev/null || exit 91
"$@" run --name filler --rootfs "$rootfs" true || exit 92
mkdir "$st/ctx" && printf 'FROM full:1\nRUN echo hi > /f\n' > "$st/ctx/Dockerfile" || exit 93
dd if=/dev/zero of="$st/fill" bs=4k 2>/dev/null
step() { echo "=== $1"; shift; "$@" 2>&1; echo "=== rc=$?"; }
step tag "$@" tag full:1 full:2
step run-name "$@" run --name kept --rootfs "$rootfs" true
step run-rm "$@" run --rm --rootfs "$rootfs" sh -c 'echo x > /f'
step start "$@" start -a filler
step commit "$@" commit filler full:3
step build "$@" build -t full:4 "$st/ctx"
step import "$@" import "$tar" full:5
step rmi "$@" rmi full:1
echo "=== containers"; ls "$SBX_ROOT/containers"
"""


def test_full_store(hostile, tmp_path, neutral_cwd):
    """A store on a 16 MiB tmpfs (in a user+mount namespace of the test's own) that is full: every
    write fails with ENOSPC.  Each command answers with one `sbx:` error, and the failed
    `run --name` leaves no container directory behind."""
    st = tmp_path / "full"
    st.mkdir()
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**host_env(XDG_RUNTIME_DIR=str(runtime)), "SBX_ROOT": ""}
    cp = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", FULL_SCRIPT, "sh",
                         str(st), str(hostile["tar"]), str(hostile["rootfs"]), *sbx_argv()],
                        capture_output=True, text=True, timeout=300, cwd=neutral_cwd, env=env,
                        stdin=subprocess.DEVNULL)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "Traceback" not in cp.stdout and "internal error" not in cp.stdout, cp.stdout
    steps = {m[0]: (m[1], int(m[2])) for m in re.findall(r"=== (\S+)\n(.*?)=== rc=(\d+)\n", cp.stdout, re.S)}
    for name in ("tag", "run-name", "commit", "build", "import"):
        out, rc = steps[name]
        assert rc == 125 and "sbx: " in out and "no space left" in out.lower(), f"{name}: exit {rc}\n{out}"
    for name in ("run-rm", "start", "rmi"):  # these may succeed; if not, with sbx's own error
        out, rc = steps[name]
        assert rc == 0 or (rc == 125 and "sbx: " in out), f"{name}: exit {rc}\n{out}"
    containers = [d for d in cp.stdout.split("=== containers\n", 1)[1].split() if len(d) == 64]
    assert len(containers) == 1, f"a failed run left a container directory:\n{cp.stdout}"
