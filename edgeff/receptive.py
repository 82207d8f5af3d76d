"""Local receptive fields for the dense layers of --algo ff-unsup (--fields local; Hinton 2022,
section 3.1: 1.37 % -> 1.16 % on MNIST): each unit sees a window of the layer below, not all of
it, and no weights are shared.

Layer 1 puts its units on a 4 x 4 grid over the H x W image: the cell (gy, gx) sees rows
gy*s .. gy*s+f-1 and columns gx*s .. gx*s+f-1 of the image (every channel), with stride
s = H // 4 - 1 and field f = H - 3 s (28 x 28: s 6, f 10, Hinton's; columns alike with W).
Each later layer puts its units on a grid one cell smaller, each cell seeing the 2 x 2 cells
below it (all their units); from a 1 x 1 grid on, layers are fully connected. A layer's
units are split evenly over its cells, unit = cell * per_cell + j, cells row by row (so
the widths must be multiples of 16, 9, 4: Hinton's 2048-1980-2048 has 128, 220, 512 per cell).
The layers stay dense matrices: the trainer zeroes the weights outside the fields once and
every gradient there (kernels/local_fields.py), so the model, its export and inference are the
dense net's.
"""

from dataclasses import dataclass

FIRST_GRID = 4


@dataclass(frozen=True)
class Fields:
    """Which inputs each unit of one layer sees (unit j of cell c sees input i of cell e iff e
    lies in c's window)."""
    in_cols: int        # columns of the grid the layer's inputs lie on (the image's pixels, or the cells below)
    per_in: int         # inputs per cell of that grid (channels of a pixel, or units of a cell below)
    grid: int           # this layer's grid: grid x grid cells
    per_out: int        # units per cell
    stride: tuple       # (rows, columns) between neighbouring cells' windows, in input cells
    field: tuple        # (rows, columns) of input cells one window spans

    @property
    def fan_in(self):
        """Inputs one unit sees (every window lies inside the grid below)."""
        return self.field[0] * self.field[1] * self.per_in


def grid_sides(n_layers):
    """Grid side of each layer: 4, 3, 2, then 1."""
    return [max(1, FIRST_GRID - k) for k in range(n_layers)]


def widths_problem(image_shape, widths):
    """None if local fields fit images of image_shape and layers of these widths, else what is wrong."""
    if min(image_shape[:2]) < 2 * FIRST_GRID:
        side = 2 * FIRST_GRID
        return f"--fields local needs images of at least {side} x {side} pixels, got {image_shape[:2]}"
    for k, (w, g) in enumerate(zip(widths, grid_sides(len(widths)))):
        if g > 1 and w % (g * g):
            return (f"--fields local puts layer {k + 1}'s units on a {g} x {g} grid: its width must be a multiple "
                    f"of {g * g}, got {w} (Hinton's MNIST net: 784-2048-1980-2048)")
    return None


def layer_fields(image_shape, widths):
    """[Fields, or None for a fully connected layer] per layer, for images of image_shape."""
    height, width = image_shape[:2]
    channels = image_shape[2] if len(image_shape) == 3 else 1
    sy, sx = height // FIRST_GRID - 1, width // FIRST_GRID - 1
    out, sides = [], grid_sides(len(widths))
    for k, (units, g) in enumerate(zip(widths, sides)):
        if k == 0:
            out.append(Fields(width, channels, g, units // (g * g), (sy, sx),
                              (height - (g - 1) * sy, width - (g - 1) * sx)))
        elif sides[k - 1] > 2:       # below a 2 x 2 grid, one window of 2 x 2 cells is everything
            below = sides[k - 1]
            out.append(Fields(below, widths[k - 1] // (below * below), g, units // (g * g), (1, 1), (2, 2)))
        else:
            out.append(None)
    return out
