"""A reader's own images at the book's convention: a support set from a folder, queries from files.

The book's images are 28x28 (Lanczos), strokes bright on black, floats in [0, 1], the ink in a
box of about 18 of the 28 pixels (Omniglot's median). :func:`preprocess` brings any image there.
A support folder has one subfolder of images per class (torchvision's ``ImageFolder``). Bad
input is refused with a ``FileNotFoundError`` or ``ValueError`` that names the file or folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

SIZE = 28  # the book's image size
INK_BOX = 18  # the side of the ink's box in a 28x28 image (Omniglot's median)
MAX_PIXELS = 4096 * 4096  # a larger image is refused (PIL's decompression-bomb guard is 89 M)
MIN_CLASSES = 2


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """The image at ``path`` as grayscale floats in [0, 1], ``[H, W]``, turned upright as its
    EXIF orientation says (photographs): RGB and palette images by PIL's luminance, transparent
    ones (RGBA, LA, a palette with transparency) composited onto white first, 16-bit and 32-bit
    integer images divided by 65,535. A missing file is a ``FileNotFoundError``; a file that is
    empty, truncated or not an image, or larger than :data:`MAX_PIXELS` pixels, a ``ValueError``
    that names it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ValueError(
                    f"{path} has {im.width}x{im.height} pixels, more than the "
                    f"{MAX_PIXELS:,} allowed (4096x4096): shrink it first"
                )
            im.load()
            im = ImageOps.exif_transpose(im)  # a phone's photograph: turned as it was taken
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, im.convert("RGBA"))
            if im.mode.startswith("I"):  # 16-bit PNGs open as I;16 or I
                return np.clip(np.asarray(im, dtype=np.float64) / 65535, 0, 1)
            return np.asarray(im.convert("L"), dtype=np.float64) / 255
    except ValueError:
        raise
    except (OSError, SyntaxError, Image.DecompressionBombError) as err:  # PIL's read errors
        why = (str(err) or type(err).__name__).splitlines()[0]
        raise ValueError(
            f"{path} is not an image that can be read ({why}); allowed are complete image files "
            "(PNG, JPEG, BMP, GIF, TIFF, WebP)"
        ) from err


def ink_bright(gray: np.ndarray, name: str = "the image") -> np.ndarray:
    """``gray`` with the ink bright on a dark background: inverted when the border (the
    background) is brighter than mid-gray, then stretched so that the border's median becomes 0
    and the brightest pixel 1. An image without contrast is refused with a ``ValueError``."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:
        gray, border = 1 - gray, 1 - border
    low, high = float(np.median(border)), float(gray.max())
    if high - low < 0.1:
        raise ValueError(f"{name} has no ink: it is blank or without contrast")
    return np.clip((gray - low) / (high - low), 0, 1)


def crop_pad(ink: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    """The box around the pixels of ``ink`` above ``threshold``, centred in a black square whose
    side is that box's longer side times 28/18 (:data:`INK_BOX`), as Omniglot's ink in 28x28."""
    rows, cols = np.nonzero(ink > threshold)
    box = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    side = int(np.ceil(max(box.shape) * SIZE / INK_BOX))
    square = np.zeros((side, side))
    top, left = (side - box.shape[0]) // 2, (side - box.shape[1]) // 2
    square[top : top + box.shape[0], left : left + box.shape[1]] = box
    return square


def resize(image: np.ndarray) -> torch.Tensor:
    """``image`` (floats in [0, 1]) at 28x28 as the book's data is made: 8-bit, Lanczos, then
    floats in [0, 1] again, ``[1, 28, 28]``."""
    im = Image.fromarray(np.round(image * 255).astype(np.uint8))
    small = np.asarray(im.resize((SIZE, SIZE), Image.LANCZOS), dtype=np.float32) / 255
    return torch.from_numpy(small.copy()).unsqueeze(0)


def preprocess(gray: np.ndarray, name: str = "the image") -> torch.Tensor:
    """The book's convention, ``[1, 28, 28]``: :func:`ink_bright`, :func:`crop_pad`,
    :func:`resize`."""
    return resize(crop_pad(ink_bright(gray, name)))


def _images(folder: Path) -> list[Path]:
    """The files under ``folder`` (subfolders too), sorted, without those named ``.*``."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def load_support(folder, max_classes: int | None = None, preprocess=preprocess):
    """A support set from ``folder``, one subfolder per class: ``(images [n, 1, 28, 28], labels
    [n], class names, files)``, classes numbered in sorted order. Refused with a clear error: a
    missing folder, fewer than 2 classes or more than ``max_classes``, a class without images, a
    file that :func:`read_gray` or ``preprocess`` (``(gray, name) -> [1, 28, 28]``) refuses."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: no such folder; a support folder holds one subfolder of images per class"
        )
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name[0] != ".")
    most = max_classes or "any number of"
    if len(classes) < MIN_CLASSES or (max_classes and len(classes) > max_classes):
        raise ValueError(
            f"{folder} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); "
            f"allowed are {MIN_CLASSES} to {most} classes, one subfolder of images each"
        )
    images, labels, files = [], [], []
    for label, name in enumerate(classes):
        found = _images(folder / name)
        if not found:
            raise ValueError(f"{folder / name} (class {name!r}) holds no image; each class needs 1")
        for f in found:
            images.append(preprocess(read_gray(f), str(f)))
            labels.append(label)
            files.append(f)
    return torch.stack(images), torch.tensor(labels), classes, files


def load_query(paths, preprocess=preprocess):
    """Query images from ``paths`` (files, or folders whose files are all taken, in sorted order):
    ``(images [n, 1, 28, 28], files)``. A path that does not exist is a ``FileNotFoundError``, a
    file that is not a readable image a ``ValueError``, each naming it."""
    files = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such image file or folder")
        files += _images(p) if p.is_dir() else [p]
    if not files:
        raise ValueError(f"no query image in {', '.join(map(str, paths)) or 'no paths given'}")
    return torch.stack([preprocess(read_gray(f), str(f)) for f in files]), files
