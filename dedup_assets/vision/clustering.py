"""Duplicate groups without transitive chaining, and the copy to keep in each.

Star clustering: inside each connected component of the duplicate graph, the best
remaining image becomes a representative and takes only the images verified as its
own duplicates; the rest form further groups. A~B and B~C never put A with C unless
one of them is verified against the image that is kept.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

LOSSLESS = {"PNG", "TIFF", "BMP", "PPM"}
# Scores within this margin are treated as equal; the older copy is then kept (the
# original usually existed first, and a re-save or format change adds nothing).
QUALITY_TIE = 0.15


def quality_score(width: int, height: int, image_format: str, jpeg_quality: int | None,
                  sharpness: float, size_bytes: int) -> float:
    """Higher is better: resolution first, then compression fidelity, then detail."""
    pixels = max(width * height, 1)
    if image_format == "JPEG" and jpeg_quality:
        fidelity = jpeg_quality / 100
    elif image_format in LOSSLESS:
        fidelity = 1.0
    else:
        fidelity = 0.8  # lossy formats with no readable quality setting (WebP, GIF, ...)
    bits_per_pixel = 8 * size_bytes / pixels
    return (0.5 * math.log2(pixels) + fidelity + 0.1 * math.log2(1 + sharpness)
            + 0.05 * math.log2(1 + bits_per_pixel))


@dataclass(frozen=True)
class Image:
    name: str
    quality: float
    age_rank: int  # 0 = oldest
    is_part_of_another: bool = False  # a crop: another copy contains all of it


def _preference(image: Image, best_quality: float) -> tuple:
    return (image.is_part_of_another, image.quality < best_quality - QUALITY_TIE, image.age_rank, -image.quality)


def star_clusters(images: list[Image], duplicate_pairs: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Groups as (representative, members including it); singletons included."""
    neighbours: dict[str, set[str]] = defaultdict(set)
    for a, b in duplicate_pairs:
        if a != b:
            neighbours[a].add(b)
            neighbours[b].add(a)
    by_name = {image.name: image for image in images}
    unassigned = set(by_name)
    groups: list[tuple[str, list[str]]] = []
    for component in _components(by_name, neighbours):
        remaining = set(component)
        while remaining:
            best_quality = max(by_name[n].quality for n in remaining)
            representative = min(remaining, key=lambda n: (_preference(by_name[n], best_quality), n))
            members = [representative] + sorted(neighbours[representative] & remaining - {representative})
            groups.append((representative, members))
            remaining -= set(members)
            unassigned -= set(members)
    return groups


def _components(by_name, neighbours) -> list[list[str]]:
    seen: set[str] = set()
    components = []
    for start in sorted(by_name):
        if start in seen:
            continue
        stack, component = [start], []
        seen.add(start)
        while stack:
            node = stack.pop()
            component.append(node)
            for other in neighbours[node]:
                if other not in seen and other in by_name:
                    seen.add(other)
                    stack.append(other)
        components.append(component)
    return components
