"""Every K3s kustomization renders, validates against the Kubernetes schema and keeps
its secrets out of the repository."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import kubernetes_validate
import pytest
import yaml

from tests.deploy.manifests import (
    EXAMPLE_SUFFIX,
    K3S_DIR,
    ORIGIN_ANNOTATION,
    PROJECT_ROOT,
    Rendering,
    containers,
    kustomization_roots,
    resolve_env,
    secret_sources,
)

# K3s v1.32 is the release these manifests are written for; kubernetes-validate picks
# the newest schema it has that is not newer.
KUBERNETES_VERSION = "1.32.0"
ROOTS = kustomization_roots()
OVERLAYS = [name for name in ROOTS if name.startswith("k3s/overlays/")]
# Names of variables that carry a credential; their values must come from a Secret.
SECRET_WORDS = ("PASSWORD", "TOKEN", "SECRET", "PRIVATE_KEY")
PLACEHOLDER_PREFIX = "REPLACE"
# Kinds that live outside any namespace.
CLUSTER_KINDS = ("Namespace", "StorageClass", "ClusterRole", "ClusterRoleBinding")

Render = Callable[[str], Rendering]


def test_kustomization_roots_found() -> None:
    assert "k3s/overlays/central" in ROOTS
    assert "k3s/overlays/demo" in ROOTS
    assert "k3s/overlays/edge/site-example" in ROOTS
    assert "k3s/jobs/score-batch" in ROOTS


@pytest.mark.parametrize("name", ROOTS)
def test_kustomization_renders_objects(rendered: Render, name: str) -> None:
    rendering = rendered(name)

    assert rendering.objects, f"{name} renders no objects"


@pytest.mark.parametrize("name", ROOTS)
def test_manifest_validates_strict(rendered: Render, name: str) -> None:
    rendering = rendered(name)
    problems = []
    for obj in rendering.objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path) or "(top level)"
            problems.append(f"{rendering.describe(obj)}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{rendering.describe(obj)}: {exc.message}")

    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", OVERLAYS)
def test_overlay_uses_one_namespace(rendered: Render, name: str) -> None:
    rendering = rendered(name)
    namespaces = [obj["metadata"]["name"] for obj in rendering.of_kind("Namespace")]
    assert len(namespaces) == 1, f"{name} renders namespaces {namespaces}, expected one"

    strays = [
        f"{rendering.describe(obj)}: metadata.namespace is "
        f"{obj['metadata'].get('namespace')!r}, expected {namespaces[0]!r}"
        for obj in rendering.objects
        if obj["kind"] not in CLUSTER_KINDS
        and obj["metadata"].get("namespace") != namespaces[0]
    ]
    assert not strays, "\n".join(strays)


def test_job_kustomizations_leave_namespace_open(rendered: Render) -> None:
    # Applied with kubectl -n <namespace of the deployment>, which conflicts with a
    # namespace written in the objects.
    for name in ROOTS:
        if not name.startswith("k3s/jobs/"):
            continue
        rendering = rendered(name)
        for obj in rendering.objects:
            assert "namespace" not in obj["metadata"], (
                f"{rendering.describe(obj)}: metadata.namespace is set; leave it to "
                "kubectl apply -n"
            )


def test_sources_define_no_secret_objects() -> None:
    problems = []
    for path in sorted(K3S_DIR.rglob("*.yaml")):
        relative = path.relative_to(PROJECT_ROOT)
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not isinstance(document, dict):
                continue
            if document.get("kind") == "Secret":
                problems.append(
                    f"{relative}: a Secret object in a committed file; generate it "
                    "with a secretGenerator from an uncommitted file instead"
                )
            for generator in document.get("secretGenerator") or ():
                if generator.get("literals"):
                    problems.append(
                        f"{relative}: secretGenerator {generator.get('name')!r} has "
                        "literals; read the values from an uncommitted envs file"
                    )

    assert not problems, "\n".join(problems)


def test_secret_sources_ignored_by_git() -> None:
    sources = secret_sources()
    assert sources, "no secretGenerator reads a file"
    for source in sources:
        relative = source.relative_to(PROJECT_ROOT).as_posix()
        result = subprocess.run(
            ["git", "check-ignore", "--quiet", relative],
            cwd=PROJECT_ROOT,
            check=False,
            timeout=30,
        )
        assert result.returncode == 0, (
            f"{relative} is read by a secretGenerator but not ignored by git; "
            "add it to k3s/.gitignore"
        )


def test_secret_sources_have_examples() -> None:
    for source in secret_sources():
        example = source.with_name(source.name + EXAMPLE_SUFFIX)
        relative = example.relative_to(PROJECT_ROOT).as_posix()
        assert example.is_file(), f"{relative} is missing; commit an example"
        result = subprocess.run(
            ["git", "check-ignore", "--quiet", relative],
            cwd=PROJECT_ROOT,
            check=False,
            timeout=30,
        )
        assert result.returncode == 1, (
            f"{relative} is ignored by git; it must be committed"
        )


def test_secret_examples_hold_placeholders() -> None:
    for source in secret_sources():
        example = source.with_name(source.name + EXAMPLE_SUFFIX)
        relative = example.relative_to(PROJECT_ROOT).as_posix()
        entries = [
            line.split("=", 1)
            for line in example.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        assert entries, f"{relative} lists no keys"
        for key, value in entries:
            assert value.startswith(PLACEHOLDER_PREFIX), (
                f"{relative}: {key}={value!r} looks like a real value; an example "
                f"holds placeholders that start with {PLACEHOLDER_PREFIX}"
            )


@pytest.mark.parametrize("name", ROOTS)
def test_rendered_secrets_come_from_generators(rendered: Render, name: str) -> None:
    rendering = rendered(name)
    for secret in rendering.of_kind("Secret"):
        annotations = secret["metadata"].get("annotations") or {}
        origin = yaml.safe_load(annotations.get(ORIGIN_ANNOTATION, "")) or {}
        generator = (origin.get("configuredBy") or {}).get("kind")
        assert generator == "SecretGenerator", (
            f"{rendering.describe(secret)}: the Secret is not generated from an "
            f"uncommitted file (origin: {origin})"
        )


@pytest.mark.parametrize("name", ROOTS)
def test_container_env_has_no_inline_secrets(rendered: Render, name: str) -> None:
    problems = []
    for ref in containers(rendered(name)):
        for index, entry in enumerate(ref.container.get("env") or ()):
            looks_secret = any(word in entry["name"].upper() for word in SECRET_WORDS)
            if looks_secret and "value" in entry:
                problems.append(
                    f"{ref.where(f'env[{index}].value')}: {entry['name']} is written "
                    "inline; take it from a Secret with valueFrom.secretKeyRef"
                )

    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ROOTS)
def test_env_references_resolve(rendered: Render, name: str) -> None:
    problems = []
    for ref in containers(rendered(name)):
        problems.extend(resolve_env(ref).problems)

    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ROOTS)
def test_volume_sources_exist(rendered: Render, name: str) -> None:
    rendering = rendered(name)
    central = rendered("k3s/overlays/central")
    problems = []
    for ref in containers(rendering):
        if ref.is_init or ref.index:
            continue  # one pass per pod
        for index, volume in enumerate(ref.pod_spec.get("volumes") or ()):
            where = (
                f"{rendering.describe(ref.workload)} "
                f"{ref.pod_spec_path}.volumes[{index}]"
            )
            if "configMap" in volume:
                reference = ("ConfigMap", volume["configMap"]["name"])
            elif "secret" in volume:
                reference = ("Secret", volume["secret"]["secretName"])
            elif "persistentVolumeClaim" in volume:
                reference = (
                    "PersistentVolumeClaim",
                    volume["persistentVolumeClaim"]["claimName"],
                )
            else:
                continue
            # Job templates run beside the central deployment and use its claims.
            pool = [rendering, central] if name.startswith("k3s/jobs/") else [rendering]
            if not any(candidate.find(*reference) for candidate in pool):
                problems.append(
                    f"{where}: {reference[0]} {reference[1]!r} is not rendered"
                )

    assert not problems, "\n".join(problems)
