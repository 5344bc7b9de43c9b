"""Print the pinned requirements from pyproject.toml for a list of distribution names.

The agent image installs a subset of the project's dependencies; this keeps their
versions those of pyproject.toml. Usage:
``python select_requirements.py pyproject.toml agent-packages.txt > requirements.txt``
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# The distribution name at the start of a PEP 508 requirement string.
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class SelectionError(ValueError):
    """A requested distribution that pyproject.toml does not list as a dependency."""


def normalize(name: str) -> str:
    """Return a distribution name in PEP 503 normal form (lower case, dashes)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_names(path: Path) -> list[str]:
    """Read distribution names, one per line; blank lines and # comments are skipped."""
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return names


def project_requirements(pyproject: Path) -> dict[str, str]:
    """Return the project's dependencies keyed by normalized distribution name."""
    document = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    requirements = {}
    for requirement in document["project"]["dependencies"]:
        match = _NAME.match(requirement)
        if match is None:
            raise SelectionError(
                f"{pyproject}: cannot read the name of {requirement!r}"
            )
        requirements[normalize(match.group(1))] = requirement
    return requirements


def select_requirements(pyproject: Path, names: list[str]) -> list[str]:
    """Return the requirement strings of pyproject.toml for the given names, in order.

    Raises:
        SelectionError: a name is not among the project's dependencies.
    """
    requirements = project_requirements(pyproject)
    selected = []
    for name in names:
        key = normalize(name)
        if key not in requirements:
            raise SelectionError(
                f"{name!r} is not a dependency in {pyproject}; add it to "
                "[project] dependencies with its pinned version, or remove it from "
                "the package list"
            )
        selected.append(requirements[key])
    return selected


def main(argv: list[str]) -> int:
    """Print the selected requirements, one per line; return the exit status."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    pyproject, names_file = (Path(argument) for argument in argv)
    try:
        lines = select_requirements(pyproject, read_names(names_file))
    except SelectionError as exc:
        print(f"select_requirements: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
