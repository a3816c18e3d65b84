"""Morphology on patch grids ([N, rows, cols] bool): what object masks are made of.

An object's patches form a blob. A concept marks most of it but not all (patches where other
latents won the TopK, often in the middle; the outline, which other kinds share), so masks are
grown into the neighbours (`dilate`) and closed (`close`: dilate, then erode), which fills holes and
gaps without growing the blob's outline. Shared by the concept builder and the runtime.
"""

from __future__ import annotations

import torch
from torch import Tensor


def dilate(g: Tensor, size: int = 3) -> Tensor:
    """Each cell and its neighbours within a `size` x `size` window."""
    pad = size // 2
    x = torch.nn.functional.pad(g.float()[:, None], (pad,) * 4)
    return torch.nn.functional.max_pool2d(x, size, 1)[:, 0] > 0


def close(g: Tensor, size: int = 3) -> Tensor:
    """Dilate, then erode; outside the grid counts as inside when eroding, so a blob at the
    image's edge keeps its edge cells."""
    pad = size // 2
    d = dilate(g, size).float()[:, None]
    e = -torch.nn.functional.max_pool2d(torch.nn.functional.pad(-d, (pad,) * 4, value=-1.0), size, 1)
    return e[:, 0] > 0
