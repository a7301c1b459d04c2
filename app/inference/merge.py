"""Labels found block by block, made one labelling of the whole image (pure numpy / scipy).

As dask-image's ``ndmeasure.label`` does it: each block is labelled on its own
(ids 1..n_b), each block's ids are shifted past the ids of the blocks before it
(``offsets``), and two ids that touch across a block border (4-neighbours, the
same class) are edges of a graph whose connected components are the objects of
the whole image. Components are numbered in the order of their smallest
provisional id, so the result does not depend on how the work was spread.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def offsets(counts: list[int]) -> npt.NDArray[np.int64]:
    """The first provisional id of each block minus 1: block b's id i is offsets[b] + i."""
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)[:-1]]).astype(np.int64)


def border_pairs(
    ids_a: npt.NDArray[np.integer],
    ids_b: npt.NDArray[np.integer],
    classes_a: npt.NDArray[np.integer],
    classes_b: npt.NDArray[np.integer],
) -> npt.NDArray[np.int64]:
    """P x 2 provisional ids that touch across a border: ``ids_a[i]`` is the 4-neighbour
    of ``ids_b[i]`` (two lines of pixels, either side of the border); same class only."""
    touch = (ids_a > 0) & (ids_b > 0) & (classes_a == classes_b)
    pairs = np.stack([ids_a[touch], ids_b[touch]], axis=1).astype(np.int64)
    return np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)


def merge(total: int, pairs: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Provisional ids 0..total -> object ids (0 stays 0; 1..M in order of smallest id)."""
    graph = coo_matrix(
        (np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
        shape=(total + 1, total + 1),
    )
    count, component = connected_components(graph, directed=False)
    smallest = np.full(count, total + 1, dtype=np.int64)
    np.minimum.at(smallest, component, np.arange(total + 1))
    rank = np.empty(count, dtype=np.int64)
    rank[np.argsort(smallest)] = np.arange(count)  # node 0 (no object) is alone: rank 0
    ids: npt.NDArray[np.int64] = rank[component]
    return ids
