"""The versions the tests pass with are pinned (constraints.txt), and pyproject.toml agrees.

dev.py (and so CI) and deploy/Dockerfile install with ``-c constraints.txt``; the lower
bounds in pyproject.toml are the tested versions, and the lint tools are pinned exactly.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support import REPO

ROOT = Path(REPO)


def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, sep, pinned = line.partition("==")
        assert sep, f"constraints.txt: {line!r} is not NAME==VERSION"
        assert pinned, f"constraints.txt: {line!r} is not NAME==VERSION"
        out[canonicalize_name(name)] = pinned
    return out


def project() -> dict[str, object]:
    table: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return table


def requirements(*groups: str) -> list[Requirement]:
    meta = project()
    found = [Requirement(r) for r in meta["dependencies"]]  # type: ignore[attr-defined]
    for group in groups:
        found += [Requirement(r) for r in meta["optional-dependencies"][group]]  # type: ignore[index]
    return found


def test_every_requirement_is_pinned_within_its_bounds() -> None:
    pinned = pins()
    for req in requirements("dev", "local"):
        name = canonicalize_name(req.name)
        assert name in pinned, f"constraints.txt does not pin {req.name}"
        assert req.specifier.contains(pinned[name], prereleases=True), \
            f"{req.name}=={pinned[name]} is outside pyproject's {req.specifier}"


def test_lower_bounds_are_the_tested_versions() -> None:
    pinned = pins()
    for req in requirements():
        lower = [s.version for s in req.specifier if s.operator == ">="]
        assert lower, f"{req.name} has no lower bound"
        tested = Version(pinned[canonicalize_name(req.name)])
        bound = Version(lower[0])
        assert (bound.major, bound.minor) == (tested.major, tested.minor), \
            f"{req.name}>={bound} claims versions older than the tested {tested}"


def test_the_lint_tools_are_pinned_exactly() -> None:
    pinned = pins()
    for req in requirements("dev"):
        if req.name in ("ruff", "mypy"):
            [spec] = list(req.specifier)
            assert spec.operator == "==", req
            assert spec.version == pinned[req.name], req


def test_this_environment_runs_the_pinned_versions() -> None:
    for name, pinned in pins().items():
        try:
            assert installed_version(name) == pinned, f"{name} {installed_version(name)} != {pinned}"
        except PackageNotFoundError:
            raise AssertionError(f"{name} is pinned but not installed") from None


def test_dev_py_and_ci_install_with_the_constraints() -> None:
    dev = (ROOT / "dev.py").read_text()
    assert re.search(r'"-c", str\(CONSTRAINTS\)', dev)
    assert 'ROOT / "constraints.txt"' in dev
    assert "dev.py test" in (ROOT / ".ci" / "run").read_text()
