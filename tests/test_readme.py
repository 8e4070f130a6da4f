"""The README's test command and .ci/run must stay the same line."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```sh\n")[1:]]
    test_cmd = next(b for b in blocks if "pytest" in b and "pip install" in b)
    assert test_cmd in ci.splitlines()
    demo_cmd = next(b for b in blocks if "ecgstream demo" in b)
    assert demo_cmd.startswith("python3 -m venv .venv")
