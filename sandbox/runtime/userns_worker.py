"""Calls that must run as root of the sandboxes' user namespace: a transport, knowing nothing
of what it carries.

With a subuid range, the trees that builds, commits, unpacking and container removal touch
hold files of subordinate ids: the caller can neither read a 0700 directory owned by uid 1000
there nor give a copied file its owner.  So a worker process runs inside a user namespace with
the same mapping (started through the launcher, like every process) and carries out calls the
callers name, `"module:function"` with JSON keyword arguments and a JSON result, one request a
line on its stdin.  In single-id mode the same calls run in the caller's process (LocalWorker),
where the caller's files are root's inside.

    w = userns_worker.start(mode)          # "helper": the process; otherwise in-process
    w.call("sandbox.image.store:remove_path", path=d)
    w.close()

Only functions under `sandbox.` (public names) are served; anything else is refused.  The
callers name them (image code its layer functions, build code its placement) and pass the
worker down, so this module imports nothing above the runtime layer.

    python -m sandbox.runtime.userns_worker    (inside the namespace; one request per line)
"""
from __future__ import annotations

import json
import os
import signal
import sys

from ..errors import SandboxError

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Refused(ValueError):
    """A call the worker does not serve."""


def check_name(name):
    """(module, function) of a name the worker serves: "sandbox.pkg.module:function", a public
    function of a module under `sandbox.`; Refused for anything else (nothing is imported)."""
    module, sep, func = name.partition(":") if isinstance(name, str) else ("", "", "")
    parts = module.split(".")
    if (not sep or parts[0] != "sandbox" or len(parts) < 2
            or not all(p.isidentifier() for p in parts) or not func.isidentifier() or func.startswith("_")):
        raise Refused(f"worker call {name!r} refused: only public functions of sandbox modules "
                      "('sandbox.module:function') are served")
    return module, func


def resolve(name):
    """The function `name` names (see check_name)."""
    import importlib
    module, func = check_name(name)
    fn = getattr(importlib.import_module(module), func, None)
    if not callable(fn) or isinstance(fn, type):
        raise Refused(f"worker call {name!r}: no such function")
    return fn


class LocalWorker:
    """Single-id mode: the caller is root inside, so the work runs here."""
    in_userns = False

    def call(self, fn, **args):
        return resolve(fn)(**args)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _high_fd(fd):
    """The launcher wants stdio sources at fd >= 3 (dup2 order then never matters)."""
    if fd >= 3:
        return fd
    new = os.dup(fd)
    os.close(fd)
    return _high_fd(new)


class UsernsWorker:
    """A worker process inside a user namespace mapped like the sandboxes.

    It runs in a session of its own, so Ctrl-C on the terminal reaches only sbx.  When a call
    is interrupted there (KeyboardInterrupt while waiting for the reply), the worker's call
    is still running: the next call, or close(), cancels it with CANCEL, which the worker turns
    into a KeyboardInterrupt of that call only (its clean-up removes what it half wrote), and
    drops its reply.  The worker then serves the clean-up calls (removing trees with mapped
    owners) at once, and exits on close."""
    in_userns = True

    def __init__(self):
        from . import spec as specmod
        from .process import SandboxProcess
        from .. import config
        # The calls name their store; the context goes along explicitly all the same.
        env = {"PYTHONPATH": _PKG_PARENT, "PYTHONDONTWRITEBYTECODE": "1", **config.current().environ(),
               **{k: os.environ[k] for k in ("SBX_PROGRESS_DELAY",) if k in os.environ}}
        spec = specmod.build([sys.executable, "-m", "sandbox.runtime.userns_worker"], rootfs="/",
                             network="host", userns="auto", namespaces=("user",), env=env,
                             container_id=os.urandom(32).hex())
        self.pending = False
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()
        try:
            r_in, w_out = _high_fd(r_in), _high_fd(w_out)
            # hold=(): Ctrl-C between calls is sbx's (KeyboardInterrupt), never held for the worker
            self.proc = SandboxProcess.launch(spec, stdio=(r_in, w_out, -1), hold=())
        except BaseException:
            for fd in (w_in, r_out):
                os.close(fd)
            raise
        finally:
            os.close(r_in)
            os.close(w_out)
        self.stdin = open(w_in, "w", buffering=1, encoding="utf-8")
        self.stdout = open(r_out, "r", encoding="utf-8")

    @property
    def returncode(self):
        return self.proc.returncode

    def _cancel(self):
        """Stop the call an interrupted one left running and drop its reply; a worker that does
        not answer within CANCEL_WAIT seconds is killed."""
        import select
        self.pending = False
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(CANCEL)
        if select.select([self.stdout], [], [], CANCEL_WAIT)[0]:
            try:
                if self.stdout.readline():
                    return
            except OSError:
                pass
        self.proc.close()  # kills and reaps

    def call(self, fn, **args):
        check_name(fn)  # refused here already, before anything is sent
        if self.pending:
            self._cancel()
        try:
            self.stdin.write(json.dumps({"fn": fn, "args": args}) + "\n")
            self.stdin.flush()
            self.pending = True
            line = self.stdout.readline()
            self.pending = False
        except (BrokenPipeError, OSError, ValueError):
            line = ""
        if not line:
            raise SandboxError("the user-namespace worker exited",
                               hint="check that newuidmap/newgidmap work for you (sbx run --rm --rootfs / true)")
        reply = json.loads(line)
        if "error" in reply:
            raise SandboxError(reply["error"], hint=reply.get("hint"))
        return reply.get("result")

    def close(self):
        import subprocess
        try:
            if self.pending:
                self._cancel()
            self.stdin.close()
            try:
                self.proc.wait(forward=(), timeout=30)
            except subprocess.TimeoutExpired:
                pass
        finally:  # killed and reaped if still running (Ctrl-C again included)
            self.proc.close()
            self.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def start(mode):
    """A worker for sandboxes of id-mapping `mode` ("helper": a process in a user namespace
    mapped to the subuid range; "single" or None: in this process)."""
    return UsernsWorker() if mode == "helper" else LocalWorker()


def mapped():
    """A worker mapped to the caller's subuid range, or None where there is none to map (no range,
    or this process is already inside a user namespace: the worker itself).  What image stores
    take to remove trees of subordinate ids (image.store.Store(workers=mapped))."""
    from . import idmap
    if _in_user_namespace() or idmap.detect()[0] != "helper":
        return None
    return UsernsWorker()


def _in_user_namespace():
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


#: what cancels the worker's running call (see UsernsWorker), and how long sbx waits for it
CANCEL = signal.SIGUSR1
CANCEL_WAIT = 2.0
_busy = False


def _on_cancel(signum, frame):
    if _busy:  # only a call is interrupted, never the wait for the next request
        raise KeyboardInterrupt


def _serve():
    global _busy
    signal.signal(CANCEL, _on_cancel)
    for line in sys.stdin:
        req = json.loads(line)
        name = req.get("fn")
        short = str(name).rpartition(":")[2]
        try:
            fn = resolve(name)
            _busy = True
            try:
                result = fn(**req.get("args") or {})
            finally:
                _busy = False
            reply = {"result": result}
        except KeyboardInterrupt:
            reply = {"error": f"{short}: interrupted"}
        except SandboxError as e:
            reply = {"error": str(e), "hint": e.hint}
        except OSError as e:
            reply = {"error": f"{short}: {e.filename or ''}: {e.strerror}".replace(": : ", ": ")}
        except Refused as e:
            reply = {"error": str(e)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
