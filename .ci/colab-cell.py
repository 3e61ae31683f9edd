# Colab only: install the book's helpers, pinned (about 30 s). Elsewhere this cell does nothing.
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


if "google.colab" in sys.modules and not book_helpers_found():
    %pip install -q "{BOOK}"
    importlib.invalidate_caches()
    if not book_helpers_found():
        raise RuntimeError(
            f"{importlib.util.find_spec('utils').origin} hides the book's helpers "
            "(the package utils): rename that file, or work in another folder"
        )
