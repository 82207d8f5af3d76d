"""Partitions of a training set among clients, deterministic from the seed.

iid: the rows shuffled, then cut into N parts of equal size (within one row).
dirichlet:ALPHA: label skew as in Hsu et al. 2019 (arXiv 1909.06335) and Yurochkin et al. 2019: for
each class c, shares q_c ~ Dirichlet(ALPHA, ..., ALPHA) over the N clients, and class c's rows
(shuffled) are cut in those shares. Small ALPHA (0.1-0.5) gives each client few classes; large ALPHA
approaches iid. As in those papers' code, draws are repeated until every client holds at least
MIN_ROWS rows (fewer when the set is too small for that).
"""

import numpy as np

from ..errors import UsageError
from .settings import parse_partition

MIN_ROWS = 10
MAX_DRAWS = 1000


def partition(labels, clients, scheme, seed):
    """[row indices of client 0, ..., of client N-1] (int64, sorted) of a training set with these labels."""
    n = len(labels)
    if n < clients:
        raise UsageError(f"{clients} clients need at least {clients} training rows, the data holds {n}")
    kind, alpha = parse_partition(scheme)
    rng = np.random.default_rng(seed)
    if kind == "iid":
        return [np.sort(part) for part in np.array_split(rng.permutation(n), clients)]
    return _dirichlet(labels, clients, alpha, rng)


def _dirichlet(labels, clients, alpha, rng):
    least = min(MIN_ROWS, len(labels) // clients)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(MAX_DRAWS):
        parts = [[] for _ in range(clients)]
        for rows in by_class:
            rows = rng.permutation(rows)
            shares = np.nan_to_num(rng.dirichlet(np.full(clients, alpha)))   # a tiny ALPHA can underflow to NaN
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(np.int64).clip(0, len(rows))
            for part, share in zip(parts, np.split(rows, cuts)):
                part.append(share)
        sizes = [sum(len(s) for s in part) for part in parts]
        if min(sizes) >= least:
            return [np.sort(np.concatenate(part)).astype(np.int64) for part in parts]
    raise UsageError(f"dirichlet:{alpha:g} left a client with fewer than {least} rows in {MAX_DRAWS} draws; "
                     "use a larger ALPHA or fewer --clients")
