"""Budgets, device, seeds and the cache folder: the settings every chapter starts with."""

from __future__ import annotations

import ast
import ctypes
import hashlib
import inspect
import json
import os
import platform
import random
import sysconfig
import textwrap
import types
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

BUDGETS = ("quick", "full")
BUDGET_VAR = "FEWSHOT_BUDGET"
CACHE_VAR = "FEWSHOT_CACHE"
DEVICES = ("cpu", "cuda", "mps")  # the device types the book runs on; "cuda:1" picks a second GPU


def cache_dir() -> Path:
    """The book's cache folder (Omniglot's tensor, the saved runs): ``$FEWSHOT_CACHE``, else
    ``~/.cache/fewshot-book``; a path that cannot be a writable folder is refused with a
    ``RuntimeError`` that names it."""
    path = Path(os.environ.get(CACHE_VAR) or Path.home() / ".cache" / "fewshot-book")
    try:
        path.mkdir(parents=True, exist_ok=True)
        problem = None if os.access(path, os.W_OK) else "it is not writable"
    except OSError as err:
        problem = err.strerror or str(err)
    if problem:
        raise RuntimeError(
            f"the cache folder {path} (${CACHE_VAR}) cannot be used: {problem}; "
            f"point ${CACHE_VAR} at a writable folder, or unset it to use "
            "~/.cache/fewshot-book"
        )
    return path


def _available() -> list[str]:
    """This machine's devices, the best last: the CPU, then Apple's MPS, then every CUDA GPU."""
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    return ["cpu"] + ["mps"] * mps + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def default_device() -> torch.device:
    """CUDA when present, else Apple's MPS when present, else the CPU."""
    best = _available()[-1]
    return torch.device("cuda" if best.startswith("cuda") else best)


def check_device(device) -> torch.device:
    """``device`` as a ``torch.device``; a ``ValueError`` that lists this machine's devices when
    it is not one of :data:`DEVICES` or not available here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    available = _available()
    here = ", ".join(available)
    if dev is None or dev.type not in DEVICES:
        raise ValueError(
            f"unknown device {device!r}: allowed are {', '.join(DEVICES)} (or cuda:N for GPU N); "
            f"this machine has {here}, or leave device=None to pick the best of them"
        )
    if (f"cuda:{dev.index or 0}" if dev.type == "cuda" else dev.type) not in available:
        raise ValueError(
            f"device {device!r} is not available on this machine: it has {here}; pass one of "
            "them, or leave device=None to pick the best"
        )
    return dev


def no_tf32() -> None:
    """Float32 in float32 on a GPU: no TF32 (10-bit mantissas) in convolutions or matrix
    products, so that MAML's meta-gradient stays close to its exact value."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


# glibc's mallopt parameters, and the size up to which freed memory is kept for reuse
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
KEEP_FREED_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Let glibc's ``malloc`` keep freed blocks (up to :data:`KEEP_FREED_BYTES`) for the next
    tensors instead of handing them back, so that a training step's tensors do not come back as
    fresh pages that the kernel must zero (chapter 12). True where the C library is glibc (Linux,
    Colab); elsewhere it does nothing and returns False."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return bool(
        libc.mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BYTES)
        and libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
    )


@dataclass(frozen=True)
class Setup:
    """What a chapter runs with: budget, device and seed."""

    budget: str
    device: torch.device
    seed: int

    def pick(self, quick, full):
        """Return ``quick`` or ``full`` according to the budget."""
        return quick if self.budget == "quick" else full

    @property
    def n_test_episodes(self) -> int:
        """Test episodes per setting: 600 (the papers' protocol) at full budget, 200 at quick."""
        return self.pick(200, 600)

    def __str__(self) -> str:
        return (
            f"budget={self.budget}  device={self.device}  seed={self.seed}  "
            f"torch={torch.__version__}"
        )


def setup(seed: int = 0, budget: str | None = None, device: str | None = None) -> Setup:
    """Pick budget, device and seed, seed every generator, print them and return them.

    The budget: the argument, else ``$FEWSHOT_BUDGET``, else ``quick`` on every device (``full``,
    the papers' settings, only when asked). The device: the argument, else
    :func:`default_device`. Also :func:`no_tf32` and :func:`keep_freed_memory`.
    """
    dev = check_device(device) if device is not None else default_device()
    budget = budget or os.environ.get(BUDGET_VAR) or "quick"
    if budget not in BUDGETS:
        raise ValueError(
            f"unknown budget {budget!r}: allowed are {', '.join(BUDGETS)} "
            f"(argument or ${BUDGET_VAR})"
        )
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)  # Python's, NumPy's and PyTorch's generators (every device)
    np.random.seed(seed)
    torch.manual_seed(seed)
    no_tf32()
    keep_freed_memory()
    s = Setup(budget, dev, seed)
    print(s)
    if dev.type != "cpu" and budget == "quick":
        print(f"A {dev.type.upper()} is here: {BUDGET_VAR}=full trains with the papers' settings.")
    return s


class Budget(NamedTuple):
    """A setting's value at each budget, side by side: ``steps: int = Budget(quick=600,
    full=20_000)`` in a :class:`Config`."""

    quick: Any
    full: Any


@dataclass(frozen=True)
class Config:
    """The base of every method's settings: a frozen dataclass per method, in its chapter,
    whose fields hold a value or a :class:`Budget`. ``at(budget)`` gives one budget's values;
    ``key()`` names them, and keys the cached runs: a changed setting trains anew. A count below
    1 or a learning rate (``...lr``) at or below 0 is refused with a ``ValueError``.
    """

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            for v in value if isinstance(value, Budget) else (value,):
                if isinstance(v, bool):
                    continue
                if isinstance(v, int) and v < 1:
                    raise ValueError(
                        f"{type(self).__name__}.{f.name} = {v!r}: a count must be at least 1"
                    )
                if f.name.endswith("lr") and isinstance(v, (int, float)) and not v > 0:
                    raise ValueError(
                        f"{type(self).__name__}.{f.name} = {v!r}: a learning rate must be > 0"
                    )

    def at(self, budget: str) -> "Config":
        """The settings of ``budget`` (``"quick"`` or ``"full"``): every :class:`Budget` field
        replaced by its value there."""
        if budget not in BUDGETS:
            raise ValueError(f"unknown budget {budget!r}: allowed are {', '.join(BUDGETS)}")
        chosen = {
            f.name: getattr(getattr(self, f.name), budget)
            for f in fields(self)
            if isinstance(getattr(self, f.name), Budget)
        }
        return replace(self, **chosen)

    def key(self) -> str:
        """Eight hex digits that change whenever the class or any value of the settings does."""
        values = asdict(self)
        text = json.dumps([type(self).__name__, values], sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


CODE_MODULES = ("__main__", "utils.methods")  # where the methods' code lives


def _shape(obj) -> str:
    """``obj``'s source without docstrings, comments or formatting (parsed and unparsed), else
    (a lambda inside a call) its code's names and constants. A class is its bases, attributes
    and methods' shapes: the same in a notebook (no class source there) and in a module."""
    if inspect.isclass(obj):
        parts = [repr([b.__qualname__ for b in obj.__bases__])]
        parts += sorted(vars(obj).get("__annotations__", {}))  # field names, not their types
        for name, value in sorted(vars(obj).items()):
            f = getattr(value, "__func__", value)
            if inspect.isfunction(f) and not _generated(f):
                parts.append(f"{name}:{_shape(f)}")
            elif not name.startswith("__") and not callable(value):
                parts.append(f"{name}={value!r}")
        return "\n".join(parts)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError, SyntaxError):
        code = getattr(obj, "__code__", None)
        return (
            repr((code.co_names, [c for c in code.co_consts if not inspect.iscode(c)]))
            if code
            else ""
        )
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def code_key(*objects) -> str:
    """Eight hex digits that change when the code of ``objects`` (functions, classes, configs)
    changes, or that of any function or class of the chapters' code (:data:`CODE_MODULES`) they
    use, through calls, globals or closures. Docstrings, comments and formatting do not count."""
    seen, shapes, todo = set(), [], list(objects)
    while todo:
        obj = todo.pop()
        if isinstance(obj, Config):
            obj = type(obj)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or id(obj) in seen:
            continue
        if obj.__module__ not in CODE_MODULES or _generated(obj):
            continue
        seen.add(id(obj))
        shapes.append(f"{obj.__qualname__}:{_shape(obj)}")
        if inspect.isclass(obj):
            todo += list(obj.__bases__)  # a chapter's base class: its settings are inherited
        members = [obj] if inspect.isfunction(obj) else list(vars(obj).values())
        for f in members:
            f = getattr(f, "__func__", f)
            if not inspect.isfunction(f):
                continue
            todo += [c.cell_contents for c in f.__closure__ or () if _filled(c)]
            todo += list(vars(f).values())  # attributes (ProtoMAML's ``then``)
            codes = [f.__code__]
            while codes:
                code = codes.pop()
                todo += [f.__globals__[n] for n in code.co_names if n in f.__globals__]
                codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return hashlib.sha256("\n".join(sorted(shapes)).encode()).hexdigest()[:8]


def _generated(obj) -> bool:
    """Whether ``obj`` is a function written at run time or by the standard library (a
    dataclass's ``__init__``, Python 3.13's ``__replace__``): not the chapters' code."""
    if not inspect.isfunction(obj):
        return False
    file = obj.__code__.co_filename
    return file == "<string>" or file.startswith(_STDLIB)


_STDLIB = sysconfig.get_path("stdlib")  # where the standard library's files are


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # an empty cell
        return False
    return True
