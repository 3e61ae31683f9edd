"""Serve MathJax from the book itself, so that its equations render without the internet.

Sphinx loads MathJax from a CDN by default: offline (``make serve`` on a train, the browser
check in CI) every equation stays raw TeX. The MathJax 3 files come from PyPI's
``django-static-mathjax`` (MathJax's own ``es5`` build, nothing of Django is imported); this
extension points ``mathjax_path`` at ``_static/mathjax/`` and copies the files there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

MATHJAX_JS = "tex-chtml.js"


def mathjax_files() -> Path:
    """The folder of MathJax's ``es5`` build shipped by ``django-static-mathjax``."""
    try:
        import mathjax
    except ImportError as err:
        raise RuntimeError(
            "offline_mathjax: the package django-static-mathjax is missing "
            "(make env installs it; or pip install django-static-mathjax)"
        ) from err
    folder = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (folder / MATHJAX_JS).is_file():
        raise RuntimeError(
            f"offline_mathjax: {folder / MATHJAX_JS} not found in django-static-mathjax"
        )
    return folder


def _use_local(app, config) -> None:
    config.mathjax_path = f"mathjax/{MATHJAX_JS}"  # relative to the built book's _static/


def _copy(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        shutil.copytree(
            mathjax_files(), Path(app.outdir) / "_static" / "mathjax", dirs_exist_ok=True
        )


def setup(app):
    mathjax_files()  # fail at start, with the reason, rather than after the build
    app.connect("config-inited", _use_local)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
