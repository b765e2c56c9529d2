"""Every reference in the code and docs can be followed from the repository alone.

Three rules, checked on README.md and every ``.py``/``.md`` file of the packages, docs, tests and benchmarks:

* no reference to sections of specifications that are not in the repository ("spec §1.4", "spec 2.2",
  "spec section 3", ``fp-dfxm-and-polarization.md``, ``bluesky-tiled.md``): cite the seed paper's equations
  ("seed Eq N"), the literature, or a page of ``docs/``;
* every ``docs/<name>.md`` path and every relative Markdown link to a ``.md`` file names a file that exists;
* every "docs/<name>.md, <Section>" reference names a heading of that page (the heading starts with the
  section's words, or the words start with the heading).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED_DIRS = ("analysis", "pxm", "sim", "devices", "plans", "docs", "testing", "benchmarks", "tests")
THIS_FILE = Path(__file__).resolve()

# Built from pieces so that this file does not match itself.
_SPEC = "spec"
SPEC_SECTION = re.compile(rf"\b{_SPEC}s?\s*(?:§|section\b|sections\b|\d+(?:\.\d+)?\b)", re.IGNORECASE)
OUTSIDE_SPECS = re.compile(r"fp-dfxm-and-polarization\.md|bluesky-tiled\.md")
DOCS_PATH = re.compile(r"\bdocs/([A-Za-z0-9_./-]+\.md)\b")
MD_LINK = re.compile(r"\]\(([A-Za-z0-9_./-]+\.md)(?:#[^)]*)?\)")
SECTION_REF = re.compile(r"\bdocs/([A-Za-z0-9_./-]+\.md), ([A-Z][^;:()\n\"`]*?)(?=[;:().\"`]|, docs/| and |$)")


def _files() -> list[Path]:
    files = [ROOT / "README.md"]
    for d in SCANNED_DIRS:
        files += sorted(p for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".md") and p.is_file())
    return [p for p in files if p.resolve() != THIS_FILE and ".venv" not in p.parts]


def _lines(pattern: re.Pattern[str]) -> list[tuple[str, int, re.Match[str]]]:
    hits = []
    for path in _files():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            hits += [(str(path.relative_to(ROOT)), n, m) for m in pattern.finditer(line)]
    return hits


def _headings(page: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in page.read_text(encoding="utf-8").splitlines()
            if line.startswith("#")]


def test_scan_covers_the_tree() -> None:
    files = {str(p.relative_to(ROOT)) for p in _files()}
    assert {"README.md", "docs/geometry.md", "analysis/strain.py", "pxm/cli/__init__.py"} <= files


def test_no_reference_to_specification_sections_outside_the_repository() -> None:
    bad = [f"{f}:{n}: {m.group(0)!r}" for f, n, m in _lines(SPEC_SECTION) + _lines(OUTSIDE_SPECS)]
    assert not bad, ("references to a specification that is not in the repository; cite 'seed Eq N', the "
                     "literature or docs/<page>.md instead:\n" + "\n".join(bad))


def test_every_named_docs_page_exists() -> None:
    missing = sorted({f"docs/{m.group(1)} (named in {f}:{n})" for f, n, m in _lines(DOCS_PATH)
                      if not (ROOT / "docs" / m.group(1)).is_file()})
    assert not missing, "docs pages named but not in the repository:\n" + "\n".join(missing)


def test_every_relative_markdown_link_resolves() -> None:
    broken = []
    for f, n, m in _lines(MD_LINK):
        if f.endswith(".md") and not (ROOT / f).parent.joinpath(m.group(1)).resolve().is_file():
            broken.append(f"{f}:{n}: {m.group(1)}")
    assert not broken, "Markdown links to missing files:\n" + "\n".join(broken)


def test_every_named_section_exists() -> None:
    bad = []
    for f, n, m in _lines(SECTION_REF):
        page, section = ROOT / "docs" / m.group(1), m.group(2).strip().rstrip(",")
        if not page.is_file():
            continue  # reported by test_every_named_docs_page_exists
        if not any(h.startswith(section) or section.startswith(h) for h in _headings(page) if h):
            bad.append(f"{f}:{n}: docs/{m.group(1)} has no heading {section!r}")
    assert not bad, "references to sections that do not exist:\n" + "\n".join(bad)


@pytest.mark.parametrize(("text", "hit"), [
    ("(spec §1.4)", True), ("(spec 2.1)", True), ("Spec §2.5 map", True), ("spec section 3", True),
    ("spec sections 4.5 and 5", True), ("(seed Eq 13)", False), ("spectrum shift", False),
    ("Spec(spec)", False), ('resource["spec"]', False), ("spec `AD_HDF5`", False),
])
def test_spec_pattern(text: str, hit: bool) -> None:
    assert bool(SPEC_SECTION.search(text)) is hit


@pytest.mark.parametrize(("text", "section"), [
    ("(docs/geometry.md, Operators, shear ramp)", "Operators, shear ramp"),
    ("(docs/fp-dfxm.md, Model and conventions and Strain).", "Model"),
    ("docs/fp-dfxm.md, Sampling: about 60%", "Sampling"),
])
def test_section_pattern(text: str, section: str) -> None:
    m = SECTION_REF.search(text)
    assert m is not None and m.group(2) == section
