"""A reader's own images (chapter 13's ``preprocess``, ``load_support``, ``load_query``): the
book's convention, worked out by hand on drawn rectangles, and every bad input refused with an
error that names it, nothing written.

As in ``test_cores.py``, the preprocessing check is run on broken variants too (no inversion, no
crop, no margin, 0-255 values), each of which it must catch. The example folder of chapter 13 is
the one its ``make_glyphs`` makes, byte for byte.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from utils import methods as I


def page(h=100, w=50, box=(30, 20, 40, 20), ink=0.0, paper=1.0):
    """A ``h`` x ``w`` grayscale page of value ``paper`` with a ``box`` (top, left, height,
    width) of value ``ink``."""
    g = np.full((h, w), paper)
    top, left, bh, bw = box
    g[top : top + bh, left : left + bw] = ink
    return g


def check_preprocess(fn):
    x = fn(page())
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    # ink bright: the 40x20 box, cropped, sits in a square of side ceil(40 * 28 / 18) = 63, rows
    # 11 to 50 and columns 21 to 40; at 28/63 that is rows 4.9 to 22.7, columns 9.3 to 18.2
    assert x[0, 14, 14] > 0.95 and x[0, 0, 0] == 0 and x[0, 27, 27] == 0
    bright = x[0] > 0.5
    assert bright.any(1).sum() == 18 and bright.any(0).sum() == 9  # 17.8 rows, 8.9 columns
    # whatever the polarity and wherever the ink: the same image
    assert torch.equal(fn(page(ink=1.0, paper=0.0)), x)
    assert torch.equal(fn(page(box=(5, 2, 40, 20))), x)
    # a mid-gray page with darker ink: stretched to the same image
    assert torch.allclose(fn(page(ink=0.2, paper=0.6)), x, atol=2 / 255)


def test_preprocess_follows_the_books_convention():
    check_preprocess(I.preprocess)


def test_omniglot_like_drawing_keeps_its_size():
    """An ink box of 18 of 28 pixels, as Omniglot's median, is what the square is cut for."""
    x = I.preprocess(page(h=105, w=105, box=(10, 10, 63, 63)))
    assert (x[0] > 0.5).any(1).sum() == 18


BROKEN = {
    "no inversion": lambda g: I.resize(I.crop_pad(np.clip(g, 0, 1))),
    "no crop": lambda g: I.resize(I.ink_bright(g)),
    "crop without margin": lambda g: I.resize(
        (lambda i: i[np.ix_((i > 0.2).any(1), (i > 0.2).any(0))])(I.ink_bright(g))
    ),
    "0-255 values": lambda g: 255 * I.preprocess(g),
}


@pytest.mark.parametrize("broken", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_preprocess_fails_its_check(broken):
    with pytest.raises(AssertionError):
        check_preprocess(broken)


def save(path, array, mode="L"):
    """``array`` (floats in [0, 1]) as a PNG at ``path``, in ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.round(array * 65535).astype(np.uint16)).save(path)
    else:
        Image.fromarray(np.round(array * 255).astype(np.uint8)).convert(mode).save(path)
    return path


def folder(tmp_path, classes=("a", "b"), shots=2):
    for c in classes:
        for k in range(shots):
            save(tmp_path / "support" / c / f"{k}.png", page(box=(30 - 5 * k, 20, 40, 20)))
    return tmp_path / "support"


def test_support_folder_gives_images_labels_and_sorted_classes(tmp_path):
    root = folder(tmp_path, classes=("zeta", "alpha", "mu"))
    (root / "mu" / ".hidden").write_text("skipped")
    x, labels, classes, files = I.load_support(root)
    assert classes == ["alpha", "mu", "zeta"] and labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert x.shape == (6, 1, 28, 28) and torch.equal(x[0], I.preprocess(page()))
    assert [f.parent.name for f in files] == ["alpha", "alpha", "mu", "mu", "zeta", "zeta"]


def test_rgba_and_16_bit_images_are_accepted_and_converted(tmp_path):
    g = page()
    rgba = np.zeros((100, 50, 4), np.uint8)  # black ink, transparent paper: shown on white
    rgba[..., 3] = np.round((1 - g) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    save(tmp_path / "deep.png", g, "I;16")
    save(tmp_path / "rgb.png", g, "RGB")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    x, files = I.load_query([tmp_path / "rgba.png", tmp_path / "deep.png", tmp_path / "rgb.png"])
    for image in x:
        assert torch.equal(image, I.preprocess(g))


def test_a_photographs_exif_orientation_is_applied(tmp_path):
    """Orientation 6 ("turn 90 degrees clockwise to view"): a 100x50 page saved lying on its
    side, 50x100, is read upright again."""
    exif = Image.Exif()
    exif[0x0112] = 6
    side = np.rot90(page(), 1)  # counterclockwise: the clockwise turn undoes it
    Image.fromarray(np.round(side * 255).astype(np.uint8)).save(tmp_path / "photo.png", exif=exif)
    assert I.read_gray(tmp_path / "photo.png").shape == (100, 50)
    assert np.array_equal(I.read_gray(tmp_path / "photo.png"), page())


def refused(error, match, call, tmp_path):
    """``call()`` raises ``error`` matching ``match``, and writes nothing under ``tmp_path``."""
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(error, match=match):
        call()
    assert sorted(tmp_path.rglob("*")) == before


def test_missing_folder(tmp_path):
    refused(
        FileNotFoundError,
        "nope: no such folder",
        lambda: I.load_support(tmp_path / "nope"),
        tmp_path,
    )


def test_one_class_or_too_many(tmp_path):
    root = folder(tmp_path, classes=("only",))
    refused(
        ValueError,
        r"1 class folder\(s\) \(only\); allowed are 2 to",
        lambda: I.load_support(root),
        tmp_path,
    )
    root = folder(tmp_path, classes=("only", "b", "c", "d", "e", "f"))
    refused(
        ValueError,
        "6 class folder.*allowed are 2 to 5 classes",
        lambda: I.load_support(root, 5),
        tmp_path,
    )
    assert len(I.load_support(root, 6)[2]) == 6


def test_class_without_image(tmp_path):
    root = folder(tmp_path)
    (root / "empty").mkdir()
    (root / "empty" / ".DS_Store").write_text("")
    refused(ValueError, "empty.*holds no image", lambda: I.load_support(root), tmp_path)


@pytest.mark.parametrize(
    "name, content",
    [("notes.png", b"not an image at all"), ("empty.png", b""), ("cut.png", "truncated")],
)
def test_unreadable_file(tmp_path, name, content):
    root = folder(tmp_path)
    if content == "truncated":
        whole = (root / "a" / "0.png").read_bytes()
        content = whole[: len(whole) // 2]
    (root / "b" / name).write_bytes(content)
    refused(
        ValueError,
        f"{name} is not an image that can be read",
        lambda: I.load_support(root),
        tmp_path,
    )
    refused(ValueError, name, lambda: I.load_query([root / "b" / name]), tmp_path)


def test_huge_image(tmp_path):
    Image.new("L", (4097, 4096), 255).save(tmp_path / "huge.png")
    refused(
        ValueError,
        "huge.png has 4097x4096 pixels, more than the 16,777,216",
        lambda: I.load_query([tmp_path / "huge.png"]),
        tmp_path,
    )


def test_blank_image(tmp_path):
    save(tmp_path / "blank.png", np.ones((30, 30)))
    refused(
        ValueError, "blank.png has no ink", lambda: I.load_query([tmp_path / "blank.png"]), tmp_path
    )


def test_missing_query(tmp_path):
    refused(
        FileNotFoundError,
        "gone.png: no such image file",
        lambda: I.load_query([tmp_path / "gone.png"]),
        tmp_path,
    )
    (tmp_path / "nothing").mkdir()
    refused(ValueError, "no query image in", lambda: I.load_query([tmp_path / "nothing"]), tmp_path)


def test_example_folder_is_what_the_chapter_makes(tmp_path):
    made = I.make_glyphs(tmp_path / "glyphs")
    assert 5 * 2 <= len(made) <= 5 * (1 + len(I.QUERY_FONTS))
    for name in I.GLYPHS:  # every image of a class differs from the others: none counts twice
        pixels = [Image.open(f).tobytes() for f in made if f.parent.name == name]
        assert len(set(pixels)) == len(pixels) >= 2, name
    committed = Path(__file__).resolve().parents[1] / "examples" / "glyphs"
    for f in sorted((tmp_path / "glyphs").rglob("*")):
        if f.is_file():
            assert (
                committed / f.relative_to(tmp_path / "glyphs")
            ).read_bytes() == f.read_bytes(), f
    assert len([f for f in committed.rglob("*") if f.is_file()]) == len(made) + 1  # + README
