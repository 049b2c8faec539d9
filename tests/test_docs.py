"""The documentation cites only what the repository holds: every `docs/design.md §N` points at a section of it."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"docs/design\.md §(\d+)")


def test_design_citations_point_at_existing_sections():
    sections = set(re.findall(r"^## §(\d+) ", (REPO / "docs" / "design.md").read_text(), flags=re.MULTILINE))
    cited = {}
    for path in [*REPO.glob("*.md"), *REPO.glob("docs/*.md"), *REPO.glob("examples/**/*.md"),
                 *REPO.glob("jetspec_hf/**/*.py"), *REPO.glob("tests/**/*.py"), *REPO.glob("examples/**/*.py")]:
        for number in CITATION.findall(path.read_text(encoding="utf-8")):
            cited.setdefault(number, []).append(str(path.relative_to(REPO)))
    assert cited, "nothing cites docs/design.md"
    assert {number: files for number, files in cited.items() if number not in sections} == {}
