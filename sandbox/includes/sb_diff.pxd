# C declarations of csrc/sb_diff.h (layer diffing), only what sandbox/_diff.pxi touches.
from libc.stdint cimport int64_t, uint32_t


cdef extern from "sb_diff.h" nogil:
    cdef enum:
        SB_DIFF_MSG_SIZE
        SB_DIFF_OVERLAY
        SB_DIFF_COMPARE

    ctypedef struct sb_diff_error "struct sb_diff_error":
        int err
        char msg[512]

    ctypedef struct sb_diff_idmap "struct sb_diff_idmap":
        uint32_t inside
        uint32_t outside
        uint32_t count

    ctypedef struct sb_diff_opts "struct sb_diff_opts":
        int mode
        const char *root
        const char *base
        const char *const *lowers
        size_t n_lowers
        int clamp_mtime
        int64_t epoch
        const sb_diff_idmap *uid_map
        size_t n_uid_map
        const sb_diff_idmap *gid_map
        size_t n_gid_map

    ctypedef struct sb_diff_stream "struct sb_diff_stream":
        pass

    int sb_diff_changes(const sb_diff_opts *o, char **out, size_t *out_len, sb_diff_error *err)
    int sb_diff_stream_open(const sb_diff_opts *o, size_t buf_size, unsigned n_bufs,
                            sb_diff_stream **out, sb_diff_error *err)
    int sb_diff_stream_next(sb_diff_stream *s, const unsigned char **buf, size_t *len)
    int sb_diff_stream_close(sb_diff_stream *s, sb_diff_error *err)
