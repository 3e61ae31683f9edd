"""Chapter 13's example folder, ``examples/glyphs/``: rendered glyphs, not handwriting.

Five mathematical symbols drawn black on white at 105x105 with the DejaVu fonts that matplotlib
ships: ``support/<class>/DejaVuSans.png``, and ``query/<class>/<font>.png`` in the eleven other
faces (one that draws the symbol exactly as another is left out). The same bytes on every run: a
test checks the committed folder; in Colab chapter 13 makes it with :func:`make`.

    python -m utils.glyphs [--out examples/glyphs]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import matplotlib
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "examples" / "glyphs"
SIZE = 105  # Omniglot's drawings are 105x105
FONT_SIZE = 64
SYMBOLS = {  # class folder -> character: mathematical operators, in every DejaVu face
    "circled-plus": "\u2295",
    "for-all": "\u2200",
    "infinity": "\u221e",
    "integral": "\u222b",
    "partial": "\u2202",
}
SUPPORT_FONT = "DejaVuSans"
QUERY_FONTS = (
    "DejaVuSans-Bold",
    "DejaVuSans-Oblique",
    "DejaVuSans-BoldOblique",
    "DejaVuSerif",
    "DejaVuSerif-Bold",
    "DejaVuSerif-Italic",
    "DejaVuSerif-BoldItalic",
    "DejaVuSansMono",
    "DejaVuSansMono-Bold",
    "DejaVuSansMono-Oblique",
    "DejaVuSansMono-BoldOblique",
)


def render(char: str, font: str) -> Image.Image:
    """``char`` in the DejaVu face ``font`` (a file name of matplotlib's fonts, without
    ``.ttf``), black on white, centred in a 105x105 grayscale image. A character that the face
    lacks (it would be drawn as an empty box) is refused with a ``ValueError``."""
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{font}.ttf"
    face = ImageFont.truetype(str(path), FONT_SIZE)
    from matplotlib.ft2font import FT2Font

    if FT2Font(str(path)).get_char_index(ord(char)) == 0:
        raise ValueError(f"{font} has no glyph for U+{ord(char):04X}")
    image = Image.new("L", (SIZE, SIZE), 255)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=face)
    x, y = (SIZE - (right - left)) // 2 - left, (SIZE - (bottom - top)) // 2 - top
    draw.text((x, y), char, fill=0, font=face)
    return image


def make(out: Path = OUT) -> list[Path]:
    """Write the example folder into ``out`` (its ``support/`` and ``query/`` replaced, nothing
    else touched); return the images written."""
    for part in ("support", "query"):
        shutil.rmtree(out / part, ignore_errors=True)
    written = []
    for name, char in SYMBOLS.items():
        made = set()  # the pixels of this symbol's images so far: a duplicate is left out
        for part, fonts in (("support", (SUPPORT_FONT,)), ("query", QUERY_FONTS)):
            folder = out / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for font in fonts:
                image = render(char, font)
                if image.tobytes() in made:
                    continue
                made.add(image.tobytes())
                path = folder / f"{font}.png"
                image.save(path, optimize=True)  # no metadata chunks
                written.append(path)
    (out / "README.md").write_text(
        "# Rendered glyphs, not handwriting\n\n"
        "Made by `python -m utils.glyphs`: five mathematical symbols drawn with the DejaVu\n"
        "fonts that matplotlib ships, the support set (`support/<class>/`) in DejaVu Sans, the\n"
        "query images (`query/<class>/<font>.png`) in those of the eleven other faces that draw\n"
        "the symbol differently (a face that draws it exactly as another is left out). Replace\n"
        "the folder with your own images, one subfolder per class.\n"
    )
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=OUT, help="folder to write (default: %(default)s)"
    )
    args = parser.parse_args()
    files = make(args.out)
    print(f"{len(files)} images in {args.out}")
