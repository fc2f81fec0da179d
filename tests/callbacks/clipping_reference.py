"""Independent NumPy references for AGC and ZClip, written from the papers."""

from __future__ import annotations

import math

import numpy as np


def agc_numpy(grads, params, clipping=0.01, eps=1e-3):
    """Brock et al. (2021), eq. 3, per output unit (last axis); biases whole."""
    out = []
    for g, p in zip(grads, params):
        g, p = np.asarray(g, np.float64), np.asarray(p, np.float64)
        if g.ndim <= 1:
            g_norm, p_norm = np.linalg.norm(g), np.linalg.norm(p)
        else:
            g_cols = g.reshape(-1, g.shape[-1])
            p_cols = p.reshape(-1, p.shape[-1])
            g_norm = np.linalg.norm(g_cols, axis=0)
            p_norm = np.linalg.norm(p_cols, axis=0)
        limit = clipping * np.maximum(p_norm, eps)
        factor = np.where(g_norm > limit, limit / np.maximum(g_norm, 1e-6), 1.0)
        out.append(g * factor)  # broadcasts over the last axis
    return out


def zclip_numpy(norms, z_thresh=2.5, alpha=0.97, warmup=25, eps=1e-6):
    """ZClip's reference loop (buffer warm-up, adaptive scaling, EMA of the
    clipped norm), with non-finite norms left out of the statistics.

    Returns the norm each step is clipped to (inf: not clipped).
    """
    buffer, mean, var, out = [], None, None, []
    for g in norms:
        g = float(g)
        if not math.isfinite(g):
            out.append(math.inf)
            continue
        if mean is None:
            buffer.append(g)
            if len(buffer) >= warmup:
                mean = sum(buffer) / len(buffer)
                var = sum((b - mean) ** 2 for b in buffer) / len(buffer)
            out.append(math.inf)
            continue
        std = var ** 0.5
        z = (g - mean) / (std + eps)
        clip = None
        if z > z_thresh:
            clip = mean + (z_thresh * std) / (z / z_thresh)
        out.append(math.inf if clip is None else clip)
        fed = g if clip is None else clip
        mean = alpha * mean + (1 - alpha) * fed
        var = alpha * var + (1 - alpha) * (fed - mean) ** 2
    return np.array(out)
