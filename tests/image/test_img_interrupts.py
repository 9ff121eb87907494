"""Ctrl-C during `sbx pull` (and a `run` that pulls) stops it at once: nothing keeps running,
no image is recorded, and the store is clean.

The registry is a small server in the test that sends half of the layer blob and then stalls:
the interrupt always lands while the download is under way, whatever the machine's speed."""
import http.server
import os
import sys
import threading

import pytest

from interrupts import Interrupted
from sbx_image_testlib import SANDBOX_PATH, build_image, busybox_entries, make_tar

BOUND = 5.0


class StallingRegistry:
    """Serves one image; the layer blob stops after half its bytes until the client goes away."""

    def __init__(self, image, layer_digest):
        self.image, self.layer = image, layer_digest
        self.stalled = threading.Event()
        self.stop = threading.Event()
        reg = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, body, ctype, digest, head=False):
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if digest:
                    self.send_header("Docker-Content-Digest", digest)
                self.end_headers()
                if head:
                    return
                if digest == reg.layer:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    reg.stalled.set()
                    reg.stop.wait(120)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def _route(self, head):
                path = self.path.split("?")[0]
                if path == "/v2/":
                    return self._send(b"{}", "application/json", None, head)
                if "/manifests/" in path:
                    return self._send(reg.image.manifest, "application/vnd.oci.image.manifest.v1+json",
                                      reg.image.digest, head)
                if "/blobs/" in path:
                    d = path.rsplit("/", 1)[1]
                    if d in reg.image.blobs:
                        return self._send(reg.image.blobs[d], "application/octet-stream", d, head)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):  # noqa: N802
                self._route(False)

            def do_HEAD(self):  # noqa: N802
                self._route(True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stalling_registry():
    # Random-looking content, so that the compressed blob is big enough to be sent in parts.
    payload = os.urandom(4 << 20)
    from sbx_image_testlib import Entry
    layer = make_tar([*busybox_entries(), Entry("big", "file", payload)])
    image = build_image([layer])
    layer_digest = next(d for d in image.blobs if d not in (image.digest, image.id))
    reg = StallingRegistry(image, layer_digest)
    yield reg
    reg.close()


def _sbx(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = SANDBOX_PATH + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return [sys.executable, "-m", "sandbox", *args], env


@pytest.mark.parametrize("command", [("pull",), ("run", "--rm")], ids=["pull", "run"])
def test_ctrl_c_during_a_download(stalling_registry, sbx, tmp_path, command):
    ref = f"{stalling_registry.host}/test/stall:1"
    argv, env = _sbx(*command, ref, *(["true"] if command[0] == "run" else []))
    job = Interrupted(argv, env=env, cwd=tmp_path)
    try:
        assert stalling_registry.stalled.wait(60), job.out
        rc, _ = job.interrupt(BOUND)
        out = job.out.decode(errors="replace")
        assert rc == 130, out
        assert "Traceback" not in out, out
        assert job.leftovers() == {}, out
    finally:
        job.close()
    r = sbx("system", "check")
    assert r.returncode == 0 and r.stdout.strip().endswith(": ok"), r.stdout + r.stderr
    assert sbx("images", "-q").stdout.strip() == ""


def test_ctrl_c_as_the_downloads_start_stops_them(stalling_registry, tmp_path, monkeypatch):
    """A Ctrl-C that lands after a layer's download has started but before the pull waits for it
    (seen under load: the interrupted `sbx pull` then sat on the stalled connection until the
    registry gave up) aborts that download too.  The interrupt is raised where the signal landed."""
    from concurrent.futures import ThreadPoolExecutor

    from sandbox.image.store import Store
    from sandbox.registry import pull as pullmod

    class CtrlCAfterSubmit(ThreadPoolExecutor):
        def submit(self, *args, **kwargs):
            fut = super().submit(*args, **kwargs)
            assert stalling_registry.stalled.wait(60)  # the download is under way, and stalls
            raise KeyboardInterrupt

    monkeypatch.setattr(pullmod, "ThreadPoolExecutor", CtrlCAfterSubmit)
    raised = []

    def run():
        try:
            pullmod.pull(Store(str(tmp_path / "store")), f"{stalling_registry.host}/test/stall:1")
        except BaseException as e:  # noqa: BLE001 - the test looks at what came out
            raised.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    stuck = t.is_alive()
    stalling_registry.stop.set()  # let a pull that waits on the stalled connection go
    t.join()
    assert not stuck, "the interrupted pull still waits for the download it started"
    assert len(raised) == 1 and isinstance(raised[0], KeyboardInterrupt), raised
    assert not [th for th in threading.enumerate() if th.name.startswith("sbx-pull")]
