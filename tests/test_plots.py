import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from utils.episodes import Episodes  # noqa: E402
from utils.methods import bar_with_ci, plot_history, show_episode, show_images  # noqa: E402
from test_episodes import numbered_classes  # noqa: E402


def test_show_episode_draws_one_row_per_class():
    fig = show_episode(Episodes(numbered_classes(), 3, 2, 4, 1)[0], max_query=2)
    assert len(fig.axes) == 3 * (2 + 2)
    assert fig.axes[0].get_title() == "support" and fig.axes[3].get_title() == "query"
    plt.close(fig)


def test_show_images_titles_and_grid():
    axes = show_images(torch.rand(7, 1, 28, 28), titles=list("abcdefg"), ncols=4)
    assert len(axes) == 8 and axes[6].get_title() == "g"
    plt.close("all")


def test_plot_history_one_panel_per_metric():
    fig = plot_history({"loss": [3, 2, 1] * 20, "acc": [0.1, 0.5, 0.9] * 20})
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "acc"]
    plt.close(fig)


def test_bar_with_ci_has_error_bars():
    ax = bar_with_ci(["a", "b"], [90.0, 95.0], [1.0, 0.5])
    assert len(ax.patches) == 2 and [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    plt.close("all")
