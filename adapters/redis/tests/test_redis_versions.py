"""redis-py at both ends of the range this distribution declares.

The suite itself runs on the newest release (pinned in ``.ci/constraints.txt``; ``.ci/latest``
takes whatever is newest today). This test runs the adapter's own tests once more on the
*lowest* release the distribution admits, read from its ``pyproject.toml``: the floor is
installed with ``pip install --target`` into a temporary directory put first on
``PYTHONPATH`` of a child pytest, so the rest of the environment is the one under test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
DIST = HERE.parent
#: Environment variable marking the child run, so it does not recurse.
CHILD = "SUPERLINE_REDIS_FLOOR_RUN"


def declared_floor() -> str:
    """The ``X`` of ``redis>=X`` in the distribution's dependencies."""
    text = (DIST / "pyproject.toml").read_text()
    m = re.search(r'"redis>=([0-9][0-9.]*)[,"]', text)
    assert m is not None, "adapters/redis/pyproject.toml declares no redis>= floor"
    return m.group(1)


def _run(args: list[str], env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=DIST, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(CHILD in os.environ, reason="this is the floor run itself (started by this test)")
def test_the_adapter_passes_its_tests_on_the_lowest_declared_redis_py(tmp_path: Path) -> None:
    floor = declared_floor()
    target = tmp_path / "site"
    install = _run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
         "--target", str(target), f"redis=={floor}"],
        timeout=120,
    )  # fmt: skip
    assert install.returncode == 0, f"could not install redis=={floor}:\n{install.stdout}{install.stderr}"
    # a clean child: not a worker of this run (pytest-xdist's variables would make plugins think so)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    env.update(PYTHONPATH=str(target), **{CHILD: "1"})
    probe = _run([sys.executable, "-c", "import redis; print(redis.__version__)"], env=env)
    assert probe.stdout.strip() == floor, f"the child run would not use redis {floor}: {probe.stdout}{probe.stderr}"
    run = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], env=env)
    tail = "\n".join((run.stdout + run.stderr).splitlines()[-40:])
    assert run.returncode == 0, f"the Redis adapter's tests failed on redis-py {floor}:\n{tail}"
    assert re.search(r"\d+ passed", run.stdout), tail
