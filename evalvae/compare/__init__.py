"""Regression gates: compare results against a committed baseline (``evalvae compare``)."""

from evalvae.compare.baseline import Snapshot, load_snapshot, merge, write_baseline
from evalvae.compare.comparison import Comparison, Row, compare
from evalvae.compare.render import render, to_junit, to_markdown, to_text
from evalvae.compare.tolerances import Tolerance, Tolerances, load_tolerances, parse_tolerances
from evalvae.compare.verdict import Verdict, judge, paired_test

__all__ = [
    "Comparison",
    "Row",
    "Snapshot",
    "Tolerance",
    "Tolerances",
    "Verdict",
    "compare",
    "judge",
    "load_snapshot",
    "load_tolerances",
    "merge",
    "paired_test",
    "parse_tolerances",
    "render",
    "to_junit",
    "to_markdown",
    "to_text",
    "write_baseline",
]
