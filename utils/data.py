"""Omniglot: find a copy, load it at 28x28, cache it, and cut it into splits.

The data comes from the ``root`` argument or ``$OMNIGLOT_ROOT`` (the unpacked tree, its parent,
the archive ``omniglot-py.tar.gz`` or a folder holding it: unpacked once into the cache), else
the cache folder, else torchvision's download, else an error that says how to get it.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import cache_dir

ROOT_VAR = "OMNIGLOT_ROOT"
SIZE = 28  # the papers' image size
DRAWINGS = 20  # drawings of each character
PARTS = ("images_background", "images_evaluation")
ARCHIVE = "omniglot-py.tar.gz"
CACHE_FILE = f"omniglot{SIZE}.pt"
ALPHABETS = {  # Lake et al.'s 30 background and 20 evaluation alphabets; a copy must hold them all
    "images_background": (
        "Alphabet_of_the_Magi Anglo-Saxon_Futhorc Arcadian Armenian Asomtavruli_(Georgian) "
        "Balinese Bengali Blackfoot_(Canadian_Aboriginal_Syllabics) Braille Burmese_(Myanmar) "
        "Cyrillic Early_Aramaic Futurama Grantha Greek Gujarati Hebrew "
        "Inuktitut_(Canadian_Aboriginal_Syllabics) Japanese_(hiragana) Japanese_(katakana) Korean "
        "Latin Malay_(Jawi_-_Arabic) Mkhedruli_(Georgian) N_Ko "
        "Ojibwe_(Canadian_Aboriginal_Syllabics) Sanskrit Syriac_(Estrangelo) Tagalog Tifinagh "
    ).split(),
    "images_evaluation": (
        "Angelic Atemayar_Qelisayer Atlantean Aurek-Besh Avesta Ge_ez Glagolitic Gurmukhi Kannada "
        "Keble Malayalam Manipuri Mongolian Old_Church_Slavonic_(Cyrillic) Oriya Sylheti "
        "Syriac_(Serto) Tengwar Tibetan ULOG "
    ).split(),
}

# Vinyals et al. (2016): validation characters are those of five background alphabets;
# train+val are all background characters plus the first 236 evaluation characters in
# sorted order; test is the remaining 423 evaluation characters.
VINYALS_VAL_ALPHABETS = ("Armenian", "Bengali", "Early_Aramaic", "Hebrew", "Mkhedruli_(Georgian)")
VINYALS_EXTRA_TRAIN = 236
SPLITS = ("train", "val", "trainval", "test", "background", "evaluation")
ROTATIONS = (0, 90, 180, 270)

HOW_TO_GET = (
    "Omniglot was not found and could not be downloaded. Either\n"
    f"  * point ${ROOT_VAR} (or the `root` argument) at a local copy: the unpacked folder with "
    f"images_background/ and images_evaluation/, or the archive {ARCHIVE} "
    "(in this project's CI: ../shared/data/omniglot), or\n"
    "  * connect to the internet, and torchvision will download it "
    f"(about 10 MB) into {{cache}}."
)


def _is_tree(path: Path) -> bool:
    return all((path / part).is_dir() for part in PARTS)


def _unpack(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` into ``dest/omniglot-py``, all of it or nothing; a corrupt archive is
    refused with a ``RuntimeError`` that names it."""
    target = dest / "omniglot-py"
    if _is_tree(target):
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest))
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
            why = (str(err) or type(err).__name__).splitlines()[0].rstrip(":")
            raise RuntimeError(
                f"{archive} is corrupt or truncated ({why}): replace it with a complete "
                f"copy of {ARCHIVE}, or unset ${ROOT_VAR} to let torchvision download "
                "Omniglot"
            ) from err
        unpacked = tmp / "omniglot-py"
        if not _is_tree(unpacked):
            raise FileNotFoundError(
                f"{archive} does not hold omniglot-py/{PARTS[0]} and {PARTS[1]}"
            )
        try:
            os.rename(unpacked, target)  # atomic on one file system
        except OSError:
            if not _is_tree(target):  # another process may have won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _local(path: Path) -> Path:
    """The unpacked tree that a user-given path names (see the module's docstring)."""
    if path.is_file() and path.name.endswith(".tar.gz"):
        return _unpack(path, cache_dir())
    for tree in (path, path / "omniglot-py"):
        if _is_tree(tree):
            return tree
    if (path / ARCHIVE).is_file():
        return _unpack(path / ARCHIVE, cache_dir())
    raise FileNotFoundError(
        f"{path} is not a copy of Omniglot: expected a folder with {PARTS[0]}/ and {PARTS[1]}/, "
        f"a folder with omniglot-py/ or {ARCHIVE} in it, or the archive itself"
    )


def _download(dest: Path) -> Path:
    from torchvision.datasets import Omniglot

    for background in (True, False):
        Omniglot(str(dest), background=background, download=True)
    return dest / "omniglot-py"


def find_omniglot(root: str | os.PathLike | None = None) -> Path:
    """Return the folder that holds ``images_background/`` and ``images_evaluation/``."""
    given = root or os.environ.get(ROOT_VAR)
    if given:
        return _local(Path(given).expanduser())
    cached = cache_dir() / "omniglot-py"
    if _is_tree(cached):
        return cached
    try:
        return _download(cache_dir())
    except Exception as err:  # no network, a broken mirror, ...
        raise RuntimeError(HOW_TO_GET.format(cache=cache_dir())) from err


def _read_tree(tree: Path) -> tuple[torch.Tensor, list[str], list[bool]]:
    """Every drawing of the tree at 28x28; a missing alphabet (it would shift every split) is
    refused with a ``FileNotFoundError`` that names it."""
    from PIL import Image

    names, background, images = [], [], []
    for part in PARTS:
        missing = sorted(
            set(ALPHABETS[part]) - {p.name for p in (tree / part).iterdir() if p.is_dir()}
        )
        if missing:
            raise FileNotFoundError(
                f"{tree / part} lacks {len(missing)} of Omniglot's {len(ALPHABETS[part])} "
                f"alphabets there: {', '.join(missing)}; point ${ROOT_VAR} at a complete copy "
                f"(unpack {ARCHIVE} again), or unset it to let torchvision download Omniglot"
            )
        for alphabet in sorted(p.name for p in (tree / part).iterdir() if p.is_dir()):
            for char in sorted(p.name for p in (tree / part / alphabet).iterdir() if p.is_dir()):
                files = sorted((tree / part / alphabet / char).glob("*.png"))
                if len(files) != DRAWINGS:
                    raise ValueError(
                        f"{tree / part / alphabet / char} has {len(files)} drawings, "
                        f"expected {DRAWINGS}"
                    )
                for f in files:
                    with Image.open(f) as im:
                        im = im.convert("L").resize((SIZE, SIZE), Image.LANCZOS)
                        images.append(255 - np.asarray(im, dtype=np.uint8))  # strokes bright
                names.append(f"{alphabet}/{char}")
                background.append(part == PARTS[0])
    x = torch.from_numpy(np.stack(images)).view(len(names), DRAWINGS, SIZE, SIZE)
    return x, names, background


@dataclass
class Omniglot:
    """All of Omniglot: ``images[c, d]`` (``[1623, 20, 28, 28]``, in [0, 1], strokes bright) is
    drawing ``d`` of character ``c``, named ``names[c]`` (``"Alphabet/characterNN"``, sorted);
    ``background[c]``: in Lake's background set, else in the evaluation set."""

    images: torch.Tensor
    names: list[str]
    background: list[bool]


def load_omniglot(root: str | os.PathLike | None = None) -> Omniglot:
    """Omniglot at 28x28, from the cache folder when loaded before (an unreadable cached file is
    refused with a ``RuntimeError`` that names it)."""
    cached = cache_dir() / CACHE_FILE
    if cached.is_file():
        try:
            blob = torch.load(cached, weights_only=True)
        except Exception as err:  # a truncated or foreign file
            why = (str(err) or type(err).__name__).splitlines()[0].split(". ")[0]
            raise RuntimeError(
                f"{cached} cannot be read ({why}): delete it, and the next load "
                "rebuilds it from the images"
            ) from err
    else:
        x, names, background = _read_tree(find_omniglot(root))
        blob = {"images": x, "names": names, "background": background}
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        torch.save(blob, tmp)
        os.replace(tmp, cached)  # readers never see half a file
    return Omniglot(blob["images"].float().div_(255), blob["names"], blob["background"])


@dataclass
class ClassSet:
    """The classes of one split: ``images[c]`` (``[classes, 20, 28, 28]``) holds the drawings of
    class ``c``, a character or one turned by 90, 180 or 270 degrees (its name ends in
    ``/rotDDD``), of the alphabet ``alphabets[c]``."""

    images: torch.Tensor
    names: list[str]
    alphabets: list[str]

    def __len__(self) -> int:
        return len(self.names)


def split_names(names: list[str], background: list[bool], split: str) -> list[str]:
    """The characters of a split, as a rule over sorted names: Vinyals et al.'s ``train``
    (1,028), ``val`` (172), ``trainval`` (1,200), ``test`` (423); Lake et al.'s ``background``
    (964), ``evaluation`` (659)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: allowed are {', '.join(SPLITS)}")
    bg = sorted(n for n, b in zip(names, background) if b)
    ev = sorted(n for n, b in zip(names, background) if not b)
    trainval = bg + ev[:VINYALS_EXTRA_TRAIN]
    val = [n for n in trainval if n.split("/")[0] in VINYALS_VAL_ALPHABETS]
    return {
        "train": [n for n in trainval if n not in set(val)],
        "val": val,
        "trainval": trainval,
        "test": ev[VINYALS_EXTRA_TRAIN:],
        "background": bg,
        "evaluation": ev,
    }[split]


def load_split(split: str, rotations: bool | None = None, root=None) -> ClassSet:
    """The classes of ``split`` (:func:`split_names`); ``rotations`` adds each character turned
    by 90, 180 and 270 degrees as three more classes (default: for ``train``, ``val``,
    ``trainval``, as Vinyals et al. train)."""
    data = _load_cached(root)
    chars = split_names(data.names, data.background, split)
    if rotations is None:
        rotations = split in ("train", "val", "trainval")
    index = {n: i for i, n in enumerate(data.names)}
    x = data.images[[index[c] for c in chars]]
    if not rotations:
        return ClassSet(x, list(chars), [c.split("/")[0] for c in chars])
    turned = torch.stack([torch.rot90(x, r // 90, dims=(-2, -1)) for r in ROTATIONS], 1)
    names = [f"{c}/rot{r:03d}" for c in chars for r in ROTATIONS]
    return ClassSet(turned.flatten(0, 1), names, [n.split("/")[0] for n in names])


@functools.lru_cache(maxsize=2)
def _load_cached(root) -> Omniglot:
    return load_omniglot(root)
