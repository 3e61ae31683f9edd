# Colab only: install the book's helpers, pinned (about 30 s). Elsewhere this cell does nothing.
import importlib.util, os, sys
BOOK = os.environ.get("FEWSHOT_BOOK_SPEC") or "git+https://github.com/fewshot-book/fewshot-book@v0.1.0"
if "google.colab" in sys.modules and importlib.util.find_spec("utils") is None:
    %pip install -q "{BOOK}"
