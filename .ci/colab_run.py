"""Execute a notebook the way Colab would, for .ci/colab-check (runs in the check's venv of
Colab's Python).

python colab_run.py build CHAPTER.ipynb OUT.ipynb [--cell FILE] [--only-first] [--extra CODE]
    copy a chapter; with --cell, its first code cell is replaced by FILE's text;
    with --only-first, keep just that cell (and --extra code cells after it)
python colab_run.py exec NB.ipynb OUT.ipynb [--colab] [--timeout S]
    run it in a fresh kernel of this interpreter, in NB's folder; with --colab, the kernel
    starts the way Colab's does, with `google.colab` imported (a stand-in package put on
    PYTHONPATH). Prints one line per code cell with its wall time, and `first_cell_s=...`,
    `total_s=...`; fails on the first error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbformat


def build(args) -> None:
    nb = nbformat.read(args.chapter, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code:
        sys.exit(f"{args.chapter}: no code cell")
    first = code[0]
    if args.cell:
        first.source = Path(args.cell).read_text().rstrip("\n")
    if "google.colab" not in first.source:
        sys.exit(
            f"{args.chapter}: the first code cell does not look for Colab "
            f"(google.colab):\n{first.source}"
        )
    if "FEWSHOT_BOOK_SPEC" not in first.source:
        sys.exit(
            f"{args.chapter}: the first code cell does not read FEWSHOT_BOOK_SPEC, so this check "
            f"cannot point its install at the local checkout:\n{first.source}"
        )
    if args.only_first:
        nb.cells = [first] + [nbformat.v4.new_code_cell(x) for x in args.extra]
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nbformat.write(nb, args.out)


def _seconds(cell) -> float | None:
    t = cell.get("metadata", {}).get("execution", {})
    a, b = t.get("iopub.execute_input"), t.get("shell.execute_reply")
    if not (a and b):
        return None

    def parse(stamp):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    return (parse(b) - parse(a)).total_seconds()


def execute(args) -> None:
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb_path = Path(args.nb).resolve()
    nb = nbformat.read(nb_path, as_version=4)
    extra = []
    env = dict(os.environ)
    if args.colab:
        fake = Path(tempfile.mkdtemp(prefix="fake-colab-"))
        (fake / "google" / "colab").mkdir(parents=True)  # `google` stays a namespace package
        (fake / "google" / "colab" / "__init__.py").write_text(
            '"""Stand-in for Colab\'s package."""\n'
        )
        env["PYTHONPATH"] = str(fake)
        extra = ["--IPKernelApp.exec_lines=import google.colab"]  # Colab's kernel has it imported
    else:
        env.pop("PYTHONPATH", None)

    class Client(NotebookClient):  # the kernel gets `env`
        async def async_start_new_kernel(self, **kw):
            kw["env"] = env
            return await super().async_start_new_kernel(**kw)

    # this interpreter's kernel, whatever other "python3" kernels the machine has
    spec = Path(tempfile.mkdtemp(prefix="kernelspec-"))
    (spec / "kernels" / "python3").mkdir(parents=True)
    (spec / "kernels" / "python3" / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3",
                "language": "python",
            }
        )
    )
    os.environ["JUPYTER_PATH"] = str(spec)

    client = Client(
        nb,
        timeout=args.timeout,
        kernel_name="python3",
        allow_errors=False,
        extra_arguments=extra,
        resources={"metadata": {"path": str(nb_path.parent)}},
        record_timing=True,
    )
    t0 = time.perf_counter()
    failed = None
    try:
        client.execute()
    except CellExecutionError as err:
        failed = err
    total = time.perf_counter() - t0
    nbformat.write(nb, args.out)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, c in enumerate(code):
        s = _seconds(c)
        head = c.source.strip().splitlines()[0][:70] if c.source.strip() else ""
        print(f"  cell {i + 1:2d}: {'-' if s is None else f'{s:7.1f} s'}  {head}")
        if i == 0:
            for o in c.outputs:
                text = o.get("text") or "".join(o.get("data", {}).get("text/plain", ""))
                lines = [
                    x
                    for x in str(text).strip().splitlines()
                    if "neither a file nor a directory" not in x
                ]
                for line in lines[-15:]:
                    print(f"           | {line}")
    if failed:
        print(failed, file=sys.stderr)
        sys.exit(f"FAILED: {nb_path.name} stopped with an error (executed copy: {args.out})")
    first = _seconds(code[0]) if code else None
    print(f"first_cell_s={first if first is not None else 'nan'}")
    print(f"total_s={total:.1f}")


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("chapter")
    b.add_argument("out")
    b.add_argument("--cell")
    b.add_argument("--only-first", action="store_true")
    b.add_argument("--extra", action="append", default=[])
    e = sub.add_parser("exec")
    e.add_argument("nb")
    e.add_argument("out")
    e.add_argument("--colab", action="store_true")
    e.add_argument("--timeout", type=int, default=1800)
    args = p.parse_args()
    build(args) if args.cmd == "build" else execute(args)


if __name__ == "__main__":
    main()
