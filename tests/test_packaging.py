"""Both distributions build (wheel and sdist) and pass ``twine check``, with the metadata we declare.

Builds run offline (``python -m build --no-isolation``: setuptools and build come from the
test extra) on a copy of the source tree in a temporary directory, so the work tree is
never touched.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import superline_zmq

ROOT = Path(superline_zmq.__file__).resolve().parent.parent
IGNORE = shutil.ignore_patterns(
    ".git", "*.egg-info", "__pycache__", "build", "dist", ".mypy_cache", ".ruff_cache", ".pytest_cache", "*.pyc"
)


def _build(src: Path, out: Path) -> tuple[Path, Path]:
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(out), str(src)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(zf.read(name).decode())


@pytest.mark.parametrize(
    ("subdir", "name", "version"),
    [
        (".", "superline_zmq", superline_zmq.__version__),
        ("adapters/redis", "superline_zmq_redis", None),
    ],
)
def test_wheel_and_sdist_build_and_pass_twine_check(
    tmp_path: Path, subdir: str, name: str, version: str | None
) -> None:
    src = tmp_path / "src"
    shutil.copytree(ROOT / subdir, src, ignore=IGNORE)
    if version is None:
        ns: dict[str, str] = {}
        exec((src / name / "_version.py").read_text(), ns)
        version = ns["__version__"]
    wheel, sdist = _build(src, tmp_path / "dist")
    assert wheel.name.startswith(f"{name}-{version}-") and sdist.name == f"{name}-{version}.tar.gz"
    done = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    meta = _metadata(wheel)
    assert meta["Version"] == version
    assert meta["License-Expression"] == "MIT"
    assert "LICENSE" in meta.get_all("License-File", [])
    classifiers = meta.get_all("Classifier", [])
    assert "Typing :: Typed" in classifiers and not any(c.startswith("License ::") for c in classifiers)
    with zipfile.ZipFile(wheel) as zf:
        files = zf.namelist()
    assert f"{name}/py.typed" in files and f"{name}/_version.py" in files
    assert any(f.endswith(".dist-info/licenses/LICENSE") for f in files)
    with tarfile.open(sdist) as tf:
        members = {m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name}
    assert {"LICENSE", "pyproject.toml", "README.md"} <= members
    if name == "superline_zmq":
        assert "CHANGELOG.md" in members
        assert "superline_zmq/metrics.py" in members and "superline_zmq/prometheus.py" in members
        extras = meta.get_all("Provides-Extra", [])
        assert "metrics" in extras
        assert any(
            r.startswith("prometheus_client") and 'extra == "metrics"' in r for r in meta.get_all("Requires-Dist", [])
        )


def test_the_version_has_one_source() -> None:
    import importlib.metadata

    import superline_zmq_redis

    assert importlib.metadata.version("superline-zmq") == superline_zmq.__version__
    assert importlib.metadata.version("superline-zmq-redis") == superline_zmq_redis.__version__
