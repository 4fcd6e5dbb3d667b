"""Pairwise precision/recall of a duplicate grouping against a labelled folder."""

from __future__ import annotations

import csv
import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from dedup_assets.settings import SetupError


@dataclass
class Scores:
    precision: float
    recall: float
    f1: float
    true_pairs: int
    predicted_pairs: int
    recall_by_kind: dict[str, float] = field(default_factory=dict)
    kept_original: float | None = None


def read_truth(path: str | Path, images: Path | None = None) -> list[dict]:
    """The labelled groups: rows of name (relative to `images`), group and optionally kind.
    A name listed twice, or one `images` lacks, is refused: its pairs could never be found,
    and would lower recall without a word."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise SetupError(f"truth {path}: {error.strerror or error}") from None
    if not rows or not {"name", "group"} <= set(rows[0]):
        raise SetupError(f"truth {path}: needs columns name, group (and optionally kind)")
    counts = Counter(row["name"] for row in rows)
    twice = sorted(name for name, count in counts.items() if count > 1)
    if twice:
        raise SetupError(f"truth {path}: {len(twice)} name(s) listed more than once: {', '.join(twice[:5])}")
    if images is not None:
        absent = sorted(name for name in counts if not (images / name).is_file())
        if absent:
            raise SetupError(f"truth {path}: {len(absent)} of {len(counts)} name(s) not in {images}: "
                             f"{', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}")
    return rows


def _pairs_of_groups(groups: dict[str, list[str]]) -> set[tuple[str, str]]:
    return {tuple(sorted(p)) for members in groups.values() for p in itertools.combinations(members, 2)}


def score(truth: list[dict], predicted_pairs: set[tuple[str, str]],
          representatives: dict[str, bool] | None = None) -> Scores:
    names = {row["name"] for row in truth}
    by_group: dict[str, list[str]] = defaultdict(list)
    kind = {}
    for row in truth:
        by_group[row["group"]].append(row["name"])
        kind[row["name"]] = row.get("kind") or ""
    true_pairs = _pairs_of_groups(by_group)
    predicted = {p for p in predicted_pairs if p[0] in names and p[1] in names}
    hits = len(true_pairs & predicted)
    precision = hits / len(predicted) if predicted else 1.0
    recall = hits / len(true_pairs) if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    # Recall per transformation: pairs of an original with one of its transformed copies.
    per_kind: dict[str, list[bool]] = defaultdict(list)
    for members in by_group.values():
        originals = [n for n in members if kind[n] == "original"]
        for original in originals:
            for copy in members:
                if copy != original and kind[copy] != "original":
                    per_kind[kind[copy]].append(tuple(sorted((original, copy))) in predicted)
    recall_by_kind = {k: sum(v) / len(v) for k, v in sorted(per_kind.items())}
    kept = None
    if representatives is not None:
        outcomes = []
        for members in by_group.values():
            originals = [n for n in members if kind[n] == "original"]
            if len(members) > 1 and originals:
                outcomes.append(bool(representatives.get(originals[0])))
        kept = sum(outcomes) / len(outcomes) if outcomes else None
    return Scores(precision, recall, f1, len(true_pairs), len(predicted), recall_by_kind, kept)


def pairs_from_clusters(clusters: dict[str, str]) -> set[tuple[str, str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for name, cluster in clusters.items():
        groups[cluster].append(name)
    return _pairs_of_groups(groups)


def imagededup_phash_pairs(image_dir: str | Path, max_distance: int = 10) -> set[tuple[str, str]]:
    """imagededup's PHash on the same folder, as the baseline (a dev dependency)."""
    from imagededup.methods import PHash

    duplicates = PHash(verbose=False).find_duplicates(image_dir=str(image_dir), max_distance_threshold=max_distance)
    return {tuple(sorted((a, b))) for a, others in duplicates.items() for b in others}


def format_report(label: str, ours: Scores, baseline: Scores | None) -> str:
    lines = [f"{label}: {ours.true_pairs} true duplicate pairs",
             f"{'':<26}{'dedup_assets':>14}{'imagededup PHash':>18}"]

    def row(name, a, b):
        lines.append(f"{name:<26}{a:>14}{b:>18}")

    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    row("precision", fmt(ours.precision), fmt(baseline and baseline.precision))
    row("recall", fmt(ours.recall), fmt(baseline and baseline.recall))
    row("F1", fmt(ours.f1), fmt(baseline and baseline.f1))
    row("predicted pairs", str(ours.predicted_pairs), str(baseline.predicted_pairs) if baseline else "-")
    for kind, value in ours.recall_by_kind.items():
        row(f"  recall: {kind}", fmt(value), fmt(baseline and baseline.recall_by_kind.get(kind)))
    row("kept image is original", fmt(ours.kept_original), "-")
    return "\n".join(lines)
