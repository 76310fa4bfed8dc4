"""Palette extraction's compiled parts (numba): the colour histogram, weighted k-means on it (greedy k-means++
seeding and Lloyd's iterations with Hamerly's bounds), and the passes that refine a palette for its two errors
(``joint_pass``, ``dither_pass``).

Points are the image's distinct colours (or bins) in OKLab with their pixel counts as weights, so the work does not
grow with the image size. Greedy k-means++ (Arthur & Vassilvitskii's seeding, trying several candidates per centre
and keeping the one that lowers the weighted squared error most, as scikit-learn does) starts far closer to a good
optimum than plain k-means++; on the bench_extract images it lowered the error after convergence by up to a quarter.
Hamerly's bounds (an upper bound on each point's distance to its centre, a lower bound on the distance to every
other centre, both moved by how far the centres moved) skip the nearest-centre search for most points once centres
settle, so running to convergence costs a few full passes instead of one per iteration.
"""
from __future__ import annotations

import numpy as np

from . import dither as _dither
from .jit import njit

HIST_EMPTY = 0xFFFFFFFF  # an empty slot of the colour table (colour keys are 24-bit)


@njit(cache=True, nogil=True)
def count_colours(src, alpha_threshold, keys, counts, used, cap):
    """Count the colours of ``src``'s opaque pixels (uint8 [h,w,3|4]; alpha >= ``alpha_threshold``) into an
    open-addressing table: ``keys`` (uint32, a power-of-two size, ``HIST_EMPTY`` where free) holds each colour as
    r << 16 | g << 8 | b, ``counts`` (int64) its pixels. ``used``: distinct colours already in the table (several
    images share one). Returns the distinct colours now in it, or -1 as soon as there are more than ``cap`` (the
    caller then bins instead). A sort of every pixel's key took 6-7 ms at 512x512; this is one pass."""
    h, w, ch = src.shape
    flat = src.reshape(-1)
    mask = np.uint64(keys.shape[0] - 1)
    shift = np.uint64(64 - int(np.log2(keys.shape[0])))
    last = np.uint32(HIST_EMPTY)
    slot = np.uint64(0)
    for p in range(h * w):
        q = p * ch
        if ch == 4 and flat[q + 3] < alpha_threshold:
            continue
        key = (np.uint32(flat[q]) << np.uint32(16)) | (np.uint32(flat[q + 1]) << np.uint32(8)) | np.uint32(flat[q + 2])
        if key != last:  # runs of one colour (flat areas, sprites) skip the probe
            # Fibonacci hashing: the product's top bits spread neighbouring colours over the table
            slot = (np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> shift
            while keys[slot] != key:
                if keys[slot] == np.uint32(HIST_EMPTY):
                    if used == cap:
                        return -1
                    keys[slot] = key
                    used += 1
                    break
                slot = (slot + np.uint64(1)) & mask
            last = key
        counts[slot] += 1
    return used


@njit(cache=True, nogil=True)
def bin_colours(src, alpha_threshold, sums):
    """Add ``src``'s opaque pixels to 5-bit-per-channel bins: ``sums[b]`` (float64 [32768, 4]) gains the pixel count
    and the sums of r, g and b of bin b = r >> 3 << 10 | g >> 3 << 5 | b >> 3 (whole numbers, exact in float64)."""
    h, w, ch = src.shape
    flat = src.reshape(-1)
    for p in range(h * w):
        q = p * ch
        if ch == 4 and flat[q + 3] < alpha_threshold:
            continue
        r, g, b = flat[q], flat[q + 1], flat[q + 2]
        k = (np.int64(r >> 3) << 10) | (np.int64(g >> 3) << 5) | np.int64(b >> 3)
        sums[k, 0] += 1.0
        sums[k, 1] += r
        sums[k, 2] += g
        sums[k, 3] += b


@njit(cache=True, nogil=True)
def _d2(pts, i, cen, j):
    a = pts[i, 0] - cen[j, 0]
    b = pts[i, 1] - cen[j, 1]
    c = pts[i, 2] - cen[j, 2]
    return a * a + b * b + c * c


@njit(cache=True, nogil=True)
def seed_greedy(pts, w, k, seed, trials):
    """``k`` starting centres (float64 [k,3]) picked among ``pts`` by greedy k-means++ (``trials`` candidates per
    centre, drawn with probability weight x squared distance to the nearest centre so far)."""
    np.random.seed(seed)
    n = pts.shape[0]
    cen = np.empty((k, 3))
    cum = np.cumsum(w)
    first = min(np.searchsorted(cum, np.random.random() * cum[-1]), n - 1)
    cen[0] = pts[first]
    d2 = np.empty(n)
    for i in range(n):
        d2[i] = _d2(pts, i, cen, 0)
    cand = np.empty((1, 3))
    for j in range(1, k):
        cp = np.cumsum(w * d2)
        total = cp[-1]
        if total <= 0.0:  # every point already on a centre: the rest repeat it (dropped after rounding)
            for jj in range(j, k):
                cen[jj] = cen[0]
            break
        best_pot = np.inf
        best = 0
        for _ in range(trials):
            c = min(np.searchsorted(cp, np.random.random() * total), n - 1)
            cand[0] = pts[c]
            pot = 0.0
            for i in range(n):
                pot += w[i] * min(d2[i], _d2(pts, i, cand, 0))
            if pot < best_pot:
                best_pot = pot
                best = c
        cen[j] = pts[best]
        for i in range(n):
            d = _d2(pts, i, cen, j)
            if d < d2[i]:
                d2[i] = d
    return cen


@njit(cache=True, nogil=True)
def _search(pts, i, cen, assign, upper, lower):
    """Point ``i``'s nearest centre (the lowest index on ties) into ``assign``, its distance into ``upper`` and the
    distance to the second nearest into ``lower``."""
    b1 = np.inf
    b2 = np.inf
    best = 0
    for j in range(cen.shape[0]):
        d = _d2(pts, i, cen, j)
        if d < b1:
            b2 = b1
            b1 = d
            best = j
        elif d < b2:
            b2 = d
    assign[i] = best
    upper[i] = np.sqrt(b1)
    lower[i] = np.sqrt(b2)


@njit(cache=True, nogil=True)
def lloyd(pts, w, cen, max_iter, tol):
    """Weighted Lloyd iterations on ``cen`` (updated in place) until no centre moves more than ``tol`` or
    ``max_iter``; returns the assignment (int64 [n]). A centre left without points restarts on the point with the
    largest weighted error. Hamerly's bounds only skip searches that cannot change a point's nearest centre (up to
    float rounding in the bounds)."""
    n = pts.shape[0]
    k = cen.shape[0]
    assign = np.zeros(n, dtype=np.int64)
    upper = np.empty(n)
    lower = np.empty(n)
    for i in range(n):
        _search(pts, i, cen, assign, upper, lower)
    sums = np.empty((k, 3))
    tot = np.empty(k)
    moved = np.empty(k)
    half_gap = np.empty(k)  # half the distance from each centre to its nearest other centre
    for _ in range(max_iter):
        sums[:] = 0.0
        tot[:] = 0.0
        for i in range(n):
            a = assign[i]
            tot[a] += w[i]
            sums[a, 0] += w[i] * pts[i, 0]
            sums[a, 1] += w[i] * pts[i, 1]
            sums[a, 2] += w[i] * pts[i, 2]
        worst_move = 0.0
        for j in range(k):
            if tot[j] > 0.0:
                nc0 = sums[j, 0] / tot[j]
                nc1 = sums[j, 1] / tot[j]
                nc2 = sums[j, 2] / tot[j]
            else:
                far = 0
                far_e = -1.0
                for i in range(n):
                    e = w[i] * _d2(pts, i, cen, assign[i])
                    if e > far_e:
                        far_e = e
                        far = i
                nc0, nc1, nc2 = pts[far, 0], pts[far, 1], pts[far, 2]
            m = np.sqrt((nc0 - cen[j, 0]) ** 2 + (nc1 - cen[j, 1]) ** 2 + (nc2 - cen[j, 2]) ** 2)
            cen[j, 0], cen[j, 1], cen[j, 2] = nc0, nc1, nc2
            moved[j] = m
            worst_move = max(worst_move, m)
        if worst_move <= tol:
            break
        # second-largest move: a point's lower bound shrinks by the largest move of any centre but its own
        m1 = -1.0
        m2 = -1.0
        j1 = -1
        for j in range(k):
            if moved[j] > m1:
                m2 = m1
                m1 = moved[j]
                j1 = j
            elif moved[j] > m2:
                m2 = moved[j]
        for j in range(k):
            g = np.inf
            for jj in range(k):
                if jj != j:
                    g = min(g, _d2(cen, j, cen, jj))
            half_gap[j] = 0.5 * np.sqrt(g)
        for i in range(n):
            a = assign[i]
            upper[i] += moved[a]
            lower[i] -= m2 if a == j1 else m1
            bound = max(lower[i], half_gap[a])
            # strict: a point exactly on the bound is searched again, so ties resolve as in a full search
            if upper[i] < bound:
                continue
            upper[i] = np.sqrt(_d2(pts, i, cen, a))
            if upper[i] < bound:
                continue
            _search(pts, i, cen, assign, upper, lower)
    return assign


_SEEN = 1 << 12  # slots of dither_pass's memo of the colours of dithered values


@njit(cache=True, nogil=True)
def dither_pass(src, src_lab, pal, pal_lab, lin, m1, m2, damping, floor, a_pix, b_pix, a_blk, b_blk, stats):
    """A palette under damped error diffusion, for refining palettes meant for it: serpentine Floyd-Steinberg on
    ``src`` (float64 [h,w,3], sRGB 0..255) in floats, each diffused value rounded to a code value and mapped to its
    nearest colour in OKLab (by brute force over ``pal_lab``, remembered per value; a value equal to its source
    takes the source's undithered colour), with ``quantize(damping=True)``'s rules: an error whose
    squared length (sRGB) exceeds ``damping`` times the mean of the undithered mapping passes on 3/4, and each pixel
    takes its level / 256 (``dither.dither_levels`` of the undithered mapping) of the error it collects, 4/5 of that
    when it exceeds the same limit. Then, with the colour each pixel got, the objective and normal equations of
    ``joint_pass`` (``pal_lab`` as the centres): the mean OKLab distance from each pixel to its colour and between
    the 4x4 block means of ``src_lab`` and of the result, like bench_extract's errors. A stand-in for the compiled
    loops, which would need a cell table per palette tried."""
    h, w, _ = src.shape
    n = pal.shape[0]
    if h == 0 or w == 0:
        return
    limit = 0.0
    plain = np.empty((h, w), np.uint16)
    # the undithered mapping a row at a time, colours outside and pixels inside (a loop the compiler vectorises)
    d1 = np.empty(w)
    near = np.empty(w, np.int64)
    for y in range(h):
        d1[:] = np.inf
        near[:] = 0
        for k in range(n):
            c0, c1, c2 = pal_lab[k, 0], pal_lab[k, 1], pal_lab[k, 2]
            for x in range(w):
                e0 = src_lab[y, x, 0] - c0
                e1 = src_lab[y, x, 1] - c1
                e2 = src_lab[y, x, 2] - c2
                d = e0 * e0 + e1 * e1 + e2 * e2
                lt = d < d1[x]
                near[x] = k if lt else near[x]
                d1[x] = d if lt else d1[x]
        for x in range(w):
            best = near[x]
            plain[y, x] = best
            limit += (src[y, x, 0] - pal[best, 0]) ** 2 + (src[y, x, 1] - pal[best, 1]) ** 2 + \
                (src[y, x, 2] - pal[best, 2]) ** 2
    limit *= damping / (h * w)
    levels = np.empty((h, w), np.uint8)
    _dither.dither_levels(plain, levels)
    err = np.zeros((2, w + 2, 3))
    got = plain  # overwritten row by row with the dithered colours
    seen_key = np.full(_SEEN, -1, np.int64)  # the colours of dithered values met so far, by a hash of the value
    seen = np.zeros(_SEEN, np.int64)
    for y in range(h):
        cur = err[y & 1]
        nxt = err[(y + 1) & 1]
        nxt[:] = 0.0
        rev = (y & 1) == 1
        step = -1 if rev else 1
        for i in range(w):
            x = w - 1 - i if rev else i
            lv = levels[y, x] / 256.0
            s0 = cur[x + 1, 0] * lv
            s1 = cur[x + 1, 1] * lv
            s2 = cur[x + 1, 2] * lv
            if s0 * s0 + s1 * s1 + s2 * s2 > limit:
                s0 *= 0.8
                s1 *= 0.8
                s2 *= 0.8
            v0 = min(max(np.floor(src[y, x, 0] + s0 + 0.5), 0.0), 255.0)
            v1 = min(max(np.floor(src[y, x, 1] + s1 + 0.5), 0.0), 255.0)
            v2 = min(max(np.floor(src[y, x, 2] + s2 + 0.5), 0.0), 255.0)
            key = (np.int64(v0) << 16) | (np.int64(v1) << 8) | np.int64(v2)
            slot = ((key * 0x9E3779B1) >> 12) & (_SEEN - 1)
            if v0 == src[y, x, 0] and v1 == src[y, x, 1] and v2 == src[y, x, 2]:
                best = np.int64(plain[y, x])  # no error taken: the undithered colour (flat areas, sprites)
            elif seen_key[slot] == key:
                best = np.int64(seen[slot])  # a value met before (smooth areas repeat them)
            else:
                q0, q1, q2 = _dither.code_oklab(int(v0), int(v1), int(v2), lin, m1, m2)
                best = 0
                best_d = np.inf
                for k in range(n):
                    d = (q0 - pal_lab[k, 0]) ** 2 + (q1 - pal_lab[k, 1]) ** 2 + (q2 - pal_lab[k, 2]) ** 2
                    if d < best_d:
                        best_d = d
                        best = k
                seen_key[slot] = key
                seen[slot] = best
            got[y, x] = best
            e0 = v0 - pal[best, 0]
            e1 = v1 - pal[best, 1]
            e2 = v2 - pal[best, 2]
            if e0 * e0 + e1 * e1 + e2 * e2 > limit:
                e0 *= 0.75
                e1 *= 0.75
                e2 *= 0.75
            cur[x + 1 + step, 0] += e0 * (7.0 / 16.0)
            cur[x + 1 + step, 1] += e1 * (7.0 / 16.0)
            cur[x + 1 + step, 2] += e2 * (7.0 / 16.0)
            for dx, wt in ((-1, 3.0 / 16.0), (0, 5.0 / 16.0), (1, 1.0 / 16.0)):
                nxt[x + 1 + dx * step, 0] += e0 * wt
                nxt[x + 1 + dx * step, 1] += e1 * wt
                nxt[x + 1 + dx * step, 2] += e2 * wt
    q0 = np.empty(16)
    q1 = np.empty(16)
    q2 = np.empty(16)
    near = np.empty(16, np.int64)
    dist = np.empty(16)
    share = np.zeros(n)
    held = np.empty(16, np.int64)
    no_blocks = np.empty((0, 4))  # the worst blocks are for swaps, which dithered palettes do not try
    for by in range((h + 3) // 4):
        for bx in range((w + 3) // 4):
            m = 0
            for y in range(4 * by, min(4 * by + 4, h)):
                for x in range(4 * bx, min(4 * bx + 4, w)):
                    j = got[y, x]
                    q0[m] = src_lab[y, x, 0]
                    q1[m] = src_lab[y, x, 1]
                    q2[m] = src_lab[y, x, 2]
                    near[m] = j
                    dist[m] = np.sqrt((q0[m] - pal_lab[j, 0]) ** 2 + (q1[m] - pal_lab[j, 1]) ** 2
                                      + (q2[m] - pal_lab[j, 2]) ** 2)
                    m += 1
            _block_terms(q0, q1, q2, near, dist, m, by < h // 4 and bx < w // 4, pal_lab, floor, a_pix, b_pix,
                         a_blk, b_blk, no_blocks, stats, share, held)


# The joint objective: a palette is judged by how far each pixel lands from its colour (the mean OKLab distance) and
# by how far each 4x4 block's mean lands from its mean in the source (the block error: what is seen from a little
# way off, where lightness texture averages out and a missing hue does not). k-means minimises neither: it
# minimises squared distance and never looks at blocks, so a photo's palette comes out as a lightness ramp with the
# hues in between missing (bench_extract's chelsea: block error 1.02x libimagequant's at 8 colours). Both terms are
# sums of Euclidean norms, linear in the palette once each pixel's colour is fixed, so iteratively reweighted least
# squares (each norm weighted by its inverse, as a Weiszfeld step does) lowers their sum; ``joint_pass`` gathers one
# step's normal equations and the objective's value.


@njit(cache=True, nogil=True)
def _block_terms(q0, q1, q2, near, dist, m, full, cen, floor, a_pix, b_pix, a_blk, b_blk, blocks, stats, share, held):
    """Add one block's pixels (OKLab ``q0..q2[:m]``, their colours ``near``, distances to them ``dist``) to the
    objective and normal equations (see ``joint_pass``); its block term when ``full``, and its row of ``blocks``
    unless that has no rows. ``share`` (zero, [k]) and ``held`` ([16]) are scratch."""
    nheld = 0
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    m0 = 0.0
    m1 = 0.0
    m2 = 0.0
    for i in range(m):
        best = near[i]
        p0, p1, p2 = q0[i], q1[i], q2[i]
        r = dist[i]
        u = 1.0 / max(r, floor)
        a_pix[best] += u
        b_pix[best, 0] += u * p0
        b_pix[best, 1] += u * p1
        b_pix[best, 2] += u * p2
        stats[0] += r
        stats[1] += 1.0
        if share[best] == 0.0:
            held[nheld] = best
            nheld += 1
        share[best] += 1.0 / 16.0
        s0 += p0
        s1 += p1
        s2 += p2
        m0 += cen[best, 0]
        m1 += cen[best, 1]
        m2 += cen[best, 2]
    if full:
        s0 /= 16.0
        s1 /= 16.0
        s2 /= 16.0
        e0 = s0 - m0 / 16.0
        e1 = s1 - m1 / 16.0
        e2 = s2 - m2 / 16.0
        err = np.sqrt(e0 * e0 + e1 * e1 + e2 * e2)
        v = 1.0 / max(err, floor)
        if blocks.shape[0]:
            b = np.int64(stats[3])
            blocks[b, 0] = err
            blocks[b, 1] = s0
            blocks[b, 2] = s1
            blocks[b, 3] = s2
        stats[2] += err
        stats[3] += 1.0
        for ii in range(nheld):
            i = held[ii]
            b_blk[i, 0] += v * share[i] * s0
            b_blk[i, 1] += v * share[i] * s1
            b_blk[i, 2] += v * share[i] * s2
            for jj in range(nheld):
                a_blk[i, held[jj]] += v * share[i] * share[held[jj]]
    for ii in range(nheld):
        share[held[ii]] = 0.0


@njit(cache=True, nogil=True)
def joint_pass(lab, opaque, cen, floor, stride, a_pix, b_pix, a_blk, b_blk, loss, blocks, stats):
    """One pass over a sample (``lab`` float64 [h,w,3] in OKLab; ``opaque`` uint8 [h,w], 0 where a pixel is left
    out) for the palette ``cen`` (float64 [k,3], OKLab): each pixel's nearest colour (lowest index on ties), and
    added to the outputs (the caller zeroes them; several samples add to one set):

    - ``a_pix[j]``, ``b_pix[j]``: the sums of u and u * pixel over the pixels of colour j, u = 1 / max(distance,
      ``floor``) (the pixel term's weighted least squares);
    - ``a_blk[i, j]``, ``b_blk[j]``: the sums of v * m_i * m_j and v * m_j * source mean over the 4x4 blocks whose
      pixels are all opaque, m_j = the share of the block's pixels given colour j, v = 1 / max(the block's error,
      ``floor``);
    - ``loss[j]``: the sum over colour j's pixels of the distance to their second nearest colour minus the distance to
      their own (what the pixel term would lose without colour j);
    - ``blocks[b]``, b counting the full blocks of every sample passed so far (``stats[3]``), in row order: (its
      error, its source mean in OKLab);
    - ``stats``: (sum of pixel distances, pixels, sum of block errors, blocks).

    Pixels in a partial last row or column of blocks count in the pixel term only. ``stride`` > 1 visits only
    every stride-th block of every stride-th row of blocks (a cheaper estimate, for trying many palettes)."""
    h, w, _ = lab.shape
    k = cen.shape[0]
    share = np.zeros(k)  # the block's share of each colour; ``held`` lists the (at most 16) colours it holds
    held = np.empty(16, np.int64)
    # a block's pixels side by side: the search runs over colours outside and pixels inside, a loop without
    # branches that the compiler turns into vector instructions (a search per pixel took twice as long)
    q0 = np.empty(16)
    q1 = np.empty(16)
    q2 = np.empty(16)
    n1 = np.empty(16)
    n2 = np.empty(16)
    near = np.empty(16, np.int64)
    for by in range(0, (h + 3) // 4, stride):
        for bx in range(0, (w + 3) // 4, stride):
            full = by < h // 4 and bx < w // 4
            m = 0
            for y in range(4 * by, min(4 * by + 4, h)):
                for x in range(4 * bx, min(4 * bx + 4, w)):
                    if opaque[y, x] == 0:
                        full = False
                        continue
                    q0[m] = lab[y, x, 0]
                    q1[m] = lab[y, x, 1]
                    q2[m] = lab[y, x, 2]
                    m += 1
            n1[:] = np.inf
            n2[:] = np.inf
            near[:] = 0
            for j in range(k):
                c0, c1, c2 = cen[j, 0], cen[j, 1], cen[j, 2]
                for i in range(16):
                    e0 = q0[i] - c0
                    e1 = q1[i] - c1
                    e2 = q2[i] - c2
                    d = e0 * e0 + e1 * e1 + e2 * e2
                    lt = d < n1[i]
                    n2[i] = min(n2[i], max(n1[i], d))
                    near[i] = j if lt else near[i]
                    n1[i] = d if lt else n1[i]
            for i in range(m):
                n1[i] = np.sqrt(n1[i])
                if k > 1:
                    loss[near[i]] += np.sqrt(n2[i]) - n1[i]
            _block_terms(q0, q1, q2, near, n1, m, full, cen, floor, a_pix, b_pix, a_blk, b_blk, blocks, stats, share,
                         held)
