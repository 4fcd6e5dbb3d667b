"""Duplicate groups without transitive chaining, and the copy to keep in each.

Star clustering: inside each connected component of the duplicate graph, the best
remaining image becomes a representative and takes only the images verified as its
own duplicates; the rest form further groups. A~B and B~C never put A with C unless
one of them is verified against the image that is kept.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Container, Iterable
from dataclasses import dataclass

LOSSLESS = {"PNG", "TIFF", "BMP", "PPM"}
# Copies within these margins count as equally good on that criterion, and the next one
# decides; then the older copy is kept (the original usually existed first, and a
# re-save, format change or overlay adds nothing). Sharpness comes late and only as a
# wide window: overlays, rotation, heavy compression and more contrast all read sharper.
RESOLUTION_TIE = 0.9  # pixel ratio
FIDELITY_TIE = 0.03
# Mean cosines this close are copies equally like the rest of the group (a PNG of a JPEG
# and the JPEG sit ~0.002 apart; a caption or a tint 0.02-0.1 below the original).
CENTRALITY_TIE = 0.01
# Sharpness within this ratio is the same detail: a Gaussian blur of 1 px took 3.1-10.7x
# away on the shipped photos (3 px: 32-92x), while 1.5x brightness or contrast read
# 1.4-2.4x sharper. Edits can read sharper still (a caption 3.9x on the hard set), which
# is why resemblance decides first.
SHARPNESS_TIE = 1 / 3


# As faithful as the best JPEGs, no more: a lossless copy of a JPEG adds nothing.
LOSSLESS_FIDELITY = 0.95
# A camera's raw file holds what every rendering of it was made from: above them all, a
# quality-100 JPEG included, by more than FIDELITY_TIE.
RAW_FIDELITY = 1.05


def fidelity(image_format: str, jpeg_quality: int | None) -> float:
    """How faithfully the file stores its pixels, on the JPEG quality scale (0-1)."""
    if image_format == "RAW":
        return RAW_FIDELITY
    if image_format == "JPEG" and jpeg_quality:
        return jpeg_quality / 100
    if jpeg_quality:  # a WebP's setting, a HEIC's or AVIF's quantiser read from the file, a palette's measured one
        return min(jpeg_quality / 100, LOSSLESS_FIDELITY)
    if image_format in LOSSLESS:
        return LOSSLESS_FIDELITY
    return 0.8  # lossy formats whose quality is not readable (an animated WebP or AVIF, ...)


def quality_score(pixels: int, image_format: str, jpeg_quality: int | None,
                  sharpness: float, size_bytes: int) -> float:
    """One number for reports: resolution, then compression fidelity, then detail."""
    return 0.5 * math.log2(max(pixels, 1)) + fidelity(image_format, jpeg_quality) + 0.05 * math.log2(1 + sharpness)


@dataclass(frozen=True)
class Image:
    name: str
    pixels: int
    fidelity: float
    quality: float  # the score reported beside the choice
    age_rank: int  # 0 = oldest
    is_part_of_another: bool = False  # a crop: another copy contains all of it
    has_colour: bool = True  # False: no colour anywhere (a grayscale copy, or a grayscale photo)
    # Mean embedding cosine to the copies it is a verified duplicate of: each edit of one
    # original moves away from it, so the original is the one the others resemble most.
    centrality: float = 0.0
    bytes: int = 0
    sharpness: float = 0.0
    framed: bool = False  # shows another copy whole inside a frame: `pixels` count only that picture


def pick_representative(candidates: list[Image]) -> Image:
    """Whole frame first, then resolution, then fidelity, then age, then the copy the
    others resemble most, then colour, then sharpness (a blur), then the most faithful,
    the most pixels and the smallest file (a PNG of a JPEG holds nothing more). Fidelity is
    compared only between copies that agree on colour: a grayscale copy saved losslessly
    stores a grayscale image faithfully, not the colour photo, and a colour edit of a
    grayscale photo is no more faithful for having colour; between the two the older copy
    is kept. Copies stored together (a bulk upload: no age to go by) are told apart by
    resemblance first: a caption, a tint or a grayscale copy is a step away from the
    original, two edits two steps from each other; of two copies alone, colour decides."""
    pool = [c for c in candidates if not c.is_part_of_another] or candidates
    most_pixels = max(c.pixels for c in pool)
    pool = [c for c in pool if c.pixels >= RESOLUTION_TIE * most_pixels]
    pool = [c for colour in (True, False) for c in _most_faithful([c for c in pool if c.has_colour == colour])]
    oldest = min(c.age_rank for c in pool)
    pool = [c for c in pool if c.age_rank == oldest]
    most_central = max(c.centrality for c in pool)
    pool = [c for c in pool if c.centrality >= most_central - CENTRALITY_TIE]
    pool = [c for c in pool if c.has_colour] or pool
    sharpest = max(c.sharpness for c in pool)
    pool = [c for c in pool if c.sharpness >= SHARPNESS_TIE * sharpest]
    return min(pool, key=lambda c: (-c.fidelity, -c.pixels, c.bytes, c.name))


def _most_faithful(pool: list[Image]) -> list[Image]:
    best_fidelity = max((c.fidelity for c in pool), default=0.0)
    return [c for c in pool if c.fidelity >= best_fidelity - FIDELITY_TIE]


def star_clusters(images: list[Image], duplicate_pairs: list[tuple[str, str]],
                  node_of: dict[str, str] | None = None) -> list[tuple[str, list[str]]]:
    """Groups as (representative, members including it); singletons included.

    node_of: each image's node, where pairs join nodes rather than images: byte-identical
    copies share their content's node, so a pair verified for one copy holds for every
    copy, and copies of one content always share a group. Default: each image its own."""
    node_of = node_of or {}
    nodes: dict[str, list[str]] = defaultdict(list)
    for image in sorted(images, key=lambda image: image.name):
        nodes[node_of.get(image.name, image.name)].append(image.name)
    neighbours = adjacency(duplicate_pairs)
    by_name = {image.name: image for image in images}
    groups: list[tuple[str, list[str]]] = []
    for component in _components(nodes, neighbours):
        remaining = {name for node in component for name in nodes[node]}
        while remaining:
            representative = pick_representative([by_name[n] for n in sorted(remaining)]).name
            home = node_of.get(representative, representative)
            joined = (name for node in [home, *neighbours[home]] for name in nodes.get(node, ()))
            members = [representative] + sorted({name for name in joined if name in remaining} - {representative})
            groups.append((representative, members))
            remaining -= set(members)
    return groups


def adjacency(pairs: Iterable[tuple[str, str]]) -> defaultdict[str, set[str]]:
    """Each node's neighbours in the graph of `pairs` (a pair of a node with itself adds none)."""
    neighbours: defaultdict[str, set[str]] = defaultdict(set)
    for a, b in pairs:
        if a != b:
            neighbours[a].add(b)
            neighbours[b].add(a)
    return neighbours


def reachable(start: Iterable[str], neighbours: defaultdict[str, set[str]],
              within: Container[str] | None = None) -> set[str]:
    """Every node connected to one of `start` (through nodes `within` only, if given)."""
    seen = set(start)
    stack = list(seen)
    while stack:
        for other in neighbours[stack.pop()]:
            if other not in seen and (within is None or other in within):
                seen.add(other)
                stack.append(other)
    return seen


def _components(nodes: dict[str, list[str]], neighbours: defaultdict[str, set[str]]) -> list[set[str]]:
    seen: set[str] = set()
    components = []
    for start in sorted(nodes):
        if start not in seen:
            component = reachable([start], neighbours, within=nodes)
            seen |= component
            components.append(component)
    return components
