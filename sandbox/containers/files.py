"""Files in and out of containers: `cp` both ways, `export`, get_archive/put_archive, sizes.

Every path inside a container is resolved inside its root (image/mergedview.View: an absolute
symlink restarts at the container's root, `..` stops there), never by a host lookup.  The work
runs in a worker process inside a user namespace with the container's id mapping, so owners are
the container's: a file of uid 1000 there is uid 1000 in the tar, and a tar entry of uid 1000
lands as the container's 1000.

    stopped container: a fresh user namespace with the container's mapping; reads the merged
                       view of its upper directory over its image layers, writes into the upper
                       (parent directories copied up with the mode and owner they had below)
    running container: the worker joins the container's own user namespace (where the caller
                       is the owner, so it has every capability there), chroots into
                       /proc/PID/root (the mounted root, volumes included) once the pid is
                       checked against its start time, and works there: a link the container
                       swaps in while we work can only lead back into the container itself
    export:            always the merged view of upper + layers (Docker's: no volumes)

The worker: `python -m sandbox.containers.files REQUEST-JSON`, tar data on its stdin (put) or
stdout (get, export), one JSON line of replies on the control pipe named in the request (for
get: the path's stat first, then the final status).  Its own stderr is the caller's (warnings).

Archives given to a container are hostile until proven otherwise (image/unpack.py's rules):
absolute names and `..` are refused, no entry is written through a symbolic link (one in the
archive or one already there), a hardlink must point to a file of the same archive, device
nodes are skipped with a warning, a directory never replaces a file nor a file a directory
(Docker's NoOverwriteDirNonDir).
"""
from __future__ import annotations

import errno
import json
import os
import stat
import sys
import tarfile
import time

from ..errors import SandboxError, UsageError
from . import state as _state

CHUNK = 1 << 20
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: what the worker may do inside the namespace: read and write any mapped file, chroot, reach
#: /proc/PID/root of a container process running as another user
_WORKER_CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "SYS_CHROOT",
                "SYS_PTRACE", "MKNOD", "SETFCAP"]
#: mounted kernel filesystems whose contents a running container's archive leaves out
_PSEUDO_FS = {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "securityfs", "debugfs", "tracefs",
              "fusectl", "configfs", "binfmt_misc", "pstore", "bpf"}


class CopyError(SandboxError):
    """A cp/archive request the container's files refuse: exit 1, as Docker's daemon errors."""
    exit_code = 1


# --- what a container's files are ---------------------------------------------------------------

class Place:
    """Where a container's files are: its record's name, upper directory, image layers, user
    namespace mode, and (running) the pid and its start time."""

    def __init__(self, name, upper, lowers, userns, pid=None, pid_start=None):
        self.name, self.upper, self.lowers, self.userns = name, upper, list(lowers), userns
        self.pid, self.pid_start = pid, pid_start

    @classmethod
    def find(cls, where, ref):
        """A Place for `ref` (a Place, a container record, or a name / id / id prefix) in
        `where` (a ContainerStore, a data root, or None: the configured one)."""
        if isinstance(ref, Place):
            return ref
        if isinstance(ref, str):
            from .lifecycle import store
            ref = store(where).get(ref)
        return cls.of(ref, getattr(ref, "status", "") in ("running", "paused"))

    @classmethod
    def of(cls, rec, running):
        """From a container record (Docker's field names, `Spec.sbx` holding the layers)."""
        doc = rec if isinstance(rec, dict) else getattr(rec, "doc", None) or rec.__dict__
        spec = doc.get("Spec") or {}
        x = spec.get("sbx") or {}
        st = doc.get("State") or {}
        name = (doc.get("Name") or "").lstrip("/")
        upper = getattr(rec, "upper", None) or x.get("upper")
        if not upper:
            raise CopyError(f"container {name} has no writable layer to copy from or to")
        return cls(name, upper, x.get("lowers") or [], x.get("userns") or "single",
                   st.get("Pid") if running else None, st.get("PidStart") if running else None)


# --- the worker (inside the namespace) ------------------------------------------------------------

def _reply(fd, doc):
    os.write(fd, (json.dumps(doc) + "\n").encode())


def _serve(req):
    """Run one request; returns the final reply."""
    # Everything the work needs is imported before any chroot (the host's files are gone then).
    from ..build import placement  # noqa: F401
    from ..image import mergedview, unpack, whiteout  # noqa: F401
    from ..runtime import inroot  # noqa: F401
    ctl = req["ctl"]
    roots = req.get("roots")
    skip = set()
    if req.get("pid"):
        skip = _enter_root(req["pid"], req["pid_start"])
        roots = ["/"]
    op = req["op"]
    if op == "get":
        out = os.fdopen(1, "wb", buffering=0)
        return _get(roots, req["path"], req.get("follow", False), out, lambda s: _reply(ctl, {"stat": s}), skip,
                    req.get("name", ""))
    if op == "export":
        out = os.fdopen(1, "wb", buffering=0)
        write_tar(roots, [], ".", out, skip)
        return {"ok": True}
    if op == "put":
        src = os.fdopen(0, "rb", buffering=0)
        return _put(roots, req["path"], src, req)
    raise ValueError(f"unknown files operation {op!r}")


def _enter_root(pid, pid_start):
    """chroot into the running container's root (/proc/PID/root, its mounts included) after
    checking that PID is still the container's process; returns the pseudo-filesystem mount
    points to leave out (paths inside the container)."""
    fd = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        skip = set()
        with open(f"/proc/{pid}/mountinfo") as f:
            for line in f:
                left, _sep, right = line.partition(" - ")
                if right.split(" ", 1)[0] in _PSEUDO_FS:
                    skip.add(left.split()[4].encode().decode("unicode_escape"))
        if pid_start is not None and _state.pid_start(pid) != int(pid_start):
            raise CopyError("the container stopped while copying", hint="try again")
        os.fchdir(fd)
        os.chroot(".")
        os.chdir("/")
    finally:
        os.close(fd)
    return skip


def _tree_size(path):
    """Bytes of the files below `path` (a hardlinked file once), as Docker's SizeRw."""
    total = 0
    seen = set()
    stack = [path]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:
            continue
        with it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    stack.append(e.path)
                    continue
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


# --- reading: a path of a view -> tar -------------------------------------------------------------

_GO_TYPE = ((stat.S_ISDIR, 1 << 31), (stat.S_ISLNK, 1 << 27), (stat.S_ISFIFO, 1 << 25),
            (stat.S_ISSOCK, 1 << 24), (stat.S_ISBLK, 1 << 26), (stat.S_ISCHR, (1 << 26) | (1 << 21)))


def go_mode(mode):
    """A stat mode as Go's os.FileMode bits (Docker's ContainerPathStat.mode)."""
    m = stat.S_IMODE(mode) & 0o777
    for test, bit in _GO_TYPE:
        if test(mode):
            m |= bit
    if mode & stat.S_ISUID:
        m |= 1 << 23
    if mode & stat.S_ISGID:
        m |= 1 << 22
    if mode & stat.S_ISVTX:
        m |= 1 << 20
    return m


def _rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(t))) + f".{int((t % 1) * 1e9):09d}Z"


def _base(path):
    """Docker's name for the top entry of an archive of `path`: the base of the path as given,
    '.' for 'DIR/.' (the directory's contents) and for '/'."""
    p = path.rstrip("/")
    if not p or path.endswith("/.") or p == ".":
        return "."
    return p.rsplit("/", 1)[-1]


def _resolve(view, path, follow):
    """(canonical parts, entry) of `path` in the view: the final symlink followed when
    `follow`, or when the path ends in '/' or '/.' (Docker's rule)."""
    follow = follow or path.endswith("/") or path.endswith("/.")
    try:
        r = view.resolve(path, follow=follow, what=path)
    except NotADirectoryError:
        raise FileNotFoundError(errno.ENOENT, "not a directory", path) from None
    return r.parts, r.take()


def _get(roots, path, follow, out, send_stat, skip=(), name=""):
    from ..image.mergedview import View
    with View(roots) as view:
        try:
            parts, e = _resolve(view, path, follow)
        except FileNotFoundError:
            parts, e = [], None
        if e is None:
            raise CopyError(f"Could not find the file {path} in container {name}",
                            hint=f"check the path ('sbx exec {name or 'NAME'} ls -la DIR' lists a directory)")
        try:
            if (path.endswith("/") or path.endswith("/.")) and not e.is_dir:
                raise CopyError(f"{path}: not a directory")
            st = e.st
            send_stat({"name": _base(path) if _base(path) != "." else (parts[-1] if parts else "/"),
                       "size": st.st_size, "mode": go_mode(st.st_mode), "mtime": _rfc3339(st.st_mtime),
                       "linkTarget": "/" + "/".join(parts) if e.is_link else ""})
        finally:
            e.close()
        write_tar(roots, parts, _base(path), out, skip, follow_top=follow)
    return {"ok": True}


class _Exact:
    """Exactly `size` bytes of a file that may change while it is read (a running container's):
    cut when it grew, padded with zeros when it shrank, so the tar stays well-formed."""

    def __init__(self, f, size):
        self.f, self.left = f, size

    def read(self, n=-1):
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n) or b"\0" * n
        self.left -= len(data)
        return data


def write_tar(roots, parts, name, out, skip=(), follow_top=False):
    """Write the tar of the entry at canonical `parts` of the view over `roots` (a directory:
    with everything below it), its top entry named `name` ('.' for contents-only)."""
    from ..image.mergedview import View
    links = {}
    with View(roots) as view, tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        top = view.resolve("/".join(parts), follow=follow_top).take() if parts else view.entry([])
        if top is None:
            raise CopyError("/" + "/".join(parts) + ": no such file or directory")
        try:
            _add(tf, top, name if name != "." else ".", links)
            if top.is_dir and not _skipped(parts, skip):
                for sub, e in view.walk(parts, top):
                    rel = "/".join(sub[len(parts):])
                    _add(tf, e, rel if name == "." else f"{name}/{rel}", links)
                    if e.is_dir and _skipped(sub, skip):
                        _prune_walk(e)
        finally:
            top.close()
        _end(tf)


def _end(tf):
    """End the archive as Go's archive/tar does (two zero blocks), not padded to tarfile's
    10 KiB records: the bytes cp reports are Docker's."""
    tf.fileobj.write(tarfile.NUL * (tarfile.BLOCKSIZE * 2))
    tf.closed = True
    tf.fileobj.close()  # the stream's buffer goes out; the caller's file stays open


def _skipped(parts, skip):
    return bool(skip) and "/" + "/".join(parts) in skip


def _prune_walk(e):
    """Leave out what is below a pseudo-filesystem mount: its dir fds closed, walk sees nothing."""
    for fd in e.dirs:
        os.close(fd)
    e.dirs = []


def _add(tf, e, name, links):
    st = e.st
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.mtime = int(st.st_mtime)  # whole seconds, as moby's archive (no PAX record for it)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, e.readlink()
        tf.addfile(info)
    elif stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type, info.linkname = tarfile.LNKTYPE, links[key]
            tf.addfile(info)
            return
        if st.st_nlink > 1:
            links[key] = name
        info.size = st.st_size
        with os.fdopen(e.open(), "rb") as f:
            tf.addfile(info, _Exact(f, st.st_size))
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        tf.addfile(info)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
        tf.addfile(info)
    # sockets are left out, as Docker's archive does


# --- writing: tar -> a directory of a view --------------------------------------------------------

def clean_name(name):
    """Components of a member name; None for the archive root.  ValueError for absolute names,
    '..' and NUL (image/unpack.py's rule)."""
    from ..image.unpack import clean_name as _clean
    return _clean(name)


class Extractor:
    """Unpack archive members below the directory at canonical `dest` of a placer's view
    (build.placement._Placer: the upper over its layers, or one real root).  `owners`: keep the
    members' uid/gid (else what the writer creates: the container's root, or the caller)."""

    def __init__(self, placer, dest, *, owners=False, rebase=None, warn=None, label="archive", single_id=False):
        self.p, self.dest, self.owners, self.rebase = placer, list(dest), owners, rebase
        self.single_id = single_id  # one id mapped: every file is its, owners cannot be kept
        self.warn = warn or (lambda m: sys.stderr.write(f"sbx: warning: {m}\n"))
        self.label = label
        self.checked = set()   # canonical parent paths known to be real directories
        self.files = {}        # member path -> canonical parts of a regular file we wrote
        self.dir_owner = []

    def _err(self, entry, why):
        return CopyError(f"{self.label}: refusing entry {entry!r}: {why}",
                         hint="archives may not leave the destination or write through links")

    def _name(self, name):
        if self.rebase:
            old, new = self.rebase
            n = name[2:] if name.startswith("./") else name
            if old == ".":  # the contents of a directory ('DIR/.', '/'): all of them go below `new`
                n = n.rstrip("/")
                return new if n in ("", ".") else f"{new}/{n}"
            if n == old or n.startswith(old + "/"):
                return new + n[len(old):]
        return name

    def _parent(self, entry, parts):
        """The directory `parts` (canonical, below dest) as a real directory: refused when a
        symbolic link or a non-directory is on the way."""
        key = tuple(parts)
        if key in self.checked:
            return
        try:
            r = self.p.view.resolve("/".join(parts), follow=False)
        except NotADirectoryError as e:
            raise self._err(entry, f"{e.filename} is not a directory") from None
        try:
            if r.parts != list(parts):
                raise self._err(entry, "its parent path goes through a symbolic link")
            if r.entry is not None and not r.entry.is_dir:
                what = "a symbolic link" if r.entry.is_link else "not a directory"
                raise self._err(entry, f"its parent /{'/'.join(parts)} is {what}")
        finally:
            r.close()
        self.p.ensure_dir(list(parts))
        self.checked.add(key)

    def _forget(self, parts):
        n = len(parts)
        self.checked = {k for k in self.checked if k[:n] != tuple(parts)}

    def member(self, tf, m):
        entry = m.name
        try:
            rel = clean_name(self._name(entry))
        except ValueError as e:
            raise self._err(entry, str(e)) from None
        if rel is None:
            if m.isdir() and self.owners:
                self.dir_owner.append((list(self.dest), m.uid, m.gid))
            return
        full = self.dest + rel
        parent, name = full[:-1], full[-1]
        self._parent(entry, parent)
        existing = self.p.view.entry(full)
        was_dir = existing is not None and existing.is_dir
        if existing is not None:
            existing.close()
        if m.isdir():
            if existing is not None and not was_dir:
                raise CopyError(f"cannot overwrite non-directory /{'/'.join(full)} with directory {entry!r}",
                                hint="remove it first, or copy to another path")
            if existing is None:
                os.mkdir(name, 0o700, dir_fd=self.p._replace(parent, name))
                if len(self.p.view.fds) > 1:
                    # over image layers: a new directory shows nothing of what they had there
                    # (a name the container deleted stays deleted below it)
                    from ..image import whiteout as wh
                    os.setxattr(f"/proc/self/fd/{self.p.ensure_dir(full)}", wh.OPAQUE_XATTR, b"y")
            self.p.ensure_dir(full)
            self.p.dir_done(full, stat.S_IMODE(m.mode))
            if self.owners:
                self.dir_owner.append((full, m.uid, m.gid))
            return
        if was_dir:
            raise CopyError(f"cannot overwrite directory /{'/'.join(full)} with non-directory {entry!r}",
                            hint="remove it first, or copy to another path")
        if m.ischr() or m.isblk():
            self.warn(f"{self.label}: skipping device node {entry!r} ({m.devmajor}:{m.devminor}): "
                      "devices cannot be created here")
            return
        self._forget(full)
        if m.isreg():
            src = tf.extractfile(m)
            self.p.write(parent, name, iter(lambda: src.read(CHUNK), b""), stat.S_IMODE(m.mode),
                         (int(m.mtime * 1e9),) * 2)
            self.files["/".join(rel)] = full
        elif m.issym():
            if not m.linkname:
                raise self._err(entry, "symbolic link with an empty target")
            self.p.symlink(parent, name, m.linkname)
        elif m.islnk():
            self._hardlink(entry, m, parent, name)
        elif m.isfifo():
            os.mkfifo(name, 0o600, dir_fd=self.p._replace(parent, name))
            from ..build.placement import chmod_at
            chmod_at(self.p.ensure_dir(parent), name, stat.S_IMODE(m.mode))
        else:
            self.warn(f"{self.label}: skipping entry {entry!r} of unsupported type {m.type!r}")
            return
        if self.owners:
            self._chown(self.p.ensure_dir(parent), name, m.uid, m.gid, entry)

    def _hardlink(self, entry, m, parent, name):
        try:
            t = clean_name(self._name(m.linkname))
        except ValueError as e:
            raise self._err(entry, f"hardlink target {m.linkname!r}: {e}") from None
        target = self.files.get("/".join(t or []))
        if target is None:
            raise self._err(entry, f"hardlink target {m.linkname!r} is not a file of this archive")
        tdir = self.p.ensure_dir(target[:-1])
        os.link(target[-1], name, src_dir_fd=tdir, dst_dir_fd=self.p._replace(parent, name), follow_symlinks=False)

    def _chown(self, dfd, name, uid, gid, entry):
        try:
            os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
        except OSError as e:
            if e.errno == errno.EINVAL and self.single_id:
                return
            if e.errno == errno.EINVAL:
                raise CopyError(f"{self.label}: entry {entry!r}: owner {uid}:{gid} is not mapped in the container",
                                hint="without -a, copied files belong to the container's root") from None
            raise

    def finish(self):
        self.p.finish()
        for parts, uid, gid in reversed(self.dir_owner):
            if not parts:
                continue
            dfd = self.p.ensure_dir(parts[:-1])
            self._chown(dfd, parts[-1], uid, gid, "/".join(parts))


def extract(placer, dest, src, **kw):
    """Unpack the tar stream `src` below canonical `dest` (see Extractor)."""
    x = Extractor(placer, dest, **kw)
    try:
        with tarfile.open(fileobj=src, mode="r|", errorlevel=2) as tf:
            for m in tf:
                x.member(tf, m)
    except (tarfile.TarError, EOFError) as e:
        raise CopyError(f"{x.label}: not a valid tar stream: {e}", hint="give a tar archive (uncompressed)") from None
    x.finish()


def destination(view, path, src_is_dir, src_base, *, stream, where, missing=None):
    """Docker's cp rules (archive.PrepareArchiveCopy) for copying a source (a directory or
    not, named `src_base`) to `path` of `view`: (canonical directory to unpack into, rebase
    (old, new) or None).  `stream`: the source is a tar stream (`-`), which goes into an
    existing directory as it is."""
    follow_parts, e = _resolve(view, path, True)
    exists = e is not None
    is_dir = exists and e.is_dir
    if e is not None:
        e.close()
    if stream:
        if not is_dir:
            raise CopyError(f'destination "{where}" must be a directory', hint="copy a tar stream into a directory")
        return follow_parts, None
    if exists and is_dir:
        return follow_parts, None
    if exists and src_is_dir:
        raise CopyError(f"cannot copy directory: {where} is not a directory",
                        hint="give a directory (or a path that does not exist yet) as the destination")
    parent, base = follow_parts[:-1], (follow_parts[-1] if follow_parts else "")
    if not exists and not src_is_dir and (path.endswith("/") or path.endswith("/.")):
        raise CopyError(f"no such directory: {where}", hint="the destination directory must exist")
    r = view.resolve("/".join(parent), follow=True)
    ok = r.entry is not None and r.entry.is_dir
    r.close()
    if not ok:
        raise missing("/" + "/".join(parent)) if missing else \
            CopyError(f"no such directory: /{'/'.join(parent)}", hint="create the parent directory first")
    return parent, (src_base, base)


def _put(roots, path, src, req):
    from ..build.placement import _Placer
    from ..image.mergedview import View
    p = _Placer(roots[0], roots[1:], None, None, "cp")
    try:
        with View(roots) as view:
            name = req.get("name", "")
            dest, rebase = destination(
                view, path, req.get("src_is_dir", False), req.get("src_base", ""), stream=req.get("stream", False),
                where=req.get("where", path),
                missing=lambda d: CopyError(f"Could not find the file {d} in container {name}",
                                            hint="the destination's parent directory must exist"))
        extract(p, dest, src, owners=req.get("owners", False), rebase=rebase, label=req.get("label", "archive"),
                single_id=req.get("single_id", False))
    finally:
        p.close()
    return {"ok": True}


def _main(argv):
    req = json.loads(argv[0])
    ctl = req["ctl"]
    try:
        reply = _serve(req)
    except SandboxError as e:
        reply = {"error": str(e), "hint": e.hint}
    except (ValueError, KeyError, TypeError) as e:  # a bug or a bad request: still one answer
        reply = {"error": f"internal error in the file worker: {type(e).__name__}: {e}"}
    except OSError as e:
        name = f"{e.filename}: " if e.filename else ""
        reply = {"error": f"{name}{e.strerror or e}", "errno": e.errno}
    except KeyboardInterrupt:
        reply = {"error": "interrupted"}
    try:
        sys.stdout.flush()
        _reply(ctl, reply)
    except OSError:
        pass  # the caller is gone (it stopped reading): nobody to answer
    return 0


# --- the caller's side -------------------------------------------------------------------------------

class _Worker:
    """One worker process for one request, supervised by runtime.process.SandboxProcess."""

    def __init__(self, place, req, stdin=-1, stdout=-1):
        from ..runtime import spec as _spec
        from ..runtime.process import SandboxProcess
        r, w = os.pipe2(os.O_CLOEXEC)
        self.ctl = os.fdopen(r, "rb")
        self.proc = None
        req = dict(req, ctl=w, name=place.name, single_id=place.userns != "helper")
        running = place.pid is not None
        if running:
            req.update(pid=place.pid, pid_start=place.pid_start)
        else:
            req["roots"] = [place.upper, *place.lowers]
        env = {"PYTHONPATH": _PKG_PARENT, "PYTHONDONTWRITEBYTECODE": "1"}
        s = _spec.build([sys.executable, "-m", "sandbox.containers.files", json.dumps(req)], rootfs="/",
                        network="host", namespaces=("user",), container_id=os.urandom(32).hex(), env=env,
                        userns="single" if place.userns != "helper" else None)
        caps = s["process"]["capabilities"]
        for k in ("bounding", "effective", "permitted"):
            caps[k] = list(_WORKER_CAPS)
        s["linux"].pop("seccomp", None)
        if running:
            s["linux"]["namespaces"] = [{"type": "user", "path": f"/proc/{place.pid}/ns/user"}]
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        try:
            stdio = (null if stdin < 0 else stdin, null if stdout < 0 else stdout, -1)
            self.proc = SandboxProcess.launch(s, stdio=stdio, keep_fds=(w,), hold=())
        except BaseException:
            self.ctl.close()
            raise
        finally:
            os.close(w)
            os.close(null)

    def reply(self):
        line = self.ctl.readline()
        if not line:
            return None
        return json.loads(line)

    def finish(self, reply=None):
        """Wait for the worker; raise its error."""
        try:
            if reply is None:
                reply = self.reply()
        finally:
            self.close()
        if reply is None:
            raise CopyError("the file worker ended without an answer",
                            hint="check that newuidmap/newgidmap work for you (sbx run --rm --rootfs / true)")
        if "error" in reply:
            raise CopyError(reply["error"], hint=reply.get("hint"))
        return reply

    def close(self):
        """Reap the worker (Ctrl-C while waiting kills it first)."""
        if self.proc is not None:
            try:
                self.proc.wait(forward=())
            finally:
                self.proc.close()
                self.proc = None
        self.ctl.close()

    def kill(self):
        if self.proc is not None:
            self.proc.kill()


def _stream(place, req, out_fd=None):
    """Start a reading worker; returns (worker, read end of its stdout or None)."""
    if out_fd is not None:
        return _Worker(place, req, stdout=out_fd), None
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        wk = _Worker(place, req, stdout=w)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return wk, r


def get_archive(where, ref, path, follow=False):
    """(iterator of tar bytes, stat dict) for `path` in the container `ref` (a name, an id, a
    record) of `where` (a store, a data root, None): Docker's GET /containers/{id}/archive.  The
    iterator raises CopyError if the worker fails midway; closing it early stops the worker."""
    place = Place.find(where, ref)
    wk, r = _stream(place, {"op": "get", "path": path, "follow": follow})
    first = wk.reply()
    if first is None or "stat" not in first:
        os.close(r)
        wk.finish(first)
        raise CopyError("the file worker sent no stat")

    return _Archive(wk, r), first["stat"]


class _Archive:
    """The tar bytes a worker writes, chunk by chunk; close() (or an early end) stops the worker
    whether or not reading began.  A failure of the worker is raised at the end."""

    def __init__(self, wk, fd):
        self.wk, self.fd = wk, fd

    def __iter__(self):
        return self

    def __next__(self):
        if self.fd < 0:
            raise StopIteration
        try:
            data = os.read(self.fd, CHUNK)
        except BaseException:
            self.close()
            raise
        if data:
            return data
        os.close(self.fd)
        self.fd = -1
        self.wk.finish()
        raise StopIteration

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.wk.kill()
            self.wk.close()

    def __del__(self):
        self.close()


def put_archive(where, ref, path, data, *, owners=True, label="archive"):
    """Unpack the tar `data` (bytes, a file object, or an iterable of bytes) into the existing
    directory `path` of the container `ref`: Docker's PUT /containers/{id}/archive, owners kept
    as the archive gives them (inside the container's id mapping)."""
    place = Place.find(where, ref)
    req = {"op": "put", "path": path, "stream": True, "owners": owners, "label": label,
           "where": f"{place.name}:{path}"}

    def feed(write):
        if isinstance(data, (bytes, bytearray, memoryview)):
            write(bytes(data))
        elif hasattr(data, "read"):
            for chunk in iter(lambda: data.read(CHUNK), b""):
                write(chunk)
        else:
            for chunk in data:
                write(chunk)
    _put_with(place, req, feed)


def _put_with(place, req, feed):
    """Run a put worker, `feed(write)` giving it the tar; the bytes given."""
    r, w = os.pipe2(os.O_CLOEXEC)
    sent = [0]
    try:
        wk = _Worker(place, req, stdin=r)
    except BaseException:
        os.close(w)
        raise
    finally:
        os.close(r)
    try:
        with os.fdopen(w, "wb") as f:
            def write(b):
                sent[0] += len(b)
                return f.write(b)
            try:
                feed(write)
            except BrokenPipeError:
                pass  # the worker stopped reading: its answer says why
    except BrokenPipeError:
        pass
    except BaseException:
        wk.kill()
        wk.close()
        raise
    wk.finish()
    return sent[0]


CHANGE_KINDS = {"C": 0, "A": 1, "D": 2}  # Docker's numbers for a change's kind


def changes(where, ref):
    """What the container changed in its image: (kind, path) pairs, kind A, C or D."""
    from ..image.layer import changes as _changes
    rec = where.get(ref)
    return _changes(rec.upper, rec.spec["sbx"].get("lowers") or [])


def export(where, ref, out_fd):
    """The container's whole filesystem (its upper over its image layers; no volumes, as
    Docker's) as a tar written to `out_fd`."""
    place = Place.find(where, ref)
    still = Place(place.name, place.upper, place.lowers, place.userns)
    wk, _ = _stream(still, {"op": "export"}, out_fd=out_fd)
    wk.finish()


def tree_sizes(paths):
    """Bytes below each of `paths` (served by the userns worker, runtime/userns_worker.py)."""
    return [_tree_size(p) for p in paths]


def sizes(places):
    """The bytes of each place's writable layer (Docker's SizeRw): one userns worker reads them
    all (subordinate-owned 0700 directories are readable only from inside the mapping)."""
    if not places:
        return []
    from ..runtime import userns_worker
    w = userns_worker.start("helper" if any(p.userns == "helper" for p in places) else "single")
    try:
        return w.call("sandbox.containers.files:tree_sizes", paths=[p.upper for p in places])
    finally:
        w.close()


# --- cp: the local side -------------------------------------------------------------------------------

def copy_from(where, ref, src, dest, *, follow=False, archive=False, out=None):
    """`cp CONTAINER:SRC DEST`: DEST a local path, or '-' for the tar on `out` (a binary file).
    Returns the bytes of the archive copied."""
    chunks, st = get_archive(where, ref, src, follow)
    n = 0
    if dest == "-":
        try:
            for c in chunks:
                out.write(c)
                n += len(c)
            out.flush()
        finally:
            chunks.close()
        return n
    src_is_dir = bool(st["mode"] & (1 << 31))
    counted = _Counted(chunks)
    local_copy(counted, _base(src), src_is_dir, dest, archive=archive)
    return counted.n


class _Counted:
    def __init__(self, chunks):
        self.chunks, self.n = chunks, 0

    def __iter__(self):
        for c in self.chunks:
            self.n += len(c)
            yield c

    def close(self):
        self.chunks.close()


class _Chunks:
    """A file object over an iterator of bytes (tarfile's stream reader wants read())."""

    def __init__(self, it):
        self.it, self.buf = iter(it), b""

    def read(self, n=-1):
        while n < 0 or len(self.buf) < n:
            try:
                self.buf += next(self.it)
            except StopIteration:
                break
        if n < 0:
            n = len(self.buf)
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


def local_copy(chunks, src_base, src_is_dir, dest, *, archive=False):
    """Unpack a container's archive to the local path `dest` with Docker's rules; the entries
    stay below the directory they go to (no '..', no writing through links)."""
    from ..build.placement import _Placer
    from ..image.mergedview import View
    dest_abs = os.path.abspath(dest)
    if os.path.isdir(dest_abs):
        root, sub = os.path.realpath(dest_abs), ""
    else:
        root, sub = os.path.realpath(os.path.dirname(dest_abs)), os.path.basename(dest_abs)
        if not os.path.isdir(root):
            chunks.close()
            why = "not a directory" if os.path.lexists(root) else "no such file or directory"
            raise CopyError(f"stat {root}: {why}", hint="the destination's parent directory must exist")
    try:
        with View([root]) as view:
            where = dest
            target, rebase = destination(view, sub + ("/" if dest.endswith("/") else ""), src_is_dir, src_base,
                                         stream=False, where=where)
        p = _Placer(root, [], None, None, "cp")
        try:
            extract(p, target, _Chunks(chunks), owners=archive and os.geteuid() == 0, rebase=rebase,
                    label=f"copy to {dest}")
        finally:
            p.close()
    finally:
        chunks.close()


def copy_to(where, ref, src, dest, *, follow=False, archive=False, stdin=None):
    """`cp SRC CONTAINER:DEST`: SRC a local path, or '-' for a tar stream read from `stdin`.
    Returns the bytes of the archive copied."""
    place = Place.find(where, ref)
    where = f"{place.name}:{dest}"
    if src == "-":
        req = {"op": "put", "path": dest, "stream": True, "owners": archive, "label": "archive from stdin",
               "where": where}
        return _put_with(place, req, lambda write: [write(c) for c in iter(lambda: stdin.read(CHUNK), b"")])
    follow = follow or src.endswith("/") or src.endswith("/.")
    path = os.path.abspath(src) + ("/." if src.endswith("/.") else "")
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError as e:
        raise CopyError(f"{'stat' if follow else 'lstat'} {src}: {e.strerror.lower()}",
                        hint="check the local source path") from None
    if src.endswith("/") and not stat.S_ISDIR(st.st_mode):
        raise CopyError(f"{src}: not a directory")
    top = os.path.realpath(path) if follow else path
    if top.endswith("/."):
        top = top[:-2]
    base = _base(src) if _base(src) != "." else "."
    req = {"op": "put", "path": dest, "stream": False, "owners": archive, "label": f"copy of {src}",
           "src_is_dir": stat.S_ISDIR(st.st_mode), "src_base": base, "where": where}
    parent, name = os.path.split(top.rstrip("/") or "/")

    def feed(write):
        class _W:
            def write(self, b):
                write(b)
                return len(b)
        if base == ".":
            write_tar([top], [], ".", _W())
        else:
            write_tar([parent or "/"], [name], base, _W())
    return _put_with(place, req, feed)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
