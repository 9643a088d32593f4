"""``dataset=textchart``: rendered lines of known text at sizes from 6 to 64 px, with their boxes and strings.

A smoke-and-signal set for text fidelity, not a benchmark: it needs no download, runs at any
resolution and carries its ground truth (each sample's ``truth``: one
:class:`~evalvae.vocab.Region` per line, its box, its font size in px and its string).
The fonts are the DejaVu fonts matplotlib ships (``matplotlib/mpl-data/fonts/ttf``): DejaVu Sans,
Sans Bold, Serif and Sans Mono. Each font has one page per size group (6–7, 8–14, 16–24 and
32–64 px), filled top to bottom with lines of up to three random words (seeded by page and line) over the
letters and digits that no font confuses (no 0/O/o, 1/l/I/i), in one of four ink-on-paper colour
schemes; a last page (``blank``) holds no text. Pixels are Pillow's (FreeType) rendering, so the
images' digests, the cache keys, follow the rendered pixels.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evalvae.data.datasets import ImageDataset, ImageRecord, Sample
from evalvae.data.transforms import Geometry
from evalvae.errors import ConfigError, DatasetError, check_positive_int
from evalvae.vocab import Region

VERSION = 1  # bump when the layout or the strings change
FONTS = {
    "sans": "DejaVuSans.ttf",
    "sans-bold": "DejaVuSans-Bold.ttf",
    "serif": "DejaVuSerif.ttf",
    "mono": "DejaVuSansMono.ttf",
}
SIZE_GROUPS = ((6, 7), (8, 10, 12, 14), (16, 20, 24), (32, 48, 64))
WORDS = 3  # at most, per line (a recogniser's cost grows with a line's length)
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz23456789"
SCHEMES = (  # (ink, paper)
    ((0, 0, 0), (255, 255, 255)),
    ((255, 255, 255), (30, 40, 90)),
    ((120, 20, 20), (250, 240, 200)),
    ((20, 60, 20), (215, 230, 215)),
)


def font_dir() -> Path:
    """matplotlib's bundled TrueType fonts, found without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "dataset=textchart renders with matplotlib's bundled DejaVu fonts; matplotlib is not installed"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf"


@dataclass(frozen=True)
class Line:
    text: str
    x: int
    y: int
    size: int


@dataclass(frozen=True)
class Page:
    id: str
    font: str | None
    scheme: int
    lines: tuple[Line, ...]


def _words(rng: np.random.Generator):
    while True:
        yield "".join(rng.choice(list(ALPHABET), size=int(rng.integers(3, 7))))


def layout(resolution: int, fonts: Path) -> list[Page]:
    """Every page's lines at ``resolution``: as many lines as fit, cycling through the group's sizes."""
    from PIL import ImageFont

    pages = []
    margin = max(2, resolution // 32)
    for f, (font, file) in enumerate(FONTS.items()):
        for g, sizes in enumerate(SIZE_GROUPS):
            faces = {s: ImageFont.truetype(str(fonts / file), s) for s in sizes}
            lines, y, k = [], margin, 0
            while True:
                size = sizes[k % len(sizes)]
                ascent, descent = faces[size].getmetrics()
                if y + ascent + descent > resolution - margin:
                    break
                rng = np.random.default_rng([VERSION, f, g, k])
                text, words = "", _words(rng)
                for w in range(WORDS):
                    word = next(words)
                    while w == 0 and len(word) > 2 and margin + faces[size].getlength(word) > resolution - margin:
                        word = word[:-1]  # a first word too wide is cut short
                    if margin + faces[size].getlength(f"{text} {word}".strip()) > resolution - margin:
                        break
                    text = f"{text} {word}".strip()
                if text:
                    lines.append(Line(text, margin, y, size))
                y += ascent + descent + max(2, size // 3)
                k += 1
            pages.append(Page(f"{font}-{sizes[0]}-{sizes[-1]}px", font, (f + g) % len(SCHEMES), tuple(lines)))
    pages.append(Page("blank", None, 0, ()))
    return pages


def render(page: Page, resolution: int, fonts: Path) -> tuple[np.ndarray, list[Region]]:
    """A page's ``(R, R, 3)`` uint8 pixels and its lines as regions (box: the line's ink width by its
    ascent + descent, padded by 15% of the size, at least 1 px; size: the font size)."""
    from PIL import Image, ImageDraw, ImageFont

    ink, paper = SCHEMES[page.scheme]
    im = Image.new("RGB", (resolution, resolution), paper)
    if page.font is None:  # no text: a smooth gradient
        ramp = np.linspace(0, 1, resolution)[None, :, None] * np.linspace(1, 0.6, resolution)[:, None, None]
        return (ramp * np.array([200, 170, 120]) + 30).astype(np.uint8), []
    draw = ImageDraw.Draw(im)
    regions = []
    for line in page.lines:
        face = ImageFont.truetype(str(fonts / FONTS[page.font]), line.size)
        draw.text((line.x, line.y), line.text, fill=ink, font=face)
        left, _, right, _ = draw.textbbox((line.x, line.y), line.text, font=face)
        ascent, descent = face.getmetrics()
        pad = max(1, round(0.15 * line.size))
        x0, y0 = max(0, left - pad), max(0, line.y - pad)
        x1, y1 = min(resolution, right + pad), min(resolution, line.y + ascent + descent + pad)
        regions.append(Region.rect(x0, y0, x1, y1, line.size, line.text))
    return np.asarray(im, dtype=np.uint8).copy(), regions


class TextChart(ImageDataset):
    """The rendered pages, each sample with its ground-truth lines (``Sample.truth``)."""

    def __init__(self, resolution: int, limit: int | None, name: str):
        self.fonts = font_dir()
        missing = [f for f in FONTS.values() if not (self.fonts / f).is_file()]
        if missing:
            raise DatasetError(f"dataset=textchart: fonts {missing} not found in {self.fonts}")
        self.resolution = resolution
        self.pages = layout(resolution, self.fonts)
        if limit is not None:
            self.pages = self.pages[:limit]
        records = [ImageRecord(p.id, Path(f"textchart/{p.id}")) for p in self.pages]
        super().__init__(name, f"evalvae.data.textchart (DejaVu fonts in {self.fonts})", records, Geometry(resolution))

    def __getitem__(self, position: int) -> Sample:
        index = self.indices[position]
        pixels, truth = render(self.pages[index], self.resolution, self.fonts)
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        return Sample(index, self.records[index].id, image, truth=truth)

    def file_digests(self) -> list[str]:
        """sha256 of each page's pixels and ground truth (the pages are rendered, not read)."""
        if getattr(self, "_file_digests", None) is None:
            digests = []
            for page in self.pages:
                pixels, truth = render(page, self.resolution, self.fonts)
                h = hashlib.sha256(pixels.tobytes())
                h.update(json.dumps([r.to_dict() for r in truth]).encode())
                digests.append(h.hexdigest())
            self._file_digests = digests
        return self._file_digests

    def describe(self) -> dict:
        sizes = sorted({line.size for p in self.pages for line in p.lines})
        out = {"name": self.name, "root": self.root, "n_files": len(self.records)}
        out |= {"generator": f"evalvae.data.textchart v{VERSION}", "resolution": self.resolution}
        out |= {"resize": "none (rendered at the resolution)", "fonts": dict(FONTS), "sizes_px": sizes}
        return out | {"n_lines": sum(len(p.lines) for p in self.pages)}


def textchart(
    resolution: int = 256,
    crop: str = "center",
    small: str = "upscale",
    limit: int | None = None,
    name: str = "textchart",
) -> TextChart:
    """The text chart rendered at ``resolution`` x ``resolution`` (``crop`` and ``small`` have nothing to act on)."""
    if crop != "center":
        raise ConfigError("dataset.crop", crop, ("center",), hint="textchart is rendered at dataset.resolution")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 32:
        raise ConfigError("dataset.resolution", resolution, hint="an integer of at least 32 pixels")
    if limit is not None:
        check_positive_int("dataset.limit", limit, "a positive integer, or null for all pages")
    del small
    return TextChart(resolution, limit, name)
