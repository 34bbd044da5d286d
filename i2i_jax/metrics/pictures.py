"""Captioned pictures of the evaluators, drawn with PIL (no pyplot) and written atomically.

The flip and detail sections draw their image panels with a caption that says
what they show; this holds the text drawing and the PNG writing they share.
"""

from collections.abc import Sequence

from etils import epath
import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

from i2i_jax import storage

FONT_SIZE = 14
MARGIN = 4  # pixels around a block of text


def write_png(path: epath.PathLike, image: np.ndarray) -> None:
  """Writes a [H, W, 3] uint8 PNG atomically (`storage.atomic_write`; gs:// too)."""
  with storage.atomic_write(path) as f:
    Image.fromarray(image).save(f, format="PNG")


def font():
  """A scalable font where Pillow has FreeType (>= 10.1), else its small bitmap font."""
  try:
    return ImageFont.load_default(size=FONT_SIZE)
  except (TypeError, ImportError, OSError):
    return ImageFont.load_default()


def line_height(text_font) -> int:
  """Pixels from one line of `text_font` to the next."""
  return text_font.getbbox("Ag")[3] + 4


def wrap(text: str, text_font, width: int) -> list[str]:
  """Splits `text` at spaces into lines no wider than `width` pixels (a longer word stays whole)."""
  measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  lines, line = [], ""
  for word in text.split(" "):
    candidate = f"{line} {word}" if line else word
    if line and measure.textlength(candidate, font=text_font) > width:
      lines.append(line)
      candidate = word
    line = candidate
  return lines + [line]


def text_block(lines: Sequence[str], width: int, min_height: int = 0) -> np.ndarray:
  """`lines`, each wrapped to `width`, in black on white.

  Returns:
    [max(text height, min_height), width, 3] uint8, the text from the top left
    with a MARGIN-pixel border.
  """
  text_font = font()
  step = line_height(text_font)
  wrapped = [part for line in lines for part in wrap(line, text_font, width - 2 * MARGIN)]
  block = Image.new("RGB", (width, max(min_height, 2 * MARGIN + len(wrapped) * step)), "white")
  draw = ImageDraw.Draw(block)
  for number, line in enumerate(wrapped):
    draw.text((MARGIN, MARGIN + number * step), line, fill="black", font=text_font)
  return np.asarray(block)
