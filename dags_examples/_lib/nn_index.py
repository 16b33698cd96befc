"""A tiny exact nearest-neighbour index with cosine similarity, in pure Python.

Good for thousands of vectors (a brute-force scan); beyond that use a vector
database. Vectors are normalized once when added, so a search is one dot product
per stored vector.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence


def norm(vector: Sequence[float]) -> float:
    return math.sqrt(math.fsum(v * v for v in vector))


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors of the same length (0.0 if either is all zeros)."""
    if len(a) != len(b):
        raise ValueError(f"vectors differ in length: {len(a)} != {len(b)}")
    na, nb = norm(a), norm(b)
    if not na or not nb:
        return 0.0
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / (na * nb)


def _unit(vector: Sequence[float]) -> list[float]:
    n = norm(vector)
    return [v / n for v in vector] if n else [0.0] * len(vector)


class NearestNeighbourIndex:
    """Exact k-nearest-neighbour search by cosine similarity.

    :param items: ``(key, vector)`` pairs, all vectors of one length.
    """

    def __init__(self, items: Iterable[tuple[str, Sequence[float]]] = ()) -> None:
        self._keys: list[str] = []
        self._units: list[list[float]] = []
        self.dimensions: int | None = None
        for key, vector in items:
            self.add(key, vector)

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: str, vector: Sequence[float]) -> None:
        if self.dimensions is None:
            self.dimensions = len(vector)
        elif len(vector) != self.dimensions:
            raise ValueError(f"{key!r} has {len(vector)} dimensions, the index {self.dimensions}")
        self._keys.append(key)
        self._units.append(_unit(vector))

    def search(self, vector: Sequence[float], k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most similar keys with their cosine similarity, best first (ties by key)."""
        if self.dimensions is not None and len(vector) != self.dimensions:
            raise ValueError(f"query has {len(vector)} dimensions, the index {self.dimensions}")
        query = _unit(vector)
        scored = (
            (math.fsum(q * u for q, u in zip(query, unit, strict=True)), key)
            for key, unit in zip(self._keys, self._units, strict=True)
        )
        best = heapq.nsmallest(k, scored, key=lambda s: (-s[0], s[1]))
        return [(key, round(similarity, 6)) for similarity, key in best]
