"""Classify your own images with a method of the book, trained on Omniglot.

    python -m utils.predict --method ProtoNet --support DIR IMAGE [IMAGE ...]

prints, for each IMAGE (or each image in a folder given instead), its most probable classes and
their probabilities (the softmax of the method's scores). DIR holds one subfolder per class,
named after the class, with one or more images of it (torchvision's ImageFolder convention):

    DIR/cat/1.png  DIR/cat/2.png  DIR/dog/1.jpg  ...

Images may be any size up to 4096x4096, any polarity (dark ink on light paper or the reverse),
color, gray, 16-bit or transparent: they are brought to the book's 28x28 convention (chapter
13's preprocess). The method's model is the quick run of its chapter, from the book's cache
($FEWSHOT_CACHE), else trained first as that chapter trains it. --weights FILE loads other
weights of the same model (benchmarks/results/curves/weights/protonet-16x-seed0.pt, say).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import torch

from .evaluate import SETTINGS
from .methods import load_query, load_support


def max_classes(method) -> int:
    """The most classes ``method`` (a registered :class:`~utils.registry.Method`) classifies: the
    largest ``n_way`` of its settings (5 for MAML and the methods trained with a 5-way head, 20
    for the others)."""
    return max(SETTINGS[s][0] for s in method.settings)


def setting_for(method, n_way: int, k_shot: int) -> str:
    """The setting of ``method`` whose test-time choices (MAML's steps, ...) suit an episode of
    ``n_way`` classes and ``k_shot`` images per class (the fewest of any class): the fewest ways
    not below ``n_way``, then the shots nearest ``k_shot``."""
    fits = [s for s in method.settings if SETTINGS[s][0] >= n_way]
    if not fits:
        raise ValueError(f"{method.name} classifies at most {max_classes(method)} classes")
    return min(fits, key=lambda s: (SETTINGS[s][0], abs(SETTINGS[s][1] - k_shot)))


def load_classifier(name: str, S, n_way: int, k_shot: int, weights=None):
    """``classify(support, support_labels, query)`` of the registered method ``name`` with its
    trained run of ``S.budget`` (:func:`utils.registry.trained`: from the cache, else trained now,
    which it says first) or the state dict in the file ``weights``, and the test-time choices its
    chapter saved (else made now on validation episodes, as the chapter makes them)."""
    from .config import cache_dir
    from .registry import METHODS, load_record, trained
    from .train import load_run

    method = METHODS[name]
    if weights is not None:
        model = method.build().to(S.device)
        model.load_state_dict(torch.load(weights, map_location=S.device, weights_only=True))
    else:
        if method.run is not None and load_run(method.run, S, method.config) is None:
            print(
                f"{name}: no trained run in the book's cache ({cache_dir()}): training it now "
                f"with chapter {method.chapter}'s code and settings, as that chapter does"
            )
        model, _ = trained(method, S)
    choices = load_record(method, S)["choices"]
    return method.classifier(model, S, setting_for(method, n_way, k_shot), choices)


def probabilities(classify, support, labels, query) -> torch.Tensor:
    """``[queries, N]``: the softmax of ``classify``'s scores over the ``N`` classes of the
    support set (a method that returns labels gives probability 1 to its label)."""
    n_way = int(labels.max()) + 1
    out = classify(support, labels, query)
    if out.dim() == 1:
        return torch.nn.functional.one_hot(out.long(), n_way).float()
    return out[:, :n_way].float().softmax(1)


def main(argv=None) -> int:
    """The command line (see the module's docstring); returns the exit status: 0; 2 with one
    line on stderr for bad input; 1 with the reason when the model can be neither loaded nor
    trained (no Omniglot to train on, say)."""
    from .config import setup
    from .registry import METHODS

    parser = argparse.ArgumentParser(
        prog="python -m utils.predict",
        description=__doc__.split("\n\n", 2)[2],  # the docstring, after its usage line
        epilog="methods (--method, quoted): " + "; ".join(METHODS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--method", default="ProtoNet", choices=list(METHODS), metavar="NAME")
    parser.add_argument("--support", required=True, metavar="DIR", help="one subfolder per class")
    parser.add_argument("--weights", metavar="FILE", help="a state dict of the method's model")
    parser.add_argument("--top", type=int, default=3, help="classes shown per image (3)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top must be at least 1, got {args.top}")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # setup's and training's messages
            S = setup(seed=0)
            most = max_classes(METHODS[args.method])
            support, labels, classes, _ = load_support(args.support, at_most=most)
            query, files = load_query(args.images)
            shots = int(torch.bincount(labels).min())
            classify = load_classifier(args.method, S, len(classes), shots, args.weights)
            probs = probabilities(
                classify, support.to(S.device), labels.to(S.device), query.to(S.device)
            )
    except (FileNotFoundError, ValueError) as err:  # bad input: one line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # no Omniglot to train on, an unreadable cached run
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.method}, {len(classes)} classes, {len(labels)} support images")
    for f, p in zip(files, probs.cpu()):
        top = p.topk(min(args.top, len(classes)))
        best = "  ".join(f"{classes[i]} {v:.2f}" for v, i in zip(top.values, top.indices))
        print(f"{f}: {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
