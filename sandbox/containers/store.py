"""The containers of one data root: <data>/containers/<id>/ holds a container's record
(container.json, state.py), its locks, its writable layer (upper/, work/), its log and sockets.

Names are symlinks <data>/containers/names/<name> -> <id>, created with symlink(2), which fails
if the name exists: a name is never given twice, with no list of all records to read.  Creation,
renaming and removal hold <data>/containers/.lock while they change names, so a dangling name
(a creation killed half-way) is cleared by the next creator safely.  Records are written
atomically (a temporary file, fsync, rename); a foreground `--rm` run's record skips the fsync:
it is gone when the run ends.  A read-modify-write of one record (`update`) holds that
container's own lock (a flock on its directory), so the monitor's "exited" and a concurrent `stop`'s StopRequested
never overwrite each other."""
import errno
import fcntl
import os

from .. import journal
from ..runtime import flocks, paths
from . import state as _state
from .state import RECORD, ContainerError, NameConflict, NoSuchContainer, Record

_ADJ = ("brave", "calm", "eager", "fond", "keen", "lucid", "merry", "nimble", "quiet", "sharp",
        "tender", "vivid", "witty", "zen", "bold", "clever", "gentle", "jolly", "proud", "sunny")
_NOUN = ("turing", "hopper", "lovelace", "ritchie", "thompson", "torvalds", "knuth", "dijkstra",
         "liskov", "hamilton", "shannon", "babbage", "curie", "noether", "euler", "gauss",
         "kepler", "darwin", "tesla", "pike")


def generate_name(taken, rand=None):
    """Docker-style adjective_noun, chosen at random (as Docker's name generator does); after a
    few taken ones a number is appended, from a range that widens with every try.  The cost does
    not grow with the number of containers a user keeps: a store with thousands of old records
    tries a handful of names, never the whole list.  Never a name for which taken(name) is true."""
    rand = rand or (lambda n: int.from_bytes(os.urandom(4), "little") % n)
    tries = 0
    while True:
        name = f"{_ADJ[rand(len(_ADJ))]}_{_NOUN[rand(len(_NOUN))]}"
        if tries >= 8:
            name += str(rand(10 ** (1 + (tries - 8) // 8)))
        if not taken(name):
            return name
        tries += 1


def _version(st):
    return st.st_ino, st.st_mtime_ns, st.st_size


def _is_id(s):
    return len(s) == 64 and all(c in "0123456789abcdef" for c in s)


class ContainerStore:
    """The containers under `data_root` (default: the configured data directory)."""

    def __init__(self, data_root=None):
        self.data_root = data_root or paths.data_dir()
        self.root = os.path.join(self.data_root, "containers")
        self.names = os.path.join(self.root, "names")

    # --- locks ----------------------------------------------------------------------------------

    def lock(self):
        """Hold <data>/containers/.lock until the returned fd is closed (name changes take it)."""
        if not os.path.isdir(self.names):
            os.makedirs(self.root, mode=0o700, exist_ok=True)
            os.makedirs(self.names, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.root, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _record_lock(self, cid):
        """The container's own lock for read-modify-write: a flock on its directory (no file to
        create: on `sbx run`'s path every inode made costs)."""
        try:
            fd = os.open(os.path.join(self.root, cid), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NoSuchContainer(cid) from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    # --- reading --------------------------------------------------------------------------------

    def _read(self, cid):
        import json
        d = os.path.join(self.root, cid)
        try:
            with open(os.path.join(d, RECORD), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return self._legacy(cid)
        except (OSError, ValueError):
            return None

    def load(self, cid):
        """The container `cid` as the kernel sees it, or None (gone, or not a record)."""
        doc = self._read(cid)
        if doc is None or not isinstance(doc, dict) or doc.get("Id") != cid:
            return None
        rec = Record(os.path.join(self.root, cid), doc)
        if rec.status in _state.ACTIVE and not rec.supervised():
            # The supervisor writes its last state before it lets go of the lock: read again.
            doc = self._read(cid)
            if doc is None:
                return None
            rec = Record(rec.dir, doc)
            if rec.status in _state.ACTIVE and not rec.supervised():
                _state.mark_supervisor_dead(doc)
        return rec

    def ids(self):
        try:
            return [d for d in os.listdir(self.root) if _is_id(d)]
        except FileNotFoundError:
            return []

    def list(self):
        """Every container, newest first.  A stale AutoRemove record (its supervisor died
        before it could remove it) is removed here, as Docker's daemon does at start-up."""
        self._migrate()
        out = []
        for cid in self.ids():
            rec = self.load(cid)
            if rec is None:
                continue
            if _stale(rec):
                try:
                    self.remove_dir(rec)
                    continue
                except Exception:
                    pass  # shown as exited; `sbx rm` says why it cannot go
            out.append(rec)
        return sorted(out, key=lambda r: r.doc.get("Created") or "", reverse=True)

    def get(self, ref):
        """By full id, name or unique id prefix (Docker's order); NoSuchContainer otherwise."""
        self._migrate()
        ref = str(ref)
        if _is_id(ref):
            rec = self.load(ref)
            if rec is not None:
                return rec
        name = ref[1:] if ref.startswith("/") else ref
        if _state.valid_name(name):
            try:
                cid = os.readlink(os.path.join(self.names, name))
            except OSError:
                cid = None
            if cid is not None:
                rec = self.load(cid)
                if rec is not None and rec.name == name:
                    return rec
        if ref and all(c in "0123456789abcdef" for c in ref):
            hits = [cid for cid in self.ids() if cid.startswith(ref)]
            if len(hits) > 1:
                raise ContainerError(f"Multiple IDs found with provided prefix: {ref}",
                                     hint="give more of the id, or the container's name")
            if hits:
                rec = self.load(hits[0])
                if rec is not None:
                    return rec
        raise NoSuchContainer(ref)

    def name_taken(self, name):
        """Does a container have this name?  A name whose container is gone is free, and so is
        one of an AutoRemove container whose supervisor died, or of a private record whose
        creator died before its start (they are removed here: the caller holds the store's
        lock).  Only the record of an AutoRemove container (marked by a file beside it) is read:
        a user's many kept containers cost a readlink and two stats per name tried."""
        try:
            cid = os.readlink(os.path.join(self.names, name))
        except OSError:
            return False
        d = os.path.join(self.root, cid)
        if not os.path.isdir(d):
            return False
        if flocks.held(os.path.join(d, _state.MONITOR_LOCK)):
            return True
        if not os.path.exists(os.path.join(d, RECORD)):
            if not os.path.exists(os.path.join(d, "config.json")):  # (not a record from before the engine)
                self._rmtree_own(d)  # a private record never written: its creator died before the start
                return False
            return True
        if not os.path.exists(os.path.join(d, AUTOREMOVE_MARK)):
            return True  # a kept container: taken, without reading its record
        rec = self.load(cid)
        if rec is not None and _stale(rec):
            self._remove_locked(rec)
            return False
        return True

    # --- writing --------------------------------------------------------------------------------

    def create(self, doc, *, persist=True, layer=True):
        """Store the new container `doc` (state.new_doc) under a unique name: its own
        (NameConflict if taken) or a generated one when doc["Name"] is None.  `layer`: make the
        persistent upper/work directories and point the spec at them.  `persist=False`: a
        private record (a foreground --rm run's, a named Popen's), which starts at once: its
        monitor.lock is held from here (rec.monitor_fd, for Supervision) and it is first
        written, unsynced, when it starts: one write on `sbx run`'s path.  Returns the Record."""
        cid = doc["Id"]
        d = os.path.join(self.root, cid)
        self._migrate()
        fd = self.lock()
        try:
            name = doc["Name"]
            if name is None:
                name = generate_name(self.name_taken)
            else:
                name = _state.check_name(name)
                if self.name_taken(name):
                    raise NameConflict(
                        f'Conflict. The container name "/{name}" is already in use by container '
                        f'"{os.readlink(os.path.join(self.names, name))}"',
                        hint=f"remove (or rename) that container to be able to reuse that name ('sbx rm {name}')")
            doc["Name"] = name
            os.mkdir(d, 0o700)
            rec = Record(d, doc)
            try:
                if layer:
                    os.mkdir(os.path.join(d, "upper"), 0o755)
                    os.mkdir(os.path.join(d, "work"), 0o700)
                    doc["Spec"]["sbx"]["upper"] = os.path.join(d, "upper")
                if doc["HostConfig"].get("AutoRemove"):  # name_taken reads only these records
                    os.close(os.open(os.path.join(d, AUTOREMOVE_MARK), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
                if persist:
                    self.save(rec)
                else:
                    rec.monitor_fd = flocks.hold(os.path.join(d, _state.MONITOR_LOCK))
                link = os.path.join(self.names, name)
                try:
                    os.symlink(cid, link)
                except FileExistsError:  # a dangling name (name_taken said free)
                    os.unlink(link)
                    os.symlink(cid, link)
            except BaseException:  # e.g. a full disk: no half-made container left behind
                if rec.monitor_fd >= 0:
                    os.close(rec.monitor_fd)
                self._rmtree_own(d)
                raise
            journal.append(self, "create", rec)
            return rec
        finally:
            os.close(fd)

    def save(self, rec, sync=True):
        tmp = os.path.join(rec.dir, f".{RECORD}.{os.getpid()}.tmp")
        data = _state.dumps(rec.doc).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, os.path.join(rec.dir, RECORD))
            rec.version = _version(os.stat(os.path.join(rec.dir, RECORD)))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def update(self, rec, fn, sync=True, save=True):
        """Re-read `rec` under its record lock, apply fn(doc) (which may raise to abort), save,
        and return the updated Record.  When the file is still the one `rec` last wrote (its
        inode: every save renames a new file in), `rec`'s own document is used without reading
        it back: a supervisor on `sbx run`'s path updates its record without importing json."""
        fd = self._record_lock(rec.id)
        try:
            try:
                same = rec.version is not None and _version(os.stat(os.path.join(rec.dir, RECORD))) == rec.version
            except FileNotFoundError:
                raise NoSuchContainer(rec.name) from None
            doc = rec.doc if same else self._read(rec.id)
            if doc is None:
                raise NoSuchContainer(rec.name)
            fn(doc)
            new = rec if same else Record(rec.dir, doc)
            if save:
                self.save(new, sync=sync)
        finally:
            os.close(fd)
        return new

    def rename(self, rec, new):
        new = _state.check_name(new)
        fd = self.lock()
        try:
            if new == rec.name:
                raise NameConflict(f"Renaming a container with the same name as its current name",
                                   hint="give a new name")
            if self.name_taken(new):
                raise NameConflict(f'Conflict. The container name "/{new}" is already in use by container '
                                   f'"{os.readlink(os.path.join(self.names, new))}"',
                                   hint="remove (or rename) that container to be able to reuse that name")
            old = rec.name
            link = os.path.join(self.names, new)
            try:
                os.unlink(link)
            except FileNotFoundError:
                pass
            os.symlink(rec.id, link)
            try:
                rec = self.update(rec, lambda doc: doc.update(Name=new))
            except BaseException:
                os.unlink(link)
                raise
            self._unlink_name(old, rec.id)
            journal.append(self, "rename", rec, oldName="/" + old)
            return rec
        finally:
            os.close(fd)

    def _unlink_name(self, name, cid):
        link = os.path.join(self.names, name)
        try:
            if os.readlink(link) == cid:
                os.unlink(link)
        except OSError:
            pass

    def remove_dir(self, rec):
        """Delete the container's directory and name.  Files it made as other users (its
        upper layer) belong to subordinate ids: a worker in a user namespace with the same
        mapping removes them.  The caller has checked that nothing runs."""
        fd = self.lock()
        try:
            # The record's own lock too: an update() racing the removal (a second `rm -f`, a
            # start) waits, then finds no record, instead of writing one into the directory
            # being emptied.
            try:
                rfd = self._record_lock(rec.id)
            except NoSuchContainer:
                rfd = -1
            try:
                self._remove_locked(rec)
            finally:
                if rfd >= 0:
                    os.close(rfd)
        finally:
            os.close(fd)
        journal.append(self, "destroy", rec)

    def _remove_locked(self, rec):
        if os.path.isdir(os.path.join(rec.dir, "upper")) or os.path.isdir(os.path.join(rec.dir, "work")):
            try:  # a layer of our own files only (overlay's work/work is ours, mode 000): no worker;
                for sub in ("upper", "work"):  # the record goes last
                    self._rmtree_own(os.path.join(rec.dir, sub), chmod=True)
                self._rmtree_own(rec.dir)
            except PermissionError:  # files of subordinate ids: removed in a user namespace
                _remove_tree(rec.dir, rec.spec)
        else:
            self._rmtree_own(rec.dir)
        self._unlink_name(rec.name, rec.id)

    @staticmethod
    def _rmtree_own(d, chmod=False):
        """Remove a directory of our own files only: no worker needed, no shutil.  `chmod`: a
        directory of ours that denies us is opened up first; PermissionError where one is not ours."""
        try:
            entries = os.listdir(d)
        except FileNotFoundError:
            return
        except PermissionError:
            if not chmod or os.lstat(d).st_uid != os.geteuid():
                raise
            os.chmod(d, 0o700)
            entries = os.listdir(d)
        for n in entries:
            p = os.path.join(d, n)
            try:
                os.unlink(p)
            except IsADirectoryError:
                ContainerStore._rmtree_own(p, chmod)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(d)
        except FileNotFoundError:
            pass

    # --- records from before the engine ---------------------------------------------------------

    def _legacy(self, cid):
        """A record written before the engine (config.json: Created and times as floats)."""
        import json
        try:
            with open(os.path.join(self.root, cid, "config.json")) as f:
                old = json.load(f)
        except (OSError, ValueError):
            return None
        spec = old["Spec"]
        doc = _state.new_doc(spec, name=old["Name"], image=old.get("Image"), command=old.get("Command"))
        doc["Created"] = _state.rfc3339(int(float(old.get("Created") or 0) * 1e9))
        st = old.get("State") or {}
        if st.get("StartedAt"):
            doc["State"].update(Status="exited", StartedAt=_state.rfc3339(int(st["StartedAt"] * 1e9)),
                                ExitCode=st.get("ExitCode", 137) if st.get("FinishedAt") else 137)
            if st.get("FinishedAt"):
                doc["State"]["FinishedAt"] = _state.rfc3339(int(st["FinishedAt"] * 1e9))
            else:
                doc["State"]["Error"] = _state.MONITOR_DIED
        return doc

    def _migrate(self):
        """Once per store: give records from before the engine their name links and their
        container.json (the old config.json stays until the container is removed)."""
        if os.path.isdir(self.names) or not os.path.isdir(self.root):
            return
        fd = self.lock()  # creates names/: later calls return at once
        try:
            for cid in self.ids():
                d = os.path.join(self.root, cid)
                if os.path.exists(os.path.join(d, RECORD)):
                    continue
                doc = self._legacy(cid)
                if doc is None:
                    continue
                self.save(Record(d, doc))
                try:
                    os.symlink(cid, os.path.join(self.names, doc["Name"]))
                except FileExistsError:
                    pass
        finally:
            os.close(fd)


AUTOREMOVE_MARK = "autoremove"  # beside the record of an AutoRemove container


def _stale(rec):
    """An AutoRemove container whose supervisor died before it could remove it."""
    return rec.auto_remove and (rec.state.get("Error") == _state.MONITOR_DIED
                                or (rec.status == "removing" and not rec.supervised()))


def _remove_tree(d, spec):
    from ..errors import SandboxError
    from ..runtime import userns_worker
    w = userns_worker.start(spec["sbx"].get("userns"))
    try:
        w.call("sandbox.image.store:remove_path", path=d)
    except OSError as e:
        raise SandboxError(f"cannot remove {d}: {e.strerror}", hint="remove it by hand") from None
    finally:
        w.close()
    if os.path.exists(d):
        raise SandboxError(f"cannot remove {d} completely", hint="remove it by hand")
