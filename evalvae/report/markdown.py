"""The markdown report: the tables, sized for a pull-request comment.

No line is longer than :data:`MAX_LINE` characters: the protocol is a list, prose wraps (markdown joins
the lines of a paragraph) and a table too wide for one line splits into tables that repeat its key columns.
"""

from __future__ import annotations

import re

MAX_LINE = 300
WRAP = 160  # where wrapped prose breaks
# A line that would start a list, heading, quote or table if a wrapped paragraph began with it.
BLOCK_START = re.compile(r"^(?:[-+*#>|]|\d+[.)])(?:\s|$)")


def _esc(cell: str) -> str:
    return str(cell).replace("|", "\\|").replace("\n", " ")


def _render(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    lines = [
        "| " + " | ".join(map(_esc, header)) + " |",
        "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
    ]
    return lines + ["| " + " | ".join(map(_esc, r)) + " |" for r in rows]


def _table(header: list[str], rows: list[list[str]], align: list[str], keep: int = 1) -> list[str]:
    """A markdown table; where a line would pass :data:`MAX_LINE`, several tables with the first ``keep``
    columns repeated and the others shared out in order."""
    lines = _render(header, rows, align)
    if max(map(len, lines)) <= MAX_LINE or len(header) <= keep + 1:
        return lines
    width = [max(len(_esc(c)) for c in [header[i], *(r[i] for r in rows)]) + 3 for i in range(len(header))]
    base = sum(width[:keep]) + 2
    chunks, current, used = [], [], base
    for i in range(keep, len(header)):
        if current and used + width[i] > MAX_LINE:
            chunks.append(current)
            current, used = [], base
        current.append(i)
        used += width[i]
    chunks.append(current)
    out = []
    for chunk in chunks:
        cols = list(range(keep)) + chunk
        out += _render([header[i] for i in cols], [[r[i] for i in cols] for r in rows], [align[i] for i in cols])
        out.append("")
    return out[:-1]


def _fold(lines: list[str]) -> list[str]:
    """Wrap prose lines longer than :data:`MAX_LINE` near :data:`WRAP` characters (list items and quotes keep
    their markers, no wrapped line starts with what would read as markup); tables stay as they are."""
    out = []
    for line in lines:
        if len(line) <= MAX_LINE or line.startswith("|"):
            out.append(line)
            continue
        prefix = re.match(r"^(\s*(?:[-*] |> |\d+\. )?)", line).group(1)
        more = "> " if prefix.lstrip().startswith(">") else " " * len(prefix)
        words = line[len(prefix) :].split()
        pieces = [words[0]]
        for word in words[1:]:
            if len(pieces[-1]) + 1 + len(word) > WRAP and not BLOCK_START.match(word):
                pieces.append(word)
            else:
                pieces[-1] += " " + word
        out += [prefix + pieces[0]] + [more + p for p in pieces[1:]]
        if line.endswith("  "):  # a hard line break stays at the end
            out[-1] += "  "
    return out


def _protocol(protocol: dict) -> list[str]:
    """A short line (dataset, images, size, metrics), then every fact and each metric's settings in a list."""
    facts = dict(protocol["facts"])
    short = [facts.get("dataset", "?").split(":")[0], f"{facts.get('images listed', '?')} images listed"]
    short += [facts["resolution"]] if "resolution" in facts else []
    names = ", ".join(name for name, _ in protocol["metrics"])
    lines = [
        f"**Protocol.** {' · '.join(short)}; metrics: {names}.",
        "",
        "<details><summary>Protocol details</summary>",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in protocol["facts"]]
    for name, impl, items in protocol["metric_details"]:
        lines.append(f"- **{name}**: {impl}")
        lines += [f"  - {item}" for item in items]
    return lines + ["", "</details>", ""]


def _sentences(text: str) -> list[str]:
    """A paragraph as its sentences (a full stop, then a capital)."""
    return re.split(r"(?<=\.) (?=[A-Z])", text)


def render_markdown(context: dict) -> str:
    """The overview, then per section: protocol, summary with CIs, paired statistics, image grids and problems."""
    made = f"Generated {context['generated']} by evalvae {context['version']} from {context['inputs_text']}."
    out = ["# VAE comparison report", "", made, ""]
    if len(context["contents"]) > 1:
        out += ["**Contents.**", ""]
        out += [f"- {c['title']} ({c['kind']}, {c['vaes']} VAE(s))" for c in context["contents"]] + [""]
    speed = [r for r in context["overview"] if r.get("speed")]
    if speed or context["speed_notes"]:
        out += ["**Speed from the bench** (median ms per image and peak memory at the section's resolution):", ""]
        if speed:
            head = ["section", "VAE", *context["speed_header"], "configuration"]
            rows = [[r["section"], r["label"], *(r["speed"][k] for k in ("ms", "mem", "detail"))] for r in speed]
            out += _table(head, rows, ["l", "l", "r", "r", "l"], keep=2) + [""]
        out += [f"- {n}" for n in context["speed_notes"]] + ([""] if context["speed_notes"] else [])
    for p in context["problems"]:
        out.append(f"> ⚠️ {p}")
    if context["problems"]:
        out.append("")
    for s in context["sections"]:
        out += [f"## {s['title']}", "", f"**Recommendation.** {s['recommendation']}", ""]
        out += _protocol(s["protocol"])
        out += [f"- {f}" for f in s["findings"]] + ([""] if s["findings"] else [])
        summary = s["summary"]
        header = ["VAE", "images"] + [h["title"] for h in summary["header"]]
        rows = []
        for r in summary["rows"]:
            cells = []
            for c in r["cells"]:
                text = c["main"] + (f" {c['sub']}" if c["sub"] else "")
                text = f"**{text}**" if c["best"] else text
                cells.append(("⚠ " if c["warn"] else "") + text + c["marks"])
            rows.append([r["label"], str(r["n"])] + cells)
        out += _table(header, rows, ["l", "r"] + ["r"] * len(summary["header"]), keep=2)
        notes = [f"{n['mark']} {'⚠ ' if n['warn'] else ''}{n['text']} ({n['where']})" for n in summary["footnotes"]]
        out += [""] + [n + "  " for n in notes[:-1]] + notes[-1:] + ([""] if notes else [])  # "  ": a line break
        out += [
            "Mean ± std over images, [95% bootstrap CI]; set-level metrics give their N; **bold** is best; "
            "marks refer to the notes above.",
            "",
        ]
        if s["paired"]:
            header = ["metric", "A", "B", "n", "Δ (A − B)", "95% CI", "A wins", "W/T/L", "p", "p (Holm)", ""]
            rows = []
            for p in s["paired"]:
                why = f"not significant ({p['unreachable']})" if p.get("unreachable") else ""
                cells = [p[k] for k in ("metric", "a", "b", "n", "diff", "ci", "win_rate", "wtl", "p", "p_holm")]
                rows.append([*map(str, cells), "✔ significant" if p["significant"] else why])
            out += ["**Paired statistics** (same images; Wilcoxon signed-rank, Holm-adjusted per metric):", ""]
            out += _table(header, rows, ["l", "l", "l", "r", "r", "r", "r", "r", "r", "r", "l"], keep=3) + [""]
        rd = [f for f in s["plots"] if f["title"] == "Rate–distortion"]
        if rd:
            name = rd[0]["path"].name
            out += [f"**Rate–distortion** (quality against bits per pixel): [plots/{name}](plots/{name})", ""]
        if s.get("regions"):
            out += ["**Text and face fidelity by region size** (PNGs in `plots/`):", ""]
            out += [f"- {f['title']}: [plots/{f['path'].name}](plots/{f['path'].name})" for f in s["regions"]]
            out += [f"> {n}" for n in s.get("region_notes", [])] + [""]
        if s["grids"]:
            out += ["**Image grids** (original, reconstructions, error maps and zooms; PNGs in `grids/`):", ""]
            for g in s["grids"]:
                missing = "; ".join(f"{label} not shown: {why}" for label, why in g.missing.items())
                line = f"- `{g.image}` ({'; '.join(g.reasons)}): [grids/{g.png.name}](grids/{g.png.name})"
                out.append(line + (f" ({missing})" if missing else ""))
            out.append("")
        for note in s["notes"] + s["grid_notes"]:
            out.append(f"> {note}")
        if s["notes"] or s["grid_notes"]:
            out.append("")
    for latent in context.get("latents", []):
        out += [f"## {latent['title']}", "", f"**Recommendation.** {latent['recommendation']}", ""]
        for t in latent["tables"]:
            out += [f"**{t['title']}**", ""]
            out += _table(t["header"], t["rows"], ["l"] + ["r"] * (len(t["header"]) - 1)) + [""]
        out += [f"- {f['title']}: [plots/{f['path'].name}](plots/{f['path'].name})" for f in latent["plots"]] + [""]
    for r in context.get("robustness", []):
        out += [f"## {r['title']}", "", f"**Recommendation.** {r['recommendation']}", ""]
        out += [
            "Each VAE against its own plain fp32 output (tiled, precision) and against the originals (resolution sweep); "
            f"from `{r['source']}`.",
            "",
        ]
        for t in r["tables"]:
            out += [f"**{t['title']}**", ""]
            out += _table(t["header"], t["rows"], ["l", "l"] + ["r"] * (len(t["header"]) - 2), keep=2)
            out.append("")
        out += [f"> {n}" for n in r["notes"]] + ([""] if r["notes"] else [])
    for b in context.get("benches", []):
        out += [f"## {b['title']}", "", f"**Recommendation.** {b['recommendation']}", ""]
        out += [f"Median ms per image and peak MiB on {b['device']}; from `{b['source']}`.", ""]
        align = ["l", "r", "r", "l", "l"] + ["r"] * (len(b["header"]) - 5)
        out += _table(b["header"], b["rows"], align, keep=5) + [""]
        out += [f"> {n}" for n in b["notes"]] + ([""] if b["notes"] else [])
        out += [f"- {f['title']}: [plots/{f['path'].name}](plots/{f['path'].name})" for f in b["plots"]]
        out += [""] if b["plots"] else []
    out += ["---", ""]
    if context["methods"]:
        out += ["**Methods.**", ""] + [f"- {s}" for s in _sentences(context["methods"])] + [""]
    if context["grids_method"]:
        out += [f"**Image grids.** {context['grids_method']}", ""]
    out += ["**Inputs.**", ""] if context["inputs"] else []
    for kind, paths in context["inputs"].items():
        out += [f"- {kind}:"] + [f"  - `{p}`" for p in paths]
    return "\n".join(_fold(out + [""]))
