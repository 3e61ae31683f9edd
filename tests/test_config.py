import platform
import resource

import pytest
import torch

from utils import config
from utils.config import cache_dir, keep_freed_memory, no_tf32, setup


def test_budget_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("FEWSHOT_BUDGET", "full")
    s = setup(seed=3, device="cpu")
    assert (s.budget, s.seed, s.device.type) == ("full", 3, "cpu")
    assert s.pick(quick=1, full=2) == 2 and s.n_test_episodes == 600
    assert "budget=full" in capsys.readouterr().out  # every chapter prints what it runs with


def test_argument_beats_environment_and_quick_is_the_cpu_default(monkeypatch):
    monkeypatch.setenv("FEWSHOT_BUDGET", "full")
    assert setup(budget="quick", device="cpu").pick(1, 2) == 1
    monkeypatch.delenv("FEWSHOT_BUDGET")
    assert setup(device="cpu").budget == "quick"


def test_quick_is_the_default_on_a_gpu_too_which_says_how_to_ask_for_full(monkeypatch, capsys):
    monkeypatch.delenv("FEWSHOT_BUDGET", raising=False)
    monkeypatch.setattr(config, "default_device", lambda: torch.device("cuda"))
    assert setup().budget == "quick"
    assert "FEWSHOT_BUDGET=full" in capsys.readouterr().out
    monkeypatch.setattr(config, "default_device", lambda: torch.device("cpu"))
    setup()
    assert "FEWSHOT_BUDGET=full" not in capsys.readouterr().out  # nothing to offer on a CPU


def test_bad_budget_and_seed(monkeypatch):
    with pytest.raises(ValueError, match="unknown budget 'fast': allowed are quick, full"):
        setup(budget="fast")
    monkeypatch.setenv("FEWSHOT_BUDGET", "slow")
    with pytest.raises(ValueError, match="'slow'"):
        setup()
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        setup(seed=-1, budget="quick")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_keep_freed_memory_reuses_freed_blocks():
    """Steps of 40 MB tensors (above glibc's largest adaptive threshold, 32 MiB, so each one is
    unmapped when freed and its 9,766 pages fault in anew: 29,298 a step) reuse freed memory."""
    assert keep_freed_memory() is True
    x = torch.rand(10_000_000)

    def faults_of_a_step():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        ((x * 2).relu() + 1).sum()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    assert min(faults_of_a_step() for _ in range(8)) < 1000


def test_keep_freed_memory_elsewhere_and_in_setup(monkeypatch):
    """Not glibc (macOS, Windows): nothing to set, False. ``setup`` calls it."""
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert keep_freed_memory() is False
    calls = []
    monkeypatch.setattr(config, "keep_freed_memory", lambda: calls.append(1) or True)
    setup(budget="quick", device="cpu")
    assert calls == [1]


def test_seeding_makes_runs_repeatable():
    setup(seed=7, budget="quick")
    a = torch.rand(3)
    setup(seed=7, budget="quick")
    assert torch.equal(a, torch.rand(3))


def test_setup_leaves_no_tf32(monkeypatch):
    """``setup`` (through ``no_tf32``) turns TF32 off where PyTorch allows it by default."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    matmul = torch.backends.cuda.matmul  # a flag object that monkeypatch cannot restore
    before, matmul.allow_tf32 = matmul.allow_tf32, True
    try:
        setup(budget="quick", device="cpu")
        assert torch.backends.cudnn.allow_tf32 is False
        assert matmul.allow_tf32 is False
    finally:
        matmul.allow_tf32 = before
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    no_tf32()
    assert torch.backends.cudnn.allow_tf32 is False


def test_cache_dir_follows_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and cache_dir().is_dir()


def test_a_config_holds_both_budgets_and_resolves_one():
    from dataclasses import dataclass, replace

    from utils.config import Budget, Config

    @dataclass(frozen=True)
    class Toy(Config):
        steps: int = Budget(quick=3, full=30)
        lr: float = 0.1
        name: str = "a"

    quick, full = Toy().at("quick"), Toy().at("full")
    assert (quick.steps, full.steps, quick.lr) == (3, 30, 0.1)
    assert quick.at("full") == quick  # resolved values stay
    assert quick.key() == Toy().at("quick").key() and len(quick.key()) == 8
    assert replace(quick, steps=4).key() != quick.key()  # a changed value, a new key
    assert replace(quick, name="b").key() != quick.key()
    with pytest.raises(ValueError, match="unknown budget 'slow'"):
        Toy().at("slow")
    with pytest.raises(ValueError, match=r"Toy.steps = 0: a count must be at least 1"):
        Toy(steps=0)
    with pytest.raises(ValueError, match=r"Toy.steps = -2: a count must be at least 1"):
        Toy(steps=Budget(quick=1, full=-2))
    with pytest.raises(ValueError, match=r"Toy.lr = 0.0: a learning rate must be > 0"):
        Toy(lr=0.0)


def test_code_key_follows_the_code_a_method_uses(tmp_path, monkeypatch):
    """The key changes when a function or a helper it calls changes (or one in its closure), not
    when a docstring, a comment or the formatting does; code outside the chapters' is not read."""
    import importlib.util

    def module(name, text):
        (tmp_path / f"{name}.py").write_text(text)
        spec = importlib.util.spec_from_file_location(name, tmp_path / f"{name}.py")
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        return m

    base = "def helper(x):\n    return x + 1\n\n\ndef train(x):\n    return helper(x)\n"
    same = 'def helper(x):\n    """Adds one."""\n    return (x +\n 1)  # one\n\n\n'
    same += "def train(x):\n    return helper(x)\n"
    other = base.replace("x + 1", "x + 2")
    closure = "def make(inner):\n    def f(x):\n        return inner(x)\n\n    return f\n"
    a, b, c, d = (module(n, t) for n, t in zip("abcd", (base, same, other, closure)))
    monkeypatch.setattr(config, "CODE_MODULES", ("a", "b", "c", "d"))
    assert config.code_key(a.train) == config.code_key(b.train)  # docstring, comment, format
    assert config.code_key(a.train) != config.code_key(c.train)  # the helper changed
    assert config.code_key(d.make(a.helper)) != config.code_key(d.make(c.helper))  # the closure
    monkeypatch.setattr(config, "CODE_MODULES", ())
    assert config.code_key(a.train) == config.code_key(c.train) == config.code_key()


def test_code_key_follows_the_settings_a_class_inherits(tmp_path, monkeypatch):
    """A chapter's settings that extend another chapter's (chapter 10's hallucination settings
    extend chapter 5's) change key when the settings they inherit change."""
    text = (
        "from dataclasses import dataclass\n\n\n@dataclass(frozen=True)\nclass Base:\n"
        "    lr: float = 0.1\n\n\n@dataclass(frozen=True)\nclass More(Base):\n    m: int = 5\n"
    )
    monkeypatch.setattr(config, "CODE_MODULES", ("__main__",))
    keys = []
    for t in (text, text.replace("0.1", "0.3")):
        namespace = {"__name__": "__main__"}
        exec(compile(t, str(tmp_path / "cell.py"), "exec"), namespace)
        keys.append(config.code_key(namespace["More"]))
    assert keys[0] != keys[1]


def test_code_key_of_a_notebooks_class_is_the_modules(tmp_path, monkeypatch):
    """A class defined in a notebook (its source in linecache, as IPython keeps a cell's, but
    no module file to read a class from) has the key of the same class in a module: a record
    saved by a chapter is read by the generated module's code as its own."""
    import importlib.util
    import linecache

    text = (
        "from dataclasses import dataclass\n\n\n@dataclass(frozen=True)\nclass Settings:\n"
        "    steps: int = 3\n    lr: float = 0.1\n\n    def twice(self):\n"
        "        return 2 * self.steps\n"
    )
    (tmp_path / "m.py").write_text(text)
    spec = importlib.util.spec_from_file_location("m", tmp_path / "m.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cell = "<ipython-input-1>"
    linecache.cache[cell] = (len(text), None, text.splitlines(True), cell)
    notebook = {"__name__": "__main__"}
    exec(compile(text, cell, "exec"), notebook)
    monkeypatch.setattr(config, "CODE_MODULES", ("m", "__main__"))
    assert config.code_key(notebook["Settings"]) == config.code_key(module.Settings)
    other = {"__name__": "__main__"}
    exec(compile(text.replace("= 3", "= 4"), cell, "exec"), other)
    assert config.code_key(other["Settings"]) != config.code_key(module.Settings)


def test_code_key_leaves_out_what_the_standard_library_puts_in_a_class(tmp_path, monkeypatch):
    """A dataclass's ``__repr__`` comes from dataclasses.py under Python 3.11 and reprlib.py
    under 3.13, which also adds ``__replace__``: neither is the chapters' code, so the key is
    the same under every Python (else Colab's 3.13 would train again the runs that CI's 3.11
    saved). A method the chapter writes still counts."""
    import dataclasses

    namespace = {"__name__": "__main__"}
    text = "from dataclasses import dataclass\n\n@dataclass\nclass Settings:\n    steps: int = 3\n"
    exec(compile(text, str(tmp_path / "cell.py"), "exec"), namespace)
    settings = namespace["Settings"]
    monkeypatch.setattr(config, "CODE_MODULES", ("__main__",))
    key = config.code_key(settings)
    settings.__replace__ = dataclasses.replace  # what Python 3.13's dataclasses adds
    settings.__repr__ = dataclasses.asdict
    assert config.code_key(settings) == key
    settings.twice = lambda self: 2 * self.steps  # the chapter's own code
    assert config.code_key(settings) != key
