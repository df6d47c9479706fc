"""Helpers of the streaming tests (tests/inference): the drag of one point moving right."""

import numpy as np


def controls(k, x0=20.0, speed=2.0):
    """Pixel-frame points of latent frame k (1 pixel frame for the first, 4 after): one point moving right
    by ``speed`` px a frame from ``x0``, at y = 30."""
    n = 1 if k == 0 else 4
    start = 0 if k == 0 else 1 + 4 * (k - 1)
    x = x0 + speed * np.arange(start, start + n)
    return np.stack([x, np.full(n, 30.0)], -1)[:, None].astype(np.float32)
