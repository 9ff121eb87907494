"""Containers that outlive their process (`sbx run` without --rm): a directory each under
<data>/containers/<id> holding config.json (the runtime spec plus Docker-like metadata) and
the overlay's upper/ and work/ directories, which keep the container's changes.

While a container runs, the sbx process that runs it holds an exclusive flock on its
running.lock: `ps` asks the kernel, so a killed sbx never leaves a container "running".
Creation, renaming and removal hold <data>/containers/.lock, and so does a `--rm` sandbox's
name claim (names.py) while it checks the records: a name is never both a record's and a
running `--rm` sandbox's."""
import fcntl
import json
import os
import shutil
import time

from ..errors import SandboxError, UsageError
from . import flocks, paths

_ADJ = ("brave", "calm", "eager", "fond", "keen", "lucid", "merry", "nimble", "quiet", "sharp",
        "tender", "vivid", "witty", "zen", "bold", "clever", "gentle", "jolly", "proud", "sunny")
_NOUN = ("turing", "hopper", "lovelace", "ritchie", "thompson", "torvalds", "knuth", "dijkstra",
         "liskov", "hamilton", "shannon", "babbage", "curie", "noether", "euler", "gauss",
         "kepler", "darwin", "tesla", "pike")


class Container:
    def __init__(self, root, doc):
        self.dir = root
        self.doc = doc

    id = property(lambda self: self.doc["Id"])
    name = property(lambda self: self.doc["Name"])
    spec = property(lambda self: self.doc["Spec"])
    upper = property(lambda self: os.path.join(self.dir, "upper"))

    def running(self):
        return flocks.held(os.path.join(self.dir, "running.lock"))

    def status(self, now=None):
        now = now or time.time()
        st = self.doc.get("State", {})
        if self.running():
            return f"Up {_ago(now - st.get('StartedAt', now))}"
        if st.get("FinishedAt"):
            return f"Exited ({st.get('ExitCode', 0)}) {_ago(now - st['FinishedAt'])} ago"
        if st.get("StartedAt"):
            return "Exited (unknown)"  # its sbx was killed
        return "Created"


def _generate_name(seed, taken):
    """Docker-style adjective_noun: every one of the 400 pairs (the noun first chosen by the seed),
    then with a number appended; never a name for which taken(name) is true."""
    for i in range(len(_ADJ) * len(_NOUN)):
        name = f"{_ADJ[i % len(_ADJ)]}_{_NOUN[(i // len(_ADJ) + seed) % len(_NOUN)]}"
        if not taken(name):
            return name
    n = 2
    while taken(f"{name}{n}"):
        n += 1
    return f"{name}{n}"


def _ago(sec):
    sec = max(0, int(sec))
    for unit, n in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if sec >= n:
            v = sec // n
            return f"{v} {unit[:-1] if v == 1 else unit}"
    return "Less than a second" if sec < 1 else f"{sec} seconds"


class Store:
    def __init__(self):
        self.root = os.path.join(paths.data_dir(), "containers")

    def lock(self):
        """Hold <data>/containers/.lock (until the returned fd is closed): creation, removal
        and name claims take it."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _load(self, cid):
        try:
            with open(os.path.join(self.root, cid, "config.json")) as f:
                return Container(os.path.join(self.root, cid), json.load(f))
        except (OSError, ValueError):
            return None

    def list(self):
        try:
            ids = [d for d in os.listdir(self.root) if len(d) == 64]
        except FileNotFoundError:
            return []
        cs = [c for c in map(self._load, ids) if c is not None]
        return sorted(cs, key=lambda c: c.doc.get("Created", 0), reverse=True)

    def get(self, ref):
        """By name, full id or unique id prefix (Docker's rules)."""
        cs = self.list()
        for c in cs:
            if c.name == ref or c.id == ref:
                return c
        matches = [c for c in cs if len(ref) >= 3 and c.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"container id prefix {ref!r} is ambiguous")
        raise UsageError(f"no such container: {ref}", hint="'sbx ps -a' lists containers")

    def create(self, spec, name, image, command):
        """Register a container for `spec` (whose id it takes) and return it; its upper/work
        directories are created empty."""
        fd = self.lock()
        try:
            from . import names
            taken = {c.name for c in self.list()}
            if name is None:
                name = _generate_name(int(spec["sbx"]["id"][:4], 16),
                                      lambda n: n in taken or names.in_use(n))
            elif name in taken:
                raise UsageError(f'the container name "{name}" is already in use',
                                 hint=f"remove that container ('sbx rm {name}') or choose another name")
            elif names.in_use(name):
                raise UsageError(f'the container name "{name}" is already in use by a running sandbox',
                                 hint="choose another name, or stop that sandbox first")
            cid = spec["sbx"]["id"]
            d = os.path.join(self.root, cid)
            os.mkdir(d, 0o700)
            try:
                os.mkdir(os.path.join(d, "upper"), 0o755)
                os.mkdir(os.path.join(d, "work"), 0o700)
                spec["sbx"]["upper"] = os.path.join(d, "upper")
                doc = {"Id": cid, "Name": name, "Created": time.time(), "Image": image or spec["root"]["path"],
                       "Command": command, "State": {}, "Spec": spec}
                c = Container(d, doc)
                self.save(c)
            except BaseException:  # e.g. a full disk: no half-made container left behind
                shutil.rmtree(d, ignore_errors=True)
                raise
            names.handed_over(name)
            return c
        finally:
            os.close(fd)

    def save(self, c):
        tmp = os.path.join(c.dir, f"config.json.{os.getpid()}.tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(c.doc, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(c.dir, "config.json"))
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def mark_running(self, c, pid):
        """Hold the running lock (until the returned fd is closed) and record the start."""
        try:
            fd = flocks.hold(os.path.join(c.dir, "running.lock"))
        except BlockingIOError:
            raise UsageError(f"container {c.name} is already running") from None
        c.doc["State"] = {"StartedAt": time.time(), "Pid": pid}
        self.save(c)
        return fd

    def mark_exited(self, c, code):
        c.doc["State"].update({"FinishedAt": time.time(), "ExitCode": code})
        self.save(c)

    def remove(self, c, force=False):
        if c.running():
            if not force:
                raise UsageError(f"container {c.name} is running", hint=f"stop it first, or use 'sbx rm -f {c.name}'")
            pid = c.doc.get("State", {}).get("Pid")
            if pid:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            # The sbx that runs it lets go of the lock once it has reaped it; only then is
            # its overlay gone and its directories free to remove.
            deadline = time.monotonic() + 20
            while c.running():
                if time.monotonic() > deadline:
                    raise SandboxError(f"container {c.name} did not stop", hint="try again")
                time.sleep(0.02)
        fd = self.lock()
        try:
            _remove_tree(c.dir, c.spec)
        finally:
            os.close(fd)


def _remove_tree(d, spec):
    """Files a container made as other users belong to subordinate ids the caller cannot
    delete directly: the tree is removed by a worker in a user namespace with the same
    mapping (in-process in single-id mode)."""
    from . import nsworker
    w = nsworker.start(spec["sbx"].get("userns"))
    try:
        w.call("remove", path=d)
    except OSError as e:
        raise SandboxError(f"cannot remove {d}: {e.strerror}", hint="remove it by hand") from None
    finally:
        w.close()
    if os.path.exists(d):
        raise SandboxError(f"cannot remove {d} completely", hint="remove it by hand")
