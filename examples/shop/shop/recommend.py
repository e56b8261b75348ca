"""Content-based recommendations: cosine similarity over hashed character-trigram vectors.

The vectors are dense Python lists and the similarity is computed in pure Python, one
product against the whole catalogue, on every request. See README.md, "recommendations".
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

DIM = 1024


@dataclass(frozen=True)
class Index:
    vectors: dict[int, list[float]]
    norms: dict[int, float]
    names: dict[int, str]


def vectorize(text: str) -> list[float]:
    vec = [0.0] * DIM
    text = f"  {text.lower()}  "
    for i in range(len(text) - 2):
        vec[zlib.crc32(text[i : i + 3].encode()) % DIM] += 1.0
    return vec


def build_index(products: Iterable[tuple[int, str, str]]) -> Index:
    """``products`` yields (id, name, text); the text is what similarity is computed on."""
    vectors: dict[int, list[float]] = {}
    names: dict[int, str] = {}
    for pid, name, text in products:
        vectors[pid] = vectorize(text)
        names[pid] = name
    norms = {pid: math.sqrt(sum(x * x for x in vec)) or 1.0 for pid, vec in vectors.items()}
    return Index(vectors, norms, names)


def similar(index: Index, product_id: int, k: int = 10) -> list[tuple[int, float]]:
    """The ``k`` products most similar to ``product_id`` as (id, cosine score), best first."""
    target = index.vectors[product_id]
    target_norm = index.norms[product_id]
    scores: list[tuple[float, int]] = []
    for other_id, vec in index.vectors.items():
        if other_id == product_id:
            continue
        dot = sum(a * b for a, b in zip(target, vec, strict=True))  # the hot line
        scores.append((dot / (target_norm * index.norms[other_id]), other_id))
    scores.sort(reverse=True)
    return [(pid, round(score, 6)) for score, pid in scores[:k]]
