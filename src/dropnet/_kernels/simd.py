"""Explicit SIMD vectors for the CPU kernels: a Numba type for 64 bytes of floats (16
float32 or 8 float64 lanes: two AVX2 registers) and the handful of operations the block
micro-kernel needs, emitted as LLVM vector instructions.

Why: the block kernel is small matrix products (d, h of a few dozen). Written as scalar
loops, LLVM vectorises the dot products along the short reduction axis and pays a horizontal
sum for every output; it does not keep a register tile of accumulators. With these
operations a tile of rows lives in registers, one row per lane, and each weight is
broadcast once per tile (measured on the project's machine: float32 about 2x the rate of
the scalar loops, float64 about 1.3x).

Every operation here is a plain LLVM instruction (or ``llvm.fmuladd``, which fuses where
the target has FMA and multiplies then adds where it does not), so any CPU Numba targets
runs it. Arrays passed to ``vload``/``vstore`` must be C-contiguous 2-D with at least
``lanes`` elements from the given position along the last axis; nothing is checked.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic, models, register_model

VECTOR_BYTES = 64


def lanes_of(dtype: types.Float) -> int:
    """Lanes of one vector of ``dtype``: 16 for float32, 8 for float64."""
    return VECTOR_BYTES // (dtype.bitwidth // 8)


class Vec(types.Type):
    """VECTOR_BYTES of ``dtype`` lanes, held in registers."""

    def __init__(self, dtype: types.Float):
        self.dtype, self.lanes = dtype, lanes_of(dtype)
        super().__init__(name=f"Vec{self.lanes}({dtype})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.lanes))


def _pointer(context, builder, arrty, arr, row, col):
    """Pointer to arr[row, col] typed as a pointer to a vector."""
    ary = context.make_array(arrty)(context, builder, arr)
    item = cgutils.get_item_pointer(context, builder, arrty, ary, [row, col], wraparound=False)
    vector = ir.VectorType(context.get_value_type(arrty.dtype), lanes_of(arrty.dtype))
    return builder.bitcast(item, vector.as_pointer())


def _splat(builder, scalar, vector: ir.VectorType):
    undef = ir.Constant(vector, ir.Undefined)
    one = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
    mask = ir.Constant(ir.VectorType(ir.IntType(32), vector.count), [0] * vector.count)
    return builder.shuffle_vector(one, undef, mask)


@intrinsic
def lanes(typingctx, arr):
    """Lanes of a vector of arr's dtype (a compile-time constant)."""
    def codegen(context, builder, sig, args):
        return context.get_constant(types.intp, lanes_of(sig.args[0].dtype))
    return types.intp(arr), codegen


@intrinsic
def vload(typingctx, arr, row, col):
    """arr[row, col : col + lanes] as a vector."""
    def codegen(context, builder, sig, args):
        pointer = _pointer(context, builder, sig.args[0], args[0], args[1], args[2])
        return builder.load(pointer, align=sig.args[0].dtype.bitwidth // 8)
    return Vec(arr.dtype)(arr, row, col), codegen


@intrinsic
def vstore(typingctx, arr, row, col, vec):
    """arr[row, col : col + lanes] <- vec."""
    def codegen(context, builder, sig, args):
        pointer = _pointer(context, builder, sig.args[0], args[0], args[1], args[2])
        builder.store(args[3], pointer, align=sig.args[0].dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.void(arr, row, col, vec), codegen


@intrinsic
def vsplat(typingctx, scalar):
    """A vector with every lane ``scalar``."""
    def codegen(context, builder, sig, args):
        element = context.get_value_type(sig.args[0])
        return _splat(builder, args[0], ir.VectorType(element, lanes_of(sig.args[0])))
    return Vec(scalar)(scalar), codegen


@intrinsic
def vfma(typingctx, acc, scalar, vec):
    """acc + scalar * vec (scalar broadcast to every lane; fused where the CPU can)."""
    def codegen(context, builder, sig, args):
        vector = args[0].type
        suffix = "f32" if isinstance(vector.element, ir.FloatType) else "f64"
        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3),
            f"llvm.fmuladd.v{vector.count}{suffix}")
        return builder.call(fmuladd, [_splat(builder, args[1], vector), args[2], args[0]])
    return acc(acc, scalar, vec), codegen


@intrinsic
def vadd(typingctx, a, b):
    """a + b, lane by lane."""
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return a(a, b), codegen


@intrinsic
def vrelu(typingctx, a):
    """max(a, 0) lane by lane; a NaN lane stays NaN (like ``np.maximum``), so a NaN in the
    weights or data shows in the output instead of vanishing behind the ReLU."""
    def codegen(context, builder, sig, args):
        zero = ir.Constant(args[0].type, None)
        keep = builder.fcmp_unordered(">", args[0], zero)
        return builder.select(keep, args[0], zero)
    return a(a), codegen
