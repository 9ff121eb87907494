"""File work a build (or commit) must do as root of the sandboxes' user namespace.

With a subuid range, the trees a build touches hold files of subordinate ids: the caller
can neither read a 0700 directory owned by uid 1000 there nor give a copied file its owner.
So one worker per build runs inside a user namespace with the same mapping (started through
the launcher, like every process) and does that work: COPY/ADD placement, layer diffs and
removals, requested as JSON lines on its stdin.  In single-id mode the same calls run in the
caller's process (LocalWorker), where the caller's files are root's inside.

    python -m sandbox.runtime.nsworker    (inside the namespace; one request per line)

Used by builds (COPY/ADD, diffs), commit, image unpacking (owners kept) and container
removal.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from ..errors import SandboxError

_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _handle(op, args):
    """The operations, the same wherever they run."""
    if op == "copy":
        from ..image.commit import copy_into
        copy_into(**args)
        return None
    if op == "diff":
        from ..image.layer import put_layer
        from ..image.store import Store
        kw = {}
        if args.get("map_caller_to_root"):
            kw = {"uid_map": [(0, os.geteuid(), 1)], "gid_map": [(0, os.getegid(), 1)]}
        if args.get("base"):
            kw["base"] = args["base"]
        from ..progress import CountingBlobs, Meter
        with Meter("", "Committing layer") as m:  # a big layer takes seconds: say so on a terminal
            info = put_layer(CountingBlobs(Store(args["store"]).blobs, m.add), args["root"],
                             lowers=args.get("lowers", ()), **kw)
        return {"diff_id": info.diff_id, "digest": info.digest, "size": info.size, "tar_size": info.tar_size}
    if op == "hash":
        from ..image.commit import hash_sources
        return hash_sources(args["roots"], args["sources"], args.get("ignore"), args.get("where", ""))
    if op == "unpack":
        from ..image.store import Store
        from ..image.unpack import MappedOwnership
        from ..progress import LayerMeters
        store = Store(args["store"])
        with LayerMeters() as meters:
            store.unpack(store.get(args["image"]), owner=MappedOwnership(), progress=meters,
                         warn=lambda m: sys.stderr.write(f"sbx: warning: {m}\n"))
        return None
    if op == "remove":
        from ..image.fsutil import rmtree_writable
        if os.path.lexists(args["path"]):
            rmtree_writable(args["path"])
        return None
    raise ValueError(f"unknown worker operation {op!r}")


class LocalWorker:
    """Single-id mode: the caller is root inside, so the work runs here."""
    in_userns = False

    def call(self, op, **args):
        if op == "diff":
            args["map_caller_to_root"] = True
        return _handle(op, args)

    def close(self):
        pass


class UsernsWorker:
    """A worker process inside a user namespace mapped like the build's sandboxes.

    It runs in a session of its own, so Ctrl-C on the terminal reaches only sbx.  When a call
    is interrupted there (KeyboardInterrupt while waiting for the reply), the worker's operation
    is still running: the next call, or close(), cancels it with CANCEL, which the worker turns
    into a KeyboardInterrupt of that operation only (its clean-up removes what it half wrote),
    and drops its reply.  The worker then serves the clean-up calls (removing trees with
    mapped owners) at once, and exits on close."""
    in_userns = True

    def __init__(self):
        from ..api import Popen
        self.pending = False
        self.p = Popen([sys.executable, "-m", "sandbox.runtime.nsworker"], rootfs="/", network="host",
                       userns="auto", namespaces=("user",),
                       env={"PYTHONPATH": _PKG_PARENT, "PYTHONDONTWRITEBYTECODE": "1",
                            **{k: os.environ[k] for k in ("SBX_PROGRESS_DELAY",) if k in os.environ}},
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def _cancel(self):
        """Stop the operation an interrupted call left running and drop its reply; a worker
        that does not answer within CANCEL_WAIT seconds is killed."""
        import select
        self.pending = False
        try:
            os.kill(self.p.pid, CANCEL)
        except ProcessLookupError:
            return
        if select.select([self.p.stdout], [], [], CANCEL_WAIT)[0]:
            try:
                if self.p.stdout.readline():
                    return
            except OSError:
                pass
        self.p.kill()
        self.p.wait()

    def call(self, op, **args):
        if self.pending:
            self._cancel()
        try:
            self.p.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
            self.p.stdin.flush()
            self.pending = True
            line = self.p.stdout.readline()
            self.pending = False
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            raise SandboxError("the user-namespace worker exited",
                               hint="check that newuidmap/newgidmap work for you (sbx run --rm --rootfs / true)")
        reply = json.loads(line)
        if "error" in reply:
            raise SandboxError(reply["error"], hint=reply.get("hint"))
        return reply.get("result")

    def close(self):
        try:
            if self.pending:
                self._cancel()
            self.p.stdin.close()
            self.p.wait(timeout=30)
        except Exception:
            self.p.kill()
            self.p.wait()
        except BaseException:  # Ctrl-C again: do not leave the worker behind
            self.p.kill()
            self.p.wait()
            raise


def start(mode):
    return UsernsWorker() if mode == "helper" else LocalWorker()


def unpack_mapped(store_root, image):
    """Unpack the layers of the image with id `image` with their owners, in a user namespace
    mapped to the subuid range.  A terminal shows each layer's progress on stderr."""
    w = start("helper")
    try:
        w.call("unpack", store=store_root, image=image)
    finally:
        w.close()


#: what cancels the worker's running operation (see UsernsWorker), and how long sbx waits for it
CANCEL = signal.SIGUSR1
CANCEL_WAIT = 2.0
_busy = False


def _on_cancel(signum, frame):
    if _busy:  # only an operation is interrupted, never the wait for the next request
        raise KeyboardInterrupt


def _serve():
    global _busy
    signal.signal(CANCEL, _on_cancel)
    for line in sys.stdin:
        req = json.loads(line)
        try:
            _busy = True
            try:
                result = _handle(req["op"], req["args"])
            finally:
                _busy = False
            reply = {"result": result}
        except KeyboardInterrupt:
            reply = {"error": f"{req['op']}: interrupted"}
        except SandboxError as e:
            reply = {"error": str(e), "hint": e.hint}
        except OSError as e:
            reply = {"error": f"{req['op']}: {e.filename or ''}: {e.strerror}".replace(": : ", ": ")}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _serve()
