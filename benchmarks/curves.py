"""Where each method goes with more compute: every trained method at 1x, 4x and 16x its quick work.

    python -m benchmarks.curves                                # every method, 1x 4x 16x, seed 0
    python -m benchmarks.curves --methods ProtoNet,MAML --multiples 1,4

Run it from the repository root, with ``$OMNIGLOT_ROOT`` set as for the chapters. A point is a
separate run: the method's quick settings with ``steps`` multiplied (its learning-rate schedule
scaled with them where the schedule depends on the total, as Relation's and the transfer
baseline's do), trained by its chapter's trainer and saved in the book's cache like any run (a
killed run continues from its checkpoint: ``utils.train.train_or_load``). At each point:

- the validation accuracy, 5-way 1-shot (and 20-way 1-shot for a method tested there), on
  200 episodes of the unrotated ``val`` classes drawn with their own seed, so that they are not
  the episodes the test-time choices were made on (``utils.evaluate.choose_on_validation``);
- the accuracy on the book's fixed test episodes (600 per setting, the papers' protocol), with
  the test-time choices that the method's classifier made on validation: every choice stays
  on the ``val`` split, the test episodes only report;
- the training seconds, device and threads.

Methods that share a run train it once. A method that reuses another method's model at its own
budget ("ProtoNet + affine copies", "+ DAGAN copies") is left out, and so are the transfer
run's classifiers other than SimpleShot (fine-tuning trains on every test episode): SimpleShot's
points stand for the pretraining. It writes ``benchmarks/results/curves/<budget>.json`` after every
point, so that a stopped sweep keeps what finished, with the machine, commit, command and date
of each method's run; the weights of each method's largest point go to
``benchmarks/results/curves/weights/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import torch

from benchmarks.provenance import budget_registry_and_file, method_names, provenance

VAL_EPISODES = 200  # validation episodes of each point
VAL_SEED = 1  # not the episodes (seed 0) on which the test-time choices are made
TEST_EPISODES = 600
MULTIPLES = (1, 4, 16)
LEFT_OUT = (  # ProtoNet's model at its own budget; the transfer run's other classifiers
    "ProtoNet + affine copies",
    "ProtoNet + DAGAN copies",
    "transfer: logistic regression",
    "transfer: cosine classifier",
    "transfer: fine-tuning",
)
CURVE_SETTINGS = ("5-way 1-shot", "20-way 1-shot")


def scaled(config, multiple: int):
    """``config`` with its quick ``steps`` multiplied by ``multiple`` (the full value kept)."""
    from utils.config import Budget

    steps = config.steps
    quick, full = (steps.quick, steps.full) if isinstance(steps, Budget) else (steps, steps)
    return replace(config, steps=Budget(quick=quick * multiple, full=full))


def summary(accuracy) -> dict:
    """An accuracy as ``{"mean", "ci95", "n"}`` in % (the per-episode values are not kept)."""
    return {
        "mean": round(accuracy.mean, 2),
        "ci95": round(accuracy.ci95, 2),
        "n": len(accuracy.per_episode),
    }


def point(method, S, multiple: int, model_history=None) -> dict:
    """One point of ``method``: trained (or loaded) at ``multiple`` times its quick steps,
    scored on validation and tested; ``model_history`` reuses a model trained for a method that
    shares the run."""
    from utils.data import load_split
    from utils.episodes import Episodes, fixed_test_episodes
    from utils.evaluate import SETTINGS, evaluate
    from utils.registry import method_code
    from utils.train import train_or_load

    config = scaled(method.config, multiple)
    model, history = model_history or train_or_load(
        method.run, S, method.train, config, method.build
    )
    val_classes = load_split("val", rotations=False)
    choices, val, test = {}, {}, {}
    for setting in CURVE_SETTINGS:
        if setting not in method.settings:
            continue
        n_way, k_shot = SETTINGS[setting]
        classify = method.classifier(model, S, setting, choices)
        episodes = Episodes(val_classes, n_way, k_shot, 15, VAL_EPISODES, seed=VAL_SEED)
        val[setting] = summary(evaluate(classify, episodes, S.device, desc=f"val {setting}"))
        episodes = fixed_test_episodes(n_way, k_shot, n_episodes=TEST_EPISODES)
        test[setting] = summary(evaluate(classify, episodes, S.device, desc=f"test {setting}"))
        print(f"{method.name} {multiple}x {setting}: val {val[setting]}, test {test[setting]}")
    steps = config.at(S.budget).steps
    entry = {
        "multiple": multiple,
        "steps": steps,
        "seconds": round(float(history.seconds), 1),
        "device": history.device,
        "config": config.at(S.budget).key(),
        "code": method_code(method),
        # the choices that are numbers or names (steps, copies), not SimpleShot's mean feature
        "choices": {k: v for k, v in choices.items() if isinstance(v, (int, float, str))},
        "val": val,
        "test": test,
    }
    return entry, (model, history)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", help="comma-separated method names (default: every trained one)")
    p.add_argument("--multiples", default="1,4,16", help="multiples of the quick steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="the JSON file (default benchmarks/results/curves/<budget>.json)")
    args = p.parse_args(argv)
    budget, METHODS, out = budget_registry_and_file(args.out, "curves")
    if budget != "quick":
        raise SystemExit("curves multiply the quick budget's steps: run with FEWSHOT_BUDGET=quick")
    trained = [n for n, m in METHODS.items() if m.run is not None and n not in LEFT_OUT]
    names = method_names(args.methods, trained) if args.methods else trained
    multiples = sorted({int(m) for m in args.multiples.split(",")})
    if not multiples or multiples[0] < 1:
        raise SystemExit(f"--multiples must be positive integers, got {args.multiples!r}")
    from utils.config import setup

    S = setup(seed=args.seed)
    result = json.loads(out.read_text()) if out.is_file() else {"meta": {}, "methods": {}}
    result["meta"] = {
        "budget": budget,
        "seed": args.seed,
        "val": f"{VAL_EPISODES} episodes of the unrotated val classes, seed {VAL_SEED}",
        "test": f"{TEST_EPISODES} fixed test episodes per setting",
        "protocol": "non-transductive",
    }
    made = provenance("curves", sys.argv[1:] if argv is None else argv, S.device)  # the start's
    weights = out.parent / "weights"
    shared: dict = {}  # (run, multiple) -> (model, history): a run that several methods share
    for name in names:
        method = METHODS[name]
        start = time.perf_counter()
        points = []
        for m in multiples:
            key = (method.run, m)
            entry, shared[key] = point(method, S, m, shared.get(key))
            points.append(entry)
            result["methods"][name] = {
                **made,
                "seconds": round(time.perf_counter() - start),
                "points": points,
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
        model = shared[(method.run, multiples[-1])][0]
        weights.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), weights / f"{method.run}-{multiples[-1]}x-seed{S.seed}.pt")
        print(f"{name}: {len(points)} points in {time.perf_counter() - start:.0f} s", flush=True)
    return result


if __name__ == "__main__":
    main()
