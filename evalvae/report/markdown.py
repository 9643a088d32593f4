"""The markdown report: the tables, sized for a pull-request comment."""

from __future__ import annotations


def _table(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    def esc(cell: str) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(map(esc, header)) + " |",
        "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|",
    ]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return lines


def render_markdown(context: dict) -> str:
    """The overview, then per section: protocol, summary with CIs, paired statistics, image grids and problems."""
    out = [
        "# VAE comparison report",
        "",
        f"Generated {context['generated']} by evalvae {context['version']} from {len(context['inputs'])} run(s).",
        "",
    ]
    for p in context["problems"]:
        out.append(f"> ⚠️ {p}")
    if context["problems"]:
        out.append("")
    for s in context["sections"]:
        out += [f"## {s['title']}", ""]
        facts = "; ".join(f"{k}: {v}" for k, v in s["protocol"]["facts"])
        metrics = "; ".join(f"{k}: {v}" for k, v in s["protocol"]["metrics"])
        out += [f"**Protocol.** {facts}.", "", f"**Metrics.** {metrics}.", ""]
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
        out += _table(header, rows, ["l", "r"] + ["r"] * len(summary["header"]))
        out += (
            [""]
            + [
                f"{n['mark']} {'⚠ ' if n['warn'] else ''}{n['text']} ({n['where']})"
                + "  " * (i + 1 < len(summary["footnotes"]))
                for i, n in enumerate(summary["footnotes"])
            ]
            + ([""] if summary["footnotes"] else [])
        )
        out += [
            "Mean ± std over images, [95% bootstrap CI]; set-level metrics give their N; **bold** is best; marks refer to the notes above.",
            "",
        ]
        if s["paired"]:
            header = ["metric", "A", "B", "n", "Δ (A − B)", "95% CI", "A wins", "W/T/L", "p", "p (Holm)", ""]
            rows = [
                [
                    p["metric"],
                    p["a"],
                    p["b"],
                    str(p["n"]),
                    p["diff"],
                    p["ci"],
                    p["win_rate"],
                    p["wtl"],
                    p["p"],
                    p["p_holm"],
                    "✔ significant"
                    if p["significant"]
                    else (f"not significant ({p['unreachable']})" if p.get("unreachable") else ""),
                ]
                for p in s["paired"]
            ]
            out += ["**Paired statistics** (same images; Wilcoxon signed-rank, Holm-adjusted per metric):", ""]
            out += _table(header, rows, ["l", "l", "l", "r", "r", "r", "r", "r", "r", "r", "l"]) + [""]
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
        out += [f"## {latent['title']}", ""]
        out += _table(latent["header"], latent["rows"], ["l"] + ["r"] * (len(latent["header"]) - 1)) + [""]
        out += [f"- {f['title']}: [plots/{f['path'].name}](plots/{f['path'].name})" for f in latent["plots"]] + [""]
    for r in context.get("robustness", []):
        out += [f"## {r['title']}", "", f"Against each VAE's own plain fp32 output; from `{r['source']}`.", ""]
        for t in r["tables"]:
            out += [f"**{t['title']}**", ""] + _table(
                t["header"], t["rows"], ["l", "l"] + ["r"] * (len(t["header"]) - 2)
            )
            out.append("")
        out += [f"> {n}" for n in r["notes"]] + ([""] if r["notes"] else [])
    out += ["---", "", context["methods"], ""]
    return "\n".join(out)
