"""Vector instructions numba's compiler does not reach by itself (``dither``): a pixel's three channels as one
``<4 x i32>`` value for the error-diffusion loop (portable LLVM vector IR, every CPU), and the sRGB
nearest-colour searches of up to 32 colours: sixteen pixels a vector, as integer keys on CPUs with AVX-512 VNNI,
as float32 keys (portable) on the others.

Imported only where kernels are compiled (numba's JIT or ``build_kernels``): it imports numba and llvmlite.
numba's disk cache of the kernels that call these is keyed on ``dither.py``: after editing this file, clear it.

**Error diffusion.** numba keeps each channel of a pixel in a scalar register: the sRGB loop carried about twenty
values per pixel (value, next value, error and the error two pixels on, three channels each) in 16 registers and
spilled the rest, about 155 instructions a pixel, 49 of them stack traffic. As ``Vec4`` values (R, G, B, 0 in 32-bit
lanes) each of those is one vector register and one instruction per operation. The ops below are what the loop
needs, each inlined into it: the pixel's value, the clamp to a code value with its cell index, the pick between a
pair's two colours (by their sRGB distances, or an OKLab pair's mask bit), the stores.

**The VNNI search.** The search's keys (``dither.vnni_keys``) rank colours by an integer form of the squared sRGB
distance that one AVX-512 VNNI instruction (``vpdpbusd``: four unsigned-byte by signed-byte products summed into a
32-bit lane) computes for 16 pixels at once, where the float32 search needs three fused multiply-adds: with
``s = c - 128`` (a signed byte) and ``|c|^2 = 2 h + parity``, ``|p - c|^2 = |p|^2 - 256 (r + g + b) - 2 (p . s - h)
+ parity``; the first two terms are the same for every colour, so the nearest colour has the greatest
``E = p . s - h`` and, among equal ``E``, even parity. A funnel shift appends six bits, ``32 (1 - parity) + 31 -
index``, so one signed maximum picks the nearest colour and, on exact ties, the lower index. ``E`` lies in
-195457..97155, so ``64 E`` and its low bits fit an int32.

Each colour costs about two cycles a vector (``vpdpbusd`` and the funnel shift share one port), so with 32
colours random pixels took longer than Pillow's cached lookup. From 17 colours the search first gathers each
pixel's candidates from the cell table (``triple16``: nearly every cell 4 code values wide holds at most three)
and computes three keys, each colour's words permuted per lane; only a vector with a pixel in a cell of four or
more searches every colour.

**The float32 search** computes a key by three fused multiply-adds and keeps the least with one minimum (the index
in its low bits, see ``dither``), in VecF16 values that LLVM splits into what the target has. Compiled for AVX-512
it reads triples as the VNNI search does (``ftriple16``) and writes the colours with one permute (``femit16``).
Compiled for AVX2 without AVX-512, from 17 colours it takes each pixel's colour from the cell table by AVX2's
gathers and searches only the pixels of cells of more than one colour (``table_first``).
"""
from __future__ import annotations

from functools import lru_cache

from llvmlite import ir
from numba import types
from numba.extending import intrinsic, models, register_model

# colours per pass (one load and store of the maxima serve eight), pixels per vector (512 bits of uint32)
from .dither import FS_HALF, FS_SHIFT, TRIPLE_FIELD
from .dither import VNNI_COLOURS as COLOURS
from .dither import VNNI_LANES as LANES

I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)


@lru_cache(maxsize=1)
def host_has_vnni() -> bool:
    """numba compiles for AVX-512 VNNI (and the byte and word instructions around it) here: the CPU has them (Intel
    server parts since Cascade Lake, the Ice Lake, Tiger Lake and Rocket Lake client parts, AMD Zen 4 and later;
    not Intel's client parts since Alder Lake, which lack AVX-512) and numba's settings keep them (the features
    its JIT and ``build_kernels`` compile for: ``NUMBA_CPU_FEATURES``, ``NUMBA_CPU_NAME=generic`` and
    ``NUMBA_ENABLE_AVX=0`` can take them away, and LLVM then cannot compile the search: a fatal error, not an
    exception)."""
    return {"avx512f", "avx512bw", "avx512vnni"} <= _target_features()


NARROW = False  # set by build_kernels where pycc cannot be told the JIT's features (see wide_registers)


def wide_registers() -> bool:
    """numba compiles for AVX-512 here: 32 registers of 512 bits, where two vectors of pixels and their least keys stay
    in registers through ``fkeys16x2``. With AVX2's 16 of 256 bits (a VecF16 takes two) they did not: 512x512 random
    pixels took 1.31-1.32x the time to PICO-8 and 1.14-1.25x to 32 colours in pairs than one vector at a time (a
    prototype of ``dither._float_vectors`` compiled for AVX2, JIT, on an AVX-512 CPU); compiled for AVX-512, pairs took
    0.80x and 0.77x. In the pack, compiled for AVX2, random pixels to PICO-8 then took 1.20x Pillow NONE's time
    instead of 1.49-1.53x. Other CPUs (not measured here) search one vector at a time. The AVX-512 search also
    reads triples (``ftriple16``) and permutes its colours out (``femit16``). False while ``NARROW``: pycc then
    compiles for the CPU's model name alone, which an LLVM older than the CPU takes for a model without AVX-512, and
    an AVX-512 instruction there is a fatal error."""
    return not NARROW and _wide_target()


@lru_cache(maxsize=1)
def _wide_target() -> bool:
    return "avx512f" in _target_features()


def _target_features() -> set[str]:
    """The CPU features numba compiles for (its settings, else the host's)."""
    from numba.core import codegen, config

    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else codegen.get_host_cpu_features()
    return {f[1:] for f in features.split(",") if f.startswith("+")}


def _is(ty, dtype, ndim: int = 1) -> bool:
    return isinstance(ty, types.Array) and ty.dtype == dtype and ty.ndim == ndim


def _i64(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """An integer argument as the 64-bit index the pointer arithmetic takes."""
    return builder.sext(value, ir.IntType(64)) if value.type.width < 64 else value


def _splat(builder: ir.IRBuilder, value: ir.Value, vty: ir.VectorType) -> ir.Value:
    i32 = ir.IntType(32)
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), value, ir.Constant(i32, 0))
    return builder.shuffle_vector(one, ir.Constant(vty, ir.Undefined), ir.Constant(ir.VectorType(i32, vty.count),
                                                                                    [0] * vty.count))


def _declared(builder: ir.IRBuilder, name: str, vty: ir.VectorType) -> ir.Function:
    """The LLVM intrinsic ``name`` of three ``vty`` arguments returning ``vty``, declared once per module."""
    mod = builder.module
    return mod.globals.get(name) or ir.Function(mod, ir.FunctionType(vty, [vty, vty, vty]), name)


def _key(builder: ir.IRBuilder, px: ir.Value, s: ir.Value, h: ir.Value, low: ir.Value) -> ir.Value:
    """The keys of one colour per lane (its words ``s``, ``-h`` and six bits ``low``, as ``dither.vnni_keys``) for
    the 16 pixels ``px``: ``E = p . s - h`` by one VNNI dot product, the six bits appended by a funnel shift."""
    v32 = ir.VectorType(I32, LANES)
    # the 512-bit VNNI dot product; LLVM upgrades this older signature where a newer one is declared
    dp = _declared(builder, "llvm.x86.avx512.vpdpbusd.512", v32)
    fshl = _declared(builder, "llvm.fshl.v16i32", v32)
    return builder.call(fshl, [builder.call(dp, [h, px, s]), low, ir.Constant(v32, [6] * LANES)])


def _cell_of(builder: ir.IRBuilder, word: ir.Value, g: int) -> ir.Value:
    """The cell (``2^g`` per side, numbered as ``dither._cell``) of the R, G, B in the low bytes of ``word``, an
    integer or a vector of them: each channel's top ``g`` bits side by side."""
    def const(x):
        vty = word.type
        return ir.Constant(vty, [x] * vty.count) if isinstance(vty, ir.VectorType) else ir.Constant(vty, x)

    def channel(c, up):  # channel c's top g bits, moved to bit ``up``
        return builder.shl(builder.and_(builder.lshr(word, const(8 * c + 8 - g)), const((1 << g) - 1)), const(up))

    return builder.or_(builder.or_(channel(0, 2 * g), channel(1, g)), channel(2, 0))


def _max_keys(builder: ir.IRBuilder, data: ir.Value, row: ir.Value, count: int, pixels: list[ir.Value],
              accs: list[ir.Value]) -> list[ir.Value]:
    """Each of ``accs`` raised to the keys of colours ``row .. row + count - 1`` of the key rows at ``data`` (int32,
    three per colour) for the 16 pixels of the same place in ``pixels``."""
    v32 = ir.VectorType(I32, LANES)
    row0 = builder.mul(_i64(builder, row), ir.Constant(I64, 3))

    def word(k, j):  # keys[row + k, j], as a vector
        at = builder.add(row0, ir.Constant(I64, 3 * k + j))
        return _splat(builder, builder.load(builder.gep(data, [at], inbounds=True)), v32)

    accs = list(accs)
    for k in range(count):
        s, h, low = word(k, 0), word(k, 1), word(k, 2)
        for j, px in enumerate(pixels):
            key = _key(builder, px, s, h, low)
            accs[j] = builder.select(builder.icmp_signed(">", key, accs[j]), key, accs[j])
    return accs


@intrinsic
def max_keys(typingctx, px, best, i, keys, c):
    """``best[i:i+16] = max(best[i:i+16], key of each of colours c..c+7 for pixels px[i:i+16])``.

    ``px``: uint32 [>= i + 16], a pixel's R, G, B in its low three bytes (the fourth is ignored: its weight is 0);
    ``best``: int32 like it; ``keys``: int32 [M, 3] C-contiguous, rows ``c .. c + 7`` present, each ``(s bytes,
    -h, six bits << 26)`` as ``dither.vnni_keys`` builds them. No bounds are checked: the caller's loop keeps
    ``i + 16`` within the arrays and ``c + 8`` within the rows."""
    if not (_is(px, types.uint32) and _is(best, types.int32) and _is(keys, types.int32, 2) and keys.layout == "C"
            and isinstance(i, types.Integer) and isinstance(c, types.Integer)):
        return None
    sig = types.void(px, best, i, keys, c)

    def codegen(context, builder, signature, args):
        pa, ba, ia, ka, ca = args
        v32 = ir.VectorType(I32, LANES)
        at = _i64(builder, ia)

        def lanes(arrty, arr):
            ary = context.make_array(arrty)(context, builder, arr)
            return builder.bitcast(builder.gep(ary.data, [at], inbounds=True), v32.as_pointer())

        pixels = builder.load(lanes(signature.args[0], pa), align=4)
        best_ptr = lanes(signature.args[1], ba)
        acc = builder.load(best_ptr, align=4)
        data = context.make_array(signature.args[3])(context, builder, ka).data
        builder.store(_max_keys(builder, data, ca, COLOURS, [pixels], [acc])[0], best_ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


def _emit_keys(builder, lut, out_idx, out_img, p, keys: ir.Value, wide: bool) -> ir.Value:
    """``emit_rgb``'s and ``emit16``'s stores for the 16 ``keys`` at pixel ``p`` (the arrays' data pointers);
    returns ``1 << index`` per lane. ``wide``: the colours go out as one 64-byte store, its last 16 bytes beyond the
    vector's pixels (the caller writes them later, or they are past the pixels it writes)."""
    v32 = ir.VectorType(I32, LANES)

    def ptr(base, at, vty):
        return builder.bitcast(builder.gep(base, [at], inbounds=True), vty.as_pointer())

    idx = builder.sub(ir.Constant(v32, [31] * LANES), builder.and_(keys, ir.Constant(v32, [31] * LANES)))
    at = _i64(builder, p)
    builder.store(builder.trunc(idx, ir.VectorType(I8, LANES)), ptr(out_idx, at, ir.VectorType(I8, LANES)), align=1)
    lo = builder.load(ptr(lut, ir.Constant(I64, 0), v32), align=4)
    hi = builder.load(ptr(lut, ir.Constant(I64, LANES), v32), align=4)
    perm = _declared(builder, "llvm.x86.avx512.vpermi2var.d.512", v32)
    _store_rgb(builder, out_img, at, builder.call(perm, [lo, idx, hi]), wide)
    return builder.shl(ir.Constant(v32, [1] * LANES), idx)


def _store_rgb(builder, out_img, p, colours: ir.Value, wide: bool) -> None:
    """The 16 colours (R G B in each word's low bytes) packed into 48 bytes at pixel ``p`` of the flat RGB
    ``out_img`` with one byte shuffle; ``wide``: one 64-byte store (see ``_emit_keys``)."""
    width = 4 * LANES if wide else 3 * LANES
    order = [4 * (k // 3) + k % 3 for k in range(3 * LANES)] + [0] * (width - 3 * LANES)
    v8 = ir.VectorType(I8, 4 * LANES)
    rgb = builder.shuffle_vector(builder.bitcast(colours, v8), ir.Constant(v8, ir.Undefined),
                                 ir.Constant(ir.VectorType(I32, width), order))
    at = builder.gep(out_img, [builder.mul(_i64(builder, p), ir.Constant(I64, 3))], inbounds=True)
    builder.store(rgb, builder.bitcast(at, ir.VectorType(I8, width).as_pointer()), align=1)


def _emit_types(lut, out_idx, out_img, p) -> bool:
    return (_is(lut, types.uint32) and _is(out_idx, types.uint8) and _is(out_img, types.uint8)
            and isinstance(p, types.Integer))


@intrinsic
def emit_rgb(typingctx, best, i, lut, out_idx, out_img, p, used):
    """For pixels ``i .. i + 16`` of ``best`` (keys of ``max_keys``), written as pixels ``p .. p + 16`` of the
    image: each index (``31 - key & 31``) into ``out_idx``, its colour (``lut[index]``, R G B in a word's low
    bytes) into the flat RGB ``out_img`` (48 bytes), and ``used[lane] |= 1 << index``. ``lut``: uint32 [32],
    ``used``: int32 [16]. Where the scalar loop gathers a colour per pixel, this permutes sixteen at once
    (``vpermi2d`` over the 32-entry table) and packs them with one byte shuffle. No bounds are checked."""
    if not (_is(best, types.int32) and isinstance(i, types.Integer) and _emit_types(lut, out_idx, out_img, p)
            and _is(used, types.int32)):
        return None
    sig = types.void(best, i, lut, out_idx, out_img, p, used)

    def codegen(context, builder, signature, args):
        v32 = ir.VectorType(I32, LANES)
        best_, _, lut_, idx_, img_, _, used_ = (
            context.make_array(ty)(context, builder, a).data if isinstance(ty, types.Array) else None
            for ty, a in zip(signature.args, args))
        keys = builder.load(builder.bitcast(builder.gep(best_, [_i64(builder, args[1])], inbounds=True),
                                            v32.as_pointer()), align=4)
        bits = _emit_keys(builder, lut_, idx_, img_, args[5], keys, wide=False)
        used_ptr = builder.bitcast(used_, v32.as_pointer())
        builder.store(builder.or_(builder.load(used_ptr, align=4), bits), used_ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


# ---------------------------------------------------------------------------------------------------------
# Vec16: sixteen pixels (R, G, B in each word's low bytes) or their keys, kept in one register from the image's
# bytes to the stores. Going through memory (``max_keys`` over a block of packed words) cost 0.41 ms for 512x512
# to 32 colours where this costs 0.35 (a Zen 4 VM): packing the pixels took three passes over the block, this one
# load and one byte shuffle.

V16 = ir.VectorType(ir.IntType(32), LANES)


def _v16_ptr(builder: ir.IRBuilder, base: ir.Value, at: ir.Value) -> ir.Value:
    """A pointer to the sixteen 32-bit words at element ``at`` of ``base`` (an int32 or uint32 array's data)."""
    return builder.bitcast(builder.gep(base, [_i64(builder, at)], inbounds=True), V16.as_pointer())


class Vec16(types.Type):
    def __init__(self) -> None:
        super().__init__(name="Vec16")


vec16 = Vec16()


@register_model(Vec16)
class _Vec16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, V16)


@intrinsic
def rgb16(typingctx, src, p):
    """Pixels ``p .. p + 16`` of the flat RGB ``src`` as a Vec16. Reads 64 bytes from ``src[3 p]`` (16 past the
    pixels: the caller keeps them within the image) and shuffles them into words with one ``vpermb``; a load of
    exactly 48 bytes became a chain of byte inserts."""
    if not (_is(src, types.uint8) and isinstance(p, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        base = _data(context, builder, signature.args[0], args[0])
        at = builder.mul(_i64(builder, args[1]), ir.Constant(I64, 3))
        v64 = ir.VectorType(I8, 4 * LANES)
        b = builder.load(builder.bitcast(builder.gep(base, [at], inbounds=True), v64.as_pointer()), align=1)
        order = [3 * (k // 4) + k % 4 if k % 4 < 3 else 4 * LANES for k in range(4 * LANES)]
        words = builder.shuffle_vector(b, ir.Constant(v64, [0] * (4 * LANES)),
                                       ir.Constant(ir.VectorType(I32, 4 * LANES), order))
        return builder.bitcast(words, V16)

    return vec16(src, p), codegen


@intrinsic
def splat16(typingctx, x):
    """Every lane ``x`` (an int32)."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return _splat(builder, builder.trunc(_i64(builder, args[0]), I32), V16)

    return vec16(x), codegen


@intrinsic
def keys16(typingctx, px, acc, keys, c, count):
    """``acc`` raised to the keys of colours ``c .. c + count - 1`` (``count`` a literal) of ``keys`` (as
    ``max_keys`` reads them) for the pixels ``px``."""
    n = _const(count)
    if n is None or not (_is(keys, types.int32, 2) and keys.layout == "C" and isinstance(c, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[2])(context, builder, args[2]).data
        return _max_keys(builder, data, args[3], n, [args[0]], [args[1]])[0]

    return vec16(px, acc, keys, c, count), codegen


@intrinsic
def keys16x2(typingctx, px, px2, acc, acc2, keys, c, count):
    """``keys16`` for two vectors of pixels at once, each colour's words read once for both: 0.33 ms instead of
    0.35 for 512x512 random pixels to 32 colours (measured on a prototype, Zen 4 VM)."""
    n = _const(count)
    if n is None or not (_is(keys, types.int32, 2) and keys.layout == "C" and isinstance(c, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[4])(context, builder, args[4]).data
        accs = _max_keys(builder, data, args[5], n, [args[0], args[1]], [args[2], args[3]])
        return context.make_tuple(builder, signature.return_type, accs)

    return types.UniTuple(vec16, 2)(px, px2, acc, acc2, keys, c, count), codegen


@intrinsic
def shared_cell(typingctx, px, bits):
    """The cell (``2^bits`` per side, numbered as ``dither._cell``) holding all sixteen pixels of ``px``, or -1
    where they are in more than one: the top ``bits`` bits of each channel compared across lanes."""
    g = _const(bits)
    if g is None:
        return None

    def codegen(context, builder, signature, args):
        top = builder.and_(args[0], ir.Constant(V16, [((0xFF << (8 - g)) & 0xFF) * 0x010101] * LANES))
        first = builder.extract_element(top, ir.Constant(I32, 0))
        same = builder.icmp_unsigned("==", top, _splat(builder, first, V16))
        every = builder.icmp_unsigned("==", builder.bitcast(same, ir.IntType(LANES)),
                                      ir.Constant(ir.IntType(LANES), (1 << LANES) - 1))
        cell = _cell_of(builder, builder.zext(first, I64), g)
        return builder.select(every, cell, ir.Constant(I64, -1))

    return types.int64(px, bits), codegen


def _candidates(context, builder, codes_ty, codes, px: ir.Value, g: int) -> tuple[list[ir.Value], ir.Value]:
    """The three candidates of each pixel's cell (``dither.triple_table`` ``codes``, 2^``g`` cells per side) as
    Vec16 indices, and the 16-bit mask of lanes whose cell has more than three (as an i64): one AVX-512 gather."""
    def const(x):
        return ir.Constant(V16, [x] * LANES)

    cell = _cell_of(builder, px, g)
    base = builder.bitcast(_data(context, builder, codes_ty, codes), I8.as_pointer())
    name = "llvm.x86.avx512.mask.gather.dpi.512"
    every = ir.VectorType(ir.IntType(1), LANES)
    gather = builder.module.globals.get(name) or ir.Function(
        builder.module, ir.FunctionType(V16, [V16, I8.as_pointer(), V16, every, I32]), name)
    words = builder.call(gather, [const(0), base, cell, ir.Constant(every, [1] * LANES), ir.Constant(I32, 2)])
    a, b, c = (builder.and_(builder.lshr(words, const(TRIPLE_FIELD * k)), const((1 << TRIPLE_FIELD) - 1))
               for k in range(3))
    many = builder.zext(builder.bitcast(builder.icmp_unsigned(">", a, b), ir.IntType(LANES)), I64)
    return [a, b, c], many


@intrinsic
def triple16(typingctx, px, codes, cols, bits):
    """The greatest keys of the pixels ``px`` over their cells' candidates, and the lanes whose cell has more than
    three (a 16-bit mask; their keys are not searched). ``codes``: ``dither.triple_table``, a uint16 per cell (2^
    ``bits`` per side, numbered as ``dither._cell``), one more entry to spare (every lane reads a word); ``cols``:
    int32 [3, 32], the rows of ``dither.vnni_keys`` as columns (s, -h, six bits), permuted per lane to each
    candidate's. One gather and three keys a vector, whatever the palette's size."""
    g = _const(bits)
    if g is None or not (isinstance(px, Vec16) and _is(codes, types.uint16) and _is(cols, types.int32, 2)
                         and cols.layout == "C"):
        return None

    def codegen(context, builder, signature, args):
        pxv = args[0]
        cands, many = _candidates(context, builder, signature.args[1], args[1], pxv, g)
        table = _data(context, builder, signature.args[2], args[2])
        perm = _declared(builder, "llvm.x86.avx512.vpermi2var.d.512", V16)
        cols = [tuple(builder.load(_v16_ptr(builder, table, ir.Constant(I64, 32 * j + LANES * half)), align=4)
                      for half in (0, 1)) for j in range(3)]
        best = None
        for idx in cands:
            key = _key(builder, pxv, *(builder.call(perm, [lo, idx, hi]) for lo, hi in cols))
            best = key if best is None else builder.select(builder.icmp_signed(">", key, best), key, best)
        return context.make_tuple(builder, signature.return_type, [best, many])

    return types.Tuple([vec16, types.int64])(px, codes, cols, bits), codegen


@intrinsic
def emit16(typingctx, keys, lut, out_idx, out_img, p, used):
    """``emit_rgb`` for the keys of a Vec16 at pixel ``p``; ``used`` (a Vec16 kept in a register by the caller) is
    returned with each lane's ``1 << index`` set. The colours go out as one 64-byte store: its last 16 bytes land
    on the next vector's pixels, which the caller writes after (in order), or past the pixels it writes, within
    ``out_img`` as its reads are within the source."""
    if not (isinstance(keys, Vec16) and isinstance(used, Vec16) and _emit_types(lut, out_idx, out_img, p)):
        return None

    def codegen(context, builder, signature, args):
        lut_, idx_, img_ = (context.make_array(signature.args[k])(context, builder, args[k]).data for k in (1, 2, 3))
        return builder.or_(args[5], _emit_keys(builder, lut_, idx_, img_, args[4], args[0], wide=True))

    return vec16(keys, lut, out_idx, out_img, p, used), codegen


@intrinsic
def store16(typingctx, arr, i, v):
    """``arr[i:i+16] = v`` (int32). No bounds are checked."""
    if not (_is(arr, types.int32) and isinstance(i, types.Integer) and isinstance(v, Vec16)):
        return None

    def codegen(context, builder, signature, args):
        builder.store(args[2], _v16_ptr(builder, _data(context, builder, signature.args[0], args[0]), args[1]),
                      align=4)
        return context.get_dummy_value()

    return types.void(arr, i, v), codegen


@intrinsic
def load16(typingctx, arr, i):
    """``arr[i:i+16]`` (uint32: pixels packed as ``max_keys`` reads them) as a Vec16. No bounds are checked."""
    if not (_is(arr, types.uint32) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.load(_v16_ptr(builder, _data(context, builder, signature.args[0], args[0]), args[1]), align=4)

    return vec16(arr, i), codegen


# ---------------------------------------------------------------------------------------------------------
# VecF16: sixteen float32 lanes, the float32 search's form of a Vec16 (every CPU: portable LLVM vector IR, which
# LLVM splits into two 256-bit halves where the CPU has no 512-bit registers). The keys of ``dither.nearest_table``
# are whole numbers below 2^24, exact in float32, so the least one is the nearest colour with its index in the
# low five bits. From the image's bytes to the stores in registers: 512x512 to PICO-8 took 0.29-0.32 ms where the
# block loop (three float32 rows of a block, searched, then written) took 0.50 (a prototype, Intel Xeon VM).

F16 = ir.VectorType(ir.FloatType(), LANES)


class VecF16(types.Type):
    def __init__(self) -> None:
        super().__init__(name="VecF16")


vecf16 = VecF16()


@register_model(VecF16)
class _VecF16Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, F16)


@intrinsic
def floats16(typingctx, px):
    """The R, G and B of the Vec16 ``px`` (``rgb16``) as three VecF16."""
    if not isinstance(px, Vec16):
        return None

    def codegen(context, builder, signature, args):
        byte = ir.Constant(V16, [255] * LANES)
        rgb = [builder.sitofp(builder.and_(builder.lshr(args[0], ir.Constant(V16, [8 * c] * LANES)), byte), F16)
               for c in range(3)]
        return context.make_tuple(builder, signature.return_type, rgb)

    return types.UniTuple(vecf16, 3)(px), codegen


@intrinsic
def fill16(typingctx, x):
    """Every lane ``x`` (a float32)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return _splat(builder, args[0], F16)

    return vecf16(x), codegen


def _least_keys(builder: ir.IRBuilder, data: ir.Value, row: ir.Value, count: int, pixels: list[list[ir.Value]],
                leasts: list[ir.Value], colours: tuple[ir.Value, ir.Value] | None = None) -> list[ir.Value]:
    """Each of ``leasts`` lowered to the keys of colours ``row .. row + count - 1`` of the float32 key rows at
    ``data`` (four per colour: ``-64 c`` and ``32 (|c|^2 + 2^18) + index``, ``dither.nearest_table``) for the
    pixels (R, G and B VecF16) of the same place in ``pixels``: three fused multiply-adds and a minimum per colour
    and vector. ``colours``: (the colour words' data, a Vec16) for one vector, that Vec16 following its least key's
    colour; returned after the leasts."""
    # fmuladd, not fma: fused where the CPU has FMA, a multiply and an add elsewhere (llvm.fma would become calls
    # to the C library's fmaf there); the keys are whole numbers below 2^24, the same either way
    fma = _declared(builder, "llvm.fmuladd.v16f32", F16)
    row0 = builder.mul(_i64(builder, row), ir.Constant(I64, 4))
    leasts = list(leasts)
    held = colours[1] if colours else None
    for k in range(count):
        w = [_splat(builder, builder.load(builder.gep(data, [builder.add(row0, ir.Constant(I64, 4 * k + j))],
                                                      inbounds=True)), F16) for j in range(4)]
        for t, (r, g, b) in enumerate(pixels):
            key = builder.call(fma, [r, w[0], builder.call(fma, [g, w[1], builder.call(fma, [b, w[2], w[3]])])])
            lower = builder.fcmp_ordered("<", key, leasts[t])
            leasts[t] = builder.select(lower, key, leasts[t])
            if colours:
                word = builder.load(builder.gep(colours[0], [builder.add(_i64(builder, row), ir.Constant(I64, k))],
                                                inbounds=True))
                held = builder.select(lower, _splat(builder, word, V16), held)
    return leasts + ([held] if colours else [])


def _float_keys(keys, c, count) -> int | None:
    n = _const(count)
    if n is None or not (_is(keys, types.float32, 2) and keys.layout == "C" and isinstance(c, types.Integer)):
        return None
    return n


@intrinsic
def fkeys16(typingctx, r, g, b, least, keys, c, count):
    """``least`` lowered to the keys of colours ``c .. c + count - 1`` (``count`` a literal) of the float32 key
    rows ``keys`` ([M, 4] C-contiguous, ``_least_keys``) for the pixels ``r``, ``g``, ``b``."""
    n = _float_keys(keys, c, count)
    if n is None:
        return None

    def codegen(context, builder, signature, args):
        data = _data(context, builder, signature.args[4], args[4])
        return _least_keys(builder, data, args[5], n, [args[:3]], [args[3]])[0]

    return vecf16(r, g, b, least, keys, c, count), codegen


@intrinsic
def fkeys16x2(typingctx, r, g, b, r2, g2, b2, least, least2, keys, c, count):
    """``fkeys16`` for two vectors of pixels at once, each colour's four words read once for both: 512x512 random
    pixels took 0.80x the time to PICO-8 and 0.77x to 32 colours (with ``femit16`` reading the indices back, a
    prototype against the loop of one vector at a time, Intel Xeon VM)."""
    n = _float_keys(keys, c, count)
    if n is None:
        return None

    def codegen(context, builder, signature, args):
        data = _data(context, builder, signature.args[8], args[8])
        leasts = _least_keys(builder, data, args[9], n, [args[:3], args[3:6]], list(args[6:8]))
        return context.make_tuple(builder, signature.return_type, leasts)

    return types.UniTuple(vecf16, 2)(r, g, b, r2, g2, b2, least, least2, keys, c, count), codegen


@intrinsic
def fkeys16c(typingctx, r, g, b, least, held, keys, words, c):
    """``fkeys16`` for colour ``c`` alone that also keeps each pixel's colour: ``(least, held)`` with ``held`` (a
    Vec16) set to ``words[c]`` (uint32, R G B in the low bytes) where colour ``c`` is nearer. For a coarse cell's
    few colours, so that ``femit16c`` writes the colours as a vector."""
    if not (_is(keys, types.float32, 2) and keys.layout == "C" and isinstance(c, types.Integer)
            and isinstance(held, Vec16) and _is(words, types.uint32)):
        return None

    def codegen(context, builder, signature, args):
        data, words_ = (_data(context, builder, signature.args[k], args[k]) for k in (5, 6))
        out = _least_keys(builder, data, args[7], 1, [args[:3]], [args[3]], (words_, args[4]))
        return context.make_tuple(builder, signature.return_type, out)

    return types.Tuple([vecf16, vec16])(r, g, b, least, held, keys, words, c), codegen


@intrinsic
def ftriple16(typingctx, px, r, g, b, codes, cols, bits):
    """``triple16`` with the float32 keys: the least keys of the pixels ``px`` (``r``, ``g``, ``b`` their channels,
    ``floats16``) over their cells' candidates, and the mask of lanes whose cell has more than three. ``cols``:
    float32 [4, 32], the key rows of ``dither.nearest_table`` as columns, two registers each, permuted per lane to
    each candidate's. Only where numba compiles for AVX-512 (``dither._FLOAT_WIDE``): elsewhere every lane counts
    as "more than three", so a caller searches every colour: tried there with LLVM's portable gathers (AVX2's 8-lane
    ``vpgatherdd``), 512x512 random pixels to endesga-32 took 2.2x the time of the search of every colour (compiled
    for AVX2, JIT, Intel Xeon VM)."""
    gb = _const(bits)
    if gb is None or not (isinstance(px, Vec16) and all(isinstance(v, VecF16) for v in (r, g, b))
                          and _is(codes, types.uint16) and _is(cols, types.float32, 2) and cols.layout == "C"):
        return None

    def codegen(context, builder, signature, args):
        if not wide_registers():
            return context.make_tuple(builder, signature.return_type,
                                      [ir.Constant(F16, [float("inf")] * LANES), ir.Constant(I64, (1 << LANES) - 1)])
        cands, many = _candidates(context, builder, signature.args[4], args[4], args[0], gb)
        table = _data(context, builder, signature.args[5], args[5])
        fma = _declared(builder, "llvm.fmuladd.v16f32", F16)
        name = "llvm.x86.avx512.vpermi2var.ps.512"
        perm = builder.module.globals.get(name) or ir.Function(builder.module, ir.FunctionType(F16, [F16, V16, F16]),
                                                               name)
        cols = [tuple(builder.load(builder.bitcast(builder.gep(table, [ir.Constant(I64, 32 * j + LANES * half)],
                                                               inbounds=True), F16.as_pointer()), align=4)
                      for half in (0, 1)) for j in range(4)]
        least = None
        for idx in cands:
            w = [builder.call(perm, [lo, idx, hi]) for lo, hi in cols]
            key = builder.call(fma, [args[1], w[0], builder.call(fma, [args[2], w[1],
                                                                       builder.call(fma, [args[3], w[2], w[3]])])])
            least = key if least is None else builder.select(builder.fcmp_ordered("<", key, least), key, least)
        return context.make_tuple(builder, signature.return_type, [least, many])

    return types.Tuple([vecf16, types.int64])(px, r, g, b, codes, cols, bits), codegen


def _store_indices(builder, out_idx, p, least: ir.Value) -> ir.Value:
    """The indices of the least float32 keys (``key & 31``) as sixteen bytes at ``out_idx[p]``; returns them."""
    idx = builder.and_(builder.fptosi(least, V16), ir.Constant(V16, [31] * LANES))
    v8 = ir.VectorType(I8, LANES)
    at = builder.gep(out_idx, [_i64(builder, p)], inbounds=True)
    builder.store(builder.trunc(idx, v8), builder.bitcast(at, v8.as_pointer()), align=1)
    return idx


@intrinsic
def indices16(typingctx, least, out, at):
    """The indices of the least keys ``least`` (``fkeys16``) as sixteen bytes at ``out[at]`` (uint8). No bounds
    are checked."""
    if not (isinstance(least, VecF16) and _is(out, types.uint8) and isinstance(at, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        _store_indices(builder, _data(context, builder, signature.args[1], args[1]), args[2], args[0])
        return context.get_dummy_value()

    return types.void(least, out, at), codegen


@intrinsic
def femit16c(typingctx, least, held, out_idx, out_img, p, used):
    """``femit16`` where ``fkeys16c`` kept the colours: the indices as sixteen bytes, the colours packed with one
    byte shuffle and one 64-byte store (see ``emit16``): on bench_quantize's 512x512 gradient, where 69% of vectors
    lie in one coarse cell, the search took 0.69x the time to PICO-8 and 0.78-0.81x to 32 colours against
    ``femit16`` for every vector (0.18 ms against 0.26, 0.25-0.26 against 0.32; Intel Xeon VM)."""
    if not (isinstance(least, VecF16) and isinstance(held, Vec16) and isinstance(used, Vec16)
            and _is(out_idx, types.uint8) and _is(out_img, types.uint8) and isinstance(p, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        idx_, img_ = (_data(context, builder, signature.args[k], args[k]) for k in (2, 3))
        idx = _store_indices(builder, idx_, args[4], args[0])
        _store_rgb(builder, img_, args[4], args[1], wide=True)
        return builder.or_(args[5], builder.shl(ir.Constant(V16, [1] * LANES), idx))

    return vec16(least, held, out_idx, out_img, p, used), codegen


@intrinsic
def femit16(typingctx, least, rgbx, out_idx, out_img, p, used):
    """``emit16`` for the least keys of ``fkeys16``: the indices (``key & 31``) as sixteen bytes into ``out_idx``,
    each pixel's colour (``rgbx[index]``, R G B in a word's low bytes) as a four-byte store at its place in the flat
    RGB ``out_img``, in order, each store's fourth byte overwritten by the next pixel's (the last one's lands on the
    next vector's first pixel, or past the caller's pixels within ``out_img``: see ``emit16``); returns ``used`` with
    each lane's ``1 << index`` set. Where numba compiles for AVX-512, ``rgbx`` holds 32 entries and the colours are
    permuted out of it and stored as ``emit16`` does (512x512 random pixels to PICO-8: 0.68-0.75x Pillow NONE's
    time instead of 0.86-0.90x); elsewhere sixteen loads and stores (LLVM has no portable permute of a variable
    table), the indices read back from ``out_idx`` rather than taken out of the vector (0.86x the time on random
    pixels, about the same on the gradient). No bounds are checked."""
    if not (isinstance(least, VecF16) and isinstance(used, Vec16) and _emit_types(rgbx, out_idx, out_img, p)):
        return None

    def codegen(context, builder, signature, args):
        lut_, idx_, img_ = (_data(context, builder, signature.args[k], args[k]) for k in (1, 2, 3))
        idx = _store_indices(builder, idx_, args[4], args[0])
        at = _i64(builder, args[4])
        if wide_registers():
            lo, hi = (builder.load(_v16_ptr(builder, lut_, ir.Constant(I64, h)), align=4) for h in (0, LANES))
            perm = _declared(builder, "llvm.x86.avx512.vpermi2var.d.512", V16)
            _store_rgb(builder, img_, at, builder.call(perm, [lo, idx, hi]), wide=True)
            return builder.or_(args[5], builder.shl(ir.Constant(V16, [1] * LANES), idx))
        base = builder.mul(at, ir.Constant(I64, 3))
        for k in range(LANES):
            index = builder.load(builder.gep(idx_, [builder.add(at, ir.Constant(I64, k))], inbounds=True))
            colour = builder.load(builder.gep(lut_, [builder.zext(index, I64)], inbounds=True))
            q = builder.gep(img_, [builder.add(base, ir.Constant(I64, 3 * k))], inbounds=True)
            builder.store(colour, builder.bitcast(q, I32.as_pointer()), align=1)
        return builder.or_(args[5], builder.shl(ir.Constant(V16, [1] * LANES), idx))

    return vec16(least, rgbx, out_idx, out_img, p, used), codegen


def table_first() -> bool:
    """From 17 colours the float32 search looks each pixel up in the palette's 64^3 cell table first (``cells16``,
    ``temit16``) and searches only the pixels whose cell holds more than one colour, where numba compiles for AVX2
    but not AVX-512 (which reads triples instead, ``ftriple16``): a key there costs three multiply-adds and a minimum
    per eight pixels on two ports, and random vectors rarely share a coarse cell. bench_quantize, per-round ratios
    to Pillow NONE (random / gradient; compiled for Haswell, JIT, Intel Xeon VM): endesga-32 1.38x / 1.17x against
    the search of every colour's 2.07x / 1.37x (the table alone, without the coarse cells of vectors that share
    one, 1.37x / 1.51x); PICO-8 through the table 1.23-1.25x / 0.99x against the search's 1.14x / 0.94-0.96x, so 16
    colours and fewer keep the search: AVX2's gathers of eight words took about 7 ns each on this CPU (0.23 ms of
    the loop's 0.33 for 512x512 pixels to 1bit, 32,768 gathers). On a Zen 3 VM (AVX2, no AVX-512), per-round
    ratios to Pillow NONE, endesga-32: this loop (the listed pixels searched while in the cache, the gathers a
    vector ahead) 1.02-1.11x / 0.94-1.09x; in an earlier hour the search of every colour 1.00-1.36x / 0.92-1.18x
    and the table loop before those two changes 1.26-1.56x / 1.02-1.35x. Not while ``NARROW``, nor without AVX2
    (the gather is AVX2's)."""
    return not NARROW and not _wide_target() and "avx2" in _target_features()


@intrinsic
def cells16(typingctx, px, cells):
    """The entries of the uint8 cell table ``cells`` (``dither.NearestTable.cells``: 64^3 cells and 4 bytes of
    padding) of the pixels ``px`` (a Vec16), as a Vec16: two of AVX2's gathers of eight four-byte words, each cut to
    its first byte. The x86 intrinsic, not LLVM's portable masked gather, which LLVM turns into sixteen loads for
    CPUs it takes gathers to be slow on (Haswell, Broadwell). AVX2 only (``table_first``)."""
    if not (isinstance(px, Vec16) and _is(cells, types.uint8)):
        return None

    def codegen(context, builder, signature, args):
        from .dither import GBITS

        v8 = ir.VectorType(I32, 8)
        name = "llvm.x86.avx2.gather.d.d.256"
        gather = builder.module.globals.get(name) or ir.Function(
            builder.module, ir.FunctionType(v8, [v8, I8.as_pointer(), v8, v8, I8]), name)
        base = _data(context, builder, signature.args[1], args[1])
        cell = _cell_of(builder, args[0], GBITS)
        halves = [builder.call(gather, [ir.Constant(v8, [0] * 8), base,
                                        builder.shuffle_vector(cell, cell, ir.Constant(v8, list(range(h, h + 8)))),
                                        ir.Constant(v8, [-1] * 8), ir.Constant(I8, 1)]) for h in (0, 8)]
        words = builder.shuffle_vector(halves[0], halves[1], ir.Constant(V16, list(range(LANES))))
        return builder.and_(words, ir.Constant(V16, [255] * LANES))

    return vec16(px, cells), codegen


@intrinsic
def temit16(typingctx, entries, pairs, out_idx, out_img, p, used):
    """For the cell-table ``entries`` of pixels ``p .. p + 16`` (``cells16``): each entry as the pixel's index into
    ``out_idx``, and the colours two pixels at a time: ``pairs[a | b << 5]`` (``dither.NearestTable.pairs``: R G B
    of colour ``a`` then of ``b`` in the low six bytes) as one eight-byte store, in order, each store's last two
    bytes overwritten by the next (the last one's land on the next vector's first pixel, or past the caller's
    pixels within ``out_img``, as ``femit16``'s). Returns ``(used, many)``: ``used`` with ``1 << entry`` set in
    the lanes whose cell holds one colour, and the bit mask of the lanes whose entry is 255 (more than one colour:
    the caller searches those pixels and writes them again). With the colours permuted out of the palette instead
    (four of AVX2's eight-word permutes and three blends per eight lanes) the loop took 0.40 ms for 512x512 random
    pixels to 1bit (two colours: no search) where this takes 0.33: AVX2 has one port for shuffles, and reading the
    pixels keeps it busy. No bounds are checked."""
    if not (isinstance(entries, Vec16) and isinstance(used, Vec16) and _is(pairs, types.uint64)
            and _is(out_idx, types.uint8) and _is(out_img, types.uint8) and isinstance(p, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        pairs_, idx_, img_ = (_data(context, builder, signature.args[k], args[k]) for k in (1, 2, 3))
        at = _i64(builder, args[4])
        bytes16 = ir.VectorType(I8, LANES)
        builder.store(builder.trunc(args[0], bytes16),
                      builder.bitcast(builder.gep(idx_, [at], inbounds=True), bytes16.as_pointer()), align=1)
        v8 = ir.VectorType(I32, 8)
        index = builder.and_(args[0], ir.Constant(V16, [31] * LANES))
        even, odd = (builder.shuffle_vector(index, index, ir.Constant(v8, list(range(k, LANES, 2)))) for k in (0, 1))
        pair = builder.or_(even, builder.shl(odd, ir.Constant(v8, [5] * 8)))
        base = builder.mul(at, ir.Constant(I64, 3))
        for k in range(LANES // 2):
            colours = builder.load(builder.gep(pairs_, [builder.zext(builder.extract_element(pair, ir.Constant(I32, k)),
                                                                     I64)], inbounds=True))
            q = builder.gep(img_, [builder.add(base, ir.Constant(I64, 6 * k))], inbounds=True)
            builder.store(colours, builder.bitcast(q, I64.as_pointer()), align=1)
        many = builder.icmp_unsigned("==", args[0], ir.Constant(V16, [255] * LANES))
        bits = builder.shl(ir.Constant(V16, [1] * LANES), index)
        used = builder.or_(args[5], builder.select(many, ir.Constant(V16, [0] * LANES), bits))
        mask = builder.zext(builder.bitcast(many, ir.IntType(LANES)), I64)
        return context.make_tuple(builder, signature.return_type, [used, mask])

    return types.Tuple([vec16, types.int64])(entries, pairs, out_idx, out_img, p, used), codegen


@intrinsic
def append8(typingctx, listed, count, first, lanes, bits):
    """``listed[count:count + 8] = first + lanes[bits]``: the places of the set bits of the byte ``bits`` after
    ``first``, as one eight-word store (``lanes``: int32 [256, 8], each byte's set bits in order). With sixteen
    branch-free appends a vector instead (a store and a count each, a chain through the count), 512x512 random
    pixels to PICO-8 through the table took 0.77 ms; appending a byte's lanes from the same table by a loop of
    eight stores, 0.65. No bounds are checked: ``listed`` holds 8 words past the last place written."""
    if not (_is(listed, types.int32) and _is(lanes, types.int32, 2) and all(
            isinstance(t, types.Integer) for t in (count, first, bits))):
        return None

    def codegen(context, builder, signature, args):
        v8 = ir.VectorType(I32, 8)
        listed_, lanes_ = (_data(context, builder, signature.args[k], args[k]) for k in (0, 3))
        row = builder.gep(lanes_, [builder.mul(_i64(builder, args[4]), ir.Constant(I64, 8))], inbounds=True)
        row = builder.load(builder.bitcast(row, v8.as_pointer()), align=4)
        at = builder.bitcast(builder.gep(listed_, [_i64(builder, args[1])], inbounds=True), v8.as_pointer())
        builder.store(builder.add(row, _splat(builder, builder.trunc(_i64(builder, args[2]), I32), v8)), at, align=4)
        return context.get_dummy_value()

    return types.void(listed, count, first, lanes, bits), codegen


# ---------------------------------------------------------------------------------------------------------
# Vec4: a pixel's R, G, B (and a zero lane) as one <4 x i32>; all lanes' values stay within int32 (see FS_SHIFT)

V4 = ir.VectorType(I32, 4)


class Vec4(types.Type):
    def __init__(self) -> None:
        super().__init__(name="Vec4")


vec4 = Vec4()


@register_model(Vec4)
class _Vec4Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, V4)


def _data(context, builder, arrty, arr) -> ir.Value:
    return context.make_array(arrty)(context, builder, arr).data


def _vec_ptr(builder, base, at) -> ir.Value:
    """A pointer to the <4 x i32> at int32 element ``at`` of ``base``."""
    return builder.bitcast(builder.gep(base, [_i64(builder, at)], inbounds=True), V4.as_pointer())


def _vec_at(builder, base, at) -> ir.Value:
    return builder.load(_vec_ptr(builder, base, at), align=4)


def _const(ty) -> int | None:
    """A literal integer argument's value (numba retries a typing that returned None with literal types)."""
    return ty.literal_value if isinstance(ty, types.IntegerLiteral) else None


def _opaque(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """``v`` hidden from LLVM's optimiser by an empty asm statement. A select between two loaded colours would
    otherwise become a load from a selected address, which puts the pair's distance comparison on the chain from
    one pixel to the next; between two opaque vectors it stays a select, which x86 lowers as a predicted branch
    (measured on a prototype of the loop, Jarvis-Judice-Ninke and Atkinson on bench_quantize's images: 1.25-1.29x
    the time of the previous scalar loops without the barrier, 0.88-0.91x with it). On other CPUs than x86 (not
    measured here) the value passes as is: the same result, chosen by LLVM's own lowering."""
    import llvmlite.binding as llvm

    if not llvm.get_process_triple().startswith(("x86_64", "i386", "i686")):
        return v
    return builder.call(ir.InlineAsm(ir.FunctionType(v.type, [v.type]), "", "=x,0"), [v])


@intrinsic
def zero4(typingctx):
    def codegen(context, builder, signature, args):
        return ir.Constant(V4, [0] * 4)

    return vec4(), codegen


@intrinsic
def pixel_at(typingctx, flat, q, ch):
    """The pixel whose R is ``flat[q]`` (uint8, ``ch`` channels, a literal 3 or 4) as a Vec4 (alpha lane 0). With
    3 channels one unaligned word is read at ``q - 1`` (so never past the image's end; ``q`` >= 1: see
    ``first_pixel``), with 4 the word at ``q``."""
    channels = _const(ch)
    if channels not in (3, 4) or not (isinstance(flat, types.Array) and flat.dtype == types.uint8):
        return None

    def codegen(context, builder, signature, args):
        base = _data(context, builder, signature.args[0], args[0])
        at = _i64(builder, args[1])
        if channels == 3:
            at = builder.sub(at, ir.Constant(I64, 1))
        word = builder.load(builder.bitcast(builder.gep(base, [at], inbounds=True), I32.as_pointer()), align=1)
        if channels == 3:
            word = builder.lshr(word, ir.Constant(I32, 8))
        else:
            word = builder.and_(word, ir.Constant(I32, 0xFFFFFF))
        return builder.zext(builder.bitcast(word, ir.VectorType(I8, 4)), V4)

    return vec4(flat, q, ch), codegen


@intrinsic
def first_pixel(typingctx, flat, q):
    """The RGB at ``flat[q:q+3]`` as a Vec4, byte by byte (for ``q`` = 0, where ``pixel_at`` cannot read before)."""
    def codegen(context, builder, signature, args):
        base = _data(context, builder, signature.args[0], args[0])
        at = _i64(builder, args[1])
        v = ir.Constant(V4, [0] * 4)
        for c in range(3):
            b = builder.load(builder.gep(base, [builder.add(at, ir.Constant(I64, c))], inbounds=True))
            v = builder.insert_element(v, builder.zext(b, I32), ir.Constant(I32, c))
        return v

    return vec4(flat, q), codegen


@intrinsic
def value4(typingctx, rgb, acc, i, c2):
    """A pixel's value in fixed point: ``rgb << FS_SHIFT`` plus the error its cell collected (``acc[i:i+4]``,
    int32), plus ``c2`` and the rounding half (not in the zero lane)."""
    def codegen(context, builder, signature, args):
        collected = _vec_at(builder, _data(context, builder, signature.args[1], args[1]), args[2])
        v = builder.add(builder.shl(args[0], ir.Constant(V4, [FS_SHIFT] * 4)), collected)
        return builder.add(v, builder.add(args[3], ir.Constant(V4, [FS_HALF] * 3 + [0])))

    return vec4(rgb, acc, i, c2), codegen


@intrinsic
def code_cell(typingctx, t, gbits):
    """(the code value of fixed-point ``t``: ``t >> FS_SHIFT`` clamped to 0..255 per lane, its cell of
    ``2^gbits`` per side as ``dither._cell`` numbers them, its place in the cell as ``dither._low`` numbers it).
    ``gbits`` a literal: shifts by constants. Cell and place are taken from the clamped value packed into one word
    (a saturating narrowing), the shortest way from the vector to a scalar index."""
    g = _const(gbits)
    if g is None:
        return None

    def codegen(context, builder, signature, args):
        s = builder.ashr(args[0], ir.Constant(V4, [FS_SHIFT] * 4))
        zero, top = ir.Constant(V4, [0] * 4), ir.Constant(V4, [255] * 4)
        s = builder.select(builder.icmp_signed(">", s, zero), s, zero)
        s = builder.select(builder.icmp_signed("<", s, top), s, top)
        b = builder.trunc(s, ir.VectorType(I8, 4))
        word = builder.zext(builder.bitcast(b, I32), I64)
        cell = _cell_of(builder, word, g)
        lm = ir.Constant(I64, (1 << (8 - g)) - 1)

        def low(c):  # its low 8 - g bits
            return builder.and_(builder.lshr(word, ir.Constant(I64, 8 * c)), lm)

        lo = builder.or_(builder.or_(builder.shl(low(0), ir.Constant(I64, 2 * (8 - g))),
                                     builder.shl(low(1), ir.Constant(I64, 8 - g))), low(2))
        return context.make_tuple(builder, signature.return_type, [builder.zext(b, V4), cell, lo])

    return types.Tuple((vec4, types.uint64, types.uint64))(t, gbits), codegen


@intrinsic
def lane(typingctx, v, k):
    """Lane ``k`` of ``v`` as an int64."""
    def codegen(context, builder, signature, args):
        return builder.sext(builder.extract_element(args[0], builder.trunc(_i64(builder, args[1]), I32)), I64)

    return types.int64(v, k), codegen


@intrinsic
def scaled(typingctx, v, w):
    """``v * w`` per lane."""
    def codegen(context, builder, signature, args):
        return builder.mul(args[0], _splat(builder, builder.trunc(_i64(builder, args[1]), I32), V4))

    return vec4(v, w), codegen


def _pick(context, builder, signature, args, second_of) -> ir.Value:
    """``pick_pair``'s and ``pick_bit``'s result: colour ``kb`` where ``second_of(da, db)`` (an i1) says so, else
    ``ka``. Both colours' errors and next values are computed before the choice, between opaque vectors (see
    ``_opaque``): the choice is a predicted branch, not a load from a selected address."""
    v, pal_arr, palw_arr, ka, kb, n, w = args[:7]
    pal_base = _data(context, builder, signature.args[1], pal_arr)
    palw_base = _data(context, builder, signature.args[2], palw_arr)
    at_a = builder.shl(_i64(builder, ka), ir.Constant(I64, 2))
    at_b = builder.shl(_i64(builder, kb), ir.Constant(I64, 2))
    da = builder.sub(v, _vec_at(builder, pal_base, at_a))
    db = builder.sub(v, _vec_at(builder, pal_base, at_b))
    vwn = builder.add(n, builder.mul(v, _splat(builder, builder.trunc(_i64(builder, w), I32), V4)))
    ta = _opaque(builder, builder.sub(vwn, _vec_at(builder, palw_base, at_a)))
    tb = _opaque(builder, builder.sub(vwn, _vec_at(builder, palw_base, at_b)))
    second = second_of(da, db)
    k = builder.select(second, _i64(builder, kb), _i64(builder, ka))
    return context.make_tuple(builder, signature.return_type,
                              [k, builder.select(second, db, da), builder.select(second, tb, ta)])


@intrinsic
def pick_pair(typingctx, v, pal, palw, ka, kb, n, w):
    """Of colours ``ka`` and ``kb`` the nearer to code value ``v`` by squared distance (strict: ``ka`` on ties, as
    ``dither._pick``): (its index, the error ``v - colour``, the next pixel's value ``n + error * w``). ``pal``:
    int32, four per colour (R, G, B, 0); ``palw``: the same times ``w``, so the next value is ``n + v * w - palw[k]``
    and its last step a load and a subtraction: the distances and their comparison stay off the chain from one
    pixel to the next (a branch predicts the choice; see ``_opaque``)."""
    def codegen(context, builder, signature, args):
        def second_of(da, db):
            # both squared distances in one 8-lane vector, summed over each half's lanes
            v8 = ir.VectorType(I32, 8)
            d = builder.shuffle_vector(da, db, ir.Constant(v8, list(range(8))))
            sq = builder.mul(d, d)
            sq = builder.add(sq, builder.shuffle_vector(sq, sq, ir.Constant(v8, [1, 0, 3, 2, 5, 4, 7, 6])))
            sq = builder.add(sq, builder.shuffle_vector(sq, sq, ir.Constant(v8, [2, 3, 0, 1, 6, 7, 4, 5])))
            return builder.icmp_signed("<", builder.extract_element(sq, ir.Constant(I32, 4)),
                                       builder.extract_element(sq, ir.Constant(I32, 0)))

        return _pick(context, builder, signature, args, second_of)

    return types.Tuple((types.int64, vec4, vec4))(v, pal, palw, ka, kb, n, w), codegen


@intrinsic
def pick_bit(typingctx, v, pal, palw, ka, kb, n, w, bit):
    """``pick_pair`` with the choice given: colour ``kb`` where ``bit`` is not 0 (an OKLab pair's mask bit, see
    ``dither.pair_masks``), else ``ka``. A branch on the bit, so the mask's loads stay off the chain as the
    distances do in ``pick_pair``."""
    def codegen(context, builder, signature, args):
        return _pick(context, builder, signature, args,
                     lambda da, db: builder.icmp_unsigned("!=", _i64(builder, args[7]), ir.Constant(I64, 0)))

    return types.Tuple((types.int64, vec4, vec4))(v, pal, palw, ka, kb, n, w, bit), codegen


@intrinsic
def store4(typingctx, arr, i, v):
    """``arr[i:i+4] = v`` (int32)."""
    def codegen(context, builder, signature, args):
        builder.store(args[2], _vec_ptr(builder, _data(context, builder, signature.args[0], args[0]), args[1]), align=4)
        return context.get_dummy_value()

    return types.void(arr, i, v), codegen


@intrinsic
def put_pixel(typingctx, out, q, table32, k, ch):
    """Write ``table32[k]`` (a little-endian word: R, G, B, A) as the ``ch`` bytes (a literal 3 or 4) at
    ``out[q]``: one store of two bytes and one of a byte, or one word."""
    channels = _const(ch)
    if channels not in (3, 4):
        return None

    def codegen(context, builder, signature, args):
        base = _data(context, builder, signature.args[0], args[0])
        word = builder.load(builder.gep(_data(context, builder, signature.args[2], args[2]), [_i64(builder, args[3])],
                                        inbounds=True))
        at = _i64(builder, args[1])
        here = builder.gep(base, [at], inbounds=True)
        if channels == 4:
            builder.store(word, builder.bitcast(here, I32.as_pointer()), align=1)
        else:
            builder.store(builder.trunc(word, I16), builder.bitcast(here, I16.as_pointer()), align=1)
            builder.store(builder.trunc(builder.lshr(word, ir.Constant(I32, 16)), I8),
                          builder.gep(base, [builder.add(at, ir.Constant(I64, 2))], inbounds=True))
        return context.get_dummy_value()

    return types.void(out, q, table32, k, ch), codegen


__all__ = ["COLOURS", "LANES", "code_cell", "emit16", "emit_rgb", "femit16", "femit16c", "fill16", "first_pixel",
           "fkeys16", "fkeys16c", "fkeys16x2", "floats16", "host_has_vnni", "keys16", "keys16x2", "lane", "load16",
           "max_keys", "pick_bit", "pick_pair", "pixel_at", "put_pixel", "rgb16", "scaled", "shared_cell", "splat16",
           "store16", "store4", "triple16", "value4", "vec16", "vec4", "vecf16", "wide_registers", "zero4"]
