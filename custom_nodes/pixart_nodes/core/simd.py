"""Vector instructions numba's compiler does not reach by itself, for the sRGB nearest-colour search (``dither``).

Imported only where kernels are compiled (numba's JIT or ``build_kernels``): it imports numba and llvmlite.
numba's disk cache of the kernels that call these is keyed on ``dither.py``: after editing this file, clear it.

The search's keys (``dither.vnni_keys``) rank colours by an integer form of the squared sRGB distance that one
AVX-512 VNNI instruction (``vpdpbusd``: four unsigned-byte by signed-byte products summed into a 32-bit lane)
computes for 16 pixels at once, where the float32 search needs three fused multiply-adds: with ``s = c - 128``
(a signed byte) and ``|c|^2 = 2 h + parity``, ``|p - c|^2 = |p|^2 - 256 (r + g + b) - 2 (p . s - h) + parity``;
the first two terms are the same for every colour, so the nearest colour has the greatest ``E = p . s - h`` and,
among equal ``E``, even parity. A funnel shift appends six bits, ``32 (1 - parity) + 31 - index``, so one signed
maximum picks the nearest colour and, on exact ties, the lower index. ``E`` lies in -195457..97155, so ``64 E``
and its low bits fit an int32.
"""
from __future__ import annotations

from functools import lru_cache

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

# colours per pass (one load and store of the maxima serve eight), pixels per vector (512 bits of uint32)
from .dither import VNNI_COLOURS as COLOURS
from .dither import VNNI_LANES as LANES


@lru_cache(maxsize=1)
def host_has_vnni() -> bool:
    """numba compiles for AVX-512 VNNI (and the byte and word instructions around it) here: the CPU has them (Intel
    server parts since Cascade Lake, the Ice Lake, Tiger Lake and Rocket Lake client parts, AMD Zen 4 and later;
    not Intel's client parts since Alder Lake, which lack AVX-512) and numba's settings keep them (the features
    its JIT and ``build_kernels`` compile for: ``NUMBA_CPU_FEATURES``, ``NUMBA_CPU_NAME=generic`` and
    ``NUMBA_ENABLE_AVX=0`` can take them away, and LLVM then cannot compile the search: a fatal error, not an
    exception)."""
    from numba.core import codegen, config

    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else codegen.get_host_cpu_features()
    on = {f[1:] for f in features.split(",") if f.startswith("+")}
    return {"avx512f", "avx512bw", "avx512vnni"} <= on


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
        i32 = ir.IntType(32)
        v32 = ir.VectorType(i32, LANES)

        at = _i64(builder, ia)

        def lanes(arrty, arr):
            ary = context.make_array(arrty)(context, builder, arr)
            return builder.bitcast(builder.gep(ary.data, [at], inbounds=True), v32.as_pointer())

        pixels = builder.load(lanes(signature.args[0], pa), align=4)
        best_ptr = lanes(signature.args[1], ba)
        acc = builder.load(best_ptr, align=4)
        data = context.make_array(signature.args[3])(context, builder, ka).data
        mod = builder.module
        # the 512-bit VNNI dot product; LLVM upgrades this older signature where a newer one is declared
        dp = mod.globals.get("llvm.x86.avx512.vpdpbusd.512") or ir.Function(
            mod, ir.FunctionType(v32, [v32, v32, v32]), "llvm.x86.avx512.vpdpbusd.512")
        fshl = mod.globals.get("llvm.fshl.v16i32") or ir.Function(
            mod, ir.FunctionType(v32, [v32, v32, v32]), "llvm.fshl.v16i32")
        six = ir.Constant(v32, [6] * LANES)
        i64 = ir.IntType(64)
        row0 = builder.mul(_i64(builder, ca), ir.Constant(i64, 3))

        def word(k, j):  # keys[c + k, j]
            pos = builder.add(row0, ir.Constant(i64, 3 * k + j))
            return builder.load(builder.gep(data, [pos], inbounds=True))

        for k in range(COLOURS):
            e = builder.call(dp, [_splat(builder, word(k, 1), v32), pixels, _splat(builder, word(k, 0), v32)])
            key = builder.call(fshl, [e, _splat(builder, word(k, 2), v32), six])
            acc = builder.select(builder.icmp_signed(">", key, acc), key, acc)
        builder.store(acc, best_ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def emit_rgb(typingctx, best, i, lut, out_idx, out_img, p, used):
    """For pixels ``i .. i + 16`` of ``best`` (keys of ``max_keys``), written as pixels ``p .. p + 16`` of the
    image: each index (``31 - key & 31``) into ``out_idx``, its colour (``lut[index]``, R G B in a word's low
    bytes) into the flat RGB ``out_img`` (48 bytes), and ``used[lane] |= 1 << index``. ``lut``: uint32 [32],
    ``used``: int32 [16]. Where the scalar loop gathers a colour per pixel, this permutes sixteen at once
    (``vpermi2d`` over the 32-entry table) and packs them with one byte shuffle. No bounds are checked."""
    if not (_is(best, types.int32) and _is(lut, types.uint32) and _is(out_idx, types.uint8)
            and _is(out_img, types.uint8) and _is(used, types.int32)
            and isinstance(i, types.Integer) and isinstance(p, types.Integer)):
        return None
    sig = types.void(best, i, lut, out_idx, out_img, p, used)

    def codegen(context, builder, signature, args):
        ia, pa = args[1], args[5]
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        v32 = ir.VectorType(i32, LANES)

        def data(k):
            return context.make_array(signature.args[k])(context, builder, args[k]).data

        def ptr(k, at, vty):
            return builder.bitcast(builder.gep(data(k), [at], inbounds=True), vty.as_pointer())

        zero = ir.Constant(i64, 0)
        keys = builder.load(ptr(0, _i64(builder, ia), v32), align=4)
        idx = builder.sub(ir.Constant(v32, [31] * LANES), builder.and_(keys, ir.Constant(v32, [31] * LANES)))
        at = _i64(builder, pa)
        builder.store(builder.trunc(idx, ir.VectorType(i8, LANES)), ptr(3, at, ir.VectorType(i8, LANES)), align=1)
        lo = builder.load(ptr(2, zero, v32), align=4)
        hi = builder.load(ptr(2, ir.Constant(i64, LANES), v32), align=4)
        mod = builder.module
        perm = mod.globals.get("llvm.x86.avx512.vpermi2var.d.512") or ir.Function(
            mod, ir.FunctionType(v32, [v32, v32, v32]), "llvm.x86.avx512.vpermi2var.d.512")
        colours = builder.bitcast(builder.call(perm, [lo, idx, hi]), ir.VectorType(i8, 4 * LANES))
        rgb = builder.shuffle_vector(colours, ir.Constant(ir.VectorType(i8, 4 * LANES), ir.Undefined),
                                     ir.Constant(ir.VectorType(i32, 3 * LANES),
                                                 [4 * (k // 3) + k % 3 for k in range(3 * LANES)]))
        builder.store(rgb, ptr(4, builder.mul(at, ir.Constant(i64, 3)), ir.VectorType(i8, 3 * LANES)), align=1)
        used_ptr = ptr(6, zero, v32)
        bits = builder.shl(ir.Constant(v32, [1] * LANES), idx)
        builder.store(builder.or_(builder.load(used_ptr, align=4), bits), used_ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


__all__ = ["COLOURS", "LANES", "emit_rgb", "host_has_vnni", "max_keys"]
