"""Snap to grid: recover true-resolution pixel art from an enlarged, blurred, compressed or drifting copy.

Per axis, independently (pixels need not be square):

1. **Edge profile.** Differences between neighbouring pixels in luma plus a quarter of the two colour differences
   (JPEG keeps colour at half resolution, which would put false edges on even pixels), alpha-premultiplied with
   alpha as a channel, minus a noise floor (twice the median difference), summed across the other axis: ``p[c]`` is
   the evidence for a cell edge between pixels ``c - 1`` and ``c``.
2. **Period candidates.** Peaks of the profile's autocorrelation and of its zero-padded spectrum, refined to a
   fraction of a pixel, with halves and doubles of the strongest; 2 and 3 px always.
3. **Phase tracking.** For a candidate period ``s`` the profile is demodulated at ``1/s`` and smoothed over 1.5
   cells: the argument of ``Z(c) = sum p[c'] exp(-2 pi i c'/s)`` is the local phase of the grid, so cells that
   slowly grow or shrink are followed rather than averaged. Edges are where the grid coordinate
   ``c/s + arg Z(c) / 2 pi`` crosses an integer. Across a stretch without evidence the number of cells comes from
   the local cell size on both sides, and beyond the outermost evidence the grid continues likewise.
4. **Edge snapping.** A Viterbi pass moves each predicted edge by at most a fifth of a cell (at most 3 px, none
   under 2.5 px cells) onto the evidence, paying for moves and for moving neighbouring edges differently.
5. **Self-consistency.** Where edges sit on evidence their spacing is the period actually followed; a candidate is
   re-tracked with that period (a wrong period can lock onto every edge it meets and differ only where nothing is
   seen). For a drifting grid, periods up to 10% around the two best candidates are tried too.
6. **Choice** (``grid_score``): evidence on edges, minus twice the evidence left inside cells, minus a cost per edge
   near evidence, as a share of all evidence. Half the true period pays for twice the edges; 1.5 or 2 times it
   leaves true edges inside cells; edges far from any evidence neither count nor cost. For a drifting grid, which
   the tracking can follow badly at its true period: a grid of twice the period scoring nearly as well wins (the
   finer grid's extra edges explain next to nothing), and near ties at nearby periods go to the smoothest grid
   (``roughness``): across a flat stretch a grid with a cell too few costs no evidence, but it bends there.
7. **Regularisation.** When the edges on evidence lie on one straight lattice (within 0.6 px), all edges are
   redrawn from it, so a flat margin is counted to a small fraction of a pixel; a drifting grid keeps its tracked
   edges and continues beyond the evidence with its mean period.

Nothing is detected (and the input is returned) when an axis scores under ``MIN_SCORE`` (``MIN_SCORE_SMALL`` for
cells under 3 px), or when fewer than ``MIN_PURITY`` of the cells with edges around them are flat inside: a photo or
drawing can fit a flexible grid in one dimension, but its edges run through cells. Cells under 3 px have no inner
part to test: there a crisp image (few exact colours) with much edge evidence between a cell's pixels as well as on
its edges is pixel art at its true size (``MAX_INNER_EDGES``), which a grid of about 2 px would halve.

Colour per cell: the dominant colour of the cell's inner part (a quarter of the cell width is left out on each
side, where blur and JPEG mix neighbouring cells; at most 8 x 8 pixels sampled). When most samples are one exact
colour, that colour; otherwise (noise, JPEG) the sample with the most others within ``DOMINANT_RADIUS``, averaged
with just those. A mean would blend an outline into its fill, and a per-channel median can invent a colour no pixel
has (the red of one colour with the blue of another); the dominant colour is one the cell shows. One exception: a
small cell (``SMALL_CELL_SAMPLES`` samples or fewer) where no colour holds half of the samples takes their mean,
because there every sample is a border pixel leaning towards a different neighbour, and their mean is nearest the
cell's own colour. A partial first or last cell is kept when at least ``PARTIAL`` of a cell is visible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .jit import compiled

MIN_SCORE = 0.25  # grid score (share of the edge evidence explained, less costs) an axis needs
MIN_SCORE_SMALL = 0.4  # ... with cells under 3 px, where the cell purity test cannot help
MIN_PURITY = 0.6  # share of cells with edges nearby whose inner part is flat, for a grid of 3+ px cells
# For cells under 3 px on either axis (the purity test needs 3) in a crisp image (at most CRISP_COLOURS exact colours:
# no blur, JPEG or noise): the edge evidence between the pixels of a cell against that on its edges, on the axis
# where it is highest. A nearest-neighbour enlargement has none there (bench_snap's clean 2-3 px cells: 0.00-0.05),
# while a sprite at its true size (every pixel its own cell) fits a grid of about 2 px with more. Measured on the
# tests' sprites: at 0.5, 1 of 36 true-size sprites still halved (at 0.3 also 1, at 0.6 5), 2x enlargements with 5%
# of pixels changed to other palette colours all snapped (at 0.3 2 of 8), with 10% 4 of 8 (0 at 0.3). Degraded
# enlargements are left to the score: blur and JPEG make them anything but crisp.
MAX_INNER_EDGES = 0.5
CRISP_COLOURS = 256
PARTIAL = 0.3  # a border cell is kept when this share of a cell is visible
MIN_SIZE = 2.0  # smallest detectable cell size in pixels
STRONG = 0.02  # share of a clear edge's strength from which a profile peak counts as evidence of a cell edge
UNEXPLAINED = 2.0  # weight of evidence left inside cells against evidence on cell edges
EDGE_COST = 0.3  # cost of an edge near evidence, in units of the mean evidence of a clear peak
DOMINANT_RADIUS = 28.0  # RGB(A) distance within which two samples of a cell count as one colour (noise, JPEG)
SMALL_CELL_SAMPLES = 9  # cells sampled at this many pixels or fewer (under 8 px) average when no colour dominates


@dataclass
class AxisGrid:
    """Cell edges along one axis: cell ``i`` covers pixels ``edges[i] .. edges[i+1] - 1``."""

    edges: np.ndarray
    size: float  # mean cell size in pixels over the full cells
    offset: float  # where the first full cell starts (0 when the image starts on a cell edge)
    score: float

    @property
    def cells(self) -> int:
        return len(self.edges) - 1


@dataclass
class SnapResult:
    image: np.ndarray  # true-resolution image, or the input unchanged when nothing was detected
    detected: bool
    x: AxisGrid | None = None
    y: AxisGrid | None = None
    message: str = ""

    def to_dict(self, *, edges: bool = False) -> dict:
        """The grid as plain JSON-able values (what the node and the command line report)."""
        d: dict = {"detected": self.detected, "message": self.message}
        if self.detected:
            d.update(columns=self.x.cells, rows=self.y.cells,
                     cell_width=round(self.x.size, 3), cell_height=round(self.y.size, 3),
                     offset_x=round(self.x.offset, 3), offset_y=round(self.y.offset, 3),
                     score_x=round(self.x.score, 1), score_y=round(self.y.score, 1))
            if edges:
                d.update(edges_x=self.x.edges.tolist(), edges_y=self.y.edges.tolist())
        return d


# --- 1. edge profiles ---------------------------------------------------------------------------------------------

# Luma at full weight, the two colour differences at a quarter: JPEG stores colour at half resolution (4:2:0), so
# colour edges move to even pixels and would pass for cell edges; a colour-only edge still shows.
_YCC = np.array([[0.299, 0.587, 0.114], [-0.042, -0.083, 0.125], [0.125, -0.105, -0.020]], np.float32).T


def _signal(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        return a.astype(np.float32)
    f = a[..., :3].astype(np.float32)
    if a.shape[2] == 4:
        # premultiplied: the colour of fully transparent pixels is arbitrary and must not look like edges
        alpha = a[..., 3:4].astype(np.float32)
        f *= alpha * (1.0 / 255.0)
        return np.concatenate([f @ _YCC, alpha], axis=2)
    return f @ _YCC


def _profile(diff: np.ndarray, axis: int) -> np.ndarray:
    """Sum of the above-noise part of ``diff`` (``[H, W]`` absolute differences) along ``axis``."""
    sub = diff[::3, ::3] if diff.size > 60000 else diff
    floor = 2.0 * float(np.median(sub))
    if floor > 0:
        diff = np.maximum(diff - floor, 0)
    return diff.sum(axis=axis, dtype=np.float64)


def edge_profiles(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Column and row edge profiles, summed over ``images`` (all the same size): ``px[c]`` for ``c`` in
    ``1 .. W-1`` is stored at index ``c - 1``."""
    px = py = None
    for img in images:
        a = _signal(img)
        dx = np.abs(np.diff(a, axis=1)).sum(axis=2, dtype=np.float32)
        dy = np.abs(np.diff(a, axis=0)).sum(axis=2, dtype=np.float32)
        qx, qy = _profile(dx, 0), _profile(dy, 1)
        px = qx if px is None else px + qx
        py = qy if py is None else py + qy
    return px, py


# --- 2. period candidates -----------------------------------------------------------------------------------------

def _peaks(v: np.ndarray, lo: int, hi: int, count: int) -> list[float]:
    """Up to ``count`` strongest local maxima of ``v`` in ``[lo, hi]``, refined by a parabola through 3 points."""
    hi = min(hi, len(v) - 2)
    if hi <= lo:
        return []
    idx = np.arange(max(lo, 1), hi + 1)
    mid = v[idx]
    is_peak = (mid > v[idx - 1]) & (mid >= v[idx + 1]) & (mid > 0)
    idx = idx[is_peak]
    if idx.size == 0:
        return []
    idx = idx[np.argsort(v[idx])[::-1][:count]]
    out = []
    for i in idx:
        a, b, c = v[i - 1], v[i], v[i + 1]
        den = a - 2 * b + c
        out.append(float(i + (0.5 * (a - c) / den if den < 0 else 0.0)))
    return out


def period_candidates(p: np.ndarray, smin: float, smax: float) -> list[float]:
    n = len(p)
    x = p - p.mean()
    if not np.any(x):
        return []
    size = 1 << int(np.ceil(np.log2(max(2 * n, 64))))
    spec = np.fft.rfft(x, size)
    ac = np.fft.irfft(spec * np.conj(spec), size)[:n]
    cands: list[float] = []
    for rank, lag in enumerate(_peaks(ac, int(np.floor(smin)), int(np.ceil(smax)) + 1, 4)):
        cands += [lag, lag * 0.5, lag * 2.0] if rank < 2 else [lag]
    # the spectrum, zero-padded fine enough to place a period to a small fraction of a pixel
    fine = 1 << int(np.ceil(np.log2(max(16 * n, 1024))))
    mag = np.abs(np.fft.rfft(x, fine))
    lo, hi = int(np.floor(fine / smax)), int(np.ceil(fine / smin))
    for rank, k in enumerate(_peaks(mag, lo, hi, 4)):
        if k > 0:
            cands += [fine / k, fine / k * 0.5, fine / k * 2.0] if rank < 2 else [fine / k]
    out: list[float] = []
    for s in sorted(v for v in cands if smin <= v <= smax):
        if not out or s > out[-1] * 1.015:  # nearly equal periods converge to the same grid: try one
            out.append(s)
    return out


# --- 3. phase tracking ----------------------------------------------------------------------------------------------

@compiled(cache=True, nogil=True)
def _centred_sums(x: np.ndarray, y: np.ndarray, lo: int, hi: int) -> tuple[float, float]:
    """Sums of (x - mean x)(y - mean y) and (x - mean x)^2 over indices ``lo .. hi-1``: the least-squares slope of
    ``y`` over ``x`` is their ratio."""
    count = hi - lo
    mx = 0.0
    my = 0.0
    for i in range(lo, hi):
        mx += x[i]
        my += y[i]
    mx /= count
    my /= count
    num = 0.0
    den = 0.0
    for i in range(lo, hi):
        num += (x[i] - mx) * (y[i] - my)
        den += (x[i] - mx) * (x[i] - mx)
    return num, den


@compiled(cache=True, nogil=True)
def _slope(c: np.ndarray, g: np.ndarray, lo: int, hi: int, fallback: float) -> float:
    """Least-squares slope of ``g`` over ``c`` for indices ``lo .. hi-1`` (``fallback`` when too short or <= 0)."""
    if hi - lo < 3 or c[hi - 1] - c[lo] < 2:
        return fallback
    num, den = _centred_sums(c, g, lo, hi)
    slope = num / den
    return slope if slope > 0 else fallback


@compiled(cache=True, nogil=True)
def _track(p: np.ndarray, s: float, window: float) -> np.ndarray:
    m = len(p)
    n = m + 1
    sigma = window * s
    r = int(np.ceil(3.0 * sigma))
    kern = np.empty(2 * r + 1)
    total = 0.0
    for t in range(-r, r + 1):
        kern[t + r] = np.exp(-0.5 * (t / sigma) ** 2)
        total += kern[t + r]
    zr = np.empty(m)
    zi = np.empty(m)
    for i in range(m):
        a = -2.0 * np.pi * (i + 1) / s
        zr[i] = p[i] * np.cos(a)
        zi[i] = p[i] * np.sin(a)
    sr = np.zeros(m)
    si = np.zeros(m)
    for i in range(m):
        if zr[i] == 0.0 and zi[i] == 0.0:
            continue
        w = kern
        for t in range(max(-r, -i), min(r, m - 1 - i) + 1):
            k = w[t + r] / total
            sr[i + t] += zr[i] * k
            si[i + t] += zi[i] * k
    mag = np.sqrt(sr * sr + si * si)
    top = mag.max() if m > 0 else 0.0
    ok = np.flatnonzero(mag > 0.05 * top) if top > 0 else np.zeros(0, np.int64)
    if len(ok) < 2:
        c_ok = np.array([0.0, n - 1.0])
        g_ok = np.array([0.0, (n - 1) / s])
        lead = trail = 1.0 / s
    else:
        c_ok = (ok + 1).astype(np.float64)
        g_ok = np.empty(len(ok))
        prev = np.arctan2(si[ok[0]], sr[ok[0]])
        acc = prev
        g_ok[0] = c_ok[0] / s + acc / (2.0 * np.pi)
        for j in range(1, len(ok)):
            th = np.arctan2(si[ok[j]], sr[ok[j]])
            d = th - prev
            dd = d
            if abs(d) >= np.pi:  # as numpy.unwrap
                dd = ((d + np.pi) % (2.0 * np.pi)) - np.pi
                if dd == -np.pi and d > 0:
                    dd = np.pi
            acc += dd
            prev = th
            g_ok[j] = c_ok[j] / s + acc / (2.0 * np.pi)
        span = 2.0 * s
        # stretches without evidence: the cell count across them from the local cell size on both sides
        a_start = 0
        j = 1
        while j < len(ok):
            if ok[j] - ok[j - 1] > 1:
                b_start = j
                b_end = j + 1
                while b_end < len(ok) and ok[b_end] - ok[b_end - 1] == 1:
                    b_end += 1
                lo_a = b_start - 1
                while lo_a > a_start and c_ok[lo_a - 1] >= c_ok[b_start - 1] - span:
                    lo_a -= 1
                hi_b = b_start + 1
                while hi_b < b_end and c_ok[hi_b] <= c_ok[b_start] + span:
                    hi_b += 1
                slope = 0.5 * (_slope(c_ok, g_ok, lo_a, b_start, 1.0 / s) + _slope(c_ok, g_ok, b_start, hi_b, 1.0 / s))
                expected = (c_ok[b_start] - c_ok[b_start - 1]) * slope
                shift = round(expected - (g_ok[b_start] - g_ok[b_start - 1]))
                for q in range(b_start, len(ok)):
                    g_ok[q] += shift
                a_start = b_start
            j += 1
        hi = 1
        while hi < len(ok) and c_ok[hi] <= c_ok[0] + span:
            hi += 1
        lead = _slope(c_ok, g_ok, 0, hi, 1.0 / s)
        lo = len(ok) - 1
        while lo > 0 and c_ok[lo - 1] >= c_ok[len(ok) - 1] - span:
            lo -= 1
        trail = _slope(c_ok, g_ok, lo, len(ok), 1.0 / s)
    q = len(c_ok)
    cc = np.empty(q + 2)
    gg = np.empty(q + 2)
    cc[0] = 0.0
    gg[0] = g_ok[0] - c_ok[0] * lead
    for i in range(q):
        cc[i + 1] = c_ok[i]
        gg[i + 1] = max(g_ok[i], gg[i])
    cc[q + 1] = float(n)
    gg[q + 1] = max(g_ok[q - 1] + (n - c_ok[q - 1]) * trail, gg[q])
    k0 = int(np.ceil(gg[0]))
    k1 = int(np.floor(gg[q + 1]))
    out = np.empty(max(0, k1 - k0 + 1))
    count = 0
    j = 0
    for k in range(k0, k1 + 1):
        while gg[j] < k:
            j += 1
        if j == 0:
            x = cc[0]
        else:
            x = cc[j - 1] + (k - gg[j - 1]) / (gg[j] - gg[j - 1]) * (cc[j] - cc[j - 1])
        if 0.0 < x < n:
            out[count] = x
            count += 1
    return out[:count]


def track(p: np.ndarray, s: float, window: float = 1.5) -> np.ndarray:
    """Predicted cell edges (float positions in ``(0, n)``, ``n = len(p) + 1``) for period ``s``.

    The grid coordinate is ``g(c) = c / s + phase(c) / 2 pi``, edges where it crosses an integer; the phase is the
    argument of the profile demodulated at ``1/s`` and smoothed over ``window`` cells (Gaussian). Across a stretch
    without evidence (a flat area, several cells wide) the phase alone cannot say how many cells were crossed;
    the count is taken from the local cell size on both sides of the stretch, and beyond the outermost evidence
    ``g`` continues with the local cell size there. So the cells drawn where nothing is seen follow what is seen
    next to them rather than the nominal period ``s``."""
    return _track(np.ascontiguousarray(p, dtype=np.float64), float(s), float(window))


# --- 4. edge snapping -----------------------------------------------------------------------------------------------

@compiled(cache=True, nogil=True)
def _viterbi(ev: np.ndarray, pos: np.ndarray, shifts: np.ndarray, gap: int, bend: float) -> np.ndarray:
    """Best path through ``ev[k, j]`` (evidence of edge ``k`` at ``pos[k, j]``), paying ``bend * (shift
    change)^2`` between neighbouring edges, with edges at least ``gap`` apart where that is possible."""
    k_count, s_count = ev.shape
    best = ev[0].copy()
    back = np.zeros((k_count, s_count), np.int64)
    new = np.empty(s_count)
    for k in range(1, k_count):
        for j in range(s_count):
            top, arg, top_any, arg_any = -np.inf, -1, -np.inf, 0
            for i in range(s_count):
                if best[i] == -np.inf:
                    continue
                d = shifts[j] - shifts[i]
                v = best[i] - bend * d * d
                if v > top_any:
                    top_any, arg_any = v, i
                if pos[k, j] - pos[k - 1, i] >= gap and v > top:
                    top, arg = v, i
            if arg < 0:  # predicted edges closer than the gap: keep a path anyway, duplicates are removed later
                top, arg = top_any, arg_any
            new[j] = ev[k, j] + top
            back[k, j] = arg
        best[:] = new
    out = np.empty(k_count, np.int64)
    j = 0
    for i in range(s_count):
        if best[i] > best[j]:
            j = i
    for k in range(k_count - 1, -1, -1):
        out[k] = pos[k, j]
        j = back[k, j]
    return out


@compiled(cache=True, nogil=True)
def _snap(norm: np.ndarray, pred: np.ndarray, s: float, move_cost: float, bend_cost: float) -> np.ndarray:
    n = len(norm) + 1
    k_count = len(pred)
    if k_count == 0:
        return np.zeros(0, np.int64)
    # a small reach (none for cells under 2.5 px): a wrong period must not be able to hop from one true edge to
    # the next, nor a grid of tiny cells onto whatever edges a picture without a grid has
    reach = min(int(round(0.2 * s)), 3)
    s_count = 2 * reach + 1
    shifts = np.empty(s_count)
    pos = np.empty((k_count, s_count), np.int64)
    ev = np.empty((k_count, s_count))
    for j in range(s_count):
        shifts[j] = j - reach
    for k in range(k_count):
        base = int(round(pred[k]))
        for j in range(s_count):
            c = base + j - reach
            pos[k, j] = c
            if 1 <= c <= n - 1:
                f = (c - pred[k]) / s
                ev[k, j] = norm[c - 1] - move_cost * f * f
            else:
                ev[k, j] = -np.inf
    scale = max(1.0, 0.25 * s)
    edges = _viterbi(ev, pos, shifts, max(1, int(np.ceil(0.5 * s))), bend_cost / (scale * scale))
    edges = np.sort(edges)
    out = np.empty(k_count, np.int64)
    count = 0
    for k in range(k_count):
        e = edges[k]
        if 1 <= e <= n - 1 and (count == 0 or e != out[count - 1]):
            out[count] = e
            count += 1
    return out[:count]


def snap_edges(norm: np.ndarray, pred: np.ndarray, s: float, *, move_cost: float = 0.35,
               bend_cost: float = 0.25) -> np.ndarray:
    """Integer edges near ``pred`` that sit on the evidence ``norm`` (the profile over its 90th percentile):
    a Viterbi pass over per-edge shifts of at most ``reach`` pixels, paying ``move_cost`` for moving an edge off
    its prediction and ``bend_cost`` for moving neighbouring edges differently (one noisy column must not bend
    the grid)."""
    return _snap(np.ascontiguousarray(norm, dtype=np.float64), np.ascontiguousarray(pred, dtype=np.float64),
                 float(s), float(move_cost), float(bend_cost))


# --- 5. scoring and cells -------------------------------------------------------------------------------------------

def peaks_only(p: np.ndarray) -> np.ndarray:
    """The profile with everything but its local maxima zeroed: a blurred edge counts once, at its centre."""
    q = np.concatenate([[-1.0], p, [-1.0]])
    keep = (q[1:-1] >= q[:-2]) & (q[1:-1] >= q[2:])
    return np.where(keep, p, 0.0)


def grid_score(peaks: np.ndarray, edges: np.ndarray, strong: float) -> float:
    """How well ``edges`` explain the evidence (profile peaks of at least ``strong``), as a share of it.

    Evidence on edges counts for, evidence left inside cells against (``UNEXPLAINED`` times), and every edge
    near evidence (on it, or next to an edge on it) costs ``EDGE_COST`` times the mean evidence of a peak. A grid
    of half the true cell size pays for twice the edges; one of 1.5, 2 or more times the size leaves true edges
    inside its cells; one that skips a weak true edge leaves it unexplained. Edges far from any evidence neither
    count nor cost: otherwise a grid would gain by putting fewer, larger cells where nothing is seen, which is
    exactly where the evidence cannot tell the cell size."""
    clear = peaks >= strong
    total = float(peaks[clear].sum())
    if len(edges) < 3 or total <= 0:
        return 0.0
    mean_peak = total / int(clear.sum())
    on = peaks[edges - 1]
    hit = on >= strong
    counted = hit.copy()
    counted[1:] |= hit[:-1]
    counted[:-1] |= hit[1:]
    a, b = edges[:-1], edges[1:]
    lo, hi = a + 1, b  # interior cut positions lo .. hi - 1
    keep = hi > lo
    inside = 0.0
    if keep.any():
        bounds = np.stack([lo[keep] - 1, hi[keep] - 1], axis=1).ravel()  # p indices; segments [lo-1, hi-1)
        inside = float(np.add.reduceat(np.append(peaks * clear, 0.0), bounds)[::2].sum())
    explained = float(on[hit].sum())
    return (explained - UNEXPLAINED * inside - EDGE_COST * mean_peak * int(counted.sum())) / total


def _axis(p: np.ndarray, s: float, edges: np.ndarray, score: float, lattice: float | None = None) -> AxisGrid:
    n = len(p) + 1
    inner = edges[(edges > 0) & (edges < n)]
    size = lattice or (float(np.diff(inner).mean()) if len(inner) > 1 else s)
    full = [0, *inner.tolist(), n]
    if len(full) > 2 and full[1] - full[0] < PARTIAL * size:
        full.pop(0)  # too little of the first cell is visible to tell its colour: left out
    if len(full) > 2 and full[-1] - full[-2] < PARTIAL * size:
        full.pop()
    # phase: where the first cell edge inside the image lies (0 = the image starts on an edge)
    offset = float(inner[0]) if len(inner) else 0.0
    if offset >= size - 0.5:
        offset = 0.0
    return AxisGrid(edges=np.array(full, np.int64), size=size, offset=offset, score=score)


@compiled(cache=True, nogil=True)
def _followed(k: np.ndarray, c: np.ndarray) -> float:
    num = 0.0
    den = 0.0
    start = 0
    for i in range(1, len(k) + 1):
        if i == len(k) or k[i] - k[i - 1] > 2:
            if i - start >= 2:
                run_num, run_den = _centred_sums(k, c, start, i)
                num += run_num
                den += run_den
            start = i
    return num / den if den >= 2 else -1.0


def _followed_period(k: np.ndarray, c: np.ndarray) -> float | None:
    """Least-squares period of edges ``c`` with cell indices ``k``, pooled over runs of nearby edges.

    Runs are split where more than two cells pass without evidence: the number of cells across such a gap is
    what a wrong period gets wrong, so it must not enter the estimate. Within runs, the fit reaches a fraction of
    a pixel even where a non-integer period makes single spacings alternate between two integers."""
    v = _followed(k.astype(np.float64), c.astype(np.float64))
    return v if v > 0 else None


SCAN = (0.9, 0.94, 0.97, 1.03, 1.06, 1.1)  # relative periods tried around the best candidates
RIGID_RMS = 0.6  # px: edges on evidence within this of one straight lattice make the grid rigid (no drift)
# A drifting grid's grids scoring within NEAR_TIE of the best, at periods within TIE_PERIOD of its period, are ties
# that the smoothest wins (``roughness``). bench_snap's drifting images of seeds 0-6 (210), NEAR_TIE 0.02 / 0.03 /
# 0.05 / 0.08: pixels right 96.5 / 96.5 / 96.8 / 96.8% (95.0% without), exact size 52-55% (40%); degraded images
# unchanged. Without the period limit, half-period grids won ties.
NEAR_TIE = 0.05
TIE_PERIOD = 0.15


def _lattice(k: np.ndarray, c: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``c = phase + size * k``; returns (phase, size, rms residual)."""
    size, phase = np.polyfit(k.astype(np.float64), c.astype(np.float64), 1)
    rms = float(np.sqrt(np.mean((c - (phase + size * k)) ** 2)))
    return float(phase), float(size), rms


def _regularise(edges: np.ndarray, on: np.ndarray, n: int) -> tuple[np.ndarray, float | None]:
    """Edges where the evidence does not place them, from the edges that it does (indices ``on``).

    A rigid grid (all edges on evidence within ``RIGID_RMS`` of one lattice) is redrawn from that lattice
    everywhere: its period is then known to a small fraction of a pixel, so the cells of a flat margin are
    counted right. A drifting grid keeps its tracked edges between the outermost edges on evidence and continues
    beyond them with its mean period. Returns the edges and, for a rigid grid, the lattice's period."""
    k = on.astype(np.float64)
    c = edges[on].astype(np.float64)
    phase, size, rms = _lattice(k, c)
    if size <= 0:
        return edges, None
    if rms <= RIGID_RMS:
        # lattice points that round into 1 .. n-1 (the tolerance keeps an exact fit's last edge)
        ks = np.arange(np.ceil((0.5 - phase) / size - 1e-6), np.floor((n - 0.5 - phase) / size + 1e-6) + 1)
        out = np.round(phase + size * ks).astype(np.int64)
        return np.unique(out[(out >= 1) & (out <= n - 1)]), size
    # beyond the outermost evidence: continue from the outermost edges with the grid's mean cell size (the local
    # size there is a guess either way; the mean is the steadier one)
    first, last = int(on[0]), int(on[-1])
    c0, c1 = float(edges[first]), float(edges[last])
    head = c0 - size * np.arange(int(np.floor((c0 - 0.5) / size + 1e-6)), 0, -1)
    tail = c1 + size * np.arange(1, int(np.floor((n - 0.5 - c1) / size + 1e-6)) + 1)
    out = np.concatenate([np.round(head), edges[first:last + 1], np.round(tail)]).astype(np.int64)
    return np.unique(out[(out >= 1) & (out <= n - 1)]), None


def roughness(edges: np.ndarray) -> float:
    """Mean squared distance (px^2) of each edge from the mean of the five around it (itself in the middle).

    A grid whose cells keep their size, or change it slowly as a drifting grid does, has only the rounding of
    edges to whole pixels; a grid that puts one cell too few or too many across a stretch bends there."""
    e = edges.astype(np.float64)
    if len(e) < 5:
        return 0.0
    return float(np.mean((e[2:-2] - np.convolve(e, np.full(5, 0.2), mode="valid")) ** 2))


def _drifting(edges: np.ndarray, peaks: np.ndarray, strong: float) -> bool:
    on = np.flatnonzero(peaks[edges - 1] >= strong)
    return len(on) >= 4 and _lattice(on, edges[on])[2] > RIGID_RMS


def detect_axis(p: np.ndarray, *, smin: float = MIN_SIZE, smax: float | None = None,
                size: float | None = None) -> AxisGrid | None:
    """Best grid along one axis from its edge profile, or None when no period scores ``MIN_SCORE``."""
    n = len(p) + 1
    smax = float(smax) if smax else max(smin, n / 3.0)
    if not np.any(p):
        return None
    scale = float(np.sort(p)[-max(1, len(p) // 50):].mean())  # typical strength of a clear edge
    peaks = peaks_only(p)
    strong = STRONG * scale
    norm = p / (float(np.percentile(p, 90)) or float(p.max()))
    fitted: dict[float, np.ndarray] = {}

    def fit(s: float) -> np.ndarray:
        key = round(s, 3)
        if key not in fitted:
            fitted[key] = snap_edges(norm, track(p, s), s)
        return fitted[key]

    results: list[tuple[float, float, np.ndarray]] = []
    cands = [float(size)] if size else period_candidates(p, smin, smax)
    if not size:
        # the spectrum's fine peaks sit at its very end for periods of 2-3 pixels, where they are easily missed
        cands += [v for v in (2.0, 3.0) if smin <= v <= smax and all(abs(v - c) > 0.03 * v for c in cands)]
    for s in cands:
        edges = fit(s)
        for _ in range(0 if size else 2):
            # Self-consistency: where edges sit on evidence, their spacing is the period actually followed. A wrong
            # period can still lock onto every edge it meets (the tracking turns its phase) and only differs in how
            # many cells it puts where nothing is seen; re-tracking with the followed period removes that freedom.
            on = np.flatnonzero(peaks[edges - 1] >= strong)
            followed = _followed_period(on, edges[on]) if len(on) >= 4 else None
            if followed is None or abs(followed - s) <= 0.01 * s or not smin <= followed <= smax:
                break
            s = followed
            edges = fit(s)
        results.append((grid_score(peaks, edges, strong), s, edges))
    if not results:
        return None
    results.sort(key=lambda r: -r[0])
    chosen = results[0]
    if not size and _drifting(chosen[2], peaks, strong):
        # A drifting grid is only followed from a nominal period within about a tenth of its mean (the tracking
        # window cannot turn the phase faster), and the candidates' periods can be that far off: try nearby
        # periods around the two best distinct candidates.
        tops = [results[0]] + [r for r in results[1:] if abs(r[1] - results[0][1]) > 0.08 * results[0][1]][:1]
        for _, s0, _ in tops:
            for f in SCAN:
                s = s0 * f
                if smin <= s <= smax:
                    edges = fit(s)
                    results.append((grid_score(peaks, edges, strong), s, edges))
        results.sort(key=lambda r: -r[0])
        # A grid of twice the period that scores nearly as well (a true grid's double leaves every other true edge
        # inside its cells, far below it): the finer grid's extra edges explain next to nothing; a drifting grid
        # followed badly at its true period scored a little under its half.
        top, s0 = results[0][0], results[0][1]
        double = [r for r in results if r[0] >= top - NEAR_TIE and abs(r[1] - 2 * s0) <= TIE_PERIOD * 2 * s0]
        chosen = double[0] if double else results[0]
        if chosen[1] >= 3.0:
            # Where nothing is seen (a flat area, a weak edge left out) a grid of fewer, larger cells costs no
            # evidence and saves the cost of edges near weak peaks, so a grid that skips a cell can score a little
            # above the true one. A drifting grid's cells change size slowly: among grids of nearly the best
            # score, and of nearly the same period (not the half or double one), the smoothest wins. Under 3 px
            # the rounding of edges to whole pixels is as large as any drift.
            top, s0 = chosen[0], chosen[1]
            near = [r for r in results if r[0] >= top - NEAR_TIE and abs(r[1] - s0) <= TIE_PERIOD * s0]
            chosen = min(near, key=lambda r: roughness(r[2]))
    sc, s, edges = chosen
    on = np.flatnonzero(peaks[edges - 1] >= strong)
    lattice = None
    if len(on) >= 4:
        edges, lattice = _regularise(edges, on, n)
    return _axis(p, s, edges, sc, lattice)


# --- colour per cell ------------------------------------------------------------------------------------------------

def _samples(edges: np.ndarray, margin: float = 0.25, cap: int = 8) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cells grouped by how many pixels are sampled from them: ``[(cell indices, pixel indices [cells, m]), ...]``.

    Each cell's inner part leaves out ``margin`` of its width (rounded, at least one pixel kept) on each side;
    up to ``cap`` pixels spread evenly over it are sampled, each at most once."""
    a, b = edges[:-1], edges[1:]
    width = b - a
    cut = np.minimum(np.floor(width * margin + 0.5).astype(np.int64), (width - 1) // 2)
    lo, inner = a + cut, width - 2 * cut
    m = np.minimum(inner, cap)
    groups = []
    for count in np.unique(m):
        cells = np.flatnonzero(m == count)
        t = (np.arange(count) + 0.5) / count
        idx = lo[cells, None] + np.floor(t[None, :] * inner[cells, None]).astype(np.int64)
        groups.append((cells, idx))
    return groups


def _luma(img: np.ndarray) -> np.ndarray:
    if img.shape[2] == 1:
        return img[..., 0].astype(np.float32)
    y = img[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if img.shape[2] == 4:
        y = y * (img[..., 3].astype(np.float32) / 255.0) + (255.0 - img[..., 3].astype(np.float32)) * 0.5
    return y


def _crisp(img: np.ndarray) -> bool:
    flat = img.reshape(-1, img.shape[2]).astype(np.uint32)
    packed = flat[:, 0] if img.shape[2] == 1 else (flat << (8 * np.arange(img.shape[2], dtype=np.uint32))).sum(1)
    return len(np.unique(packed)) <= CRISP_COLOURS


def inner_edges(p: np.ndarray, g: AxisGrid) -> float:
    """Mean edge evidence ``p`` between the pixels of a cell against that on the cell edges of ``g``."""
    on = np.zeros(len(p), bool)
    on[g.edges[(g.edges > 0) & (g.edges <= len(p))] - 1] = True
    if on.all() or not on.any():
        return 0.0
    return float(p[~on].mean() / max(float(p[on].mean()), 1e-9))


def purity(img: np.ndarray, ey: np.ndarray, ex: np.ndarray) -> float | None:
    """Share of the cells with edges (their whole span varies) whose inner part is flat.

    Upscaled pixel art is flat inside every cell, whatever the blur at its borders; a drawing or photo that a
    flexible grid happens to fit has edges running through cells. None when the test cannot tell: cells under
    3 px (no inner part apart from the border) or too few cells with edges."""
    if min(np.diff(ey).min(), np.diff(ex).min()) < 3:
        return None
    y = _luma(img)
    noise = float(np.median(np.abs(np.diff(y[::2, ::2], axis=1)))) if y.shape[1] > 2 else 0.0
    limit = max(16.0, 6.0 * noise)

    def spread(margin: float) -> np.ndarray:
        out = np.empty((len(ey) - 1, len(ex) - 1), np.float32)
        for rows, ry in _samples(ey, margin):
            for cols, rx in _samples(ex, margin):
                block = y[ry[:, :, None, None], rx[None, None, :, :]]
                out[np.ix_(rows, cols)] = block.max(axis=(1, 3)) - block.min(axis=(1, 3))
        return out

    busy = spread(0.0) > limit
    if busy.sum() < 8:
        return None
    return 1.0 - float((spread(0.25) > limit)[busy].sum()) / float(busy.sum())


@compiled(cache=True, nogil=True)
def _dominant(block: np.ndarray, radius2: float, small: int) -> np.ndarray:
    """``block`` uint8 ``[cells, m, C]`` samples -> uint8 ``[cells, C]``: each cell's dominant colour (module doc)."""
    n, m, c = block.shape
    out = np.empty((n, c), np.uint8)
    d = np.empty((m, m), np.float64)
    for k in range(n):
        for i in range(m):
            for j in range(m):
                s = 0.0
                for ch in range(c):
                    v = float(block[k, i, ch]) - float(block[k, j, ch])
                    s += v * v
                d[i, j] = s
        same_best, same_i = 0, 0
        near_best, near_i, near_tot = -1, 0, np.inf
        for i in range(m):
            same, near, tot = 0, 0, 0.0
            for j in range(m):
                if d[i, j] == 0.0:
                    same += 1
                if d[i, j] <= radius2:
                    near += 1
                    tot += d[i, j]
            if same > same_best:
                same_best, same_i = same, i
            if near > near_best or (near == near_best and tot < near_tot):
                near_best, near_i, near_tot = near, i, tot
        if 2 * same_best > m:
            out[k] = block[k, same_i]
            continue
        mean_of_all = m <= small and 2 * near_best <= m
        for ch in range(c):
            acc, cnt = 0.0, 0
            for j in range(m):
                if mean_of_all or d[near_i, j] <= radius2:
                    acc += float(block[k, j, ch])
                    cnt += 1
            out[k, ch] = np.uint8(np.floor(acc / cnt + 0.5))
    return out


def sample_cells(img: np.ndarray, ey: np.ndarray, ex: np.ndarray) -> np.ndarray:
    """One colour per cell: the dominant colour of the cell's inner part (see ``_samples`` and the module doc)."""
    c = img.shape[2]
    out = np.empty((len(ey) - 1, len(ex) - 1, c), np.uint8)
    for rows, ry in _samples(ey):
        for cols, rx in _samples(ex):
            block = img[ry[:, :, None, None], rx[None, None, :, :]]  # [rows, my, cols, mx, C]
            block = block.transpose(0, 2, 1, 3, 4).reshape(len(rows) * len(cols), -1, c)
            dominant = _dominant(np.ascontiguousarray(block), DOMINANT_RADIUS ** 2, SMALL_CELL_SAMPLES)
            out[np.ix_(rows, cols)] = dominant.reshape(len(rows), len(cols), c)
    if c == 4:
        out[out[..., 3] == 0, :3] = 0
    return out


def check_sizes(*, min_size: float = MIN_SIZE, max_size: float | None = None, cell_width: float | None = None,
                cell_height: float | None = None) -> None:
    """ValueError naming the first of ``snap``'s sizes that no image could take (the limits by image size are
    ``snap``'s own)."""
    for name, size in (("cell_width", cell_width), ("cell_height", cell_height), ("min_size", min_size),
                       ("max_size", max_size)):
        # NaN passes every comparison and infinity every lower bound: both would reach int() in the detector
        if size is not None and not math.isfinite(size):
            raise ValueError(f"{name}: must be a finite number of pixels, got {size:g}")
        if size is not None and name != "max_size" and size < MIN_SIZE:
            raise ValueError(f"{name}: a cell is at least {MIN_SIZE:g} pixels, got {size:g}")  # else a 0.5-px grid
    if max_size is not None and max_size < min_size:
        raise ValueError(f"max_size: {max_size:g} is below min_size {min_size:g}: no cell size is left to find")


def snap(img: np.ndarray | list[np.ndarray], *, min_size: float = MIN_SIZE, max_size: float | None = None,
         cell_width: float | None = None, cell_height: float | None = None) -> SnapResult | list[SnapResult]:
    """Detect the grid of ``img`` (``uint8 [H,W,C]``, C = 1, 3 or 4) and return one pixel per cell.

    A list of images of one size shares one grid (detected from all of them), so animation frames stay aligned;
    a list in gives a list out. ``cell_width``/``cell_height`` fix the period of an axis (its phase and drift are
    still found).
    """
    single = not isinstance(img, (list, tuple))
    images = [np.asarray(img)] if single else [np.asarray(a) for a in img]
    if not images:
        raise ValueError("no images to snap")
    for a in images:
        if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
            raise ValueError(f"image must be uint8 [H,W,C] with C = 1, 3 or 4, got {a.dtype} {list(a.shape)}")
        if a.shape[:2] != images[0].shape[:2]:
            raise ValueError(f"images of one batch must share a size: {a.shape[:2]} vs {images[0].shape[:2]}")
    images = [a[..., None] if a.ndim == 2 else a for a in images]
    check_sizes(min_size=min_size, max_size=max_size, cell_width=cell_width, cell_height=cell_height)
    h, w = images[0].shape[:2]
    if min(h, w) < 4:
        res = [SnapResult(a, False, message=f"image {w}x{h} is too small to hold a grid") for a in images]
        return res[0] if single else res
    for name, size, side in (("cell_width", cell_width, w), ("cell_height", cell_height, h)):
        # the edge tracker's smoothing kernel is sized by the cell: 1e9 asked for 72 GB (a MemoryError), 1e7 for
        # hundreds of MB and seconds, and any cell over the image made one cell of all of it
        if size is not None and size > side:
            raise ValueError(f"{name}: {size:g} pixels is larger than the image ({w}x{h})")
    px, py = edge_profiles(images)
    gx = detect_axis(px, smin=min_size, smax=max_size, size=cell_width)
    gy = detect_axis(py, smin=min_size, smax=max_size, size=cell_height)
    weak = [name for name, g, fixed in (("columns", gx, cell_width), ("rows", gy, cell_height))
            if g is None or (not fixed and g.score < (MIN_SCORE_SMALL if g.size < 3 else MIN_SCORE))]
    why = f"no regular cell edges in the {' and '.join(weak)}" if weak else ""
    if not weak and not (cell_width and cell_height):
        pure = purity(images[0], gy.edges, gx.edges)
        inner = max(inner_edges(px, gx), inner_edges(py, gy))
        if min(gx.size, gy.size) < 3 and inner > MAX_INNER_EDGES and _crisp(images[0]):
            why = (f"a {gx.size:.2f}x{gy.size:.2f} grid fits the edges, but there are many between its cells' pixels "
                   f"too ({inner:.0%} of those on its edges): the image looks like pixel art at its true size")
        if pure is not None and pure < MIN_PURITY:
            why = (f"a {gx.size:.2f}x{gy.size:.2f} grid fits the edges, but only {pure:.0%} of the cells near edges "
                   f"are flat inside (pixel art: nearly all)")
    if why:
        res = [SnapResult(a, False, gx, gy, message=f"no pixel grid detected: {why}; image returned unchanged")
               for a in images]
        return res[0] if single else res
    out = []
    for a in images:
        small = sample_cells(a, gy.edges, gx.edges)
        out.append(SnapResult(small, True, gx, gy, message=(
            f"grid {gx.size:.2f}x{gy.size:.2f} px per cell, offset ({gx.offset:g}, {gy.offset:g}): "
            f"{w}x{h} -> {gx.cells}x{gy.cells}")))
    return out[0] if single else out
