import inspect
import math

import numpy as np
import pytest
import torch

from utils.episodes import N_QUERY, Episodes, fixed_test_episodes
from utils.evaluate import Accuracy, evaluate, evaluate_along, mean_ci95
from utils.methods import results_table
from test_episodes import numbered_classes


def test_confidence_interval_formula():
    v = [0.5, 0.7, 0.9, 1.0]
    mean, half = mean_ci95(v)
    sample_std = math.sqrt(sum((x - 0.775) ** 2 for x in v) / 3)
    assert mean == pytest.approx(0.775)
    assert half == pytest.approx(3.182446 * sample_std / 2)  # Student's t, 3 degrees of freedom


def test_t_quantiles_of_the_tables():
    from utils.evaluate import t_quantile_975

    for df, t in ((1, 12.7062), (3, 3.1824), (30, 2.0423), (120, 1.9799)):  # printed tables
        assert t_quantile_975(df) == pytest.approx(t, abs=1e-4), df
    with pytest.raises(ValueError, match="at least 1, got 0"):
        t_quantile_975(0)


def test_interval_edge_cases():
    assert math.isnan(mean_ci95([0.3])[1])
    assert mean_ci95([1.0, 1.0, 1.0]) == (1.0, 0.0)
    with pytest.raises(ValueError, match="at least one value"):
        mean_ci95([])


def oracle(support, support_labels, query):
    """Knows the numbered images: class of a query = the label of the support of its class."""
    s_class, q_class = support[:, 0, 0, 0] // 20, query[:, 0, 0, 0] // 20
    return torch.stack([support_labels[s_class == c][0] for c in q_class])


def test_evaluate_scores_and_labels():
    episodes = Episodes(numbered_classes(), 4, 1, 3, 5)
    perfect = evaluate(oracle, episodes)
    assert perfect.mean == 100 and perfect.ci95 == 0 and len(perfect.per_episode) == 5
    # scores instead of labels: the argmax is taken; always predicting class 0 scores 1/N
    constant = evaluate(lambda s, y, q: torch.eye(4)[[0] * len(q)], episodes)
    assert constant.mean == pytest.approx(25)
    assert str(perfect) == "100.00 ± 0.00 %"


def test_evaluate_along_scores_every_choice_of_one_call_per_episode():
    """evaluate_along: one call per episode, each choice's accuracy as evaluate gives it alone."""
    episodes = Episodes(numbered_classes(), 4, 1, 3, 5)
    calls = []

    def along(support, support_labels, query, choices):
        calls.append(choices)
        answers = {"oracle": oracle(support, support_labels, query)}
        answers["class 0"] = torch.eye(4)[[0] * len(query)]
        return {c: answers[c] for c in choices if c in answers}

    found = evaluate_along(along, ("oracle", "class 0"), episodes)
    assert list(found) == ["oracle", "class 0"] and len(calls) == 5
    assert found["oracle"].per_episode.tolist() == evaluate(oracle, episodes).per_episode.tolist()
    assert found["class 0"].mean == pytest.approx(25)
    with pytest.raises(ValueError, match=r"not for \['nearest'\]: it must answer every one"):
        evaluate_along(along, ("oracle", "nearest"), episodes)
    with pytest.raises(ValueError, match=r"classify returned shape \[12, 3\]"):
        evaluate_along(lambda s, y, q, c: {"x": torch.zeros(len(q), 3)}, ("x",), episodes)


def test_results_table():
    acc = Accuracy(np.array([0.9, 1.0]))
    table = results_table(
        {"ours": {"5-way 1-shot": acc}}, paper={"ours": {"5-way 1-shot": 98.8}}, cite="Snell"
    )
    lines = table.splitlines()
    assert lines[0] == "| method | 5-way 1-shot |"
    assert lines[2] == f"| ours | {acc} |" and lines[3] == "| ours (Snell) | 98.8 % |"
    assert lines[5].startswith("*Protocol (chapter 1): ours on 2 fixed test episodes")
    # the query count it states is the one the fixed test episodes use, not a typed number
    assert f"of {N_QUERY} query images per class" in lines[5]
    assert inspect.signature(fixed_test_episodes).parameters["n_query"].default == N_QUERY
    assert "Protocol" not in results_table({"ours": {"5-way 1-shot": acc}})  # no paper, no note


def test_choose_on_validation_takes_the_first_choice_as_good_as_the_best(real):
    from utils.evaluate import choose_on_validation

    # "guess" scores 1/5 by chance; "nearest" classifies by the nearest support image
    def make(choice):
        def classify(support, support_labels, query):
            if choice == "guess":
                return torch.zeros(len(query), dtype=torch.long)
            return support_labels[torch.cdist(query.flatten(1), support.flatten(1)).argmin(1)]

        return classify

    chosen, scores = choose_on_validation(
        make, ["guess", "nearest", "nearest again"], n_episodes=20
    )
    assert chosen == "nearest" and list(scores) == ["guess", "nearest", "nearest again"]
    assert scores["guess"].mean == pytest.approx(20.0) and scores["nearest"].mean > 30
    with pytest.raises(ValueError, match="at least one choice"):
        choose_on_validation(make, [], n_episodes=2)


def test_choosing_steps_along_one_adaptation_is_choosing_each_alone(real):
    """choose_steps_on_validation (one call per episode, scored after each count) gives the
    scores of choose_on_validation (a classifier per count), on the same validation episodes,
    and chooses the most accurate count, the fewer steps on a tie: here a toy rule whose
    "steps" blur the pixels' nearest class mean."""
    from utils.evaluate import choose_on_validation, choose_steps_on_validation
    from utils.methods import pixel_nearest_class_mean

    def after(k, support, labels, query):
        return pixel_nearest_class_mean(support + k * 0.3, labels, query)

    def along(support, labels, query, steps):
        return {k: after(k, support, labels, query) for k in steps}

    one = choose_steps_on_validation(along, (0, 1, 2), n_episodes=3)
    each = choose_on_validation(lambda k: lambda *ep: after(k, *ep), (0, 1, 2), 3)
    assert list(one[1]) == list(each[1]) == [0, 1, 2]
    for k in (0, 1, 2):
        assert one[1][k].per_episode.tolist() == each[1][k].per_episode.tolist()
    assert one[0] == max((0, 1, 2), key=lambda k: (one[1][k].mean, -k))
    tied = choose_steps_on_validation(
        lambda s, y, q, steps: {k: after(0, s, y, q) for k in steps}, (0, 1, 2), n_episodes=3
    )
    assert tied[0] == 0  # equal accuracy: the fewest steps
    with pytest.raises(ValueError, match="numbers of steps"):
        choose_steps_on_validation(along, (-1, 2), n_episodes=2)


def test_paired_difference():
    from utils.evaluate import Accuracy, mean_ci95
    from utils.methods import paired_difference

    a, b = Accuracy(np.array([0.9, 0.8, 1.0, 0.7])), Accuracy(np.array([0.8, 0.8, 0.9, 0.5]))
    d, h = paired_difference(a, b)
    mean, half = mean_ci95(np.array([0.1, 0.0, 0.1, 0.2]))
    assert d == pytest.approx(100 * mean) and h == pytest.approx(100 * half)
    with pytest.raises(ValueError, match="same episodes, got 4 and 3"):
        paired_difference(a, Accuracy(np.array([0.1, 0.2, 0.3])))


def test_compare_says_which_is_better_or_that_no_difference_shows():
    from utils.evaluate import Accuracy
    from utils.methods import compare

    a = Accuracy(np.array([1.0, 0.9, 1.0, 0.8, 1.0, 0.9]))
    worse = Accuracy(a.per_episode - 0.1)  # 10 points lower on every episode: interval 0
    assert compare(a, worse, "A", "B") == (
        "A - B: +10.0 ± 0.0 points (paired, 6 episodes): A is better"
    )
    assert compare(worse, a, "B", "A").endswith("A is better")
    noisy = Accuracy(a.per_episode + np.array([0.1, -0.1, 0.0, 0.1, -0.1, 0.0]))
    assert compare(noisy, a).endswith("no difference shows at this number of episodes")
    # episodes of two kinds: the intervals combined
    short = Accuracy(np.array([0.2, 0.3]))
    text = compare(a, short, "A", "C", paired=False)
    assert "(6 and 2 episodes)" in text and text.endswith("A is better")
