"""The README and docs/ hold together: every relative link reaches a file
(and, with an #anchor into a Markdown file, a heading of it), the README
stays a short newcomer's page, and no page points at a DESIGN.md outside
the repository."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MAX_README_LINES = 250

FENCE = re.compile(r"^(```|~~~)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(INLINE_CODE.sub("", line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup and punctuation removed (hyphens
    and underscores kept), lowercase, each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; repeated headings get -1, -2, ..."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[str]:
    return [m.group(1) for line in prose_lines(path.read_text()) for m in LINK.finditer(line)]


def test_the_helpers_follow_githubs_rules(tmp_path: Path) -> None:
    assert slug("Edge: int8 models, ONNX export, compressed updates") == "edge-int8-models-onnx-export-compressed-updates"
    assert slug("Results: 20 % of the devices misbehave") == "results-20--of-the-devices-misbehave"
    assert slug("`m3bat_local`, the default") == "m3bat_local-the-default"
    assert slug("Dataset file (`data.kind: npz`)") == "dataset-file-datakind-npz"
    page = tmp_path / "p.md"
    page.write_text("# A\n\n## A\n\n```bash\n# not a heading\n```\n\n[x](b.md#c) `[y](z.md)`\n")
    assert anchors(page) == {"a", "a-1"}
    assert links(page) == ["b.md#c"]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_reaches_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in links(page):
        if EXTERNAL.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        if path_part.startswith("/"):
            resolved = REPO / unquote(path_part).lstrip("/")
        else:
            resolved = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
            continue
        if REPO.resolve() not in resolved.resolve().parents and resolved.resolve() != REPO.resolve():
            broken.append(f"{target}: outside the repository")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading '{anchor}' in {resolved.relative_to(REPO)}")
    assert broken == [], f"{page.relative_to(REPO)}: broken links: {broken}"


def test_the_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES}); move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_no_design_md_outside_docs(page: Path) -> None:
    """The design page is docs/design.md; an upper-case DESIGN.md, or a
    design.md reached from anywhere but docs/, is a page that left the repository."""
    text = page.read_text()
    assert "DESIGN.md" not in text, f"{page.relative_to(REPO)} names DESIGN.md; the page is docs/design.md"
    for match in re.finditer(r"[\w./-]*design\.md", text, re.IGNORECASE):
        ref = match.group(0)
        where = (page.parent / ref).resolve() if not ref.startswith("docs/") else (REPO / ref).resolve()
        assert where == (REPO / "docs" / "design.md").resolve(), (
            f"{page.relative_to(REPO)}: '{ref}' is not docs/design.md")
