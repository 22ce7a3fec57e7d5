"""The sdist and wheel users install: built, checked by twine, installed into a fresh venv.

``python -m build`` builds the sdist, then the wheel from that sdist, so a file the sdist
misses is missing from the wheel too. The wheel is installed with ``--no-deps``: resolving its
dependencies would download torch (a CUDA build from PyPI, gigabytes) and the rest of the
stack, while what this check is about is the wheel itself (its package mapping core/ ->
modelcache, data files, py.typed, entry point, declared dependencies). The fresh venv imports
the dependencies already installed in the test interpreter's venv through a plain path line in
a ``.pth`` file (their editable-install hooks are not run, so ``modelcache`` can only come from
the wheel). Offline, about half a minute.
"""

from __future__ import annotations

import email
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.package

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("modelcache", "modelcache_langchain", "modelcache_llamaindex")
_SKIP = {".git", ".venv", ".pp", "dist", "build", "modelcache_data", "notebooks", "benchmarks"}


def _env() -> dict[str, str]:
    """The environment without the developer's import paths."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_NO_INDEX"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(*args: str | Path, cwd: Path) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{args}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def _ignore(folder: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if n in _SKIP or n.startswith(".") or n.endswith(".egg-info")}
    return skipped | {n for n in names if n in ("__pycache__",) or n.endswith(".pyc")}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """sdist and wheel built from a copy of the source tree (the build writes into its tree)."""
    work = tmp_path_factory.mktemp("package")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=_ignore)
    out = work / "dist"
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source, cwd=work)
    yield out


def _one(dist: Path, pattern: str) -> Path:
    [found] = dist.glob(pattern)
    return found


def test_twine_check_passes(dist: Path) -> None:
    output = _run(sys.executable, "-m", "twine", "check", "--strict", *dist.iterdir(), cwd=dist)
    assert output.count("PASSED") == 2, output


def test_sdist_holds_what_the_wheel_needs(dist: Path) -> None:
    with tarfile.open(_one(dist, "modelcache-*.tar.gz")) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    data = {p.relative_to(ROOT).as_posix() for p in (ROOT / "core" / "data").iterdir()}
    required = {"pyproject.toml", "README.md", "core/py.typed", *data}
    required |= {f"{p}/py.typed" for p in PACKAGES[1:]}
    assert required <= names, sorted(required - names)


def test_wheel_maps_core_to_modelcache(dist: Path) -> None:
    with zipfile.ZipFile(_one(dist, "modelcache-*.whl")) as wheel:
        names = set(wheel.namelist())
        [metadata_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(wheel.read(metadata_name))
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = wheel.read(entry_points).decode()
    tops = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith("info")}
    assert tops == set(PACKAGES), tops  # no generic `core` or `tests` in site-packages
    for package in PACKAGES:
        assert f"{package}/__init__.py" in names and f"{package}/py.typed" in names
    data = {f"modelcache/data/{p.name}" for p in (ROOT / "core" / "data").iterdir()}
    assert data <= names, sorted(data - names)
    modules = ("embedding/__init__.py", "server/app.py", "cli/__init__.py", "lab/latency.py")
    assert {f"modelcache/{m}" for m in modules} <= names
    assert "modelcache = modelcache.cli:main" in scripts
    extras = set(metadata.get_all("Provides-Extra") or [])
    assert {"langchain", "llamaindex", "server", "multilingual"} <= extras
    requires = metadata.get_all("Requires-Dist") or []
    assert any(r.startswith("langchain-core") and "langchain" in r for r in requires)


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel (its dependencies through the .pth line): its bin/."""
    work = tmp_path_factory.mktemp("installed")
    target = work / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    purelib = _run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=work
    )
    dependencies = sysconfig.get_paths()["purelib"]
    wheel = _one(dist, "modelcache-*.whl")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", wheel, cwd=work)
    Path(purelib.strip(), "project-dependencies.pth").write_text(dependencies + "\n")
    return target / "bin"


def test_wheel_installs_into_a_fresh_venv_and_imports(installed: Path, tmp_path: Path) -> None:
    python = installed / "python"
    probe = (
        "import importlib.resources, pathlib, sys\n"
        "import modelcache, modelcache_langchain, modelcache_llamaindex\n"
        "for m in (modelcache, modelcache_langchain, modelcache_llamaindex):\n"
        "    assert pathlib.Path(m.__file__).is_relative_to(sys.prefix), m.__file__\n"
        "    assert importlib.resources.files(m).joinpath('py.typed').is_file()\n"
        "assert importlib.resources.files(modelcache).joinpath('data/guard_tech.txt').is_file()\n"
        "from modelcache_langchain import ModelCache\n"
        "from modelcache_llamaindex import wrap_llm\n"
        "from modelcache import Cache, CacheConfig\n"
        "print('ok', modelcache.__file__)\n"
    )
    assert _run(python, "-c", probe, cwd=tmp_path).startswith("ok")
    assert "Usage" in _run(installed / "modelcache", "--help", cwd=tmp_path)


def _qqp_like(folder: Path) -> Path:
    """A tiny file in the QQP format the latency benchmark reads: paraphrase pairs and singles."""
    folder.mkdir()
    things = ["bicycle", "laptop", "printer", "kettle", "lawn mower", "router", "camera", "sofa"]
    rows = [
        {"a": f"How do I repair a broken {thing}?", "b": f"How can I fix my broken {thing}?",
         "same_answer": True, "a_cluster": n, "b_cluster": n}
        for n, thing in enumerate(things)
    ]  # fmt: skip
    cities = ["Lima", "Oslo", "Hanoi", "Quito", "Accra", "Perth", "Minsk", "Turin", "Cork"]
    rows += [
        {"a": f"What is the population of {city}?", "b": f"Who was the first mayor of {city}?",
         "same_answer": False, "a_cluster": 100 + 2 * n, "b_cluster": 101 + 2 * n}
        for n, city in enumerate(cities)
    ]  # fmt: skip
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    (folder / "qqp_train.jsonl").write_text(lines, encoding="utf-8")
    (folder / "qqp_dev.jsonl").write_text("", encoding="utf-8")
    return folder


@pytest.mark.model
def test_bench_runs_from_the_installed_wheel(installed: Path, tmp_path: Path) -> None:
    """`modelcache bench` needs no source checkout: a tiny run on the shipped model."""
    data = _qqp_like(tmp_path / "data")
    options = ["--sizes", "8,12", "--queries", "3", "--throughput", "4", "--batch", "4"]
    folders = ["--vector-cache", str(tmp_path / "vectors"), "--workdir", str(tmp_path / "work")]
    args = ["bench", "--data", str(data), *options, *folders]
    report = _run(installed / "modelcache", *args, cwd=tmp_path)
    assert "`modelcache bench --sizes 8,12 --queries 3 --backend onnx`" in report
    assert "| 12 | exact | 3 | 3 | 0 | 0 |" in report  # every exact repeat hit
    assert "## Batched insert throughput (real embedding)" in report
