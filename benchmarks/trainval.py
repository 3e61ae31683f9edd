"""Every method of the comparison trained again as the papers train their final models: on
``trainval``, the 1,028 training and the 172 validation characters (with their rotations).

    python -m benchmarks.trainval                     # every method, quick budget, seed 0
    python -m benchmarks.trainval --methods ProtoNet  # re-measure one method in the file

Run it from the repository root, with ``$OMNIGLOT_ROOT`` set as for the chapters. The chapters
train on ``train`` alone, because they make their test-time choices (steps, learning rates,
copies) on the validation characters, which a model trained on them would have seen. The
papers choose on validation and then train the final model on both (Snell et al. 2017,
Vinyals et al. 2016). This script does the same, method by method:

1. the model trained on ``train``, its test-time choices and its accuracy on the fixed 5-way
   1-shot test episodes, as the book's cache holds them (``utils.registry.measure``: loaded
   when the chapters ran with this cache, else trained and chosen now, as chapter 11 does);
2. the same trainer, settings and seed on ``trainval`` (the trainers' ``load_split("train")``
   reads ``trainval`` during this step), in a folder of its own, ``$FEWSHOT_CACHE/trainval``,
   so that no chapter ever loads these runs;
3. that model tested with the choices of step 1, frozen, on the same test episodes. Nothing
   is chosen again: the validation characters are now training characters, and while steps 2
   and 3 run, reading them (``load_split("val")``) raises an error. What a classifier computes
   from its own model (SimpleShot's centre of the training classes' features) is computed for
   the new model.

It writes ``benchmarks/results/trainval/<budget>.json`` (``--out`` to change it): per method
the per-episode accuracies of both models on the same episodes, the training seconds of both
and the key of the method's config, with the machine, commit, command and date. ``--methods``
measures only those methods and replaces their entries in the file. Chapter 11 reads the file,
when it is there, and shows the paired difference.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

from benchmarks.provenance import budget_registry_and_file, method_names
from benchmarks.provenance import results_to_update, write_methods
from utils.registry import RECORD_PROTOCOL, method_code

SETTING = "5-way 1-shot"
FOLDER = "trainval"  # the runs trained on trainval: $FEWSHOT_CACHE/trainval


@contextlib.contextmanager
def training_on_trainval():
    """While it lasts, the trainers' ``load_split("train")`` returns ``trainval``, the
    validation characters cannot be read (``load_split("val")`` raises a ``RuntimeError``),
    and the runs are saved to and loaded from ``$FEWSHOT_CACHE/trainval`` (the preprocessed
    Omniglot is shared with the book's cache)."""
    import utils.data as D
    import utils.methods as M
    from utils.config import cache_dir
    from utils.data import CACHE_FILE

    book = cache_dir()
    folder = book / FOLDER
    folder.mkdir(exist_ok=True)
    data, link = book / CACHE_FILE, folder / CACHE_FILE
    if data.is_file() and not link.exists():
        link.symlink_to(data)
    load_split = D.load_split

    def trainval_for_train(split, *args, **kwargs):
        if split == "val":
            raise RuntimeError("the validation characters were read after training on them")
        return load_split("trainval" if split == "train" else split, *args, **kwargs)

    M.load_split = D.load_split = trainval_for_train
    os.environ["FEWSHOT_CACHE"] = str(folder)
    try:
        yield
    finally:
        M.load_split = D.load_split = load_split
        os.environ["FEWSHOT_CACHE"] = str(book)


def run_method(method, S) -> dict | None:
    """``method`` (a registered :class:`~utils.registry.Method`) trained on ``train`` and on
    ``trainval``, both tested on the same fixed 5-way 1-shot episodes with the choices made on
    validation for the first: ``{"train": {...}, "trainval": {...}, "config": key}``, each
    with ``per_episode`` and ``seconds``; ``None`` for a method that learns nothing."""
    from utils.episodes import fixed_test_episodes
    from utils.evaluate import SETTINGS, evaluate
    from utils.registry import measure, trained

    if method.run is None:
        return None
    _, history, choices, results = measure(method, S, S.n_test_episodes, settings=(SETTING,))
    frozen = dict(choices)  # a copy: what the new model computes below stays out of the record
    n_way, k_shot = SETTINGS[SETTING]
    n = len(results[SETTING].per_episode)  # the same episodes as the book's result
    with training_on_trainval():  # a model the classifier loads (DAGAN's ProtoNet) is trainval's
        model, trainval_history = trained(method, S)
        classify = method.classifier(model, S, SETTING, frozen)
        episodes = fixed_test_episodes(n_way, k_shot, n_episodes=n)
        acc = evaluate(classify, episodes, S.device, desc=f"{method.name}, trainval")
    return {
        "train": {
            "per_episode": [float(x) for x in results[SETTING].per_episode],
            "seconds": float(history.seconds),
        },
        "trainval": {
            "per_episode": [float(x) for x in acc.per_episode],
            "seconds": float(trainval_history.seconds),
        },
        "config": None if method.config is None else method.config.at(S.budget).key(),
        "code": method_code(method),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="the file (default benchmarks/results/trainval/<budget>.json)")
    keep = "the file keeps the other methods (of the same budget and protocol)"
    p.add_argument("--methods", help=f"comma-separated method names to measure; {keep}")
    args = p.parse_args(argv)
    budget, METHODS, out = budget_registry_and_file(args.out, FOLDER)
    from utils.config import setup

    names, before = list(METHODS), None
    if args.methods:
        names = method_names(args.methods, list(METHODS))
        before = results_to_update(out, {"budget": budget, "protocol": RECORD_PROTOCOL})
    S = setup(seed=0)
    start, methods = time.perf_counter(), {}
    for name in names:
        t = time.perf_counter()
        entry = run_method(METHODS[name], S)
        if entry is not None:
            methods[name] = entry
            gain = (
                100
                * (sum(entry["trainval"]["per_episode"]) - sum(entry["train"]["per_episode"]))
                / len(entry["train"]["per_episode"])
            )
            print(f"{name}: trainval - train {gain:+.1f} points ({time.perf_counter() - t:.0f} s)")
    same = {"budget": budget, "setting": SETTING, "protocol": RECORD_PROTOCOL, "seed": 0}
    return write_methods("trainval", argv, S.device, start, same, methods, out, before, names)


if __name__ == "__main__":
    main()
