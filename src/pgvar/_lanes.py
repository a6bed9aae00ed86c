"""Explicit SIMD for numba kernels: LANES values in one LLVM vector.

LLVM vectorises nothing in some of pgvar's hot loops by itself: numba turns off its SLP vectoriser,
and the loop vectoriser's body (16 floats times an interleave) never runs on rows of 8 streams or a
handful of estimators. So those kernels hold LANES values in one LLVM vector, a numba type of its own
(``Lanes``), and compute with it through the intrinsics below; ``+``, ``-`` and ``*`` work on it (a
float on the left is broadcast). Arrays are read and written LANES elements at a time at a flat
index, so they must be C-contiguous. Users: the narrow and one-stream kernels of ``pgvar.returns``
(8 streams or 8 steps per vector) and ``_kernels.paths_readings`` (8 estimators per vector). Numba's
global settings are left alone, and ``cache=True`` works for the kernels that use them.
"""

from __future__ import annotations

import operator

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import RequireLiteralValue, TypingError
from numba.extending import intrinsic, models, overload, register_model

LANES = 8


class Lanes(types.Type):
    """LANES values of one float type in one SIMD register."""

    def __init__(self, dtype):
        self.dtype = dtype
        super().__init__(name=f"Lanes{LANES}[{dtype}]")


class Mask(types.Type):
    """LANES booleans, one per lane: the flags of a vector's steps."""

    def __init__(self):
        super().__init__(name=f"Mask{LANES}")


MASK = Mask()


@register_model(Lanes)
class _LanesModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), LANES))


@register_model(Mask)
class _MaskModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.IntType(1), LANES))


def _lane_pointer(context, builder, array_type, array, index, element):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), ir.VectorType(element, LANES).as_pointer())


def _require_c_contiguous(array_type):
    if not (isinstance(array_type, types.Array) and array_type.layout == "C"):
        raise TypingError(f"SIMD lanes need a C-contiguous array, got {array_type}")


@intrinsic
def load(typingctx, array, index):
    """``array.flat[index : index + LANES]``: Lanes, or a Mask for a bool array."""
    _require_c_contiguous(array)
    is_mask = array.dtype == types.boolean

    def codegen(context, builder, sig, args):
        if is_mask:  # numba keeps booleans as bytes
            bytes_ = builder.load(_lane_pointer(context, builder, array, *args, ir.IntType(8)), align=1)
            return builder.icmp_unsigned("!=", bytes_, ir.Constant(bytes_.type, None))
        element = context.get_value_type(array.dtype)
        pointer = _lane_pointer(context, builder, array, *args, element)
        return builder.load(pointer, align=context.get_abi_sizeof(element))

    return (MASK if is_mask else Lanes(array.dtype))(array, types.intp), codegen


@intrinsic
def store(typingctx, array, index, lanes):
    """``array.flat[index : index + LANES] = lanes``."""
    _require_c_contiguous(array)

    def codegen(context, builder, sig, args):
        array_value, index_value, lanes_value = args
        element = context.get_value_type(array.dtype)
        pointer = _lane_pointer(context, builder, array, array_value, index_value, element)
        builder.store(lanes_value, pointer, align=context.get_abi_sizeof(element))
        return context.get_dummy_value()

    return types.none(array, types.intp, Lanes(array.dtype)), codegen


@intrinsic
def splat(typingctx, scalar):
    """The float ``scalar`` in every lane."""

    def codegen(context, builder, sig, args):
        one = builder.insert_element(
            ir.Constant(context.get_value_type(sig.return_type), None),
            args[0],
            ir.Constant(ir.IntType(32), 0),
        )
        return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), LANES), None))

    return Lanes(scalar)(scalar), codegen


@intrinsic
def first(typingctx, lanes):
    """Lane 0 as a scalar."""

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], ir.Constant(ir.IntType(32), 0))

    return lanes.dtype(lanes), codegen


@intrinsic
def shift(typingctx, lanes, k, fill):
    """Lane i gets lane i + k (k a constant); the last k lanes get the scalar ``fill``."""
    if not isinstance(k, types.IntegerLiteral):
        raise RequireLiteralValue("shift: k must be a constant")
    order = [min(i + k.literal_value, LANES) for i in range(LANES)]  # index LANES: lane 0 of the fill

    def codegen(context, builder, sig, args):
        lanes_value, _, fill_value = args
        fill_value = context.cast(builder, fill_value, fill, lanes.dtype)
        filled = builder.insert_element(
            ir.Constant(lanes_value.type, None), fill_value, ir.Constant(ir.IntType(32), 0)
        )
        return builder.shuffle_vector(
            lanes_value, filled, ir.Constant(ir.VectorType(ir.IntType(32), LANES), order)
        )

    return lanes(lanes, k, fill), codegen


@intrinsic
def select(typingctx, mask, if_true, if_false):
    """Lane by lane, ``if_true`` where ``mask`` is set, else ``if_false``."""
    return if_true(mask, if_true, if_false), lambda context, builder, sig, args: builder.select(*args)


@intrinsic
def no_lanes(typingctx):
    """A Mask with no lane set: the flags of an absent flag array."""
    return MASK(), lambda context, builder, sig, args: ir.Constant(ir.VectorType(ir.IntType(1), LANES), None)


def _lanes_op(instruction):
    @intrinsic
    def lanes_op(typingctx, a, b):
        return a(a, b), lambda context, builder, sig, args: getattr(builder, instruction)(*args)

    return lanes_op


_lanes_add, _lanes_sub, _lanes_mul, _mask_or = (_lanes_op(i) for i in ("fadd", "fsub", "fmul", "or_"))


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c rounded once: one instruction where the running value waits for it (4 cycles, not 6)."""

    def codegen(context, builder, sig, args):
        vector = args[0].type
        bits = 32 if isinstance(vector.element, ir.FloatType) else 64
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fma.v{LANES}f{bits}"
        )
        return builder.call(fma, args)

    return c(a, b, c), codegen


def _overload_lanes(operation, lanes_op):
    @overload(operation)
    def lanes_operation(a, b):
        if isinstance(a, Lanes) and isinstance(b, Lanes):
            return lambda a, b: lanes_op(a, b)
        if isinstance(a, types.Float) and isinstance(b, Lanes):
            return lambda a, b: lanes_op(splat(a), b)
        return None


for _operation, _op in ((operator.add, _lanes_add), (operator.sub, _lanes_sub), (operator.mul, _lanes_mul)):
    _overload_lanes(_operation, _op)


@overload(operator.or_)
def _mask_or_overload(a, b):
    if isinstance(a, Mask) and isinstance(b, Mask):
        return lambda a, b: _mask_or(a, b)
    return None


def load_or(array, index, default):
    """``load(array, index)``, or ``default`` when the optional array is None (decided at compile time)."""
    return default if array is None else load(array, index)


@overload(load_or, inline="always")
def _load_or_overload(array, index, default):
    if isinstance(array, types.NoneType):
        return lambda array, index, default: default
    return lambda array, index, default: load(array, index)
