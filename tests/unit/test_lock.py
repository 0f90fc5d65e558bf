"""constraints.txt, the lock every install reads (make demo, make test, .ci/run, both images):
it pins every dependency the package declares at a version its range admits, and the
environment the tests run in is the locked one (a drifted install would measure other numbers,
docs/results.md)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "constraints.txt"


def _locked() -> dict[str, Version]:
    pins = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt line {number}: {line!r} is not name==version"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in project["dependencies"] + extras["dev"] + extras["deepspeed"]]


def test_every_declared_dependency_is_locked_within_its_range():
    pins = _locked()
    for req in _declared():
        name = canonicalize_name(req.name)
        if name == "torch":  # installed first from a CPU or CUDA index, pinned in pyproject
            assert "torch" not in pins
            continue
        assert name in pins, f"{req.name} is declared in pyproject.toml but not locked"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req}"
        )


def test_the_test_environment_is_the_locked_one():
    drifted = []
    for name, version in _locked().items():
        try:
            installed = Version(metadata.version(name))
        except metadata.PackageNotFoundError:
            continue  # the deepspeed extra's packages are locked for the CUDA image
        if installed != version:
            drifted.append(f"{name} {installed} (locked {version})")
    assert not drifted, "installed versions differ from constraints.txt: " + ", ".join(drifted)
