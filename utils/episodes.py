"""N-way K-shot episodes, and the fixed test episodes every chapter evaluates on."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .data import ClassSet, load_split

TEST_SEED = 20170301  # one fixed set of test tasks for the whole book


class Episode(NamedTuple):
    """One task: ``support`` ``[N*K, 1, 28, 28]`` with ``support_labels`` in 0..N-1 (class
    major: K images of class 0, then K of class 1, ...), and ``query`` ``[N*Q, 1, 28, 28]``
    with ``query_labels`` in the same order."""

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor

    def to(self, device) -> "Episode":
        """The same episode on ``device``."""
        return Episode(*(t.to(device) for t in self))

    @property
    def n_way(self) -> int:
        return int(self.support_labels.max()) + 1


def _check_positive(**values):
    for name, v in values.items():
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


class Episodes(torch.utils.data.Dataset):
    """``n_episodes`` random N-way K-shot Q-query episodes drawn from ``classes``.

    Episode ``i`` depends only on ``(seed, i)``, so the same arguments always give the
    same episodes and the first ``n`` of a longer sequence are the same ``n`` tasks.
    With ``within_alphabet=True`` the N classes of an episode all come from one
    alphabet (Lake et al.'s harder protocol). It is a PyTorch ``Dataset``: index it,
    iterate over it, or hand it to a ``DataLoader(batch_size=None)``.
    """

    def __init__(
        self,
        classes: ClassSet,
        n_way: int,
        k_shot: int,
        n_query: int,
        n_episodes: int,
        seed: int = 0,
        within_alphabet: bool = False,
    ):
        _check_positive(n_way=n_way, k_shot=k_shot, n_query=n_query, n_episodes=n_episodes)
        drawings = classes.images.shape[1]  # images of each class: 20 in Omniglot
        if k_shot + n_query > drawings:
            raise ValueError(
                f"k_shot + n_query = {k_shot} + {n_query} = {k_shot + n_query}, but a "
                f"class has only {drawings} images: allowed is k_shot + n_query <= {drawings}"
            )
        if within_alphabet:
            groups: dict[str, list[int]] = {}
            for c, a in enumerate(classes.alphabets):
                groups.setdefault(a, []).append(c)
            self.pools = [torch.tensor(g) for g in groups.values() if len(g) >= n_way]
            largest = max(len(g) for g in groups.values())
            if not self.pools:
                raise ValueError(
                    f"n_way={n_way} but the largest alphabet of this split has {largest} "
                    f"classes: allowed is 1 <= n_way <= {largest} within an alphabet"
                )
        else:
            if n_way > len(classes):
                raise ValueError(
                    f"n_way={n_way} but the split has {len(classes)} classes: "
                    f"allowed is 1 <= n_way <= {len(classes)}"
                )
            self.pools = [torch.arange(len(classes))]
        self.classes, self.n_way, self.k_shot, self.n_query = classes, n_way, k_shot, n_query
        self.n_episodes, self.seed = n_episodes, seed

    def __len__(self) -> int:
        return self.n_episodes

    def __getitem__(self, i: int) -> Episode:
        if not 0 <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range 0..{self.n_episodes - 1}")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        pool = self.pools[int(torch.randint(len(self.pools), (1,), generator=g))]
        n, k, q = self.n_way, self.k_shot, self.n_query
        chosen = pool[torch.randperm(len(pool), generator=g)[:n]]
        per_class = self.classes.images.shape[1]
        drawings = torch.stack([torch.randperm(per_class, generator=g)[: k + q] for _ in range(n)])
        x = self.classes.images[chosen[:, None], drawings].unsqueeze(2)  # [N, K+Q, 1, 28, 28]
        labels = torch.arange(n)
        return Episode(
            x[:, :k].flatten(0, 1),
            labels.repeat_interleave(k),
            x[:, k:].flatten(0, 1),
            labels.repeat_interleave(q),
        )

    def __iter__(self):
        return (self[i] for i in range(len(self)))


N_QUERY = 15  # query images per class in the fixed test episodes (and in the tables' protocol)


def fixed_test_episodes(
    n_way: int,
    k_shot: int,
    n_query: int = N_QUERY,
    n_episodes: int = 600,
    within_alphabet: bool = False,
) -> Episodes:
    """The book's fixed test episodes on the Vinyals test split (423 characters).

    Every chapter evaluates on these, so methods are compared on the same tasks; a
    smaller ``n_episodes`` gives the first episodes of the same sequence.
    """
    return Episodes(
        load_split("test"),
        n_way,
        k_shot,
        n_query,
        n_episodes,
        seed=TEST_SEED,
        within_alphabet=within_alphabet,
    )
