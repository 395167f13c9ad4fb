"""The documentation in docs/ against the code: config fields, cited sections, links, no outside citations."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from tflatent import config as config_lib

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Where code and documentation live (tests/ and benchmarks/ are scanned for cited sections only).
CITING = ("tflatent", "pipelines", "configs", "tests", "benchmarks", "docs", "README.md")
SELF_CONTAINED = ("tflatent", "pipelines", "configs", "tests", "benchmarks", "docs", "README.md")
# What a citation of the team's private sources looks like (the sibling folder beside a checkout, its
# report on the authors' code and its figures). Spelled in pieces so that this list is not itself one.
OUTSIDE_CITATIONS = tuple("".join(parts) for parts in (("shared/", "reference"), ("shared/", "paper"),
                                                       ("textflow-", "notes"), ("textflow-", "cpu-figures"),
                                                       ("notes ", "§")))


def _files(places, suffixes=(".py", ".md", ".yaml")):
    for place in places:
        path = ROOT / place
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        for candidate in candidates:
            if candidate.suffix in suffixes and "__pycache__" not in candidate.parts:
                yield candidate


def _table_rows(markdown: str, heading: str) -> dict:
    """{first cell: the row's cells} of the table under the line ``heading`` (up to the next heading)."""
    lines = markdown.splitlines()
    start = lines.index(heading)
    rows = {}
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|") and not set(line) <= set("|- "):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            rows[cells[0].strip("`")] = cells
    return rows


@pytest.mark.parametrize("section", list(config_lib.SECTIONS))
def test_configuration_md_documents_every_field_with_its_default_and_allowed_values(section):
    cls = config_lib.SECTIONS[section]
    rows = _table_rows((DOCS / "configuration.md").read_text(), f"## `{section}`")
    rows.pop("field")  # the header row
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert sorted(rows) == sorted(fields), f"docs/configuration.md, {section}: fields differ from config.py"
    instance = cls()
    for name, (_, default, allowed, meaning) in rows.items():
        documented = yaml.safe_load(default.strip("`"))
        assert documented == getattr(instance, name), f"{section}.{name}: documented default {default}"
        choices = {**getattr(cls, "_choices", {}), **getattr(cls, "_list_choices", {})}.get(name)
        if choices is not None:
            assert set(re.findall(r"`([^`]*)`", allowed)) == {str(c) for c in choices}, f"{section}.{name}"
        if name in getattr(cls, "_positive", ()):
            assert "> 0" in allowed, f"{section}.{name} must be documented as > 0"
        if name in getattr(cls, "_nonnegative", ()):
            assert "≥ 0" in allowed, f"{section}.{name} must be documented as ≥ 0"
        if name in getattr(cls, "_fraction", ()):
            assert "[0, 1)" in allowed, f"{section}.{name} must be documented as [0, 1)"
        assert meaning, f"{section}.{name} has no meaning in docs/configuration.md"


def _reference_sections() -> set:
    """The section numbers of docs/reference.md's headings: "2", "2.4", "10.3", ..."""
    text = (DOCS / "reference.md").read_text()
    return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", text, flags=re.MULTILINE))


_SECTION = r"§\s?(\d+(?:\.\d+)*)(?:[–-](\d+(?:\.\d+)*))?"


def _cited_sections():
    """(file, section) for every "docs/reference.md §N" in the repository ("§N–M", "§N, §M", wrapped)."""
    for path in _files(CITING):
        if path == DOCS / "reference.md":
            continue
        text = path.read_text()
        for match in re.finditer(r"(?:docs/)?reference\.md(?:``)?", text):
            # The citation: what follows, joined across a line break (and a comment marker) ...
            tail = re.sub(r"\n\s*(?:#\s*)?", " ", text[match.end():match.end() + 120])
            # ... while it is made of section numbers and separators.
            cited = re.match(r"(?:\s*(?:,|and)?\s*" + _SECTION + r")+", tail)
            if not cited:
                continue
            for first, last in re.findall(_SECTION, cited.group(0)):
                yield path.relative_to(ROOT), first
                if last:
                    yield path.relative_to(ROOT), last


def test_every_cited_reference_section_exists():
    sections = _reference_sections()
    cited = list(_cited_sections())
    assert len(cited) > 40, f"found only {len(cited)} citations of docs/reference.md: is the scan broken?"
    missing = sorted({f"{path}: §{number}" for path, number in cited if number not in sections})
    assert not missing, "cited sections with no heading in docs/reference.md: " + "; ".join(missing)


def test_reference_md_keeps_the_section_numbers_of_the_source_structure():
    sections = _reference_sections()
    subsections = {2: 9, 3: 3, 4: 7, 5: 5, 6: 3, 7: 3, 8: 3, 9: 2, 10: 10}  # section: its last subsection
    expected = {str(n) for n in range(1, 11)} | {
        f"{section}.{n}" for section, last in subsections.items() for n in range(1, last + 1)}
    assert expected <= sections, f"missing: {sorted(expected - sections)}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set:
    return {_slug(line.lstrip("#")) for line in path.read_text().splitlines() if re.match(r"#{1,6} ", line)}


PAGES = sorted(p.name for p in DOCS.glob("*.md")) + ["../README.md", "../pipelines/README.md"]


@pytest.mark.parametrize("page", PAGES)
def test_links_between_pages_resolve(page):
    path = (DOCS / page).resolve()
    problems = []
    for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", path.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        linked = (path.parent / target).resolve() if target else path
        if not linked.exists():
            problems.append(f"{target} does not exist")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            problems.append(f"{target}#{anchor}: no such heading")
    assert not problems, f"{page}: " + "; ".join(problems)


def test_nothing_cites_a_document_outside_the_repository():
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in _files(SELF_CONTAINED)
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if any(pattern in line.lower() for pattern in OUTSIDE_CITATIONS)]
    assert not found, "citations of files outside the repository:\n" + "\n".join(found)
