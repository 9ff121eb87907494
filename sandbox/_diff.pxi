# Layer diffing: the Cython side of csrc/sb_diff.c, included at the end of _native.pyx.
#
# The C walker runs in its own thread (no GIL, no Python) and fills a ring of buffers with the tar;
# diff_stream() hands each full buffer to a Python `sink` as a memoryview that is valid only during
# the call (sandbox/image/layer.py hashes, compresses and writes it: hashlib, zlib and os.write all
# drop the GIL on large buffers, so walking and digesting overlap on two cores).
from cpython.buffer cimport PyBUF_READ
from cpython.memoryview cimport PyMemoryView_FromMemory
from libc.stdlib cimport free as _c_free
from libc.stdint cimport int64_t

from .includes cimport sb_diff

DIFF_OVERLAY = sb_diff.SB_DIFF_OVERLAY
DIFF_COMPARE = sb_diff.SB_DIFF_COMPARE


class DiffError(OSError):
    """A layer diff failed; `detail` names the path (errno picks the OSError subclass)."""


cdef object _diff_error(sb_diff.sb_diff_error *err):
    detail = (<bytes>err.msg).decode("utf-8", "surrogateescape")
    e = DiffError(err.err, _os.strerror(err.err))
    e.detail = detail
    return e


cdef class _DiffOpts:
    """Owns the C copy of one diff request; the bytes it points into stay referenced in `keep`."""
    cdef sb_diff.sb_diff_opts o
    cdef list keep
    cdef const char **lowers
    cdef sb_diff.sb_diff_idmap *maps

    def __cinit__(self):
        memset(&self.o, 0, sizeof(self.o))
        self.keep = []

    def __dealloc__(self):
        PyMem_RawFree(self.lowers)
        PyMem_RawFree(self.maps)

    cdef int fill(self, int mode, root, base, lowers, epoch, uid_map, gid_map) except -1:
        cdef sb_diff.sb_diff_opts *o = &self.o
        cdef Py_ssize_t i, n
        o.mode = mode
        o.root = _cstr(_os.fsencode(root), self.keep)
        o.base = _cstr(None if base is None else _os.fsencode(base), self.keep)
        lowers = [_os.fsencode(p) for p in lowers]
        n = len(lowers)
        self.lowers = <const char **>PyMem_RawCalloc(n + 1, sizeof(char *))
        if self.lowers == NULL:
            raise MemoryError()
        for i in range(n):
            self.lowers[i] = _cstr(lowers[i], self.keep)
        o.lowers = self.lowers
        o.n_lowers = n
        if epoch is not None:
            o.clamp_mtime = 1
            o.epoch = <int64_t>epoch
        uid_map = list(uid_map or ())
        gid_map = list(gid_map or ())
        self.maps = <sb_diff.sb_diff_idmap *>PyMem_RawCalloc(len(uid_map) + len(gid_map) + 1,
                                                             sizeof(sb_diff.sb_diff_idmap))
        if self.maps == NULL:
            raise MemoryError()
        for i, (inside, outside, count) in enumerate(uid_map + gid_map):
            self.maps[i].inside = inside
            self.maps[i].outside = outside
            self.maps[i].count = count
        o.uid_map = self.maps
        o.n_uid_map = len(uid_map)
        o.gid_map = self.maps + len(uid_map)
        o.n_gid_map = len(gid_map)
        return 0


def diff_changes(int mode, root, base=None, lowers=()):
    """The change list as [(kind, relpath)], kind "A", "C" or "D", relpath without a leading slash,
    in walk order (sorted per directory, parents first).  Raises DiffError."""
    cdef _DiffOpts d = _DiffOpts()
    cdef sb_diff.sb_diff_error err
    cdef char *out = NULL
    cdef size_t n = 0, i = 0, j
    cdef int rc
    d.fill(mode, root, base, lowers, None, None, None)
    with nogil:
        rc = sb_diff.sb_diff_changes(&d.o, &out, &n, &err)
    if rc < 0:
        raise _diff_error(&err)
    result = []
    try:
        while i < n:
            j = i + 1
            while out[j] != 0:
                j += 1
            kind = chr(out[i])
            result.append((kind, _os.fsdecode(out[i + 1:j])))
            i = j + 1
    finally:
        _c_free(out)
    return result


def diff_stream(int mode, root, sink, *, base=None, lowers=(), epoch=None, uid_map=None,
                gid_map=None, size_t buf_size=1 << 20, unsigned n_bufs=4):
    """Stream the layer tar to `sink(memoryview)`, one buffer per call (the view is released after
    the call).  Returns the number of tar bytes.  Raises DiffError, or whatever `sink` raises (the
    walker is stopped first)."""
    cdef _DiffOpts d = _DiffOpts()
    cdef sb_diff.sb_diff_stream *s = NULL
    cdef sb_diff.sb_diff_error err
    cdef const unsigned char *buf = NULL
    cdef size_t n = 0
    cdef int rc
    cdef unsigned long long total = 0
    d.fill(mode, root, base, lowers, epoch, uid_map, gid_map)
    with nogil:
        rc = sb_diff.sb_diff_stream_open(&d.o, buf_size, n_bufs, &s, &err)
    if rc < 0:
        raise _diff_error(&err)
    try:
        while True:
            with nogil:
                rc = sb_diff.sb_diff_stream_next(s, &buf, &n)
            if rc <= 0:
                break
            view = PyMemoryView_FromMemory(<char *>buf, n, PyBUF_READ)
            try:
                sink(view)
            finally:
                view.release()
            total += n
    except BaseException:
        with nogil:
            sb_diff.sb_diff_stream_close(s, NULL)
        raise
    with nogil:
        rc = sb_diff.sb_diff_stream_close(s, &err)
    if rc < 0:
        raise _diff_error(&err)
    return total
