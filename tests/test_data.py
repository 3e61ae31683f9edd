import tarfile
import time

import pytest
import torch

import utils.data as data
from conftest import fake_names, shared_omniglot


def test_tree_loads_sorted_28x28_floats(cache, fake_tree):
    om = data.load_omniglot(fake_tree)
    assert om.names == fake_names()
    assert om.background == [True] * 5 + [False] * 2
    assert om.images.shape == (7, 20, 28, 28) and om.images.dtype == torch.float32
    assert 0 <= om.images.min() and om.images.max() <= 1
    # strokes are bright; character i's square grows with i: the class order follows the names
    ink = om.images.sum((1, 2, 3))
    assert torch.all(ink[1:] > ink[:-1])


def test_parent_folder_of_the_tree(cache, fake_tree):
    assert data.load_omniglot(fake_tree.parent).names == fake_names()


def test_archive_and_tree_give_the_same_data(cache, fake_tree, fake_archive):
    from_archive = data.load_omniglot(fake_archive)
    assert (cache / "omniglot-py" / "images_background").is_dir()  # unpacked into the cache
    (cache / data.CACHE_FILE).unlink()
    from_tree = data.load_omniglot(fake_tree)
    assert from_archive.names == from_tree.names
    assert torch.equal(from_archive.images, from_tree.images)


def test_folder_holding_the_archive_via_env(cache, fake_archive, monkeypatch):
    monkeypatch.setenv("OMNIGLOT_ROOT", str(fake_archive.parent))
    assert data.load_omniglot().names == fake_names()


def test_interrupted_unpack_leaves_nothing(cache, fake_archive, monkeypatch):
    def broken(self, *args, **kwargs):
        raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(tarfile.TarFile, "extractall", broken)
    with pytest.raises(KeyboardInterrupt):
        data.find_omniglot(fake_archive)
    assert not any(cache.iterdir()), list(cache.iterdir())


def test_second_load_uses_the_cache(cache, fake_tree):
    first = data.load_omniglot(fake_tree)
    for png in fake_tree.rglob("*.png"):  # the source is gone: only the cache can answer
        png.unlink()
    start = time.perf_counter()
    second = data.load_omniglot(fake_tree)
    assert time.perf_counter() - start < 2
    assert torch.equal(first.images, second.images) and first.names == second.names


def test_no_data_and_no_network_says_what_to_do(cache, monkeypatch):
    def offline(dest):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "_download", offline)
    with pytest.raises(RuntimeError) as err:
        data.load_omniglot()
    message = str(err.value)
    assert "OMNIGLOT_ROOT" in message and "internet" in message and str(cache) in message


def test_a_wrong_path_is_named(cache, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        data.load_omniglot(tmp_path / "nowhere")


def test_a_character_with_missing_drawings_is_named(cache, fake_tree):
    victim = next(fake_tree.rglob("*.png"))
    victim.unlink()
    with pytest.raises(ValueError, match="19 drawings"):
        data.load_omniglot(fake_tree)


def test_unknown_split_is_named():
    with pytest.raises(ValueError, match="'tets'.*allowed are train, val"):
        data.split_names(["A/character01"], [True], "tets")


def test_split_sizes(real):
    sizes = {s: len(data.split_names(real.names, real.background, s)) for s in data.SPLITS}
    assert sizes == {
        "train": 1028,
        "val": 172,
        "trainval": 1200,
        "test": 423,
        "background": 964,
        "evaluation": 659,
    }
    assert real.images.shape == (1623, 20, 28, 28)
    background = [n for n, b in zip(real.names, real.background) if b]
    evaluation = [n for n, b in zip(real.names, real.background) if not b]
    assert real.names == sorted(background) + sorted(
        evaluation
    )  # sorted, whatever the disk's order


def test_splits_are_disjoint(real):
    train, val, test = (
        set(data.split_names(real.names, real.background, s)) for s in ("train", "val", "test")
    )
    assert not (train & val) and not (train & test) and not (val & test)


def test_vinyals_split_matches_the_published_files(real):
    root = shared_omniglot()
    folder = root / "splits" / "vinyals" if root else None
    if folder is None or not folder.is_dir():
        pytest.skip("no splits/vinyals folder beside the data")
    for split in ("train", "val", "trainval", "test"):
        lines = (folder / f"{split}.txt").read_text().split()
        published = sorted({line.rsplit("/", 1)[0] for line in lines})
        assert sorted(data.split_names(real.names, real.background, split)) == published, split
        if split != "test":  # training splits: the four rotations are classes
            assert sorted(data.load_split(split).names) == sorted(lines)


def test_rotations_are_extra_classes(real):
    train = data.load_split("train")
    assert len(train) == 4 * 1028
    assert train.names[:4] == [
        train.names[0].rsplit("/", 1)[0] + f"/rot{r:03d}" for r in (0, 90, 180, 270)
    ]
    assert torch.equal(train.images[1], torch.rot90(train.images[0], 1, dims=(-2, -1)))
    test = data.load_split("test")
    assert len(test) == 423 and test.alphabets[0] == test.names[0].split("/")[0]
