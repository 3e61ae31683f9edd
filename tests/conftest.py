"""Fixtures: a tiny fake Omniglot tree for the loader's mechanics, and the real data when
present."""

import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import utils.data as data

# A tiny Omniglot: {part: {alphabet: characters}}; the creation order is deliberately unsorted.
FAKE = {
    "images_background": {"Zeta": 3, "Alpha": 2},
    "images_evaluation": {"Omega": 2},
}


def fake_names():
    """The sorted character names of the fake tree, background first."""
    return [
        f"{a}/character{c:02d}"
        for part in FAKE.values()
        for a in sorted(part)
        for c in range(1, part[a] + 1)
    ]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh, empty cache folder (``$FEWSHOT_CACHE``) and no ``$OMNIGLOT_ROOT``."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("FEWSHOT_CACHE", str(folder))
    monkeypatch.delenv("OMNIGLOT_ROOT", raising=False)
    data._load_cached.cache_clear()
    yield folder
    data._load_cached.cache_clear()


@pytest.fixture
def fake_tree(tmp_path, monkeypatch):
    """A fake ``omniglot-py`` tree: character ``i`` (in sorted order) is a filled square of
    ``i + 1`` pixels' side at 105x105, so a test can tell which character an image shows.
    Its alphabets stand in for Omniglot's 50 (``data.ALPHABETS``) while the test runs."""
    monkeypatch.setattr(data, "ALPHABETS", {part: tuple(sorted(a)) for part, a in FAKE.items()})
    root = tmp_path / "src" / "omniglot-py"
    names = fake_names()
    for part, alphabets in FAKE.items():
        for alphabet, n in alphabets.items():
            for c in range(n, 0, -1):
                folder = root / part / alphabet / f"character{c:02d}"
                folder.mkdir(parents=True)
                side = 4 * (names.index(f"{alphabet}/character{c:02d}") + 1)
                for d in range(20, 0, -1):
                    img = np.ones((105, 105), dtype=bool)
                    img[: side * 4, : side * 4] = False  # black strokes on white, as in Omniglot
                    Image.fromarray(img).save(folder / f"{c:04d}_{d:02d}.png")
    return root


@pytest.fixture
def fake_archive(fake_tree, tmp_path):
    """The fake tree packed as ``omniglot-py.tar.gz``."""
    path = tmp_path / "archive" / "omniglot-py.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tar:
        tar.add(fake_tree, arcname="omniglot-py")
    return path


def shared_omniglot():
    """The real data set, from ``$OMNIGLOT_ROOT`` or ``../shared/data/omniglot``, or None."""
    for candidate in (
        os.environ.get("OMNIGLOT_ROOT"),
        Path(__file__).resolve().parents[2] / "shared" / "data" / "omniglot",
    ):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def real():
    """The real Omniglot (all 1,623 characters), loaded once per test session."""
    root = shared_omniglot()
    if root is None and not (data.cache_dir() / data.CACHE_FILE).is_file():
        pytest.skip("the real Omniglot is not here: set OMNIGLOT_ROOT")
    return data.load_omniglot(root)


def book_runs() -> dict:
    """Every model the book trains, once each: ``{run: (train, config, build)}``, from the
    registry of methods (methods that share a trained model share its run) and chapter 11's
    prototypical network trained on Lake's background alphabets."""
    import utils.methods as M
    from utils.registry import METHODS

    runs = {}
    for m in METHODS.values():
        if m.run is not None:
            runs.setdefault(m.run, (m.train, m.config, m.build))
    background = M.ProtoNetConfig(classes="background")
    runs["protonet-background"] = (M.train_protonet, background, M.protonet_embedding)
    return runs


@pytest.fixture
def one_thread():
    """One CPU thread for the test: with several, some CPU kernels sum in an order that varies
    from call to call; one thread sums in one order, so a test's checks repeat exactly."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_episode(n_way=3, k_shot=2, n_query=2, seed=1):
    """``(support, support_labels, query)`` of random 28x28 images, labels ``0..n_way-1``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_way * (k_shot + n_query), 1, 28, 28, generator=g)
    return x[: n_way * k_shot], torch.arange(n_way).repeat_interleave(k_shot), x[n_way * k_shot :]
