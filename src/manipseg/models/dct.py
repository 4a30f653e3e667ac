"""The JPEG trace as network input: how well each 8x8 block fits the image's own last JPEG compression.

A JPEG stores each 8x8 block of the luminance as DCT coefficients rounded to multiples of a quantisation
step ``q_k`` per frequency ``k``. After decoding, the block DCT of the pixels on the same grid is still
almost exactly a multiple of ``q_k`` (up to the rounding of the decoded pixels). A region pasted from
another photo carries another history — compressed on a shifted grid, at another quality, resampled —
so its coefficients do not sit on the multiples of the image's steps, and after the composite is saved
again that misfit survives as the classic *non-aligned double compression* trace (CAT-Net reads the same
evidence from the file's quantised coefficients; here it is computed from the decoded pixels, so any input
works and a training sample needs no file).

:func:`dct_features` computes, from the pixels alone:

1. the luminance ``Y`` (JPEG's BT.601 weights) and the 8x8 grid offset with the strongest blocking
   (:func:`estimate_grid`: the column / row phase where pixel differences jump);
2. the orthonormal 8x8 block DCT on that grid (:func:`block_dct`);
3. per frequency of the first ``N_FREQ`` zig-zag AC frequencies, the quantisation step (:func:`estimate_steps`:
   the largest step ``q >= 3`` on whose multiples the coefficients cluster, or 0 when there is none);
4. per block and frequency the misfit ``|c / q - round(c / q)|`` in [0, 0.5] (0 = on the grid of the last
   compression), where a step was found; blocks whose coefficient is too small to say anything
   (``|c| < q / 2``) get 0.

Output: float32 ``[N_FREQ + 1, ceil(H / 8), ceil(W / 8)]``: the misfit maps and one channel telling where a
JPEG history was found at all (1 for blocks of a frequency-averaged valid grid, else 0), at stride 8
aligned to the image's top-left pixel (each value belongs to the block on the estimated grid that covers
that cell's centre). **Fallback** for inputs without a JPEG history (a PNG/TIFF never compressed, or a JPEG
at quality ~100 whose steps are all 1): no step is found and every channel is 0 — the network then relies
on its RGB and SRM streams.
"""
from __future__ import annotations

import math

import numpy as np

#: AC frequencies used, in zig-zag order (the low and middle ones: large steps, many non-zero values)
N_FREQ = 15
CHANNELS = N_FREQ + 1
#: smallest quantisation step that can be told from the rounding noise of decoded pixels
MIN_STEP = 3
#: blocks used to estimate the steps (a 12-MP photo has 190 000; the estimate needs far fewer)
MAX_BLOCKS = 16384
#: largest quantisation step searched (JPEG quality ~30 has AC steps up to ~80 in the middle frequencies)
MAX_STEP = 40


def _zigzag() -> list[tuple[int, int]]:
    order = sorted(((i, j) for i in range(8) for j in range(8)),
                   key=lambda p: (p[0] + p[1], p[0] if (p[0] + p[1]) % 2 else -p[0]))
    return order


ZIGZAG = _zigzag()
#: (rows, cols) index arrays of the AC frequencies used
ZIGZAG_AC = (np.array([p[0] for p in ZIGZAG[1:N_FREQ + 1]]), np.array([p[1] for p in ZIGZAG[1:N_FREQ + 1]]))


def _dct_matrix() -> np.ndarray:
    d = np.zeros((8, 8), dtype=np.float64)
    for k in range(8):
        for n in range(8):
            d[k, n] = (math.sqrt(1 / 8) if k == 0 else math.sqrt(2 / 8)) * math.cos(math.pi * (2 * n + 1) * k / 16)
    return d


DCT8 = _dct_matrix()


def luminance(rgb: np.ndarray) -> np.ndarray:
    """JPEG's Y (BT.601 full range) of an RGB uint8 image, float32."""
    import cv2

    return cv2.cvtColor(np.asarray(rgb).astype(np.float32), cv2.COLOR_RGB2GRAY)  # 0.299 R + 0.587 G + 0.114 B


def estimate_grid(y: np.ndarray) -> tuple[int, int]:
    """(dx, dy) in 0-7: the pixel where the 8x8 block grid starts, from blocking artefacts (the phase at
    which absolute differences between neighbouring columns / rows are largest on average). Images too
    small to tell return (0, 0)."""
    y = np.asarray(y, dtype=np.float32)
    out = []
    for axis in (1, 0):
        d = np.abs(np.diff(y, axis=axis))
        if d.shape[axis] < 16:
            out.append(0)
            continue
        prof = d.mean(axis=1 - axis)
        # a boundary between pixel p-1 and p (diff index p-1) marks a grid start at p
        phase = np.array([prof[(k - 1) % 8::8].mean() for k in range(8)])
        out.append(int(np.argmax(phase)) if phase.max() > 1.02 * np.median(phase) else 0)
    return out[0], out[1]


def block_dct(y: np.ndarray, grid: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Orthonormal DCT-II of the 8x8 blocks of ``y - 128`` on the grid starting at ``grid`` = (dx, dy):
    ``[rows, cols, 8, 8]`` float32 (only whole blocks)."""
    dx, dy = int(grid[0]) % 8, int(grid[1]) % 8
    y = np.asarray(y, dtype=np.float32)[dy:, dx:]
    h, w = (y.shape[0] // 8) * 8, (y.shape[1] // 8) * 8
    blocks = (y[:h, :w] - np.float32(128.0)).reshape(h // 8, 8, w // 8, 8)  # [rows, i, cols, j]
    d = DCT8.astype(np.float32)
    # two large matrix products (BLAS) instead of one tiny product per block: out[r, c, k, l] =
    # sum_ij D[k, i] B[r, i, c, j] D[l, j]
    t = np.tensordot(blocks, d, axes=([3], [1]))          # [rows, i, cols, l]
    t = np.tensordot(t, d, axes=([1], [1]))               # [rows, cols, l, k]
    return np.ascontiguousarray(t.transpose(0, 1, 3, 2))


def estimate_steps(coeffs: np.ndarray, max_step: int = MAX_STEP, min_count: int = 24,
                   min_score: float = 0.45) -> np.ndarray:
    """Quantisation step per zig-zag AC frequency (``N_FREQ`` values, 0 = none found) from block DCT
    coefficients ``[rows, cols, 8, 8]``: the ``q`` in ``[MIN_STEP, max_step]`` on whose multiples the
    coefficients with ``|c| >= q / 2`` sit best (highest mean ``cos(2 pi c / q)``), if that score reaches
    ``min_score``.

    Decoded 8-bit pixels put noise of about 0.5 on each coefficient (measured): true steps score 0.55-0.8,
    other steps below 0.1, and the divisors of the true step less than the step itself (the noise weighs
    more at a smaller step); a step of 2 cannot be told from that noise, hence ``MIN_STEP`` = 3. A region of
    another history (a paste) lowers the score but, up to a third of the blocks, not below ``min_score``."""
    rows, cols = ZIGZAG_AC
    c = coeffs[..., rows, cols].reshape(-1, N_FREQ).T.astype(np.float32)      # [N_FREQ, blocks]
    if c.shape[1] > MAX_BLOCKS:  # a large photo: an evenly strided subset of its blocks is plenty
        c = c[:, :: -(-c.shape[1] // MAX_BLOCKS)]
    qs = np.arange(max_step, MIN_STEP - 1, -1, dtype=np.float32)              # largest first
    big = np.abs(c)[:, None, :] >= qs[None, :, None] / 2                        # [N_FREQ, Q, blocks]
    cosines = np.cos((2 * np.pi) * c[:, None, :] / qs[None, :, None])
    count = big.sum(axis=2)
    score = np.where(count >= min_count, (cosines * big).sum(axis=2) / np.maximum(count, 1), -1.0)
    best = np.argmax(score, axis=1)  # the first (largest) q among equal scores
    return np.where(score[np.arange(len(best)), best] >= min_score, qs[best], 0).astype(np.int32)


def jpeg_history(rgb: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
    """The grid offset and quantisation steps :func:`dct_features` finds in a whole image (give them to
    :func:`dct_features` of its tiles, so that every tile is measured against the image's history)."""
    y = luminance(rgb)
    grid = estimate_grid(y)
    coeffs = block_dct(y, grid)
    steps = estimate_steps(coeffs) if coeffs.size else np.zeros(N_FREQ, dtype=np.int32)
    return grid, steps


def dct_features(rgb: np.ndarray, grid: tuple[int, int] | None = None, steps: np.ndarray | None = None) -> np.ndarray:
    """The JPEG-trace maps of an RGB uint8 image (see the module docstring): float32
    ``[CHANNELS, ceil(H / 8), ceil(W / 8)]``. ``grid`` (the block grid's start, 0-7) and ``steps`` (per
    frequency) are estimated from the image unless given (a tile of a larger image: see
    :func:`jpeg_history`)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"dct_features expects an H x W x 3 image, got shape {rgb.shape}")
    h, w = rgb.shape[:2]
    out = np.zeros((CHANNELS, -(-h // 8), -(-w // 8)), dtype=np.float32)
    y = luminance(rgb)
    dx, dy = estimate_grid(y) if grid is None else grid
    coeffs = block_dct(y, (dx, dy))
    if coeffs.shape[0] == 0 or coeffs.shape[1] == 0:
        return out
    steps = estimate_steps(coeffs) if steps is None else np.asarray(steps)
    if not steps.any():
        return out
    rows, cols = coeffs.shape[:2]
    misfit = np.zeros((CHANNELS, rows, cols), dtype=np.float32)
    q = steps.astype(np.float32)
    c = np.moveaxis(coeffs[..., ZIGZAG_AC[0], ZIGZAG_AC[1]], -1, 0)            # [N_FREQ, rows, cols]
    ratio = c / np.maximum(q, 1.0)[:, None, None]
    use = (q[:, None, None] >= 2) & (np.abs(c) >= q[:, None, None] / 2)
    misfit[:N_FREQ] = np.where(use, np.abs(ratio - np.round(ratio)), 0.0)
    misfit[N_FREQ] = 1.0
    # cell (a, b) of the stride-8 output covers pixels [8a, 8a + 8) x [8b, 8b + 8); its centre lies in the
    # estimated-grid block floor((8a + 4 - dy) / 8) (clipped to the whole blocks computed)
    ri = np.clip((np.arange(out.shape[1]) * 8 + 4 - dy) // 8, 0, rows - 1)
    ci = np.clip((np.arange(out.shape[2]) * 8 + 4 - dx) // 8, 0, cols - 1)
    out[:] = misfit[:, ri][:, :, ci]
    return out


def dct_batch(images: np.ndarray) -> np.ndarray:
    """:func:`dct_features` of a uint8 batch ``[B, H, W, 3]`` (or ``[B, 3, H, W]``): ``[B, CHANNELS, H/8, W/8]``."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 3 and images.shape[-1] != 3:
        images = images.transpose(0, 2, 3, 1)
    return np.stack([dct_features(np.ascontiguousarray(im)) for im in images])
