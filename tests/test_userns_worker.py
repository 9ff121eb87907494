"""The userns worker is a transport: it runs the `sandbox.` functions its callers name, as root of a
user namespace mapped like the sandboxes (with a subuid range) or in-process (without), and
refuses every other name, in the caller and in the worker process itself."""

import os

import pytest

import sandbox
from sandbox.runtime import userns_worker

REFUSED = ["os:system", "subprocess:run", "sandbox:run", "sandbox.image.store:_hex", "sandbox.image.store",
           "sandbox..image:x", "sandbox.image.store:Store", "sandboxx.evil:f", "sandbox/../os:system", "", None]


@pytest.mark.parametrize("name", REFUSED)
def test_the_local_worker_refuses_other_names(name):
    with pytest.raises(userns_worker.Refused):
        userns_worker.LocalWorker().call(name, command="true")


def test_the_local_worker_runs_in_this_process(tmp_path):
    d = tmp_path / "tree" / "sub"
    d.mkdir(parents=True)
    (d / "f").write_text("x")
    w = userns_worker.start("single")
    assert not w.in_userns
    assert w.call("sandbox.image.fsutil:in_user_namespace") is False
    w.call("sandbox.image.store:remove_path", path=str(tmp_path / "tree"))
    assert not (tmp_path / "tree").exists()


@pytest.mark.subuid
def test_the_mapped_worker_runs_calls_as_root_of_the_mapped_namespace(tmp_path):
    with userns_worker.start("helper") as w:
        assert w.in_userns
        assert w.call("sandbox.image.fsutil:in_user_namespace") is True
        # a directory of a subordinate id (mode 0700, a file in it): the caller cannot remove it
        d = tmp_path / "tree"
        sandbox.run(["sh", "-c", f"mkdir -p {d}/sub && touch {d}/sub/f && chown -R 5:5 {d} && chmod 700 {d}/sub"],
                    rootfs="/", network="host", namespaces=("user",), check=True)
        with pytest.raises(PermissionError):
            os.listdir(d / "sub")
        w.call("sandbox.image.store:remove_path", path=str(d))
        assert not d.exists()


@pytest.mark.subuid
def test_the_worker_process_refuses_names_sent_past_the_caller(tmp_path):
    """A request written straight to the worker's stdin (not through call(), which refuses
    first) is refused by the worker too: nothing outside sandbox. runs there."""
    import json
    marker = tmp_path / "ran"
    with userns_worker.start("helper") as w:
        for name in ("os:system", "sandbox.image.store:_hex"):
            w.stdin.write(json.dumps({"fn": name, "args": {"command": f"touch {marker}"}}) + "\n")
            w.stdin.flush()
            reply = json.loads(w.stdout.readline())
            assert "refused" in reply["error"], reply
        assert w.call("sandbox.image.fsutil:in_user_namespace") is True  # still serving
    assert not marker.exists()


@pytest.mark.subuid
@pytest.mark.parametrize("name", ["os:system", "sandbox.image.store:_hex", "x"])
def test_the_mapped_worker_refuses_before_sending(name):
    with userns_worker.start("helper") as w:
        with pytest.raises(userns_worker.Refused):
            w.call(name, command="true")
        assert w.call("sandbox.image.fsutil:in_user_namespace") is True


@pytest.mark.subuid
def test_a_failing_call_is_one_error_and_the_worker_goes_on(tmp_path):
    from sandbox.errors import SandboxError
    with userns_worker.start("helper") as w:
        with pytest.raises(SandboxError, match="no-such-image"):
            w.call("sandbox.image.store:unpack_with_owners", store=str(tmp_path / "s"), image="no-such-image")
        assert w.call("sandbox.image.fsutil:in_user_namespace") is True
    assert w.returncode == 0


@pytest.mark.subuid
def test_the_worker_process_gets_the_context_in_force(tmp_path, monkeypatch):
    """Not through our environment (which says otherwise here) but explicitly, at its launch."""
    from sandbox import config
    monkeypatch.setenv("SBX_ROOT", str(tmp_path / "from-env"))
    ctx = config.Context(str(tmp_path / "given"), str(tmp_path / "run"))
    with config.use(ctx), userns_worker.start("helper") as w:
        assert w.call("sandbox.runtime.paths:data_root") == ctx.data_root
