"""Prompt suites: the built-in set, PartiPrompts, DrawBench, GenEval, COCO captions and any prompt file.

Every builder returns a :class:`PromptSuite`: prompts in file order, each with a stable id
(``<suite>-<row index in the file>``, so ids survive ``limit`` and ``categories``) and a category.
Surrounding whitespace is stripped; empty prompts are left out (with a warning).
A suite file may be a local path or an http(s) URL, downloaded once into ``<cache_dir>/suites/``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import urllib.error
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import pandas as pd

from evalvae.checkpoints import download
from evalvae.errors import ConfigError, DatasetError, EvalvaeError, check_positive_int, error_reason
from evalvae.io import cache_dir as cache_root
from evalvae.io import sha256_file

log = logging.getLogger(__name__)

FORMATS = ("txt", "csv", "tsv", "jsonl")
PROMPT_COLUMNS = ("prompt", "Prompt", "caption", "text")
CATEGORY_COLUMNS = ("category", "Category", "tag")
NO_CATEGORY = "all"


class SuiteUnavailable(EvalvaeError):
    """A suite file could not be read or downloaded."""


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    category: str


@dataclass
class PromptSuite:
    name: str
    source: str
    sha256: str
    prompts: list[Prompt]
    filters: dict

    def __len__(self) -> int:
        return len(self.prompts)

    def describe(self) -> dict:
        cats = pd.Series([p.category for p in self.prompts]).value_counts(sort=False).to_dict()
        head = {"name": self.name, "source": self.source, "sha256": self.sha256, "n_prompts": len(self.prompts)}
        return {**head, "categories": {str(k): int(v) for k, v in cats.items()}, **self.filters}


def make_suite(
    name: str, source: str, sha256: str, rows: list[tuple[str, str]], categories=None, limit=None
) -> PromptSuite:
    """Number ``(text, category)`` rows, drop empty prompts, then filter by category and keep the first ``limit``."""
    width = max(4, len(str(max(len(rows) - 1, 0))))
    prompts = [
        Prompt(f"{name}-{i:0{width}d}", str(t).strip(), str(c).strip() or NO_CATEGORY) for i, (t, c) in enumerate(rows)
    ]
    empty = sum(1 for p in prompts if not p.text)
    if empty:
        log.warning("suite %s: %d empty prompt(s) left out", name, empty)
    prompts = [p for p in prompts if p.text]
    if categories is not None:
        wanted = [categories] if isinstance(categories, str) else list(categories)
        present = list(dict.fromkeys(p.category for p in prompts))
        unknown = [c for c in wanted if c not in present]
        if unknown:
            raise ConfigError("suite.categories", unknown if len(unknown) > 1 else unknown[0], present)
        prompts = [p for p in prompts if p.category in wanted]
    if limit is not None:
        check_positive_int("suite.limit", limit, "a positive integer, or null for every prompt")
        prompts = prompts[:limit]
    if not prompts:
        raise DatasetError(f"suite {name} ({source}) has no prompts")
    filters = {"categories_filter": None if categories is None else list(wanted), "limit": limit}
    return PromptSuite(name, source, sha256, prompts, filters)


def suite_file(path: str | None, argument: str, cache: str | None, suite: str) -> Path:
    """A local suite file, or a URL downloaded once into ``<cache>/suites/<url hash>/``."""
    if not path:
        raise ConfigError(argument, path, hint="give a local file or an http(s) URL")
    path = str(path)
    if path.startswith(("http://", "https://")):
        key = hashlib.sha256(path.encode()).hexdigest()[:16]
        dest = cache_root(cache) / "suites" / key / path.rstrip("/").rsplit("/", 1)[-1]
        try:
            return download(path, dest)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            raise SuiteUnavailable(
                f"suite {suite}: could not download {path} ({error_reason(e)}); fetch it where the network "
                f"allows and set {argument}=/path/to/file"
            ) from None
    local = Path(path).expanduser()
    if not local.is_file():
        raise ConfigError(argument, path, hint="this file does not exist")
    return local


def _column(frame: pd.DataFrame, given: str | None, candidates: tuple, argument: str, required: bool) -> str | None:
    if given is not None:
        if given not in frame.columns:
            raise ConfigError(argument, given, list(frame.columns))
        return given
    found = next((c for c in candidates if c in frame.columns), None)
    if found is None and required:
        raise ConfigError(argument, None, list(frame.columns), hint="name the column that holds the prompts")
    return found


def read_table(path: Path, fmt: str) -> pd.DataFrame:
    """A CSV (UTF-8, optional byte-order mark), TSV (no quoting: quotes are part of the prompt) or JSONL file."""
    try:
        text = dict(encoding="utf-8-sig", dtype=str, keep_default_na=False)
        if fmt == "csv":
            return pd.read_csv(path, **text)
        if fmt == "tsv":
            return pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, **text)
        with open(path, encoding="utf-8-sig") as f:
            return pd.DataFrame([json.loads(line) for line in f if line.strip()])
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as e:
        raise DatasetError(f"{path} is not a readable {fmt.upper()} file ({type(e).__name__}: {e})") from None


def _rows(frame: pd.DataFrame, column: str, category_column: str | None) -> list[tuple[str, str]]:
    cats = frame[category_column].fillna("").astype(str) if category_column else [NO_CATEGORY] * len(frame)
    return list(zip(frame[column].fillna("").astype(str), cats))


def file(
    path: str,
    column: str | None = None,
    category_column: str | None = None,
    format: str | None = None,
    categories=None,
    limit: int | None = None,
    name: str = "file",
    cache_dir: str | None = None,
) -> PromptSuite:
    """Prompts from a TXT (one per line, blank lines skipped), CSV, TSV or JSONL file.

    ``format`` defaults to the file suffix. ``column`` names the prompt column or JSON field
    (default: the first of prompt, Prompt, caption, text); ``category_column`` the category
    (default: category, Category or tag when present, else every prompt is in category ``all``).
    """
    local = suite_file(path, "suite.path", cache_dir, name)
    fmt = format or local.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ConfigError("suite.format", fmt, FORMATS, hint=f"cannot tell the format of {local.name} from its suffix")
    if fmt == "txt":
        rows = [(line, NO_CATEGORY) for line in local.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    else:
        frame = read_table(local, fmt)
        col = _column(frame, column, PROMPT_COLUMNS, "suite.column", required=True)
        cat = _column(frame, category_column, CATEGORY_COLUMNS, "suite.category_column", required=False)
        rows = _rows(frame, col, cat)
    return make_suite(name, str(path), sha256_file(local), rows, categories, limit)


def builtin(categories=None, limit: int | None = None, name: str = "builtin") -> PromptSuite:
    """evalvae's own 60 prompts in categories where decoders differ visibly (faces, text, hands, texture...)."""
    resource = files("evalvae.t2i").joinpath("builtin_prompts.csv")
    with resource.open("rb") as f:
        frame = pd.read_csv(f, dtype=str, keep_default_na=False)
    digest = hashlib.sha256(resource.read_bytes()).hexdigest()
    rows = _rows(frame, "prompt", "category")
    return make_suite(name, "evalvae/t2i/builtin_prompts.csv", digest, rows, categories, limit)


def parti(path: str, categories=None, limit: int | None = None, name="parti", cache_dir=None) -> PromptSuite:
    """PartiPrompts (TSV: Prompt, Category, Challenge, Note); category = Category."""
    return file(path, "Prompt", "Category", "tsv", categories, limit, name, cache_dir)


def drawbench(path: str, categories=None, limit: int | None = None, name="drawbench", cache_dir=None) -> PromptSuite:
    """DrawBench (CSV: Prompt, Category; the published file starts with a byte-order mark)."""
    return file(path, "Prompt", "Category", "csv", categories, limit, name, cache_dir)


def geneval(path: str, categories=None, limit: int | None = None, name="geneval", cache_dir=None) -> PromptSuite:
    """GenEval's evaluation metadata (JSONL with ``prompt`` and ``tag``); category = tag."""
    return file(path, "prompt", "tag", "jsonl", categories, limit, name, cache_dir)


def coco(path: str, categories=None, limit: int | None = None, name="coco", cache_dir=None) -> PromptSuite:
    """One caption per image from a COCO-format captions JSON: the first annotation (lowest id) of
    each image, images in ``file_name`` order (the order of the ``coco`` dataset)."""
    local = suite_file(path, "suite.path", cache_dir, name)
    try:
        doc = json.loads(local.read_text(encoding="utf-8"))
        first: dict[int, tuple[int, str]] = {}
        for ann in doc["annotations"]:
            if ann["image_id"] not in first or ann["id"] < first[ann["image_id"]][0]:
                first[ann["image_id"]] = (ann["id"], ann["caption"])
        images = sorted(doc["images"], key=lambda im: im["file_name"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DatasetError(f"{local} is not a COCO captions file ({type(e).__name__}: {e})") from None
    rows = [(first[im["id"]][1], NO_CATEGORY) for im in images if im["id"] in first]
    return make_suite(name, str(path), sha256_file(local), rows, categories, limit)
