"""The documentation holds together: README.md is short, and every link into README.md and docs/ resolves.

Links are checked as GitHub renders them: a relative path must exist, and a ``#anchor`` must be the
slug of a heading of the target page (lowercase, spaces to ``-``, punctuation dropped, ``-1``,
``-2`` ... for repeated headings). Text inside code blocks and code spans is not a link. Mentions of
``docs/<page>.md`` (with or without an anchor) and of README.md's anchors in code, configs and scripts (comments, messages) are
checked the same way, so a moved page or a renamed heading cannot leave a dangling pointer.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 350

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# a docs page (docs/<page>.md, maybe with an anchor) or an anchor of README.md, as code, configs and scripts name them
MENTION = re.compile(r"(?<![\w/.-])((?:\.\./)*(?:docs/[\w-]+\.md|README\.md)(?:#[\w-]+)?)")
MENTION_ROOTS = ["evalvae", "conf", "tests", "benchmarks", ".ci", ".github", "pyproject.toml"]
MENTION_SUFFIXES = {".py", ".yaml", ".yml", ".toml", ".sh", ".j2", ""}


def pages() -> list[Path]:
    """README.md, docs/, and the READMEs of the committed results (reports/), which link into docs/."""
    return [README, *sorted(DOCS.glob("*.md")), *sorted((ROOT / "reports").rglob("README.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with code spans blanked."""
    out, fenced = [], None
    for no, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m:
            if fenced is None:
                fenced = m.group(1)
            elif m.group(1) == fenced:
                fenced = None
            continue
        if fenced is None:
            out.append((no, CODE_SPAN.sub(lambda c: "x" * len(c.group(0)), line)))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "").lower()
    return "".join(c for c in text if c.isalnum() or c in " -_").replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    fenced = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = FENCE.match(line)
        if m:
            fenced = m.group(1) if fenced is None else (None if m.group(1) == fenced else fenced)
            continue
        h = HEADING.match(line) if fenced is None else None
        if h:
            base = slug(h.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    out = []
    for no, line in prose_lines(path.read_text(encoding="utf-8")):
        out += [(no, m.group(1)) for m in INLINE_LINK.finditer(line)]
        m = REFERENCE_LINK.match(line)
        if m:
            out.append((no, m.group(1)))
    return out


def problem(source: Path, target: str) -> str | None:
    """Why a relative link from ``source`` does not resolve, or None."""
    if SCHEME.match(target):
        return None
    path_part, _, anchor = target.partition("#")
    dest = (source.parent / path_part).resolve() if path_part else source
    if not dest.exists():
        return f"{path_part} does not exist"
    if ROOT not in dest.parents and dest != ROOT:
        return f"{path_part} is outside the repository"
    if anchor:
        if dest.suffix != ".md":
            return f"#{anchor} points into {dest.name}, which has no headings"
        if anchor not in anchors(dest):
            return f"no heading of {dest.relative_to(ROOT)} has the anchor #{anchor}"
    return None


def test_readme_is_at_most_350_lines():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it to {README_MAX_LINES} and move the rest to docs/"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    bad = [f"{page.relative_to(ROOT)}:{no}: ({t}) {why}" for no, t in links(page) if (why := problem(page, t))]
    assert not bad, "\n".join(bad)


def test_every_docs_page_is_linked_from_readme_or_the_docs_index():
    linked = set()
    for page in (README, DOCS / "README.md"):
        for _, t in links(page):
            if not SCHEME.match(t) and t.partition("#")[0]:
                linked.add((page.parent / t.partition("#")[0]).resolve())
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p.name != "README.md" and p.resolve() not in linked]
    assert not missing, f"docs pages that neither README.md nor docs/README.md links to: {missing}"


def test_readme_shows_the_install_and_test_commands_ci_runs():
    readme, ci = README.read_text(encoding="utf-8"), (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command in ('pip install -e ".[dev]"', "python -m pytest"):
        assert re.search(rf"^{re.escape(command)}(\s|$)", readme, re.M), f"README.md no longer shows {command!r}"
        assert re.search(rf"^{re.escape(command)}$", ci, re.M), f".ci/run no longer runs {command!r}"


def mention_files() -> list[Path]:
    out = []
    for name in MENTION_ROOTS:
        p = ROOT / name
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        out += [f for f in files if f.suffix in MENTION_SUFFIXES and "__pycache__" not in f.parts]
    return out


def test_docs_pages_named_in_code_configs_and_scripts_exist():
    bad = []
    for f in mention_files():
        text = f.read_text(encoding="utf-8", errors="replace")
        for no, line in enumerate(text.splitlines(), 1):
            for m in MENTION.finditer(line):
                target = m.group(1).lstrip("./")
                if (why := problem(ROOT / "x", target)) is not None:
                    bad.append(f"{f.relative_to(ROOT)}:{no}: {m.group(1)}: {why}")
    assert not bad, "\n".join(bad)


def test_the_slug_is_githubs():
    # GitHub's anchors for headings of these pages (as github.com renders them)
    assert slug("Exit statuses") == "exit-statuses"
    assert slug("Ties: float noise is not a preference") == "ties-float-noise-is-not-a-preference"
    assert slug("evalvae's own gate") == "evalvaes-own-gate"
    assert slug("One folder for the tiny VAEs: `vae_dir`") == "one-folder-for-the-tiny-vaes-vae_dir"
    assert (
        slug("Codec baselines, bits per pixel and rate–distortion")
        == "codec-baselines-bits-per-pixel-and-ratedistortion"
    )
    assert slug("rFID and KID over the images a VAE scored") == "rfid-and-kid-over-the-images-a-vae-scored"


def test_the_checker_finds_a_broken_link_and_anchor(tmp_path, monkeypatch):
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Title\n\n## Same\n\n## Same\n\n```\n## Not a heading\n[x](nowhere.md)\n```\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#same-1) [bad anchor](a.md#not-a-heading) [gone](c.md) `[code](c.md)` [web](https://x.org/c.md)\n"
    )
    found = {t: problem(page, t) for _, t in links(page)}
    assert found == {
        "a.md#same-1": None,
        "a.md#not-a-heading": "no heading of a.md has the anchor #not-a-heading",
        "c.md": "c.md does not exist",
        "https://x.org/c.md": None,
    }
