# Colab only: install the book's helpers and learn2learn, pinned (a few minutes, once per session). Elsewhere this cell does nothing.
import importlib.util, os, sys
BOOK = os.environ.get("FEWSHOT_BOOK_SPEC") or "git+https://github.com/fewshot-book/fewshot-book@v0.1.0"
if "google.colab" in sys.modules:
    if importlib.util.find_spec("utils") is None:
        %pip install -q "{BOOK}"
    if importlib.util.find_spec("learn2learn") is None:
        # learn2learn 0.2.0's C files predate Python 3.11: rebuild them with today's Cython (pip >= 23.3).
        # --no-deps: its qpth would downgrade Colab's numpy; importing it needs only gym, requests and scipy.
        %pip install -q "pip>=24" cython setuptools wheel gym requests scipy
        %pip install -q --no-deps --no-build-isolation learn2learn==0.2.0 --config-settings="--build-option=build_ext"
