"""Comparison reports of one or more runs: tables with CIs, paired statistics, plots, image grids."""

from evalvae.report.build import NothingToReport, write_report

__all__ = ["NothingToReport", "write_report"]
