"""The documentation site builds with ``mkdocs build --strict``: no broken link, anchor or include.

Strict turns every mkdocs warning into a failure: a link to a page or anchor that does not
exist, a ``--8<--`` include of a missing file (``check_paths``), a docstring mkdocstrings
cannot render. The tools come from the ``docs`` extra (``.ci/deps`` installs it). Without
them the test is skipped on a developer's machine, but fails under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _missing(reason: str) -> None:
    """Skip with ``reason`` on a developer's machine; fail in CI, which installs the docs extra."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI must build the documentation site, but {reason}")
    pytest.skip(reason)


def test_the_site_builds_strict(tmp_path: Path) -> None:
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "pymdownx"):
        if importlib.util.find_spec(module.split(".")[0]) is None or importlib.util.find_spec(module) is None:
            _missing(f"{module} is not installed (pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site"), "-f", "mkdocs.yml"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    site = tmp_path / "site"
    # the pages the nav promises, and the generated API reference with a public name in it
    for page in ("index.html", "delivery/index.html", "failures/index.html", "cluster-sizing/index.html"):
        assert (site / page).is_file(), page
    api = (site / "reference" / "api" / "index.html").read_text()
    assert 'id="superline_zmq.create_socket_server"' in api
