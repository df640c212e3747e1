"""The checkout is an installable package: pyproject.toml agrees with requirements.txt, a built
wheel installs into a fresh virtual environment and its ``ainerd`` command works, and no module
edits ``sys.path`` to find another."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def _runtime_pins() -> dict[str, Requirement]:
    """requirements.txt's pins above the ``# tests`` line (the runtime ones)."""
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.strip().startswith("# tests"):
            break
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = req
    return pins


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_dependencies_match_the_pins():
    """Every runtime pin has a dependency in pyproject.toml that the pinned version satisfies,
    with the same extras, and pyproject.toml declares nothing requirements.txt does not pin."""
    pins = _runtime_pins()
    deps = {canonicalize_name(r.name): r for r in map(Requirement, _project()["dependencies"])}
    assert set(deps) == set(pins), (set(deps) ^ set(pins))
    for name, pin in pins.items():
        version = next(iter(pin.specifier)).version
        assert deps[name].specifier.contains(version), (name, str(deps[name].specifier), version)
        assert deps[name].extras == pin.extras, name


def test_console_script_is_the_cli():
    scripts = _project()["scripts"]
    assert scripts["ainerd"] == "ainerd_core.cli:main"
    assert scripts["ainerd-dashboard"] == "dashboard.__main__:main"


def test_no_sys_path_edits():
    """Imports resolve through the installed package or pytest's ``pythonpath = .``."""
    pattern = re.compile(r"sys\.path\.(insert|append)\(|sys\.path\s*\+?=")
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True)
    files = tracked.stdout.split() if tracked.returncode == 0 else [
        str(p.relative_to(REPO)) for p in REPO.rglob("*.py") if ".venv" not in p.parts]
    offenders = [f"{f}:{i}" for f in files if (REPO / f).exists()
                 for i, line in enumerate((REPO / f).read_text(errors="replace").splitlines(), 1)
                 if pattern.search(line) and f != "tests/test_packaging.py"]
    assert not offenders, offenders


@pytest.mark.slow
def test_wheel_installs_and_ainerd_runs(tmp_path):
    """Build a wheel from a copy of the sources (offline: this environment's setuptools), install it
    without dependencies into a fresh venv, and run its ``ainerd`` from outside the checkout; the
    dependencies come from this environment's site-packages on PYTHONPATH."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("ainerd_core", "dashboard"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                    str(src)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("ainerd-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=300)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": sysconfig.get_paths()["purelib"], "HOME": str(tmp_path)}
    out = subprocess.run([str(venv / "bin" / "ainerd"), "--help"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: ainerd ") and "precompute" in out.stdout
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import ainerd_core, dashboard.explorer as e; print(ainerd_core.__file__); "
                            "print((e.ASSETS / 'explorer.css').is_file())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    path, has_css = where.stdout.split()
    assert Path(path).is_relative_to(venv) and has_css == "True"
