"""Re-pack libseccomp's BPF program smaller, keeping its meaning exactly.

libseccomp compiles a profile into one comparison per syscall and architecture: Docker's default
profile allows about 370 syscalls for each of x86_64, x86 and x32, which makes 1,234 instructions.
The kernel checks, converts and JIT-compiles every instruction each time a filter is installed, so
that program costs ~0.4 ms of every sandbox's start (0.33 us an instruction on our CI machine).

Most of those syscalls only differ in being allowed or not, so here the syscall-number dispatch of
each architecture is rebuilt as a bitmap test (one 32-bit mask per 32 syscall numbers, selected by
a small search on nr >> 5), and every syscall whose outcome is anything else (argument checks, a
different errno) is tested first and jumps to libseccomp's own code for it, copied unchanged.
libseccomp stays the compiler: what a rule means, per architecture, multiplexed calls included, is
its code; only the dispatch on the architecture and syscall number is re-encoded.

The result is used only when an interpreter, run over both programs, gives the same return value
for every architecture the program names (and one it does not), every syscall number below 1,100
of each number base (0, and x32's 0x40000000), each side of every constant the programs compare
with, and argument vectors made of the constants the argument checks use; otherwise, or if the
program has a shape this does not know, libseccomp's program is used as it is.
"""
import struct

# struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}
_INS = struct.Struct("<HBBI")

LD_ABS = 0x20     # BPF_LD|BPF_W|BPF_ABS
LD_IMM = 0x00     # BPF_LD|BPF_IMM
LD_MEM = 0x60     # BPF_LD|BPF_MEM
ST = 0x02
TAX = 0x07
TXA = 0x87
ALU_SUB_K = 0x14
ALU_AND_K = 0x54
ALU_RSH_K = 0x74
ALU_RSH_X = 0x7C
JA = 0x05
JEQ = 0x15
JGT = 0x25
JGE = 0x35
JSET = 0x45
RET_K = 0x06

_NR, _ARCH = 0, 4  # offsets in struct seccomp_data
_MAX = 0xFFFFFFFF
_WORDS_MAX = 40    # a bitmap covers at most 40 * 32 syscall numbers from its base


class _Unknown(Exception):
    pass


def decode(prog):
    return [_INS.unpack_from(prog, i) for i in range(0, len(prog), 8)]


def encode(ins):
    return b"".join(_INS.pack(*i) for i in ins)


# --- the interpreter (seccomp's subset of classic BPF) --------------------------------------------

def run(ins, arch, nr, args=(0,) * 6):
    """The return value of `ins` for a syscall (args: six 64-bit values; little-endian words)."""
    words = [nr & _MAX, arch, 0, 0]
    for v in args:
        words += [v & _MAX, (v >> 32) & _MAX]
    a = x = 0
    mem = [0] * 16
    pc = 0
    for _ in range(100000):
        code, jt, jf, k = ins[pc]
        pc += 1
        if code == LD_ABS:
            if k & 3:
                raise _Unknown("unaligned load")
            a = words[k >> 2]
        elif code == LD_IMM:
            a = k
        elif code == LD_MEM:
            a = mem[k]
        elif code == 0x01:      # ldx imm
            x = k
        elif code == 0x61:      # ldx mem
            x = mem[k]
        elif code == ST:
            mem[k] = a
        elif code == 0x03:      # stx
            mem[k] = x
        elif code == TAX:
            x = a
        elif code == TXA:
            a = x
        elif code & 0x07 == 0x04:  # ALU
            op, src = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:
                a = (a + src) & _MAX
            elif op == 0x10:
                a = (a - src) & _MAX
            elif op == 0x20:
                a = (a * src) & _MAX
            elif op == 0x30:
                a = a // src if src else 0
            elif op == 0x40:
                a |= src
            elif op == 0x50:
                a &= src
            elif op == 0x60:
                a = (a << src) & _MAX if src < 32 else 0
            elif op == 0x70:
                a = a >> src if src < 32 else 0
            elif op == 0x80:
                a = (-a) & _MAX
            elif op == 0x90:
                a = a % src if src else 0
            elif op == 0xA0:
                a ^= src
            else:
                raise _Unknown(f"alu {code:#x}")
        elif code == JA:
            pc += k
        elif code & 0x07 == 0x05:
            src = x if code & 0x08 else k
            op = code & 0xF0
            if op == 0x10:
                c = a == src
            elif op == 0x20:
                c = a > src
            elif op == 0x30:
                c = a >= src
            elif op == 0x40:
                c = (a & src) != 0
            else:
                raise _Unknown(f"jump {code:#x}")
            pc += jt if c else jf
        elif code == RET_K:
            return k
        elif code == 0x16:      # ret A
            return a
        else:
            raise _Unknown(f"instruction {code:#x}")
    raise _Unknown("no return")


# --- reading libseccomp's dispatch --------------------------------------------------------------

def _split(code, k, lo, hi):
    """(taken interval, not-taken intervals) of A in [lo, hi] for a jump comparing A with k."""
    if code == JEQ:
        if not lo <= k <= hi:
            return [], [(lo, hi)]
        rest = ([(lo, k - 1)] if k > lo else []) + ([(k + 1, hi)] if k < hi else [])
        return [(k, k)], rest
    if code in (JGT, JGE):
        t = k + 1 if code == JGT else k  # taken when A >= t
        if t <= lo:
            return [(lo, hi)], []
        if t > hi:
            return [], [(lo, hi)]
        return [(t, hi)], [(lo, t - 1)]
    raise _Unknown("not an interval jump")


def _dispatch(ins, pc, field, lo, hi, out, depth=0):
    """Follow jumps on A (loaded from `field`) with A in [lo, hi]; record (lo, hi, leaf pc)."""
    if depth > 64:
        raise _Unknown("too deep")
    while True:
        code, jt, jf, k = ins[pc]
        if code == JA:
            pc += 1 + k
            continue
        if code in (JEQ, JGT, JGE):
            taken, rest = _split(code, k, lo, hi)
            for a, b in taken:
                _dispatch(ins, pc + 1 + jt, field, a, b, out, depth + 1)
            for a, b in rest:
                _dispatch(ins, pc + 1 + jf, field, a, b, out, depth + 1)
            return
        out.append((lo, hi, pc))
        return


def _merge(parts):
    parts.sort()
    merged = []
    for lo, hi, leaf in parts:
        if merged and merged[-1][2] == leaf and merged[-1][1] + 1 == lo:
            merged[-1] = (merged[-1][0], hi, leaf)
        else:
            merged.append((lo, hi, leaf))
    return merged


def _shape(ins, pc, memo):
    """A canonical form of the code from pc (equal forms behave the same)."""
    if pc in memo:
        return memo[pc]
    code, jt, jf, k = ins[pc]
    if code == RET_K:
        s = ("ret", k)
    elif code == JA:
        s = _shape(ins, pc + 1 + k, memo)
    elif code & 0x07 == 0x05:
        s = (code, k, _shape(ins, pc + 1 + jt, memo), _shape(ins, pc + 1 + jf, memo))
    else:
        s = (code, jt, jf, k, _shape(ins, pc + 1, memo))
    memo[pc] = s
    return s


# --- writing the new program --------------------------------------------------------------------

class _Out:
    """Instructions with symbolic jump targets, resolved by link()."""

    def __init__(self):
        self.ins = []     # [code, jt, jf, k] with targets as labels where marked
        self.fix = []     # (index, slot, label)
        self.labels = {}

    def here(self, label):
        self.labels[label] = len(self.ins)

    def emit(self, code, jt=0, jf=0, k=0):
        self.ins.append([code, jt, jf, k])
        return len(self.ins) - 1

    def jump(self, label):
        i = self.emit(JA)
        self.fix.append((i, 3, label))

    def cond(self, code, k, label_true):
        """if cond(A, k): goto label_true (through a long jump), else fall through."""
        self.emit(code, 0, 1, k)
        self.jump(label_true)

    def link(self):
        for i, slot, label in self.fix:
            off = self.labels[label] - i - 1
            if off < 0 or (slot != 3 and off > 255):
                raise _Unknown("jump out of range")
            self.ins[i][slot] = off
        return [tuple(i) for i in self.ins]


def _tree(out, segs, emit_seg, tag):
    """A binary search on A over sorted, contiguous segments (lo, hi, payload)."""
    if len(segs) == 1:
        emit_seg(segs[0])
        return
    mid = len(segs) // 2
    right = f"{tag}r{segs[mid][0]}"
    out.cond(JGE, segs[mid][0], right)
    _tree(out, segs[:mid], emit_seg, tag)
    out.here(right)
    _tree(out, segs[mid:], emit_seg, tag)


def _ret_of(ins, pc):
    while ins[pc][0] == JA:
        pc += 1 + ins[pc][3]
    return ins[pc][3] if ins[pc][0] == RET_K else None


def _section(out, ins, arch_pc, tag, leaf_label, special):
    """The syscall-number dispatch of one architecture, from libseccomp's code at arch_pc."""
    code, _, _, k = ins[arch_pc]
    if (code, k) != (LD_ABS, _NR):
        out.jump(leaf_label(arch_pc))  # not a dispatch on nr: keep libseccomp's code whole
        return
    parts = []
    _dispatch(ins, arch_pc + 1, _NR, 0, _MAX, parts)
    parts = [(lo, hi, ("ret", _ret_of(ins, pc)) if _ret_of(ins, pc) is not None else ("code", pc))
             for lo, hi, pc in parts]
    parts = _merge(parts)
    rets = {}
    for lo, hi, leaf in parts:
        if leaf[0] == "ret":
            rets[leaf[1]] = rets.get(leaf[1], 0) + (hi - lo + 1)
    if not rets:
        raise _Unknown("no plain outcome")
    # The outcome of most numbers (the default action) is the background; the commonest other
    # plain outcome (allow) is the bitmap's ones; everything else is tested one by one first.
    bg = max(rets, key=rets.get)
    counts = {}
    for lo, hi, leaf in parts:
        if leaf[0] == "ret" and leaf[1] != bg:
            counts[leaf[1]] = counts.get(leaf[1], 0) + (hi - lo + 1)
    fg = max(counts, key=counts.get) if counts else None
    out.emit(LD_ABS, k=_NR)
    singles = [(lo, leaf) for lo, hi, leaf in parts if leaf[0] != "ret" or leaf[1] not in (bg, fg)]
    for lo, hi, leaf in parts:
        if (leaf[0] != "ret" or leaf[1] not in (bg, fg)) and hi != lo:
            raise _Unknown("a range with its own outcome")
    if len(singles) > 40:
        raise _Unknown("too many exceptions")
    for nr, leaf in singles:
        out.cond(JEQ, nr, leaf_label(leaf[1]) if leaf[0] == "code" else ("ret", leaf[1]))
        special.add(nr)
    ones = sorted({n for lo, hi, leaf in parts if leaf == ("ret", fg) for n in range(lo, hi + 1)}
                  if fg is not None and counts[fg] < 1 << 16 else set())
    if fg is not None and len(ones) != counts[fg]:
        raise _Unknown("too many allowed numbers")
    # Bitmaps: one per number base (0 and 0x40000000 on x86_64 with x32) that has ones.
    bases = sorted({n & ~0xFFFF for n in ones})
    segs, lo = [], 0
    for b in bases:
        top = max(n for n in ones if n & ~0xFFFF == b)
        first = min(n for n in ones if n & ~0xFFFF == b)
        start = first & ~31
        words = (top - start) // 32 + 1
        if words > _WORDS_MAX:
            raise _Unknown("a bitmap too wide")
        if start > lo:
            segs.append((lo, start - 1, None))
        segs.append((start, start + 32 * words - 1, [sum(1 << (n - start - 32 * w) for n in ones
                                                         if start + 32 * w <= n < start + 32 * (w + 1))
                                                     for w in range(words)]))
        lo = start + 32 * words
    if lo <= _MAX:
        segs.append((lo, _MAX, None))

    def emit_seg(seg):
        start, _, masks = seg
        if masks is None:
            out.emit(RET_K, k=bg)
            return
        t = f"{tag}b{start}"
        if start:
            out.emit(ALU_SUB_K, k=start)
        out.emit(TAX)
        out.emit(ALU_RSH_K, k=5)

        def emit_word(wseg):
            w, _, mask = wseg
            if mask == 0:
                out.emit(RET_K, k=bg)
            elif mask == _MAX:
                out.emit(RET_K, k=fg)
            else:
                out.emit(LD_IMM, k=mask)
                out.jump(t)
        _tree(out, [(w, w, m) for w, m in enumerate(masks)] + [(len(masks), _MAX, 0)], emit_word, f"{t}w")
        out.here(t)
        out.emit(ST, k=0)
        out.emit(TXA)
        out.emit(ALU_AND_K, k=31)
        out.emit(TAX)
        out.emit(LD_MEM, k=0)
        out.emit(ALU_RSH_X)
        out.emit(ALU_AND_K, k=1)
        out.emit(JEQ, 0, 1, 1)
        out.emit(RET_K, k=fg)
        out.emit(RET_K, k=bg)
    _tree(out, segs, emit_seg, tag)


def pack(prog):
    """A smaller program with the same meaning as `prog` (libseccomp's), or `prog` itself."""
    try:
        ins = decode(prog)
        new, domain = _pack(ins)
        if len(new) >= len(ins) or not _same(ins, new, *domain):
            return prog
        return encode(new)
    except (_Unknown, IndexError, struct.error, ValueError, KeyError, RecursionError):
        return prog


def _pack(ins):
    if ins[0][0] != LD_ABS or ins[0][3] != _ARCH:
        raise _Unknown("does not start with the architecture")
    arches = []
    _dispatch(ins, 1, _ARCH, 0, _MAX, arches)
    out = _Out()
    leaves = set()    # libseccomp pcs whose code is copied
    special = set()   # syscall numbers tested one by one (their outcome may depend on arguments)

    def leaf_label(pc):
        leaves.add(pc)
        return ("code", pc)

    out.emit(LD_ABS, k=_ARCH)
    arch_segs = _merge(arches)
    exact = [(lo, pc) for lo, hi, pc in arch_segs if lo == hi and ins[pc][0] == LD_ABS]
    other = {pc for lo, hi, pc in arch_segs if (lo, pc) not in exact}
    if len(other) != 1:
        raise _Unknown("architectures without one common outcome")
    for lo, pc in exact:
        out.cond(JEQ, lo, ("arch", lo))
    out.jump(leaf_label(other.pop()))
    for lo, pc in exact:
        out.here(("arch", lo))
        _section(out, ins, pc, f"a{lo}.", leaf_label, special)
    # libseccomp's code for the leaves, copied in its own order: its jumps go forward and stay
    # within 255, since only a subset of what lay between is copied, one instruction each.
    need, todo = set(), list(leaves)
    while todo:
        pc = todo.pop()
        if pc in need:
            continue
        need.add(pc)
        code, jt, jf, k = ins[pc]
        if code == JA:
            todo.append(pc + 1 + k)
        elif code & 0x07 == 0x05:
            todo += [pc + 1 + jt, pc + 1 + jf]
        elif code != RET_K and code != 0x16:
            todo.append(pc + 1)  # falls through: pc + 1 is copied right after it
    for pc in sorted(need):
        code, jt, jf, k = ins[pc]
        out.here(("code", pc))
        if code == JA:
            out.jump(("code", pc + 1 + k))
        elif code & 0x07 == 0x05:
            i = out.emit(code, 0, 0, k)
            out.fix += [(i, 1, ("code", pc + 1 + jt)), (i, 2, ("code", pc + 1 + jf))]
        else:
            out.emit(code, jt, jf, k)
    for label in sorted({f for _, _, f in out.fix if f[0] == "ret"}):
        out.here(label)
        out.emit(RET_K, k=label[1])
    argc = {ins[pc][3] for pc in need if ins[pc][0] in (JEQ, JGT, JGE, JSET)}
    return out.link(), ([lo for lo, _ in exact], special, argc)


def _same(old, new, arches, special, argc):
    """Whether `new` returns what `old` does on the domain the module doc describes."""
    consts = {k for code, _, _, k in old + new if code in (JEQ, JGT, JGE, JSET)}
    nrs = set()
    for base in (0, 0x40000000):
        # (argument constants such as an ioctl request, 0x5412, are not syscall numbers: each
        # side of them is tried below; counting every number up to them made such a profile's
        # first compile take seconds)
        top = max([c for c in consts if base <= c < base + 0x800] + [base + 1100])
        nrs |= set(range(base, top + 2))
    for c in consts:
        nrs |= {(c - 1) & _MAX, c, (c + 1) & _MAX}
    for arch in arches:
        for nr in nrs:
            if run(old, arch, nr) != run(new, arch, nr):
                return False
    for arch in (0, 0xDEAD, *(a ^ 1 for a in arches)):
        if arch not in arches and any(run(old, arch, nr) != run(new, arch, nr) for nr in (0, 1, 59, 0x40000000)):
            return False
    # The syscalls whose outcome may depend on their arguments (the ones tested one by one):
    # both programs run the same copied code for them; try argument vectors made of the
    # constants that code compares with.
    argsets = [(_MAX,) * 6, (1 << 32,) * 6]
    for c in sorted(argc):
        argsets += [(c,) * 6, ((c - 1) & _MAX,) * 6, (c | (c << 32),) * 6]
    for arch in arches:
        for nr in special:
            for args in argsets:
                if run(old, arch, nr, args) != run(new, arch, nr, args):
                    return False
    return True
