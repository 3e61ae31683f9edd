# Colab only: install the book's helpers and learn2learn, pinned (a few minutes, once per session).
# Elsewhere this cell does nothing.
import importlib
import importlib.util
import os
import sys

BOOK = (
    os.environ.get("FEWSHOT_BOOK_SPEC") or "git+https://github.com/fewshot-book/fewshot-book@v0.1.0"
)


def book_helpers_found():  # the book's package `utils`, not any other module of that name
    try:
        return importlib.util.find_spec("utils.episodes") is not None
    except ModuleNotFoundError:  # a `utils` that is not a package: someone's own utils.py
        return False


if "google.colab" in sys.modules:
    if not book_helpers_found():
        %pip install -q "{BOOK}"
        importlib.invalidate_caches()
        if not book_helpers_found():
            raise RuntimeError(
                f"{importlib.util.find_spec('utils').origin} hides the book's "
                "helpers (the package utils): rename that file, or work elsewhere"
            )
    if importlib.util.find_spec("learn2learn") is None:
        # learn2learn 0.2.0's C files predate Python 3.11: rebuild them with today's Cython.
        # --no-deps: its qpth would downgrade Colab's numpy; importing it needs only gym,
        # requests and scipy.
        %pip install -q "pip>=24" cython setuptools wheel gym requests scipy
        L2L = "learn2learn==0.2.0 --config-settings=--build-option=build_ext"
        %pip install -q --no-deps --no-build-isolation {L2L}
