"""The container images: pinned bases, a numeric non-root user, dependencies from
pyproject.toml only, a small build context, and an agent image with every library the
agent imports."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.code_env import console_scripts
from tests.deploy.dockerfiles import (
    DOCKER_DIR,
    IMAGES,
    exec_form,
    is_in_build_context,
    read_stages,
    shell_commands,
)
from tests.deploy.manifests import PROJECT_ROOT

DOCKERFILES = sorted(IMAGES.values())
PYPROJECT = PROJECT_ROOT / "pyproject.toml"
PROJECT = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
AGENT_PACKAGES = DOCKER_DIR / "agent-packages.txt"
# python:<3.11.patch>-slim-<Debian release>: a patch release, never a moving tag.
PYTHON_BASE = re.compile(r"^python:3\.11\.\d+-slim-(bookworm|trixie)$")
VERSIONED_TAG = re.compile(r"^[a-z0-9./-]+:v?\d+(\.\d+)+[-.A-Za-z0-9]*$")
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "git", "curl", "wget")
DEV_PACKAGES = ("pytest", "ruff", "mypy", "selenium", "kubernetes-validate")
SECRET_FILES = (
    "k3s/overlays/central/secrets/central.env",
    "k3s/overlays/edge/site-example/secrets/edge.env",
    "k3s/overlays/demo/secrets/demo.env",
)
OUTSIDE_CONTEXT = (
    ".git/config",
    ".venv/bin/python",
    "tests/conftest.py",
    "var/demo/control.sqlite3",
    "edge_agent/__pycache__/store.cpython-311.pyc",
    "k3s/overlays/central/kustomization.yaml",
    *SECRET_FILES,
)


def _name(path: Path) -> str:
    return path.relative_to(PROJECT_ROOT).as_posix()


def _load_select_requirements() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "select_requirements", DOCKER_DIR / "select_requirements.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_name)
def test_dockerfile_bases_pinned(dockerfile: Path) -> None:
    for stage in read_stages(dockerfile):
        where = f"{_name(dockerfile)}:{stage.line}: FROM {stage.base}"
        assert not stage.base.endswith(":latest"), f"{where} uses the latest tag"
        assert VERSIONED_TAG.match(stage.base), (
            f"{where} is not pinned to a version tag"
        )
        assert PYTHON_BASE.match(stage.base), (
            f"{where} is not python:3.11.<patch>-slim-<release>, the Python the test "
            "suite runs on"
        )


def test_dockerfiles_share_one_base() -> None:
    # The same interpreter and system libraries under the agent's and the control
    # plane's onnxruntime.
    bases = {
        _name(path): {stage.base for stage in read_stages(path)} for path in DOCKERFILES
    }
    assert len(set().union(*bases.values())) == 1, (
        f"the images use different bases: {bases}"
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_name)
def test_dockerfile_user_numeric_non_root(dockerfile: Path) -> None:
    final = read_stages(dockerfile)[-1]
    users = final.all("USER")
    assert users, (
        f"{_name(dockerfile)}: the final stage sets no USER, so it runs as root"
    )
    user = users[-1]
    uid, _, gid = user.arguments.partition(":")
    where = f"{_name(dockerfile)}:{user.line}: USER {user.arguments}"
    # Kubernetes can check only a numeric uid against runAsNonRoot.
    assert uid.isdigit(), f"{where}: the uid is not numeric"
    assert int(uid) > 0, f"{where}: uid 0 is root"
    if gid:
        assert gid.isdigit(), f"{where}: the gid is not numeric"
        assert int(gid) > 0, f"{where}: gid 0 is root's group"
    later = [item for item in final.instructions if item.line > user.line]
    assert all(item.keyword != "USER" for item in later)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_name)
def test_dockerfile_pip_installs_project_pins(dockerfile: Path) -> None:
    for stage in read_stages(dockerfile):
        for run in stage.all("RUN"):
            generated: set[str] = set()
            if "select_requirements.py" in run.arguments:
                generated.update(re.findall(r">\s*(\S+)", run.arguments))
            for words in shell_commands(run):
                if words[:2] != ["pip", "install"]:
                    continue
                where = f"{_name(dockerfile)}:{run.line}: {' '.join(words)}"
                assert "--no-cache-dir" in words, f"{where}: add --no-cache-dir"
                arguments = iter(words[2:])
                for word in arguments:
                    if word in ("-r", "--requirement"):
                        path = next(arguments)
                        assert path in generated, (
                            f"{where}: {path} is not written by select_requirements.py "
                            "from pyproject.toml in the same RUN"
                        )
                    elif not word.startswith("-"):
                        assert word == "." or word.startswith(("./", "/")), (
                            f"{where}: {word!r} installs a package by name; add it to "
                            "pyproject.toml and install the project"
                        )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_name)
def test_dockerfile_final_stage_has_no_dev_tools(dockerfile: Path) -> None:
    final = read_stages(dockerfile)[-1]
    for run in final.all("RUN"):
        for words in shell_commands(run):
            where = f"{_name(dockerfile)}:{run.line}: {' '.join(words)}"
            assert words[:2] != ["pip", "install"], (
                f"{where}: install in the build stage and copy the environment"
            )
            if words[:2] == ["apt-get", "install"]:
                tools = [word for word in words if word in BUILD_TOOLS]
                assert not tools, f"{where}: build tools {tools} in the final image"
    text = dockerfile.read_text(encoding="utf-8")
    for package in DEV_PACKAGES:
        assert package not in text, (
            f"{_name(dockerfile)} mentions {package}, a dev tool"
        )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_name)
def test_dockerfile_runs_console_script_under_tini(dockerfile: Path) -> None:
    final = read_stages(dockerfile)[-1]
    entrypoint = exec_form(final.all("ENTRYPOINT")[-1])
    command = exec_form(final.all("CMD")[-1])

    assert entrypoint == ["/usr/bin/tini", "--"], (
        f"{_name(dockerfile)}: ENTRYPOINT {entrypoint}; tini as PID 1 forwards "
        "SIGTERM, and the manifests rely on args replacing CMD only"
    )
    assert command[0] in console_scripts(), (
        f"{_name(dockerfile)}: CMD {command} does not start with a console script of "
        "pyproject.toml"
    )


def test_python_base_satisfies_requires_python() -> None:
    required = PROJECT["requires-python"]
    for path in DOCKERFILES:
        version = re.search(r"python:(\d+\.\d+)", read_stages(path)[-1].base)
        assert version is not None
        minimum = re.search(r">=\s*(\d+\.\d+)", required)
        assert minimum is not None, f"requires-python {required!r} has no lower bound"
        assert tuple(map(int, version.group(1).split("."))) >= tuple(
            map(int, minimum.group(1).split("."))
        ), f"{_name(path)}: Python {version.group(1)} does not satisfy {required}"


@pytest.mark.parametrize("path", OUTSIDE_CONTEXT)
def test_dockerignore_keeps_file_out(path: str) -> None:
    assert not is_in_build_context(path), (
        f".dockerignore lets {path} into the build context"
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=_name)
def test_dockerignore_keeps_copy_sources(dockerfile: Path) -> None:
    for stage in read_stages(dockerfile):
        for copy in stage.all("COPY"):
            words = copy.arguments.split()
            if any(word.startswith("--from") for word in words):
                continue
            for source in [word for word in words[:-1] if not word.startswith("--")]:
                where = f"{_name(dockerfile)}:{copy.line}: COPY {source}"
                path = PROJECT_ROOT / source
                assert path.exists(), f"{where}: {source} does not exist"
                files = [path] if path.is_file() else sorted(path.rglob("*.py"))
                assert files, f"{where}: {source} has no files"
                for file in files[:20]:
                    relative = _name(file)
                    assert is_in_build_context(relative), (
                        f"{where}: .dockerignore keeps {relative} out of the context"
                    )


def test_select_requirements_keeps_pyproject_pins(tmp_path: Path) -> None:
    select = _load_select_requirements()
    names = tmp_path / "names.txt"
    names.write_text("# a comment\nonnxruntime\n\nPaho_MQTT  # spelled loosely\n")

    selected = select.select_requirements(PYPROJECT, select.read_names(names))

    pins = {
        select.normalize(re.split(r"[<>=!~\[; ]", item)[0]): item
        for item in PROJECT["dependencies"]
    }
    assert selected == [pins["onnxruntime"], pins["paho-mqtt"]]


def test_select_requirements_rejects_unknown_name(tmp_path: Path) -> None:
    select = _load_select_requirements()

    with pytest.raises(select.SelectionError, match="'left-pad' is not a dependency"):
        select.select_requirements(PYPROJECT, ["left-pad"])


def test_agent_packages_are_project_dependencies() -> None:
    select = _load_select_requirements()
    names = select.read_names(AGENT_PACKAGES)

    selected = select.select_requirements(PYPROJECT, names)

    assert len(selected) == len(names)
    onnxruntime = [item for item in selected if item.startswith("onnxruntime")]
    assert onnxruntime == [
        d for d in PROJECT["dependencies"] if d.startswith("onnxruntime")
    ]


def _third_party_imports(package: str) -> dict[str, str]:
    """Return the top-level modules a package imports that are not its own or stdlib."""
    found: dict[str, str] = {}
    for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".", 1)[0]
                if top != package and top not in sys.stdlib_module_names:
                    found.setdefault(top, _name(path))
    return found


def test_agent_packages_cover_agent_imports() -> None:
    select = _load_select_requirements()
    listed = {select.normalize(name) for name in select.read_names(AGENT_PACKAGES)}
    distributions = importlib.metadata.packages_distributions()
    for module, first_use in _third_party_imports("edge_agent").items():
        provided_by = {select.normalize(d) for d in distributions.get(module, ())}
        assert provided_by, (
            f"{first_use} imports {module}, which no installed package provides"
        )
        assert provided_by & listed, (
            f"{first_use} imports {module} (from {sorted(provided_by)}), which "
            f"docker/agent-packages.txt does not list, so the agent image lacks it"
        )


def test_deploy_doc_image_tags_current() -> None:
    text = (PROJECT_ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    tags = re.findall(r"edgepm/(?:agent|control-plane):([0-9][^\s`'\"]*)", text)
    assert tags, "docs/deploy.md shows no image tag"
    stale = sorted({tag for tag in tags if tag != PROJECT["version"]})
    assert not stale, (
        f"docs/deploy.md shows image tags {stale}, but pyproject.toml's version is "
        f"{PROJECT['version']}"
    )
