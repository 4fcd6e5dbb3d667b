"""Labelled demo images built from photographs that PyPI packages ship.

scikit-image, scikit-learn and matplotlib bundle a few dozen real photographs. Each one
becomes a duplicate group: the original plus transformed copies (resize, recompression,
crop, colour change, text overlay, small rotation, format change). `truth.csv` beside
the images lists name, group and kind (the transformation) for evaluation.
"""

from __future__ import annotations

import csv
import io
import os
import random
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

TRANSFORMS = ("resize", "recompress", "crop", "color", "text", "rotate", "format")
# The larger evaluation set adds combinations, grayscale copies and palette transfers.
HARD_TRANSFORMS = TRANSFORMS + ("grayscale", "recolor", "crop+text+recompress", "resize+color+rotate")


def _skimage_photos() -> dict[str, np.ndarray]:
    from skimage import data

    photos = {
        name: getattr(data, name)()
        for name in (
            "astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry",
            "retina", "rocket", "camera", "coins", "moon", "clock", "brick", "grass", "gravel",
        )
    }
    photos["motorcycle"] = data.stereo_motorcycle()[0]
    return photos


def _other_package_photos() -> dict[str, np.ndarray]:
    photos: dict[str, np.ndarray] = {}
    from sklearn.datasets import load_sample_images

    samples = load_sample_images()
    for filename, image in zip(samples.filenames, samples.images):
        photos[Path(filename).stem] = image
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photos["grace_hopper"] = np.asarray(Image.open(handle).convert("RGB"))
    return photos


def shipped_photos() -> dict[str, Image.Image]:
    """Every shipped photograph as an RGB image, by name (sorted for determinism)."""
    arrays = {**_skimage_photos(), **_other_package_photos()}
    return {name: Image.fromarray(arrays[name]).convert("RGB") for name in sorted(arrays)}


def _upscale_to(image: Image.Image, side: int) -> Image.Image:
    ratio = side / max(image.size)
    size = (round(image.width * ratio), round(image.height * ratio))
    return image.resize(size, Image.Resampling.LANCZOS)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def transform(image: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, str, dict]:
    """Apply one named transformation; return the image, the file format and save options."""
    if kind == "resize":
        factor = rng.uniform(0.35, 0.6)
        size = (max(16, round(image.width * factor)), max(16, round(image.height * factor)))
        return image.resize(size, Image.Resampling.BILINEAR), "JPEG", {"quality": 88}
    if kind == "recompress":
        return image, "JPEG", {"quality": rng.randint(25, 45)}
    if kind == "crop":
        keep = rng.uniform(0.65, 0.85)  # fraction of the area kept
        side = keep**0.5
        w, h = round(image.width * side), round(image.height * side)
        x, y = rng.randint(0, image.width - w), rng.randint(0, image.height - h)
        return image.crop((x, y, x + w, y + h)), "JPEG", {"quality": 90}
    if kind == "color":
        edited = ImageEnhance.Color(image).enhance(rng.uniform(0.4, 1.6))
        edited = ImageEnhance.Brightness(edited).enhance(rng.uniform(0.8, 1.2))
        return edited, "JPEG", {"quality": 90}
    if kind == "text":
        edited = image.copy()
        draw = ImageDraw.Draw(edited)
        size = max(12, image.height // 12)
        draw.text((image.width // 20, image.height - 2 * size), "© dedup demo 2026",
                  fill=(255, 255, 0), font=_font(size), stroke_width=2, stroke_fill=(0, 0, 0))
        return edited, "JPEG", {"quality": 90}
    if kind == "rotate":
        angle = rng.choice([-1, 1]) * rng.uniform(3, 10)
        return image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=False), "JPEG", {"quality": 90}
    if kind == "format":
        return image, rng.choice(["PNG", "WEBP"]), {}
    if kind == "grayscale":
        return image.convert("L").convert("RGB"), "JPEG", {"quality": 90}
    if "+" in kind:
        for step in kind.split("+"):
            image, fmt, options = transform(image, step, rng)
        return image, fmt, options
    raise ValueError(f"unknown transformation {kind!r}")


def recolor(image: Image.Image, palette: Image.Image) -> Image.Image:
    """Reinhard colour transfer: `image`'s content with `palette`'s colour statistics.

    Against the palette photo this is the hard negative "different photo, same colours".
    """
    import cv2

    source = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2LAB).astype(np.float32)
    target = cv2.cvtColor(np.asarray(palette), cv2.COLOR_RGB2LAB).astype(np.float32)
    mean_s, std_s = source.mean((0, 1)), source.std((0, 1)) + 1e-6
    mean_t, std_t = target.mean((0, 1)), target.std((0, 1))
    result = np.clip((source - mean_s) / std_s * std_t + mean_t, 0, 255).astype(np.uint8)
    return Image.fromarray(cv2.cvtColor(result, cv2.COLOR_LAB2RGB))


_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "heic"}


def build_demo_set(out_dir: str | os.PathLike, seed: int = 7, side: int = 1024) -> Path:
    """Write the demo images and `truth.csv`; return the image folder."""
    rng = random.Random(seed)
    rows: list[tuple[Image.Image, str, dict, str, str]] = []
    for group, photo in shipped_photos().items():
        original = _upscale_to(photo, side) if max(photo.size) < side else photo
        rows.append((original, "JPEG", {"quality": 95}, group, "original"))
        for kind in TRANSFORMS:
            edited, fmt, options = transform(original, kind, rng)
            rows.append((edited, fmt, options, group, kind))
    return _write_labelled_set(Path(out_dir), rows, rng)


def _scenes(quadrants: tuple[str, ...], groups_limit: int | None = None) -> dict[str, Image.Image]:
    """Every shipped photo and these of its quadrants ("tl", "tr", "bl", "br": crops that
    share no pixels), by name in sorted order; the first `groups_limit` of them if given."""
    scenes: dict[str, Image.Image] = {}
    for name, photo in shipped_photos().items():
        scenes[name] = photo
        w, h = photo.size
        boxes = {"tl": (0, 0, w // 2, h // 2), "tr": (w // 2, 0, w, h // 2),
                 "bl": (0, h // 2, w // 2, h), "br": (w // 2, h // 2, w, h)}
        for quadrant in quadrants:
            scenes[f"{name}-{quadrant}"] = photo.crop(boxes[quadrant])
    names = sorted(scenes)[:groups_limit] if groups_limit else sorted(scenes)
    return {name: scenes[name] for name in names}


def build_hard_set(out_dir: str | os.PathLike, seed: int = 13, side: int = 800,
                   copies_per_group: int = 6, groups_limit: int | None = None) -> Path:
    """A larger labelled set with hard negatives.

    Every shipped photo gives five scenes: the whole photo and its four quadrants, which
    share no pixels with each other (neighbouring crops of one scene), and cover only a
    quarter of the whole. Each scene gets `copies_per_group` transformed copies drawn
    from HARD_TRANSFORMS; "recolor" copies take another scene's palette, so they are
    different photos with the same colours as that scene.
    """
    rng = random.Random(seed)
    scenes = _scenes(("tl", "tr", "bl", "br"), groups_limit)
    names = list(scenes)
    rows: list[tuple[Image.Image, str, dict, str, str]] = []
    for group in names:
        original = _upscale_to(scenes[group], side)
        rows.append((original, "JPEG", {"quality": 95}, group, "original"))
        for kind in rng.sample(HARD_TRANSFORMS, copies_per_group):
            if kind == "recolor":
                palette = scenes[rng.choice([n for n in names if n.split("-")[0] != group.split("-")[0]])]
                edited, fmt, options = recolor(original, palette), "JPEG", {"quality": 90}
            else:
                edited, fmt, options = transform(original, kind, rng)
            rows.append((edited, fmt, options, group, kind))
    return _write_labelled_set(Path(out_dir), rows, rng)


# What people do to photos they share: overlays, frames, filters, perspective, and the
# screenshot of a phone showing it. Each keeps the picture; the copy is a duplicate.
EDITS = ("sticker", "watermark", "screenshot", "caption_bar", "polaroid", "keystone", "vignette", "blur",
         "noise", "upscale", "contrast", "square")


def sticker(image: Image.Image, share: float, at: tuple[float, float] = (0.6, 0.55)) -> Image.Image:
    """A smiley sticker over `share` of the frame, centred at `at` (fractions of the sides)."""
    edited = image.convert("RGB").copy()
    draw = ImageDraw.Draw(edited)
    r = round((share * edited.width * edited.height / np.pi) ** 0.5)
    x, y = round(at[0] * edited.width), round(at[1] * edited.height)
    draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 210, 0), outline=(0, 0, 0), width=max(2, r // 20))
    for eye in (x - r // 3, x + r // 3):
        draw.ellipse((eye - r // 10, y - r // 3 - r // 10, eye + r // 10, y - r // 3 + r // 10), fill=(0, 0, 0))
    draw.arc((x - r // 2, y - r // 3, x + r // 2, y + r // 2), 20, 160, fill=(0, 0, 0), width=max(2, r // 12))
    return edited


def in_an_interface(photo: Image.Image) -> Image.Image:
    """A phone's screenshot of `photo`: a status bar, the photo, buttons on light grey."""
    width, height = photo.size
    shot = Image.new("RGB", (round(width * 1.1), round(height * 1.35)), (242, 242, 247))
    draw = ImageDraw.Draw(shot)
    draw.rectangle((0, 0, shot.width, round(height * 0.06)), fill=(20, 20, 20))
    draw.text((10, 4), "9:41   LTE  87%", fill=(255, 255, 255), font=_font(round(height * 0.04)))
    shot.paste(photo.convert("RGB"), ((shot.width - width) // 2, round(height * 0.12)))
    for number in range(3):
        left = round(shot.width * (0.15 + 0.3 * number))
        draw.rounded_rectangle((left, round(height * 1.2), left + round(shot.width * 0.12), round(height * 1.28)),
                               10, fill=(0, 122, 255))
    return shot


def under_a_caption_bar(photo: Image.Image, text: str = "WHEN THE PIPELINE FINISHES") -> Image.Image:
    """`photo` with a white bar of text added above it, as a meme is made."""
    width, height = photo.size
    captioned = Image.new("RGB", (width, round(height * 1.25)), "white")
    captioned.paste(photo.convert("RGB"), (0, captioned.height - height))
    ImageDraw.Draw(captioned).text((width // 10, round(height * 0.06)), text, fill="black",
                                   font=_font(round(height * 0.1)))
    return captioned


def keystoned(photo: Image.Image, strength: float = 1.0) -> Image.Image:
    """`photo` warped as if shot at an angle (a photo of a screen or a print), the corners
    it leaves filled dark."""
    import cv2

    width, height = photo.size
    corners = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    k = 0.12 * strength
    moved = np.float32([[k * width, k / 2 * height], [(1 - k / 2) * width, 0], [width, height],
                        [0, (1 - k / 3) * height]])
    warp = cv2.getPerspectiveTransform(corners, moved)
    return Image.fromarray(cv2.warpPerspective(np.asarray(photo.convert("RGB")), warp, (width, height),
                                               borderValue=(30, 30, 30)))


def edit(image: Image.Image, kind: str, rng: random.Random) -> tuple[Image.Image, str, dict]:
    """Apply one of EDITS; return the image, the file format and save options."""
    image = image.convert("RGB")
    width, height = image.size
    jpeg = {"quality": 90}
    if kind == "sticker":
        return sticker(image, rng.uniform(0.06, 0.14), (rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7))), "JPEG", jpeg
    if kind == "watermark":
        layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        for row, y in enumerate(range(0, height, height // 4)):
            draw.text((width // 20 + row % 3 * 40, y), "SAMPLE  SAMPLE", fill=(255, 255, 255, 90),
                      font=_font(height // 10))
        return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB"), "JPEG", jpeg
    if kind == "screenshot":
        return in_an_interface(image), "PNG", {}
    if kind == "caption_bar":
        return under_a_caption_bar(image), "JPEG", jpeg
    if kind == "polaroid":
        border = round(width * 0.06)
        framed = Image.new("RGB", (width + 2 * border, height + 5 * border), (250, 250, 246))
        framed.paste(image, (border, border))
        return framed, "JPEG", jpeg
    if kind == "keystone":
        return keystoned(image, rng.uniform(0.6, 1.0)), "JPEG", {"quality": 88}
    if kind == "vignette":  # a sepia filter darkening towards the corners
        gray = np.asarray(image.convert("L"), np.float32)
        toned = np.stack([gray * 1.07, gray * 0.74, gray * 0.43], axis=-1)
        y, x = np.mgrid[0:height, 0:width]
        radius = np.hypot((x - width / 2) / (width / 2), (y - height / 2) / (height / 2))
        toned *= np.clip(1.15 - 0.45 * radius**2, 0, 1)[..., None]
        return Image.fromarray(np.clip(toned + 20, 0, 255).astype(np.uint8)), "JPEG", {"quality": 85}
    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(2.5)), "JPEG", jpeg
    if kind == "noise":
        grain = np.random.default_rng(rng.randrange(2**32)).normal(0, 18, (height, width, 3))
        noisy = np.asarray(image, np.float32) + grain
        return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), "JPEG", jpeg
    if kind == "upscale":  # a small copy blown back up
        small = image.resize((width // 4, height // 4), Image.Resampling.BILINEAR)
        return small.resize((width, height), Image.Resampling.BICUBIC), "JPEG", jpeg
    if kind == "contrast":
        edited = ImageEnhance.Contrast(image).enhance(rng.choice([0.6, 1.5]))
        gamma = rng.choice([0.7, 1.4])
        return edited.point([min(255, int(255 * (i / 255) ** gamma)) for i in range(256)] * 3), "JPEG", jpeg
    if kind == "square":  # the centre square, as a feed crops it
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        return image.crop((left, top, left + side, top + side)), "JPEG", jpeg
    raise ValueError(f"unknown edit {kind!r}")


def build_edits_set(out_dir: str | os.PathLike, seed: int = 5, side: int = 800, copies_per_group: int = 4,
                    groups_limit: int | None = None) -> Path:
    """A labelled set of shared-photo edits (EDITS): every shipped photo and two of its
    quadrants are scenes, each with `copies_per_group` copies, the edits taken in turn."""
    rng = random.Random(seed)
    scenes = _scenes(("tl", "br"), groups_limit)
    names = list(scenes)
    rows: list[tuple[Image.Image, str, dict, str, str]] = []
    for number, group in enumerate(names):
        original = _upscale_to(scenes[group], side).convert("RGB")
        rows.append((original, "JPEG", {"quality": 95}, group, "original"))
        for copy in range(copies_per_group):
            kind = EDITS[(number * copies_per_group + copy) % len(EDITS)]
            rows.append((*edit(original, kind, rng), group, kind))
    return _write_labelled_set(Path(out_dir), rows, rng)


# A phone's photos where they get copied: the camera's HEIC (with the 320 px thumbnail a
# phone stores in it), its JPEG export, the smaller JPEG a messenger sends, and an edit
# the phone saves as HEIC again. The exports are made from the decoded HEIC, as a phone
# makes them: none can be more faithful than it.
PHONE_COPIES = ("export", "messenger", "edited_heic")
_PHONE_HEIC = {"quality": 80, "thumbnails": [320], "enc_params": {"preset": "ultrafast"}}


def phone_copies(original: Image.Image) -> list[tuple[Image.Image, str, dict, str]]:
    """(image, format, save options, kind) of a phone photo's original HEIC and its
    PHONE_COPIES, made from the HEIC as it decodes."""
    pillow_heif.register_heif_opener()  # Pillow writes HEIF through it

    buffer = io.BytesIO()
    original.save(buffer, "HEIF", **_PHONE_HEIC)
    decoded = Image.open(buffer).convert("RGB")
    small = decoded.copy()
    small.thumbnail((1080, 1080), Image.Resampling.LANCZOS)
    width, height = decoded.size
    edited = ImageEnhance.Color(decoded.crop((width // 10, height // 10, width - width // 10,
                                              height - height // 10))).enhance(1.3)
    return [(original, "HEIF", _PHONE_HEIC, "original"), (decoded, "JPEG", {"quality": 90}, "export"),
            (small, "JPEG", {"quality": 80}, "messenger"), (edited, "HEIF", _PHONE_HEIC, "edited_heic")]


def build_phone_set(out_dir: str | os.PathLike, seed: int = 3, side: int = 1600,
                    groups_limit: int | None = None) -> Path:
    """A labelled set of phone photos and their copies (PHONE_COPIES): every shipped photo
    and two of its quadrants are scenes, each an original HEIC and one copy of each kind."""
    rng = random.Random(seed)
    rows = [(image, fmt, options, group, kind)
            for group, scene in _scenes(("tl", "br"), groups_limit).items()
            for image, fmt, options, kind in phone_copies(_upscale_to(scene, side).convert("RGB"))]
    return _write_labelled_set(Path(out_dir), rows, rng)


# A catalogue's standard framings: many products share each, as in a shop's photo studio.
PRODUCT_FRAMINGS = tuple((outline, share, drop) for outline in ("ellipse", "box", "rounded")
                         for share in (0.55, 0.7, 0.85) for drop in (0.0, 0.05))
PRODUCT_TRANSFORMS = ("resize", "recompress", "format", "color", "text", "crop")


def product_shot(obj: Image.Image, outline: str, share: float, drop: float, side: int) -> Image.Image:
    """`obj` photographed on white in one of the catalogue's framings: its outline
    (ellipse, box, rounded box) spanning `share` of the side, centred, lowered by `drop`."""
    size = round(side * share)
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if outline == "ellipse":
        draw.ellipse((0, 0, size - 1, size - 1), fill=255)
    elif outline == "box":
        draw.rectangle((size // 8, 0, size - size // 8, size - 1), fill=255)
    else:
        draw.rounded_rectangle((0, size // 10, size - 1, size - size // 10), radius=size // 6, fill=255)
    shot = Image.new("RGB", (side, side), "white")
    shot.paste(obj.resize((size, size)), ((side - size) // 2, (side - size) // 2 + round(drop * side)), mask)
    return shot


def build_product_set(out_dir: str | os.PathLike, count: int = 360, seed: int = 41, side: int = 800) -> Path:
    """A labelled catalogue of product shots on white: `count` distinct products, each in
    one of PRODUCT_FRAMINGS (so products of one framing share their outline), and a copy
    of every third, by a kind from PRODUCT_TRANSFORMS. Distinct products of one framing
    hash alike and their embeddings agree: the hard negatives here."""
    rng = random.Random(seed)
    photos = list(shipped_photos().values())
    rows: list[tuple[Image.Image, str, dict, str, str]] = []
    for number in range(count):
        obj = distinct_image(np.random.default_rng([seed, number]), side, side, photos)
        # The framing moves on by one every 18 products, so that each kind of copy (of
        # every third product) meets every framing, not one framing each.
        shot = product_shot(obj, *PRODUCT_FRAMINGS[(number + number // 18) % len(PRODUCT_FRAMINGS)], side)
        group = f"product-{number:04d}"
        rows.append((shot, "JPEG", {"quality": 95}, group, "original"))
        if number % 3 == 0:
            kind = PRODUCT_TRANSFORMS[number // 3 % len(PRODUCT_TRANSFORMS)]
            rows.append((*transform(shot, kind, rng), group, kind))
    return _write_labelled_set(Path(out_dir), rows, rng)


def _write_labelled_set(out: Path, rows: list[tuple[Image.Image, str, dict, str, str]],
                        rng: random.Random) -> Path:
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    # Shuffled, opaque names: nothing about the group leaks through the file name.
    order = list(range(len(rows)))
    rng.shuffle(order)
    truth = []
    base_time = 1_700_000_000
    for number, index in enumerate(order):
        image, fmt, options, group, kind = rows[index]
        name = f"img_{number:04d}.{_EXTENSIONS[fmt]}"
        path = images / name
        (image.convert("RGB") if fmt == "JPEG" else image).save(path, format=fmt, **options)
        # Originals existed first, as they would in a real collection.
        stamp = base_time + (0 if kind == "original" else 3600 + number)
        os.utime(path, (stamp, stamp))
        truth.append((name, group, kind))
    with open(out / "truth.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "group", "kind"])
        writer.writerows(sorted(truth))
    return images


def build_bench_set(out_dir: str | os.PathLike, count: int = 1000, side: int = 1200,
                    seed: int = 11) -> Path:
    """`count` distinct JPEGs of about `side` px: random crops, flips and tints of the photos."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    photos = [_upscale_to(p, int(side * 1.3)) for p in shipped_photos().values()]
    for number in range(count):
        photo = rng.choice(photos)
        w, h = min(photo.width, side), min(photo.height, round(side * 0.75))
        x, y = rng.randint(0, photo.width - w), rng.randint(0, photo.height - h)
        image = photo.crop((x, y, x + w, y + h))
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.6, 1.4))
        image.save(out / f"bench_{number:05d}.jpg", quality=rng.randint(80, 95))
    return out


NEAR_DUPLICATE_KINDS = ("resize", "recompress", "crop", "color", "text", "rotate", "format")


def build_cascade_bench_set(out_dir: str | os.PathLike, count: int = 1000, duplicate_share: float = 0.4,
                            side: int = 1200, seed: int = 17) -> Path:
    """`count` images of about `side` px, `duplicate_share` of them edited copies
    (resize, recompress, crop, colour, caption, rotation, format) of the others."""
    out = Path(out_dir)
    copies = round(count * duplicate_share)
    build_distinct_set(out, count=count - copies, side=side, seed=seed)
    originals = sorted(out.glob("distinct_*.jpg"))
    rng = random.Random(seed)
    for number in range(copies):
        with Image.open(rng.choice(originals)) as original:
            image, fmt, options = transform(original.convert("RGB"), rng.choice(NEAR_DUPLICATE_KINDS), rng)
        image.save(out / f"copy_{number:05d}.{fmt.lower().replace('jpeg', 'jpg')}", fmt, **options)
    return out


def distinct_image(rng: np.random.Generator, width: int, height: int,
                   photos: list[Image.Image] | None = None) -> Image.Image:
    """A unique synthetic picture, quickly: a colour gradient, random shapes, film grain
    and, when given, a few small photo patches (real texture for keypoints)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, np.pi)
    t = ((xs * np.cos(angle) + ys * np.sin(angle)) / (width + height))[..., None]
    pixels = a * (1 - t) + b * t
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(15, 40))):
        x0, y0 = rng.uniform(-0.1, 1.0) * width, rng.uniform(-0.1, 1.0) * height
        x1, y1 = x0 + rng.uniform(0.02, 0.4) * width, y0 + rng.uniform(0.02, 0.4) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(0, 4)
        if shape == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif shape == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif shape == 2:
            points = [(x0 + rng.uniform(0, 0.3) * width, y0 + rng.uniform(0, 0.3) * height) for _ in range(5)]
            draw.polygon(points, fill=colour)
        else:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 12)))
    for index in rng.integers(0, len(photos), 2) if photos else []:
        photo = photos[int(index)]
        side = int(min(width, height) * rng.uniform(0.1, 0.25))
        x, y = int(rng.integers(0, photo.width - side)), int(rng.integers(0, photo.height - side))
        image.paste(photo.crop((x, y, x + side, y + side)),
                    (int(rng.integers(0, width - side)), int(rng.integers(0, height - side))))
    grain = rng.normal(0, 6, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + grain, 0, 255).astype(np.uint8))


def build_distinct_set(out_dir: str | os.PathLike, count: int = 1000, side: int = 1200, seed: int = 23,
                       start: int = 0) -> Path:
    """`count` distinct synthetic JPEGs of `side`×¾`side` px (for speed and memory runs)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    photos = list(shipped_photos().values())
    for number in range(start, start + count):
        rng = np.random.default_rng([seed, number])
        image = distinct_image(rng, side, round(side * 0.75), photos)
        image.save(out / f"distinct_{number:06d}.jpg", quality=int(rng.integers(80, 95)))
    return out


def camera_dng(photo: Image.Image, preview: str | None = "jpeg", orientation: int = 1,
               preview_size: tuple[int, int] | None = None) -> bytes:
    """A DNG as a camera or a raw converter writes one (for the tests and
    bench/decode_formats.py; no raw file ships on PyPI): a 256 px preview in its first
    directory, the sensor's RGGB mosaic of `photo` (linear, 12 bits, linear sRGB as its
    camera space) in a sub-directory and, with `preview="jpeg"`, a JPEG preview of the
    photo (or of `preview_size`) in another; "bitmap": the 256 px one alone; None: no preview."""
    import tifffile

    rgb = (np.asarray(photo.convert("RGB"), dtype=np.float32) / 255) ** 2.2
    mosaic = np.empty(rgb.shape[:2], np.uint16)
    for (dy, dx), channel in {(0, 0): 0, (0, 1): 1, (1, 0): 1, (1, 1): 2}.items():
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, channel] * 4095
    xyz_to_srgb = (32406, -15372, -4986, -9689, 18758, 415, 557, -2040, 10570)
    dng_tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "Probe Camera", True),
                (274, "H", 1, (orientation,), True)]
    sensor_tags = [(33421, "H", 2, (2, 2), True), (33422, "B", 4, (0, 1, 1, 2), True),  # RGGB
                   (50717, "I", 1, (4095,), True), (50721, "2i", 9, tuple(v for x in xyz_to_srgb for v in (x, 10000)), True),
                   (50778, "H", 1, (21,), True), (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True)]
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as tiff:
        if preview is None:
            tiff.write(mosaic, photometric=32803, subfiletype=0, extratags=dng_tags + sensor_tags)
            return buffer.getvalue()
        small = photo.convert("RGB")
        small.thumbnail((256, 256))
        tiff.write(np.asarray(small), photometric="rgb", subfiletype=1, subifds=1 + (preview == "jpeg"), extratags=dng_tags)
        tiff.write(mosaic, photometric=32803, subfiletype=0, extratags=sensor_tags)
        if preview == "jpeg":
            shown = photo.convert("RGB").resize(preview_size) if preview_size else photo.convert("RGB")
            jpeg = io.BytesIO()
            shown.save(jpeg, "JPEG", quality=90)
            # The JPEG is encoded already; tifffile, without imagecodecs, only needs the
            # lookup of JPEG compression (7) to succeed to store it as it is.
            codecs = tifffile.TIFF.COMPRESSORS._codecs
            missing = 7 not in codecs
            codecs.setdefault(7, lambda data, *args, **kwargs: data)
            try:
                tiff.write(iter([jpeg.getvalue()]), shape=(shown.height, shown.width, 3), dtype=np.uint8,
                           photometric="ycbcr", compression=7, subfiletype=1, rowsperstrip=shown.height)
            finally:
                if missing:
                    del codecs[7]
    return buffer.getvalue()
