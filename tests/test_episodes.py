import pytest
import torch

from utils.data import ClassSet
from utils.episodes import Episode, Episodes, fixed_test_episodes


def numbered_classes(n_classes=12, alphabets=3):
    """Class c, drawing d is an image filled with the number 20*c + d: every image is unique."""
    ids = torch.arange(n_classes * 20, dtype=torch.float32).view(n_classes, 20, 1, 1)
    names = [f"A{c % alphabets}/character{c:02d}" for c in range(n_classes)]
    return ClassSet(
        ids.expand(n_classes, 20, 28, 28).clone(), names, [n.split("/")[0] for n in names]
    )


def ids(x):
    return x[:, 0, 0, 0].long()


def test_shapes_and_labels():
    ep = Episodes(numbered_classes(), n_way=5, k_shot=3, n_query=4, n_episodes=2)[0]
    assert isinstance(ep, Episode)
    assert ep.support.shape == (15, 1, 28, 28) and ep.query.shape == (20, 1, 28, 28)
    assert ep.support_labels.tolist() == [c for c in range(5) for _ in range(3)]
    assert ep.query_labels.tolist() == [c for c in range(5) for _ in range(4)]
    # all images of one label come from one class, and different labels from different classes
    classes_s = ids(ep.support) // 20
    classes_q = ids(ep.query) // 20
    for c in range(5):
        assert classes_s[ep.support_labels == c].unique().numel() == 1
        assert torch.equal(
            classes_s[ep.support_labels == c].unique(), classes_q[ep.query_labels == c].unique()
        )
    assert classes_s.unique().numel() == 5
    assert ep.n_way == 5


def test_support_and_query_never_share_an_image():
    for ep in Episodes(numbered_classes(), 6, 5, 15, n_episodes=50, seed=3):
        s, q = set(ids(ep.support).tolist()), set(ids(ep.query).tolist())
        assert not s & q
        assert len(s) == 30 and len(q) == 90  # no image twice within a set either


def test_seeded_and_reproducible():
    classes = numbered_classes()
    a, b = Episodes(classes, 5, 1, 5, 10, seed=1), Episodes(classes, 5, 1, 5, 10, seed=1)
    assert all(
        torch.equal(x.support, y.support) and torch.equal(x.query, y.query) for x, y in zip(a, b)
    )
    c = Episodes(classes, 5, 1, 5, 10, seed=2)
    assert not all(torch.equal(x.support, y.support) for x, y in zip(a, c))
    longer = Episodes(classes, 5, 1, 5, 30, seed=1)
    assert all(torch.equal(a[i].support, longer[i].support) for i in range(10))


def test_within_alphabet_episodes_stay_in_one_alphabet():
    classes = numbered_classes(n_classes=12, alphabets=3)
    for ep in Episodes(classes, 4, 1, 1, 20, within_alphabet=True):
        alphabets = {classes.alphabets[int(i) // 20] for i in ids(ep.support)}
        assert len(alphabets) == 1


def test_works_with_a_dataloader():
    loader = torch.utils.data.DataLoader(Episodes(numbered_classes(), 3, 2, 2, 4), batch_size=None)
    assert len(list(loader)) == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_way=13), r"n_way=13 but the split has 12 classes: allowed is 1 <= n_way <= 12"),
        (dict(k_shot=10, n_query=11), r"k_shot \+ n_query = 10 \+ 11 = 21.*<= 20"),
        (dict(n_way=0), r"n_way must be a positive integer, got 0"),
        (dict(k_shot=-1), r"k_shot must be a positive integer, got -1"),
        (dict(n_query=0), r"n_query must be a positive integer, got 0"),
        (dict(n_episodes=0), r"n_episodes must be a positive integer, got 0"),
        (
            dict(n_way=5, within_alphabet=True),
            r"n_way=5 but the largest alphabet of this split has 4 classes",
        ),
    ],
)
def test_bad_input_names_the_value_and_the_range(kwargs, message):
    args = dict(n_way=5, k_shot=1, n_query=5, n_episodes=1) | kwargs
    with pytest.raises(ValueError, match=message):
        Episodes(numbered_classes(), **args)


def test_index_out_of_range():
    with pytest.raises(IndexError, match="episode 3 out of range 0..2"):
        Episodes(numbered_classes(), 2, 1, 1, 3)[3]


def test_fixed_test_episodes_are_fixed(real):
    a, b = fixed_test_episodes(5, 1, n_episodes=3), fixed_test_episodes(5, 1, n_episodes=600)
    assert len(a) == 3 and len(b) == 600
    assert all(torch.equal(a[i].query, b[i].query) for i in range(3))
    assert a[0].support.shape == (5, 1, 28, 28) and a[0].query.shape == (75, 1, 28, 28)


def test_classes_with_more_images_than_omniglot():
    x = torch.arange(3 * 50, dtype=torch.float32).view(3, 50, 1, 1).expand(3, 50, 28, 28)
    classes = ClassSet(x.clone(), ["d/0", "d/1", "d/2"], ["d"] * 3)
    ep = Episodes(classes, n_way=3, k_shot=10, n_query=35, n_episodes=1)[0]
    assert ep.support.shape == (30, 1, 28, 28) and ep.query.shape == (105, 1, 28, 28)
    assert len(set(ids(torch.cat([ep.support, ep.query])).tolist())) == 135  # no image twice
    with pytest.raises(ValueError, match="only 50 images: allowed is k_shot \\+ n_query <= 50"):
        Episodes(classes, n_way=3, k_shot=10, n_query=41, n_episodes=1)


def test_digits_are_omniglot_shaped():
    """Chapter 9's digits: the book's convention, and episodes drawn from them as from Omniglot."""
    pytest.importorskip("sklearn")
    from utils.methods import digits_test_episodes, load_digits_classes

    digits = load_digits_classes()
    assert digits.images.shape == (10, 174, 28, 28) and digits.images.dtype == torch.float32
    assert 0 <= digits.images.min() and digits.images.max() <= 1
    assert digits.names == [f"digits/{d}" for d in range(10)]
    border = torch.ones(28, 28, dtype=torch.bool)
    border[4:24, 4:24] = False
    assert digits.images[..., border].abs().max() == 0  # a 20x20 box centred in 28x28
    assert digits.images.mean() > 0.05  # bright strokes on black: ink, not background
    ep = digits_test_episodes(5, 1, n_episodes=2)[1]
    assert ep.support.shape == (5, 1, 28, 28) and ep.query.shape == (75, 1, 28, 28)
    assert torch.equal(digits_test_episodes(5, 1, n_episodes=3)[1].query, ep.query)  # fixed
