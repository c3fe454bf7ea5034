"""Explicit-SIMD dot products of one row of quantized blocks with a float32 vector, for every quantized type
(Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), written in LLVM IR through numba intrinsics.

Why not plain numba loops as in `blocks`: LLVM vectorizes each block's inner loop, but then sums the
vector to a scalar at the end of every 32-element block, and that reduction costs more than the block's
multiplies. Here each block's products are folded to one 8-lane vector, scaled, and added to an 8-lane
accumulator that is summed once per row: 1.6x (Q8_0) to 5x (Q6_K) faster, measured by
benchmarks/bench_kernels.py. The vector types are generic LLVM ones, so LLVM picks the instructions for the
machine it compiles on (AVX2, AVX-512, NEON).

Each `_<type>(r, acc, p, e)` emits the IR for one block: `p` points at its bytes, `e` is the index of its first
element in x; it returns the new accumulator. Block layouts: see `netboot.backends.cpu.blocks`.
"""

from __future__ import annotations

import platform

import numba
from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from netboot.backends.cpu import jit  # noqa: F401 - sets the kernel cache directory before anything is compiled

F, I8, I32, I64 = ir.FloatType(), ir.IntType(8), ir.IntType(32), ir.IntType(64)
FAST = ("fast",)  # fastmath: lets LLVM reorder the sums and fuse multiply-adds


def _target_features() -> set[str]:
    """The CPU features numba compiles for: those it is told with NUMBA_CPU_NAME, else this host's."""
    if numba.config.CPU_NAME:
        features = numba.config.CPU_FEATURES or ""
    else:
        try:
            features = binding.get_host_cpu_features().flatten()
        except RuntimeError:  # llvmlite cannot read this host's features
            return set()
    return {f[1:] for f in features.split(",") if f.startswith("+")}


# Whether the CPU converts fp16 to float32 itself (x86's F16C; ARM64 always): then `dot_f16` is used for F16
# weights. Elsewhere LLVM would call a conversion routine numba does not provide.
NATIVE_HALF = "f16c" in _target_features() or platform.machine() in ("aarch64", "arm64")


def vec(t, n):
    return ir.VectorType(t, n)


def _const32(v):
    return ir.Constant(vec(I32, 8), [v] * 8)


class _Row:
    """IR helpers over one row's bytes (i8*), x (float*) and the fp16 table (float*)."""

    def __init__(self, builder, row, x, lut):
        self.b = builder
        self.row, self.x, self.lut = row, x, lut

    def c64(self, v):
        return ir.Constant(I64, v)

    def byte(self, base, off):
        return self.b.load(self.b.gep(base, [self.c64(off)]))

    def bytes(self, base, off, n):
        ptr = self.b.bitcast(self.b.gep(base, [self.c64(off)]), vec(I8, n).as_pointer())
        return self.b.load(ptr, align=1)

    def fp16(self, base, off):
        lo = self.b.zext(self.byte(base, off), I32)
        hi = self.b.zext(self.byte(base, off + 1), I32)
        return self.b.load(self.b.gep(self.lut, [self.b.or_(lo, self.b.shl(hi, ir.Constant(I32, 8)))]))

    def xs(self, e, n):
        ptr = self.b.bitcast(self.b.gep(self.x, [e]), vec(F, n).as_pointer())
        return self.b.load(ptr, align=4)

    def splat(self, s, n):
        undef = ir.Constant(vec(s.type, n), ir.Undefined)
        one = self.b.insert_element(undef, s, ir.Constant(I32, 0))
        return self.b.shuffle_vector(one, undef, ir.Constant(vec(I32, n), [0] * n))

    def lanes(self, v, start, n):
        return self.b.shuffle_vector(v, v, ir.Constant(vec(I32, n), list(range(start, start + n))))

    def concat(self, a, b):
        n = a.type.count
        return self.b.shuffle_vector(a, b, ir.Constant(vec(I32, 2 * n), list(range(2 * n))))

    def fold8(self, v, start=0, n=None):
        """Sum of lanes start..start+n of a float vector, folded to 8 lanes."""
        n = v.type.count - start if n is None else n
        parts = [self.lanes(v, start + k, 8) for k in range(0, n, 8)]
        while len(parts) > 1:
            parts = [self.b.fadd(parts[i], parts[i + 1], flags=FAST) for i in range(0, len(parts), 2)]
        return parts[0]

    def fmul(self, a, b):
        return self.b.fmul(a, b, flags=FAST)

    def fadd(self, a, b):
        return self.b.fadd(a, b, flags=FAST)

    def scaled(self, acc, d, s8):
        return self.fadd(acc, self.fmul(self.splat(d, 8), s8))

    def nibbles(self, base, off):
        """8 bytes widened to 32-bit lanes straight from memory (one instruction), split into their low and high
        nibbles: cheaper than splitting a register of 32 bytes first and widening each nibble vector out of it."""
        q = self.b.zext(self.bytes(base, off, 8), vec(I32, 8))
        return self.b.and_(q, _const32(15)), self.b.lshr(q, _const32(4))

    def sum16(self, e, n):
        """Sum of x over the n runs of 16 elements from element e (from `xs`), a scalar."""
        first = self.b.udiv(e, self.c64(16))
        total = self.b.load(self.b.gep(self.sums, [first]))
        for k in range(1, n):
            total = self.fadd(total, self.b.load(self.b.gep(self.sums, [self.b.add(first, self.c64(k))])))
        return total

    def lane0(self, s):
        """<8 x float> holding scalar s in lane 0: a per-block constant added to a vector sum."""
        return self.b.insert_element(ir.Constant(vec(F, 8), None), s, ir.Constant(I32, 0))

    def tree(self, terms):
        """Sum of vectors, pairwise: a chain of dependent adds would wait on each add's latency."""
        while len(terms) > 1:
            terms = [self.fadd(*terms[i : i + 2]) if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
        return terms[0]

    def hsum(self, v8):
        h = self.fadd(self.lanes(v8, 0, 4), self.lanes(v8, 4, 4))
        total = self.b.extract_element(h, ir.Constant(I32, 0))
        for k in range(1, 4):
            total = self.fadd(total, self.b.extract_element(h, ir.Constant(I32, k)))
        return total


def _row_dot(block_bytes, block_elems, body, sums=False):
    """An intrinsic dot(row, x, fp16) -> float32 looping `body(r, acc, p, e)` over the row's blocks; body returns
    the new 8-lane accumulator. With `sums`, dot(row, x, xs, fp16): xs, the sums of x over each run of 16
    elements, is `r.sums` in the body."""

    def codegen(context, builder, sig, args):
        row_t, x_t, fp16_t = sig.args[0], sig.args[1], sig.args[-1]
        row = context.make_array(row_t)(context, builder, args[0])
        x = context.make_array(x_t)(context, builder, args[1])
        lut = context.make_array(fp16_t)(context, builder, args[-1])
        r = _Row(builder, builder.bitcast(row.data, I8.as_pointer()), x.data, lut.data)
        if sums:
            r.sums = context.make_array(sig.args[2])(context, builder, args[2]).data
        nb = builder.udiv(builder.extract_value(x.shape, 0), r.c64(block_elems))
        zero = ir.Constant(vec(F, 8), None)
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(2)]

        def step(acc, index):
            p = builder.gep(r.row, [builder.mul(index, r.c64(block_bytes))])
            e = builder.mul(index, r.c64(block_elems))
            builder.store(body(r, builder.load(acc), p, e), acc)

        # Even and odd blocks into two accumulators: one chain of dependent adds across all the blocks is
        # bounded by the add's latency, not by the machine's throughput.
        with cgutils.for_range(builder, builder.udiv(nb, r.c64(2))) as loop:
            first = builder.mul(loop.index, r.c64(2))
            step(accs[0], first)
            step(accs[1], builder.add(first, r.c64(1)))
        with builder.if_then(builder.icmp_unsigned("!=", builder.urem(nb, r.c64(2)), r.c64(0))):
            step(accs[0], builder.sub(nb, r.c64(1)))
        return r.hsum(r.fadd(builder.load(accs[0]), builder.load(accs[1])))

    if sums:

        @intrinsic
        def dot_with_sums(typingctx, row_t, x_t, xs_t, fp16_t):
            return types.float32(row_t, x_t, xs_t, fp16_t), codegen

        return dot_with_sums

    @intrinsic
    def dot(typingctx, row_t, x_t, fp16_t):
        return types.float32(row_t, x_t, fp16_t), codegen

    return dot


def _q8_0(r, acc, p, e):
    q = r.b.sitofp(r.bytes(p, 2, 32), vec(F, 32))
    return r.scaled(acc, r.fp16(p, 0), r.fold8(r.fmul(q, r.xs(e, 32))))


# Q5_0's high bits: byte j of the block's 32 is tested against bit j % 8 of qh byte j // 8.
_SPREAD = ir.Constant(vec(I32, 32), [j // 8 for j in range(32)])
_BIT_OF = ir.Constant(vec(I8, 32), [(1 << (j % 8)) - (256 if j % 8 == 7 else 0) for j in range(32)])


def _q5_values(r, p, qh_off, qs_off, signed):
    """A Q5_0/Q5_1 block's 32 values as bytes, built in bytes (measured 11% faster than in 32-bit lanes): nibble
    | fifth bit << 4, minus 16 if `signed` (Q5_0's q - 16 fits int8)."""
    b = r.b
    qs = r.bytes(p, qs_off, 16)
    nib = r.concat(b.and_(qs, ir.Constant(vec(I8, 16), [15] * 16)), b.lshr(qs, ir.Constant(vec(I8, 16), [4] * 16)))
    qh = r.bytes(p, qh_off, 4)
    zero, sixteen = ir.Constant(vec(I8, 32), [0] * 32), ir.Constant(vec(I8, 32), [16] * 32)
    low = b.icmp_unsigned("==", b.and_(b.shuffle_vector(qh, qh, _SPREAD), _BIT_OF), zero)
    if signed:
        return b.sitofp(b.sub(nib, b.select(low, sixteen, zero)), vec(F, 32))
    return b.uitofp(b.or_(nib, b.select(low, zero, sixteen)), vec(F, 32))


def _q5_0(r, acc, p, e):
    return r.scaled(acc, r.fp16(p, 0), r.fold8(r.fmul(_q5_values(r, p, 2, 6, True), r.xs(e, 32))))


def _q5_1(r, acc, p, e):
    """x = d * q + m: m applied once per block, through the sums of x."""
    acc = r.scaled(acc, r.fp16(p, 0), r.fold8(r.fmul(_q5_values(r, p, 4, 8, False), r.xs(e, 32))))
    return r.fadd(acc, r.lane0(r.fmul(r.fp16(p, 2), r.sum16(e, 2))))


def _nibble_sum(r, p, off, e):
    """Sum of q * x over a Q4_0/Q4_1 block whose 16 bytes of nibbles start at `off` (elements 0-15 in the low
    nibbles, 16-31 in the high), folded to 8 lanes."""
    b = r.b
    parts = []
    for g in range(2):
        lo, hi = r.nibbles(p, off + 8 * g)
        parts.append(r.fmul(b.sitofp(lo, vec(F, 8)), r.xs(b.add(e, r.c64(8 * g)), 8)))
        parts.append(r.fmul(b.sitofp(hi, vec(F, 8)), r.xs(b.add(e, r.c64(16 + 8 * g)), 8)))
    return r.tree(parts)


def _q4_0(r, acc, p, e):
    """x = d * (q - 8): the -8 applied once per block, through the sums of x."""
    s = r.fadd(_nibble_sum(r, p, 2, e), r.lane0(r.fmul(ir.Constant(F, -8.0), r.sum16(e, 2))))
    return r.scaled(acc, r.fp16(p, 0), s)


def _q4_1(r, acc, p, e):
    """x = d * q + m: m applied once per block, through the sums of x."""
    acc = r.scaled(acc, r.fp16(p, 0), _nibble_sum(r, p, 4, e))
    return r.fadd(acc, r.lane0(r.fmul(r.fp16(p, 2), r.sum16(e, 2))))


_FIRST_FOUR = ir.Constant(vec(ir.IntType(1), 8), [1, 1, 1, 1, 0, 0, 0, 0])


def _k_scales_mins(r, p):
    """The 8 sub-blocks' 6-bit scales and mins of a Q4_K/Q5_K super-block as two <8 x i8> vectors: sub-blocks 0-3
    take the low 6 bits of bytes 0-3 (scales) and 4-7 (mins); 4-7 take 4 bits from bytes 8-11 and their top 2
    bits from the high bits of bytes 0-3 (scales) and 4-7 (mins)."""
    b = r.b
    s = r.bytes(p, 4, 12)

    def pick(idx):
        return b.shuffle_vector(s, s, ir.Constant(vec(I32, 8), idx))

    def c8(v):
        return ir.Constant(vec(I8, 8), [v] * 8)

    lo_sc, lo_m = pick([0, 1, 2, 3, 8, 9, 10, 11]), pick([4, 5, 6, 7, 8, 9, 10, 11])
    top_sc, top_m = pick([0, 1, 2, 3, 0, 1, 2, 3]), pick([0, 1, 2, 3, 4, 5, 6, 7])
    scales = b.select(_FIRST_FOUR, b.and_(lo_sc, c8(63)),
                      b.or_(b.and_(lo_sc, c8(15)), b.shl(b.lshr(top_sc, c8(6)), c8(4))))
    mins = b.select(_FIRST_FOUR, b.and_(lo_m, c8(63)),
                    b.or_(b.lshr(lo_m, c8(4)), b.shl(b.lshr(top_m, c8(6)), c8(4))))
    return scales, mins


def _bit_to_16(b, h, k):
    """(h >> k & 1) << 4 for 32-bit lanes h: bit k moved to bit 4 with one shift."""
    moved = b.shl(h, _const32(4 - k)) if k <= 4 else b.lshr(h, _const32(k - 4))
    return b.and_(moved, _const32(16))


def _k_quant(r, acc, p, e, qs_off, qh_off=None):
    """Q4_K, and Q5_K when `qh_off` gives its fifth bits (bit c of qh[l] for element l of sub-block c). The mins'
    part, dmin * sum_j m_j * (sum of x over sub-block j), comes from the sums per 16: one vector product per
    super-block instead of summing x in every row (20% faster)."""
    b = r.b
    scales, mins = _k_scales_mins(r, p)
    scales = r.fmul(b.uitofp(scales, vec(F, 8)), r.splat(r.fp16(p, 0), 8))
    s16 = b.load(b.bitcast(b.gep(r.sums, [b.udiv(e, r.c64(16))]), vec(F, 16).as_pointer()), align=4)
    s32 = r.fadd(b.shuffle_vector(s16, s16, ir.Constant(vec(I32, 8), list(range(0, 16, 2)))),
                 b.shuffle_vector(s16, s16, ir.Constant(vec(I32, 8), list(range(1, 16, 2)))))
    terms = [b.fneg(r.fmul(r.fmul(b.uitofp(mins, vec(F, 8)), r.splat(r.fp16(p, 2), 8)), s32), flags=FAST)]
    highs = [b.zext(r.bytes(p, qh_off + 8 * g, 8), vec(I32, 8)) for g in range(4)] if qh_off is not None else None
    for c in range(4):
        xo = b.add(e, r.c64(64 * c))
        lo_parts, hi_parts = [], []
        for g in range(4):
            lo, hi = r.nibbles(p, qs_off + 32 * c + 8 * g)
            if highs is not None:
                lo, hi = b.or_(lo, _bit_to_16(b, highs[g], 2 * c)), b.or_(hi, _bit_to_16(b, highs[g], 2 * c + 1))
            lo_parts.append(r.fmul(b.sitofp(lo, vec(F, 8)), r.xs(b.add(xo, r.c64(8 * g)), 8)))
            hi_parts.append(r.fmul(b.sitofp(hi, vec(F, 8)), r.xs(b.add(xo, r.c64(32 + 8 * g)), 8)))
        for j, parts in enumerate((lo_parts, hi_parts)):
            sc = r.splat(b.extract_element(scales, ir.Constant(I32, 2 * c + j)), 8)
            terms.append(r.fmul(sc, r.tree(parts)))
    return r.fadd(acc, r.tree(terms))


def _q4_k(r, acc, p, e):
    return _k_quant(r, acc, p, e, 16)


def _q5_k(r, acc, p, e):
    return _k_quant(r, acc, p, e, 48, qh_off=16)


def _q6_k_quants(r, p):
    """A Q6_K super-block's d-scaled sub-block scales (16 floats) and its 256 values q - 32 as eight <32 x i8>,
    in element order (value j holds elements 32j..32j+31, whose scales are 2j and 2j+1)."""
    b = r.b
    scales = r.fmul(b.sitofp(r.bytes(p, 192, 16), vec(F, 16)), r.splat(r.fp16(p, 208), 16))
    m15, c4 = ir.Constant(vec(I8, 32), [15] * 32), ir.Constant(vec(I8, 32), [4] * 32)
    m3 = ir.Constant(vec(I8, 32), [3] * 32)
    quants = []
    for h in range(2):
        lo_a, lo_b = r.bytes(p, 64 * h, 32), r.bytes(p, 64 * h + 32, 32)
        qh = r.bytes(p, 128 + 32 * h, 32)
        for nibs, shift in ((b.and_(lo_a, m15), 0), (b.and_(lo_b, m15), 2), (b.lshr(lo_a, c4), 4),
                            (b.lshr(lo_b, c4), 6)):
            top = b.and_(b.lshr(qh, ir.Constant(vec(I8, 32), [shift] * 32)), m3)
            quants.append(b.sub(b.or_(nibs, b.shl(top, c4)), ir.Constant(vec(I8, 32), [32] * 32)))
    return scales, quants


def _q6_k(r, acc, p, e):
    b = r.b
    scales, quants = _q6_k_quants(r, p)
    terms = []
    for j, q in enumerate(quants):
        prod = r.fmul(b.sitofp(q, vec(F, 32)), r.xs(b.add(e, r.c64(32 * j)), 32))
        for half in range(2):
            sc = r.splat(b.extract_element(scales, ir.Constant(I32, 2 * j + half)), 8)
            terms.append(r.fmul(sc, r.fold8(prod, 16 * half, 16)))
    return r.fadd(acc, r.tree(terms))


def _f16(r, acc, p, e):
    """8 fp16 weights converted by the CPU (one instruction with F16C) and multiplied: 2x the bit arithmetic."""
    w = r.b.fpext(r.b.bitcast(r.bytes(p, 0, 16), vec(ir.HalfType(), 8)), vec(F, 8))
    return r.fadd(acc, r.fmul(w, r.xs(e, 8)))


dot_f16 = _row_dot(16, 8, _f16)  # the first len(x) // 8 * 8 elements; only where NATIVE_HALF
dot_q4_0 = _row_dot(18, 32, _q4_0, sums=True)
dot_q4_1 = _row_dot(20, 32, _q4_1, sums=True)
dot_q5_0 = _row_dot(22, 32, _q5_0)
dot_q5_1 = _row_dot(24, 32, _q5_1, sums=True)
dot_q8_0 = _row_dot(34, 32, _q8_0)
dot_q4_k = _row_dot(144, 256, _q4_k, sums=True)
dot_q5_k = _row_dot(176, 256, _q5_k, sums=True)
dot_q6_k = _row_dot(210, 256, _q6_k)


@intrinsic
def claim(typingctx, counter_t):
    """counter[0] += 1 as one atomic step, returning the value before: how the threads of a product take its runs
    of rows one at a time, so that a thread the OS leaves waiting (a busy core) holds up one run, not half the
    rows (numba's prange splits them evenly in advance)."""

    def codegen(context, builder, sig, args):
        counter = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", counter.data, ir.Constant(I64, 1), "monotonic")

    return types.int64(counter_t), codegen


MANY = 16  # vectors one dot_many call takes at most: a batch of more goes in groups


def _batch_dot(block_bytes, block_elems, body, sums=False):
    """An intrinsic dot_many(row, x, xs, fp16, out): out[i] = row . x[i] for every vector of x (n <= MANY, cols),
    the row's blocks decoded once for all of them. Each block's decoding does not depend on the vector, so LLVM
    hoists it out of the loop over the vectors: a step of n sequences costs far less than n steps of one. `xs`
    (n, cols // 16) is read only by the types that take sums. The accumulators live on this function's stack,
    where LLVM can see that storing to them never changes the row (through a caller's array, it hoisted nothing).
    The default model's types have a faster kernel (`_fixed_batch_dot`); this one serves the others."""

    def codegen(context, builder, sig, args):
        row_t, x_t, xs_t, fp16_t, out_t = sig.args
        row = context.make_array(row_t)(context, builder, args[0])
        x = context.make_array(x_t)(context, builder, args[1])
        xs = context.make_array(xs_t)(context, builder, args[2])
        lut = context.make_array(fp16_t)(context, builder, args[3])
        out = context.make_array(out_t)(context, builder, args[4])
        n, cols = builder.extract_value(x.shape, 0), builder.extract_value(x.shape, 1)
        sums_cols = builder.extract_value(xs.shape, 1)
        r = _Row(builder, builder.bitcast(row.data, I8.as_pointer()), x.data, lut.data)
        # In the entry block, once per call of the enclosing function: not once per row.
        accs = cgutils.alloca_once(builder, vec(F, 8), size=MANY)
        with cgutils.for_range(builder, n) as loop:
            builder.store(ir.Constant(vec(F, 8), None), builder.gep(accs, [loop.index]))
        nb = builder.udiv(cols, r.c64(block_elems))
        with cgutils.for_range(builder, nb) as blocks_loop:
            p = builder.gep(r.row, [builder.mul(blocks_loop.index, r.c64(block_bytes))])
            e = builder.mul(blocks_loop.index, r.c64(block_elems))
            with cgutils.for_range(builder, n) as vectors:
                i = vectors.index
                r.x = builder.gep(x.data, [builder.mul(i, cols)])
                if sums:
                    r.sums = builder.gep(xs.data, [builder.mul(i, sums_cols)])
                slot = builder.gep(accs, [i])
                builder.store(body(r, builder.load(slot), p, e), slot)
        with cgutils.for_range(builder, n) as loop:
            total = r.hsum(builder.load(builder.gep(accs, [loop.index])))
            builder.store(total, builder.gep(out.data, [loop.index]))
        return context.get_dummy_value()

    @intrinsic
    def dot_many(typingctx, row_t, x_t, xs_t, fp16_t, out_t):
        return types.none(row_t, x_t, xs_t, fp16_t, out_t), codegen

    return dot_many


def _scaled_fma(r, acc, w, e):
    """acc + w . x[e:e+32] into 8 lanes, for 32 weights w already decoded and scaled: four multiply-adds, no fold,
    no per-block scaling."""
    for k in range(4):
        acc = r.fadd(acc, r.fmul(r.lanes(w, 8 * k, 8), r.xs(r.b.add(e, r.c64(8 * k)), 8)))
    return acc


def _fixed_batch_dot(block_bytes, block_elems, decode, width):
    """An intrinsic dot_w(row, x, fp16, out, r): out[i, r] = row . x[i] for exactly `width` vectors x (width, cols)
    and out (width, rows), C-contiguous: each block decoded and scaled once (`decode`: its weights as 32-lane
    float vectors), then four multiply-adds per 32 weights per vector into that vector's accumulator. The
    accumulators are separate stack slots with fixed names, which LLVM keeps in registers: in one array indexed by
    a loop counter they were loaded and stored at every block, and a batch cost as much as its vectors one at a
    time."""

    def codegen(context, builder, sig, args):
        row_t, x_t, fp16_t, out_t, _ = sig.args
        row = context.make_array(row_t)(context, builder, args[0])
        x = context.make_array(x_t)(context, builder, args[1])
        lut = context.make_array(fp16_t)(context, builder, args[2])
        out = context.make_array(out_t)(context, builder, args[3])
        cols, rows = builder.extract_value(x.shape, 1), builder.extract_value(out.shape, 1)
        r = _Row(builder, builder.bitcast(row.data, I8.as_pointer()), x.data, lut.data)
        accs = [cgutils.alloca_once_value(builder, ir.Constant(vec(F, 8), None)) for _ in range(width)]
        bases = [builder.gep(x.data, [builder.mul(r.c64(i), cols)]) for i in range(width)]
        with cgutils.for_range(builder, builder.udiv(cols, r.c64(block_elems))) as blocks_loop:
            p = builder.gep(r.row, [builder.mul(blocks_loop.index, r.c64(block_bytes))])
            e = builder.mul(blocks_loop.index, r.c64(block_elems))
            weights = decode(r, p)
            for acc, base in zip(accs, bases, strict=True):
                r.x = base
                value = builder.load(acc)
                for k, w in enumerate(weights):
                    value = _scaled_fma(r, value, w, builder.add(e, r.c64(32 * k)))
                builder.store(value, acc)
        for i, acc in enumerate(accs):
            at = builder.add(builder.mul(r.c64(i), rows), args[4])
            builder.store(r.hsum(builder.load(acc)), builder.gep(out.data, [at]))
        return context.get_dummy_value()

    @intrinsic
    def dot_fixed(typingctx, row_t, x_t, fp16_t, out_t, r_t):
        return types.none(row_t, x_t, fp16_t, out_t, types.int64), codegen

    return dot_fixed


def _q8_0_weights(r, p):
    return [r.fmul(r.b.sitofp(r.bytes(p, 2, 32), vec(F, 32)), r.splat(r.fp16(p, 0), 32))]


def _q5_0_weights(r, p):
    return [r.fmul(_q5_values(r, p, 2, 6, True), r.splat(r.fp16(p, 0), 32))]


def _q4_k_weights(r, p):
    """A Q4_K super-block's 256 weights, 32 at a time: d * scale_j * q - dmin * min_j for sub-block j."""
    b = r.b
    scales, mins = _k_scales_mins(r, p)
    scales = r.fmul(b.uitofp(scales, vec(F, 8)), r.splat(r.fp16(p, 0), 8))
    mins = r.fmul(b.uitofp(mins, vec(F, 8)), r.splat(r.fp16(p, 2), 8))
    m15, c4 = ir.Constant(vec(I8, 32), [15] * 32), ir.Constant(vec(I8, 32), [4] * 32)
    out = []
    for c in range(4):
        q = r.bytes(p, 16 + 32 * c, 32)
        for j, nibs in enumerate((b.and_(q, m15), b.lshr(q, c4))):
            sub = ir.Constant(I32, 2 * c + j)
            sc, mn = r.splat(b.extract_element(scales, sub), 32), r.splat(b.extract_element(mins, sub), 32)
            out.append(b.fsub(r.fmul(b.uitofp(nibs, vec(F, 32)), sc), mn, flags=FAST))
    return out


def _q6_k_weights(r, p):
    """A Q6_K super-block's 256 weights, 32 at a time: d * scale * (6-bit q - 32), one scale per 16."""
    b = r.b
    scales, quants = _q6_k_quants(r, p)
    spreads = [ir.Constant(vec(I32, 32), [2 * j] * 16 + [2 * j + 1] * 16) for j in range(len(quants))]
    return [r.fmul(b.sitofp(q, vec(F, 32)), b.shuffle_vector(scales, scales, spread))
            for q, spread in zip(quants, spreads, strict=True)]


dot_many_q4_0 = _batch_dot(18, 32, _q4_0, sums=True)
dot_many_q4_1 = _batch_dot(20, 32, _q4_1, sums=True)
dot_many_q5_1 = _batch_dot(24, 32, _q5_1, sums=True)
dot_many_q5_k = _batch_dot(176, 256, _q5_k, sums=True)

# Batches of exactly 2, 4 or 8 vectors of the default model's types (Q5_0, Q8_0, Q4_K, Q6_K).
FIXED_WIDTHS = (2, 4, 8)
dot8_q8_0 = _fixed_batch_dot(34, 32, _q8_0_weights, 8)
dot4_q8_0 = _fixed_batch_dot(34, 32, _q8_0_weights, 4)
dot2_q8_0 = _fixed_batch_dot(34, 32, _q8_0_weights, 2)
dot8_q5_0 = _fixed_batch_dot(22, 32, _q5_0_weights, 8)
dot4_q5_0 = _fixed_batch_dot(22, 32, _q5_0_weights, 4)
dot2_q5_0 = _fixed_batch_dot(22, 32, _q5_0_weights, 2)
dot8_q4_k = _fixed_batch_dot(144, 256, _q4_k_weights, 8)
dot4_q4_k = _fixed_batch_dot(144, 256, _q4_k_weights, 4)
dot2_q4_k = _fixed_batch_dot(144, 256, _q4_k_weights, 2)
dot8_q6_k = _fixed_batch_dot(210, 256, _q6_k_weights, 8)
dot4_q6_k = _fixed_batch_dot(210, 256, _q6_k_weights, 4)
dot2_q6_k = _fixed_batch_dot(210, 256, _q6_k_weights, 2)
