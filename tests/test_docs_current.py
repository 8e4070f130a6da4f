"""The docs a new user reads first say what the code does (issue 18, row 9)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from ecgstream.config import Config

ROOT = Path(__file__).resolve().parents[1]


def _marked_example(text: str, key: str) -> bool:
    """Whether ``key = ...`` in the example carries an "example" mark (inline or in the comment above)."""
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        if re.match(rf"\s*{re.escape(key)}\s*=", ln):
            block = [ln]
            j = i - 1
            while j >= 0 and lines[j].lstrip().startswith("#"):
                block.append(lines[j])
                j -= 1
            return any("example" in b for b in block)
    return False


def test_example_config_shows_the_defaults_it_claims_to():
    text = (ROOT / "examples" / "ecgstream.toml").read_text()
    data = tomllib.loads(text)
    defaults = Config()
    wrong = []
    for section, keys in data.items():
        model = getattr(defaults, section, None)
        if model is None or not isinstance(keys, dict) or section == "devices":
            continue
        for key, value in keys.items():
            if isinstance(value, dict) or _marked_example(text, key):
                continue
            default = getattr(model, key)
            if value != default:
                wrong.append(f"[{section}] {key} = {value!r}, default {default!r}")
    assert not wrong, wrong


def test_config_reference_summaries_are_whole_sentences():
    doc = (ROOT / "docs" / "config.md").read_text()
    for m in re.finditer(r"^## `\[(\w+)\]`\n\n(.+)$", doc, re.M):
        assert m.group(2).rstrip().endswith((".", ")", ":")), (m.group(1), m.group(2))


def test_readme_gives_one_fuzzing_total_and_one_demo_length():
    readme = (ROOT / "README.md").read_text()
    totals = set(re.findall(r"([\d,]{7,}) inputs", readme))
    assert len(totals) == 1, totals
    fuzz = (ROOT / "docs" / "benchmarks" / "fuzz.md").read_text()
    assert f"**{totals.pop()}**" in fuzz
    assert "two-minute" not in readme and "under a minute" not in readme


def test_files_the_project_links_exist():
    for src in (ROOT / "pyproject.toml", ROOT / "README.md"):
        for rel in re.findall(r"\b(docs/[\w./-]+\.md)\b", src.read_text()):
            assert (ROOT / rel).exists(), (src.name, rel)
