"""A :class:`Comparison` as a plain-text A/B table for the console, a markdown table, JSON, or JUnit XML
(one testcase per compared row)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET

from evalvae.compare.comparison import Comparison, Row, number
from evalvae.compare.verdict import Verdict
from evalvae.io import json_ready

ICONS = {
    Verdict.PASS: "✅",
    Verdict.NOISE: "✅",
    Verdict.IMPROVED: "🟢",
    Verdict.REGRESSED: "❌",
    Verdict.NEW: "🆕",
    Verdict.UNMEASURED: "➖",
    Verdict.MISSING: "⚠️",
    Verdict.MISMATCH: "⚠️",
}
FORMATS = ("text", "md", "json", "junit")
SPEED = "Speed and memory (bench.csv: median ms per image, peak MB):"
HEADWORDS = {0: "passed", 1: "failed", 2: "unusable input"}
HEAD_ICONS = {0: "✅", 1: "❌", 2: "⚠️"}
OUTCOMES = {"failures": "failure", "errors": "error", "skipped": "skipped"}  # JUnit's counts and elements


def _delta(row: Row) -> tuple[str, str]:
    d = row.delta
    if d is None or row.verdict is Verdict.MISMATCH or math.isnan(d):
        return "", ""
    relative = row.baseline and math.isfinite(row.baseline) and math.isfinite(d)
    return number(d, "+.3g"), f"{100 * d / abs(row.baseline):+.2f}%" if relative else ""


def _verdict(c: Comparison, row: Row) -> str:
    icon = "❌" if c.failed(row) else ICONS[row.verdict]
    return f"{icon} {row.verdict.value}"


def describe(row: Row) -> str:
    """One line on a row: what moved, by how much, against what."""
    head = f"{row.vae} {row.name} {row.verdict.value}"
    if row.delta is None or row.verdict is Verdict.MISMATCH:
        return f"{head}: {row.detail}" if row.detail else head
    parts = [f"{number(row.baseline)} -> {number(row.current)} ({number(row.delta, '+.3g')})"]
    if row.tolerance:
        parts.append(f"allowed {row.tolerance}")
    if row.noise:
        parts.append(row.noise)
    if row.detail:
        parts.append(row.detail)
    return f"{head}: " + "; ".join(parts)


def _protocol_line(protocol: dict) -> str:
    ds = protocol.get("dataset", {})
    if not ds:
        return ""
    size = f"{ds['resolution']} px" if "resolution" in ds else "native size"
    return f"Protocol: dataset `{ds.get('name')}` ({ds.get('n_files')} files) at {size}, quantize={protocol.get('quantize')}."


def _kinds(c: Comparison) -> tuple[list[Row], list[Row]]:
    return [r for r in c.rows if r.kind == "quality"], [r for r in c.rows if r.kind == "speed"]


def _cells(r: Row, speed: bool, verdict: str) -> list[str]:
    """A row's cells: name, A, B, Δ, Δ %, tolerance, noise and ``verdict`` with the row's detail."""
    arrow = "" if r.higher_is_better is None else (" ↑" if r.higher_is_better else " ↓")
    name = [r.vae, r.case, r.metric + arrow] if speed else [r.vae, r.metric + arrow]
    allowed = f"±{number(r.allowed, '.3g')}" if r.allowed is not None else ""
    verdict += f" ({r.detail})" if r.detail else ""
    return [*name, number(r.baseline), number(r.current), *_delta(r), allowed, r.noise, verdict]


def _table(c: Comparison, rows: list[Row], speed: bool) -> list[str]:
    head = ["VAE", "case", "measure"] if speed else ["VAE", "metric"]
    table = [[*head, "baseline", "current", "Δ", "Δ %", "allowed", "noise", "verdict"]]
    table += [_cells(r, speed, _verdict(c, r)) for r in rows]
    lines = ["| " + " | ".join(cells) + " |" for cells in table]
    return [lines[0], "|" + "---|" * len(head) + "--:|--:|--:|--:|--:|---|---|", *lines[1:]]


def to_markdown(c: Comparison) -> str:
    """The comparison as GitHub-flavoured markdown: headline, protocol, tables, notes."""
    reason = f" ({c.reason})" if c.reason else ""
    out = [
        f"### evalvae compare: {HEAD_ICONS[c.exit_code]} {headline(c)}",
        "",
        f"Baseline `{c.baseline}`{reason}, current `{c.current}`.",
    ]
    if line := _protocol_line(c.protocol):
        out.append(line)
    if c.mismatches:
        out += [
            "",
            "**Protocol mismatch: the results were not compared.** Re-run under the baseline's protocol, or update the baseline on purpose:",
        ]
        out += [f"- `{m}`" for m in c.mismatches]
    quality, speed = _kinds(c)
    if quality:
        out += ["", *_table(c, quality, speed=False)]
    if speed:
        out += ["", SPEED, "", *_table(c, speed, speed=True)]
    if c.notes:
        out += ["", "Notes:", *[f"- {n}" for n in c.notes]]
    return "\n".join(out) + "\n"


def headline(c: Comparison) -> str:
    """The gate's verdict in words: ``passed``, ``failed (1 regression)`` or ``unusable input``."""
    failures = sum(c.failed(r) for r in c.rows)
    return HEADWORDS[c.exit_code] + (f" ({failures} regression{'s' * (failures != 1)})" if c.exit_code == 1 else "")


def _aligned(rows: list[list[str]], right: set[int]) -> list[str]:
    """Rows of cells in columns two spaces apart, numbers (columns ``right``) right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return [line(r).rstrip() for r in rows]


def _text_table(c: Comparison, rows: list[Row], speed: bool) -> list[str]:
    head = ["VAE", "case", "measure"] if speed else ["VAE", "metric"]
    table = [[*head, "A", "B", "Δ", "Δ %", "tolerance", "noise", "verdict"]]
    for r in rows:
        mark = "FAIL " if c.failed(r) else "ERROR " if r.verdict.is_error else ""
        table.append(_cells(r, speed, mark + r.verdict.value))
    n = len(head)
    return _aligned(table, right={n, n + 1, n + 2, n + 3, n + 4})


def to_text(c: Comparison) -> str:
    """The comparison for a console: A (the baseline) and B (the current results) side by side per
    metric, with the change B - A, its tolerance, the noise it was weighed against and the verdict
    (``FAIL`` where it fails the gate). The gate's own verdict is the command's last line (stderr)."""
    reason = f" ({c.reason})" if c.reason else ""
    out = [f"A (baseline): {c.baseline}{reason}", f"B (current):  {c.current}"]
    if line := _protocol_line(c.protocol):
        out.append(line.replace("`", ""))
    if c.mismatches:
        out += ["", "Protocol mismatch: the results were not compared (re-run under A's protocol, or update it):"]
        out += [f"  {m}" for m in c.mismatches]
    quality, speed = _kinds(c)
    if quality:
        out += ["", *_text_table(c, quality, speed=False)]
    if speed:
        out += ["", SPEED, *_text_table(c, speed, speed=True)]
    if c.notes:
        out += ["", "Notes:", *[f"  - {n}" for n in c.notes]]
    return "\n".join(out) + "\n"


def to_dict(c: Comparison) -> dict:
    """JSON-ready form of the comparison (NaN as null, infinities as "inf" / "-inf")."""
    rows = [
        {
            "kind": r.kind,
            "vae": r.vae,
            "metric": r.metric,
            "case": r.case,
            "verdict": r.verdict.value,
            "failed": c.failed(r),
            "baseline": json_ready(r.baseline),
            "current": json_ready(r.current),
            "delta": json_ready(r.delta),
            "higher_is_better": r.higher_is_better,
            "allowed": json_ready(r.allowed),
            "tolerance": r.tolerance,
            "p_value": json_ready(r.p_value),
            "noise": r.noise,
            "detail": r.detail,
        }
        for r in c.rows
    ]
    return {
        "status": c.status,
        "exit_code": c.exit_code,
        "baseline": c.baseline,
        "baseline_reason": c.reason,
        "current": c.current,
        "protocol": c.protocol,
        "mismatches": c.mismatches,
        "notes": c.notes,
        "rows": rows,
    }


def to_json(c: Comparison) -> str:
    """Strict JSON: NaN as null, infinities as the strings "inf" and "-inf"."""
    return json.dumps(json_ready(to_dict(c)), indent=2, default=str, allow_nan=False) + "\n"


def _testcase(suite: ET.Element, classname: str, name: str, outcome: str | None, message: str, text: str) -> None:
    case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
    if outcome:
        kind = outcome if outcome != "skipped" else "new"
        ET.SubElement(case, outcome, message=message, type=kind).text = text or message
    elif text:
        ET.SubElement(case, "system-out").text = text


def to_junit(c: Comparison) -> str:
    """JUnit XML: a suite per kind (protocol, quality, speed), a testcase per compared row.

    Regressions are ``<failure>``; missing results and protocol mismatches ``<error>``; results
    that are only on one side, or on neither, ``<skipped>``.
    """
    root = ET.Element("testsuites", name="evalvae compare")
    suites = {}
    if c.mismatches or any(r.kind == "quality" for r in c.rows):
        suites["protocol"] = ET.SubElement(root, "testsuite", name="evalvae.compare.protocol")
        outcome, message = ("error", "protocol mismatch") if c.mismatches else (None, "")
        _testcase(suites["protocol"], "evalvae.compare.protocol", "protocol", outcome, message, "\n".join(c.mismatches))
    for r in c.rows:
        suite = suites.get(r.kind)
        if suite is None:
            suite = suites[r.kind] = ET.SubElement(root, "testsuite", name=f"evalvae.compare.{r.kind}")
        outcome = None
        if r.verdict.is_error:
            outcome = "error"
        elif c.failed(r):
            outcome = "failure"
        elif r.verdict in (Verdict.NEW, Verdict.UNMEASURED):
            outcome = "skipped"
        text = describe(r)
        _testcase(suite, f"evalvae.compare.{r.kind}.{r.vae}", r.name, outcome, text if outcome else "", text)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in suites.values():
        counts = {"tests": len(suite.findall("testcase"))}
        counts |= {k: len(suite.findall(f"testcase/{tag}")) for k, tag in OUTCOMES.items()}
        suite.attrib.update({k: str(v) for k, v in counts.items()}, time="0")
        totals = {k: totals[k] + counts[k] for k in totals}
    root.attrib.update({k: str(v) for k, v in totals.items()})
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def render(c: Comparison, fmt: str) -> str:
    """``text`` | ``md`` | ``json`` | ``junit``."""
    return {"text": to_text, "md": to_markdown, "json": to_json, "junit": to_junit}[fmt](c)
