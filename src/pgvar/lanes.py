"""Explicit SIMD for numba kernels: LANES values in one LLVM vector.

LLVM vectorises nothing in some of pgvar's hot loops by itself: numba turns off its SLP vectoriser,
and the loop vectoriser's body (16 floats times an interleave) never runs on rows of 8 streams or a
handful of estimators. So those kernels hold LANES values in one LLVM vector, a numba type of its own
(``Lanes``), and compute with it through the intrinsics below; ``+``, ``-``, ``*`` and ``/`` work on it
(a float on the left is broadcast). Arrays are read and written LANES elements at a time at a flat
index, so they must be C-contiguous; ``load4``, ``store4`` and ``splat4`` make vectors of QUAD = 4
lanes instead (one AVX2 register of float64), on which the same arithmetic works. Users: the narrow
and one-stream kernels of ``pgvar.returns`` (8 streams or 8 steps per vector) and
``pgvar.montecarlo.path_moments`` (4 estimators, or 8 steps, per vector). Numba's global settings
are left alone, and ``cache=True`` works for the kernels that use them.
"""

from __future__ import annotations

import operator

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.errors import RequireLiteralValue, TypingError
from numba.extending import intrinsic, models, overload, register_model

LANES = 8
QUAD = 4  # one AVX2 register of float64: for tables whose rows are 4 wide (estimators, steps)


class Lanes(types.Type):
    """``width`` values of one float type in one SIMD vector (LANES unless made by the ``*4`` calls)."""

    def __init__(self, dtype, width=LANES):
        self.dtype = dtype
        self.width = width
        super().__init__(name=f"Lanes{width}[{dtype}]")


class Mask(types.Type):
    """LANES booleans, one per lane: the flags of a vector's steps."""

    def __init__(self):
        super().__init__(name=f"Mask{LANES}")


MASK = Mask()


@register_model(Lanes)
class _LanesModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        element = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(element, fe_type.width))


@register_model(Mask)
class _MaskModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.IntType(1), LANES))


def _lane_pointer(context, builder, array_type, array, index, element, width=LANES):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), ir.VectorType(element, width).as_pointer())


def _require_c_contiguous(array_type):
    if not (isinstance(array_type, types.Array) and array_type.layout == "C"):
        raise TypingError(f"SIMD lanes need a C-contiguous array, got {array_type}")


def _load_codegen(width):
    def codegen(context, builder, sig, args):
        element = context.get_value_type(sig.args[0].dtype)
        pointer = _lane_pointer(context, builder, sig.args[0], *args, element, width)
        return builder.load(pointer, align=context.get_abi_sizeof(element))

    return codegen


def _store_codegen(width):
    def codegen(context, builder, sig, args):
        array_value, index_value, lanes_value = args
        element = context.get_value_type(sig.args[0].dtype)
        pointer = _lane_pointer(context, builder, sig.args[0], array_value, index_value, element, width)
        builder.store(lanes_value, pointer, align=context.get_abi_sizeof(element))
        return context.get_dummy_value()

    return codegen


@intrinsic
def load(typingctx, array, index):
    """``array.flat[index : index + LANES]``: Lanes, or a Mask for a bool array."""
    _require_c_contiguous(array)
    if array.dtype != types.boolean:
        return Lanes(array.dtype)(array, types.intp), _load_codegen(LANES)

    def codegen(context, builder, sig, args):  # numba keeps booleans as bytes
        bytes_ = builder.load(_lane_pointer(context, builder, array, *args, ir.IntType(8)), align=1)
        return builder.icmp_unsigned("!=", bytes_, ir.Constant(bytes_.type, None))

    return MASK(array, types.intp), codegen


@intrinsic
def store(typingctx, array, index, lanes):
    """``array.flat[index : index + LANES] = lanes``."""
    _require_c_contiguous(array)
    return types.none(array, types.intp, Lanes(array.dtype)), _store_codegen(LANES)


def _splat_codegen(context, builder, sig, args):
    vector = context.get_value_type(sig.return_type)
    one = builder.insert_element(ir.Constant(vector, None), args[0], ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), vector.count), None))


@intrinsic
def splat(typingctx, scalar):
    """The float ``scalar`` in every lane."""
    return Lanes(scalar)(scalar), _splat_codegen


@intrinsic
def load4(typingctx, array, index):
    """``array.flat[index : index + 4]`` as Lanes of width 4."""
    _require_c_contiguous(array)
    return Lanes(array.dtype, QUAD)(array, types.intp), _load_codegen(QUAD)


@intrinsic
def store4(typingctx, array, index, lanes):
    """``array.flat[index : index + 4] = lanes``."""
    _require_c_contiguous(array)
    return types.none(array, types.intp, Lanes(array.dtype, QUAD)), _store_codegen(QUAD)


@intrinsic
def splat4(typingctx, scalar):
    """The float ``scalar`` in 4 lanes."""
    return Lanes(scalar, QUAD)(scalar), _splat_codegen


@intrinsic
def first(typingctx, lanes):
    """Lane 0 as a scalar."""

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], ir.Constant(ir.IntType(32), 0))

    return lanes.dtype(lanes), codegen


@intrinsic
def shift(typingctx, lanes, k, fill):
    """Lane i gets lane i + k (k a constant); the last k lanes get the scalar ``fill`` (a bool when
    ``lanes`` is a Mask: then lane i tells about step i + k)."""
    if not isinstance(k, types.IntegerLiteral):
        raise RequireLiteralValue("shift: k must be a constant")
    element = types.boolean if isinstance(lanes, Mask) else lanes.dtype
    order = [min(i + k.literal_value, LANES) for i in range(LANES)]  # index LANES: lane 0 of the fill

    def codegen(context, builder, sig, args):
        lanes_value, _, fill_value = args
        fill_value = context.cast(builder, fill_value, fill, element)
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


_lanes_add, _lanes_sub, _lanes_mul, _lanes_div, _mask_or = (
    _lanes_op(i) for i in ("fadd", "fsub", "fmul", "fdiv", "or_")
)


@intrinsic
def maximum(typingctx, a, b):
    """Lane by lane, the larger of ``a`` and ``b`` (``b`` where either is NaN)."""

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", *args), *args)

    return a(a, b), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c rounded once: one instruction where the running value waits for it (4 cycles, not 6)."""

    def codegen(context, builder, sig, args):
        vector = args[0].type
        bits = 32 if isinstance(vector.element, ir.FloatType) else 64
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fma.v{vector.count}f{bits}"
        )
        return builder.call(fma, args)

    return c(a, b, c), codegen


def _overload_lanes(operation, lanes_op):
    @overload(operation)
    def lanes_operation(a, b):
        if isinstance(a, Lanes) and isinstance(b, Lanes):
            return lambda a, b: lanes_op(a, b)
        if isinstance(a, types.Float) and isinstance(b, Lanes):
            broadcast = splat if b.width == LANES else splat4
            return lambda a, b: lanes_op(broadcast(a), b)
        return None


for _operation, _op in (
    (operator.add, _lanes_add),
    (operator.sub, _lanes_sub),
    (operator.mul, _lanes_mul),
    (operator.truediv, _lanes_div),
):
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


@intrinsic
def lane_of(typingctx, lanes, index):
    """Lane ``index`` of ``lanes`` as a scalar (a constant index, once loops are unrolled, costs one
    shuffle)."""

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], args[1])

    return lanes.dtype(lanes, types.intp), codegen
