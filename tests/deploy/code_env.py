"""What the project's code expects of a container: EDGEPM_* variables, settings, argv.

The variable names come from the sources themselves (every ``EDGEPM_*`` name in a
package), so the deployment checks follow the code as it changes.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import importlib
import inspect
import io
import re
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

from tests.deploy.manifests import PROJECT_ROOT

PACKAGES = ("edge_agent", "control_plane", "simulators")
ENV_NAME = re.compile(r"\bEDGEPM_[A-Z0-9_]*[A-Z0-9]\b")
# Calls that look a variable up with a default as their second argument.
_LOOKUPS = ("get", "getenv", "setdefault")


@dataclass(frozen=True)
class PackageEnv:
    """The EDGEPM_* variables one package reads.

    Attributes:
        package: the import name, e.g. ``edge_agent``.
        names: each variable read, with the first file that names it.
        defaults: the variables the code falls back on a default for.
        settings_classes: dataclasses with a ``from_env`` constructor.
    """

    package: str
    names: dict[str, str]
    defaults: frozenset[str]
    settings_classes: tuple[type, ...]


@cache
def scan_package(package: str) -> PackageEnv:
    """Collect the EDGEPM_* names a package's sources contain, and their defaults.

    A name that a module only uses as a key of a dict literal is left out: that module
    builds the environment of another process (as the demo launcher does), and reading
    is that process's business.
    """
    names: dict[str, str] = {}
    mentions: dict[str, int] = {}
    dict_keys: dict[str, int] = {}
    defaults: set[str] = set()
    for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        relative = path.relative_to(PROJECT_ROOT).as_posix()
        for name in ENV_NAME.findall(text):
            names.setdefault(name, relative)
            mentions[name] = mentions.get(name, 0) + 1
        tree = ast.parse(text, filename=str(path))
        for name in _dict_literal_keys(tree):
            dict_keys[name] = dict_keys.get(name, 0) + 1
        defaults.update(_names_with_literal_default(tree))
    for name, count in dict_keys.items():
        if mentions.get(name, 0) <= count:
            names.pop(name, None)

    # A settings class decides for the variables of its fields: the field's default is
    # the variable's, whatever the lookups in from_env look like.
    classes = _settings_classes(package)
    for cls in classes:
        for field in dataclasses.fields(cls):
            name = f"EDGEPM_{field.name.upper()}"
            names.setdefault(name, f"{cls.__module__}.{cls.__qualname__}")
            has_default = (
                field.default is not dataclasses.MISSING
                or field.default_factory is not dataclasses.MISSING
            )
            if has_default:
                defaults.add(name)
            else:
                defaults.discard(name)
    return PackageEnv(package, names, frozenset(defaults), classes)


def _dict_literal_keys(tree: ast.AST) -> list[str]:
    keys = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key in node.keys:
                is_text = isinstance(key, ast.Constant) and isinstance(key.value, str)
                if is_text and ENV_NAME.fullmatch(key.value):
                    keys.append(key.value)
    return keys


def _names_with_literal_default(tree: ast.AST) -> set[str]:
    """Names looked up with a non-empty default: ``environ.get("EDGEPM_X", "1")``.

    An empty default (``get("EDGEPM_X", "")``) is how code reads a required variable
    before checking it, so it does not count.
    """
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or len(node.args) < 2:
            continue
        function = node.func
        called = function.attr if isinstance(function, ast.Attribute) else None
        if isinstance(function, ast.Name):
            called = function.id
        if called not in _LOOKUPS:
            continue
        name, default = node.args[0], node.args[1]
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            continue
        empty = isinstance(default, ast.Constant) and default.value in ("", None)
        if ENV_NAME.fullmatch(name.value) and not empty:
            found.add(name.value)
    return found


def _settings_classes(package: str) -> tuple[type, ...]:
    """Import the package's modules that define ``from_env`` and return its settings."""
    classes = []
    for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
        if "def from_env" not in path.read_text(encoding="utf-8"):
            continue
        module_name = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and callable(getattr(value, "from_env", None))
                and value.__module__ == module_name
            ):
                classes.append(value)
    return tuple(classes)


@cache
def console_scripts() -> dict[str, str]:
    """Return pyproject.toml's console scripts: name to ``module:function``."""
    document = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text("utf-8"))
    return dict(document["project"]["scripts"])


def script_package(script: str) -> str | None:
    """Return the top-level package a console script runs, or None if unknown."""
    target = console_scripts().get(script)
    return target.split(".", 1)[0].split(":", 1)[0] if target else None


class CommandLineError(ValueError):
    """A command line the program's own parser rejects; the message has its output."""


class _Parsed(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


def parse_command_line(argv: list[str]) -> argparse.Namespace:
    """Parse argv with the real parser of the console script argv[0].

    The program's entry point runs up to its first ``parse_args`` call, which is
    stopped right after parsing, so nothing else of the program runs.

    Raises:
        CommandLineError: argv[0] is no console script, its entry point cannot be
            imported, or its parser rejects the arguments.
    """
    target = console_scripts().get(argv[0])
    if target is None:
        raise CommandLineError(
            f"{argv[0]!r} is not a console script of pyproject.toml "
            f"({', '.join(sorted(console_scripts()))})"
        )
    module_name, _, function_name = target.partition(":")
    try:
        entry: Callable[..., Any] = getattr(
            importlib.import_module(module_name), function_name
        )
    except (ImportError, AttributeError) as exc:
        raise CommandLineError(
            f"the entry point {target} of {argv[0]} cannot be imported: {exc}"
        ) from exc

    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(
        self: argparse.ArgumentParser, *args: Any, **kwargs: Any
    ) -> Any:
        raise _Parsed(original(self, *args, **kwargs))

    errors = io.StringIO()
    takes_argv = bool(inspect.signature(entry).parameters)
    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop),
        mock.patch.object(sys, "argv", list(argv)),
        contextlib.redirect_stderr(errors),
        contextlib.redirect_stdout(io.StringIO()),
    ):
        try:
            entry(list(argv[1:])) if takes_argv else entry()
        except _Parsed as parsed:
            return parsed.namespace
        except SystemExit as exc:
            raise CommandLineError(
                f"{' '.join(argv)}: exit status {exc.code}: {errors.getvalue().strip()}"
            ) from None
    raise CommandLineError(f"{target} returned without parsing its arguments")


def settings_fields(settings: Any) -> dict[str, Any]:
    """Return a settings dataclass instance's fields by name."""
    return {
        field.name: getattr(settings, field.name)
        for field in dataclasses.fields(settings)
    }


def path_fields(settings: Any) -> dict[str, Path]:
    """Return the fields of a settings instance whose value is a path."""
    return {
        name: value
        for name, value in settings_fields(settings).items()
        if isinstance(value, Path)
    }
