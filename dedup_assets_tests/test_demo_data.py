"""The labelled sets `dedup demo-data` builds."""

import csv
import os

import numpy as np
import pytest
from PIL import Image

from dedup_assets.cli import build_parser
from dedup_assets.demo_data import (EDITS, PHONE_COPIES, PRODUCT_FRAMINGS, PRODUCT_TRANSFORMS, build_edits_set,
                                    build_phone_set, build_product_set, product_shot)


def test_products_of_one_framing_differ_only_inside_one_outline():
    first, second = (Image.new("RGB", (100, 100), colour) for colour in ("navy", "orange"))
    shots = [np.asarray(product_shot(obj, "rounded", 0.7, 0.05, 400)) for obj in (first, second)]
    white = [(shot == 255).all(axis=2) for shot in shots]
    assert (white[0] == white[1]).all()  # the same outline, at the same place
    rows, columns = np.nonzero(~white[0])
    assert columns.max() - columns.min() + 1 == round(0.7 * 400)
    assert rows.min() > 400 - rows.max()  # lowered by the drop


def test_the_product_catalogue_labels_each_copy_with_its_original(tmp_path):
    images = build_product_set(tmp_path, count=4, side=256)
    with open(tmp_path / "truth.csv") as handle:
        truth = list(csv.DictReader(handle))
    assert sorted(row["name"] for row in truth) == sorted(path.name for path in images.iterdir())
    kinds = {(row["group"], row["kind"]) for row in truth}
    # Four products, a copy of every third: products 0 and 3, by the first two kinds.
    assert kinds == {(f"product-{n:04d}", "original") for n in range(4)} | {
        ("product-0000", PRODUCT_TRANSFORMS[0]), ("product-0003", PRODUCT_TRANSFORMS[1])}
    assert len(PRODUCT_FRAMINGS) == 18 and len(set(PRODUCT_FRAMINGS)) == 18


def test_the_edits_set_takes_every_edit_in_turn(tmp_path):
    images = build_edits_set(tmp_path, side=256, groups_limit=3)
    with open(tmp_path / "truth.csv") as handle:
        truth = list(csv.DictReader(handle))
    assert sorted(row["name"] for row in truth) == sorted(path.name for path in images.iterdir())
    assert sorted(row["kind"] for row in truth) == sorted(["original"] * 3 + list(EDITS))
    for row in truth:  # every copy opens, in the format its name says
        with Image.open(images / row["name"]) as image:
            assert image.format == {"jpg": "JPEG", "png": "PNG"}[row["name"].rsplit(".", 1)[1]]


def test_the_phone_set_keeps_a_phones_heic_as_the_original(tmp_path):
    images = build_phone_set(tmp_path, side=800, groups_limit=2)
    with open(tmp_path / "truth.csv") as handle:
        truth = list(csv.DictReader(handle))
    assert sorted(row["kind"] for row in truth) == sorted(["original"] * 2 + list(PHONE_COPIES) * 2)
    formats = {}
    for row in truth:
        with Image.open(images / row["name"]) as image:
            formats[row["kind"]] = image.format
            if image.format == "HEIF":  # with the thumbnail a phone stores
                assert image.info["thumbnails"] == [320]
    assert formats == {"original": "HEIF", "export": "JPEG", "messenger": "JPEG", "edited_heic": "HEIF"}
    names = {row["kind"]: row["name"] for row in truth if row["group"] == truth[0]["group"]}
    assert os.path.getmtime(images / names["original"]) < os.path.getmtime(images / names["export"])


def test_one_labelled_set_at_a_time():
    parser = build_parser()
    assert parser.parse_args(["demo-data", "--products"]).products
    assert parser.parse_args(["demo-data", "--edits"]).edits
    assert parser.parse_args(["demo-data", "--phone"]).phone
    with pytest.raises(SystemExit):
        parser.parse_args(["demo-data", "--hard", "--products"])
