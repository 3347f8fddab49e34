"""Every example runs to completion on its own (they are documentation that must stay true)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_example_runs(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=60, cwd=EXAMPLES.parent
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip(), f"{name} printed nothing"


def test_the_readme_taste_is_examples_taste_py() -> None:
    """The README shows examples/taste.py as it is (less its docstring), so the runnable copy is the shown one."""
    import ast
    import re

    readme = (EXAMPLES.parent / "README.md").read_text()
    shown = re.search(r"## A taste\n.*?```python\n(.*?)```", readme, re.S)
    assert shown is not None
    source = (EXAMPLES / "taste.py").read_text()
    body = ast.parse(source).body
    start = body[2].lineno if isinstance(body[1], ast.ImportFrom) and body[1].module == "__future__" else 1
    assert shown.group(1).strip() == "\n".join(source.splitlines()[start - 1 :]).strip()
