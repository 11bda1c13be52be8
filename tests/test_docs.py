"""The user documentation (README.md, docs/) stays short, linked, current and about the software."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
# statements about how the project was built, not about the software
BUILD_HISTORY = re.compile(r"was\s+lent|issue [0-9]|this (cpu )?box|sessions? that", re.IGNORECASE)
# [text](target) and [text]: target; images too
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
FENCE = re.compile(r"^\s*```.*?^\s*```", re.MULTILINE | re.DOTALL)


def _generator():
    spec = importlib.util.spec_from_file_location("make_config_reference", DOCS / "make_config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _relative_links(page: Path) -> list[str]:
    """Link targets of a Markdown page that point into the repository (code blocks skipped)."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE) and not t.startswith("#")]


def test_configuration_reference_is_generated_from_the_registry():
    generated = _generator().render()
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert committed == generated, "docs/configuration.md is stale: run `python docs/make_config_reference.py`"


def test_configuration_reference_lists_every_key_with_its_default_and_choices():
    from trainables.config import PARAMS

    text = _generator().render()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    assert {name.strip("`") for name in rows} >= set(PARAMS)
    for name, spec in PARAMS.items():
        row = rows[f"`{name}`"]
        for choice in spec.choices or ():
            assert f"`{choice}`" in row, (name, choice)
        if isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool):
            assert f"`{spec.default}`" in row, name
    assert "`student` | `bilstm` |" in text and "4294967295" in text  # a str default, an int bound in full


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 210, f"README.md has {len(lines)} lines; move detail into docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page):
    links = _relative_links(page)
    missing = [t for t in links if not (page.parent / t.split("#", 1)[0]).exists()]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"


def test_the_link_check_finds_links_and_skips_urls_and_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("see [a](docs/a.md#x), [b](https://example.com), [c](#local), ![i](img.png)\n"
                    "```\n[not a link](inside-a-fence.md)\n```\n[ref]: other.md\n", encoding="utf-8")
    assert _relative_links(page) == ["docs/a.md#x", "img.png", "other.md"]


@pytest.mark.parametrize("page", [*PAGES, *sorted(DOCS.glob("*.py"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_describe_the_software_not_how_it_was_built(page):
    hits = [f"{n}: {line}" for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
            if BUILD_HISTORY.search(line)]
    assert not hits, "\n".join(hits)
