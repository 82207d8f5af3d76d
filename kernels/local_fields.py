"""Local receptive fields (edgeff/receptive.py): zero the entries of a layer's (D_in, D_out)
weights or gradient that join an input to a unit whose window does not hold it.

    input i lies in cell e = i // per_in of the grid below: row e // in_cols, column e % in_cols
    unit j belongs to cell c = j // per_out of the layer's grid: row gy = c // grid, column gx = c % grid
    keep g[i, j] iff gy*sy <= row < gy*sy + fy and gx*sx <= column < gx*sx + fx

A unit's cell owns a run of per_out columns, so the kernel clears whole runs of a row.
"""

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def _keep_fields(g, in_cols, per_in, grid, per_out, sy, sx, fy, fx):
    # g: (D_in, D_out) float32, in place
    for i in prange(g.shape[0]):
        cell = i // per_in
        row, col = cell // in_cols, cell % in_cols
        for c in range(grid * grid):
            gy, gx = c // grid, c % grid
            if row < gy * sy or row >= gy * sy + fy or col < gx * sx or col >= gx * sx + fx:
                g[i, c * per_out:(c + 1) * per_out] = 0.0


def keep_fields(g, fields):
    """g <- g with every entry outside the units' fields zeroed (module docstring); in place."""
    width = fields.grid ** 2 * fields.per_out
    if g.dtype != np.float32 or g.ndim != 2 or g.shape[1] != width:
        raise ValueError(f"keep_fields: need float32 (D_in, {width}), got {g.dtype} {g.shape}")
    _keep_fields(g, fields.in_cols, fields.per_in, fields.grid, fields.per_out, *fields.stride, *fields.field)
    return g
