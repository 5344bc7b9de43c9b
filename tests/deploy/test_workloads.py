"""What the rendered workloads need on a real K3s cluster: probes, resources, security,
pinned images, Services and Ingress routes that reach a container, storage that
local-path can provide."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from typing import Any

import pytest

from tests.deploy.manifests import (
    PROJECT_ROOT,
    ContainerRef,
    Rendering,
    containers,
    is_long_running,
    kustomization_roots,
    mount_for,
    parse_quantity,
    pod_labels,
    pod_spec,
    resolve_env,
)

ROOTS = kustomization_roots()
Render = Callable[[str], Rendering]

PROJECT_VERSION = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text("utf-8"))[
    "project"
]["version"]
OWN_IMAGES = ("edgepm/agent", "edgepm/control-plane")
AGENT_IMAGE = "edgepm/agent"
# The edge agent must fit a small node; the brief for edge nodes is 256 MiB.
AGENT_MEMORY_LIMIT_BYTES = 256 * 2**20
# A tag that starts with a version number: 0.1.0, 15.18-bookworm, 2.0.20.
VERSIONED_TAG = re.compile(r"^v?\d+(\.\d+)+([-.][A-Za-z0-9.]+)?$")
STORAGE_CLASS = "local-path"
# The one exception to "no hostPort": the site broker, which machines on the plant
# network reach on the edge node's address, in the edge overlays only.
HOST_PORT_ALLOWED = {("k3s/overlays/edge/", "edgepm-mosquitto")}
EDGE_ROOTS = [name for name in ROOTS if name.startswith("k3s/overlays/edge/")]
# The kustomizations that run a site broker.
BROKER_ROOTS = ["k3s/overlays/demo", *EDGE_ROOTS]
SITE_LABEL = "edgepm.io/site"
EDGE_TAINT = "edgepm.io/edge"


def _container_ports(container: dict[str, Any]) -> list[dict[str, Any]]:
    return list(container.get("ports") or ())


def _port_resolves(port: int | str, container: dict[str, Any]) -> bool:
    for declared in _container_ports(container):
        if port in (declared.get("name"), declared["containerPort"]):
            return True
    return False


def _image_parts(image: str) -> tuple[str, str | None]:
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:
        return image, None
    return name, tag


@pytest.mark.parametrize("name", ROOTS)
def test_container_probes_present(rendered: Render, name: str) -> None:
    problems = []
    for ref in containers(rendered(name)):
        probes = [
            key
            for key in ("readinessProbe", "livenessProbe", "startupProbe")
            if key in ref.container
        ]
        if is_long_running(ref):
            for key in ("readinessProbe", "livenessProbe"):
                if key not in ref.container:
                    problems.append(f"{ref.where(key)} is missing")
        elif ref.is_init and probes:
            # The API server rejects probes on init containers that are not sidecars.
            problems.append(
                f"{ref.where(probes[0])}: an init container may not have probes "
                "unless it is a sidecar (restartPolicy: Always)"
            )

    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ROOTS)
def test_probe_ports_resolve(rendered: Render, name: str) -> None:
    problems = []
    for ref in containers(rendered(name)):
        for key in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = ref.container.get(key) or {}
            for handler in ("httpGet", "tcpSocket", "grpc"):
                if handler not in probe:
                    continue
                port = probe[handler]["port"]
                if not _port_resolves(port, ref.container):
                    problems.append(
                        f"{ref.where(f'{key}.{handler}.port')}: {port!r} is not a "
                        "containerPort name or number of this container"
                    )

    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ROOTS)
def test_container_resources_set(rendered: Render, name: str) -> None:
    problems = []
    for ref in containers(rendered(name)):
        resources = ref.container.get("resources") or {}
        for section in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                value = (resources.get(section) or {}).get(resource)
                if value is None:
                    problems.append(
                        f"{ref.where(f'resources.{section}.{resource}')} is missing"
                    )
                    continue
                request = (resources.get("requests") or {}).get(resource)
                if (
                    section == "limits"
                    and request is not None
                    and (parse_quantity(request) > parse_quantity(value))
                ):
                    problems.append(
                        f"{ref.where('resources')}: {resource} request {request} is "
                        f"above its limit {value}"
                    )

    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ROOTS)
def test_agent_memory_fits_small_node(rendered: Render, name: str) -> None:
    for ref in containers(rendered(name)):
        if _image_parts(ref.container["image"])[0] != AGENT_IMAGE:
            continue
        limit = parse_quantity(ref.container["resources"]["limits"]["memory"])
        assert limit <= AGENT_MEMORY_LIMIT_BYTES, (
            f"{ref.where('resources.limits.memory')} is "
            f"{ref.container['resources']['limits']['memory']}, above 256Mi"
        )


def _effective(ref: ContainerRef, key: str) -> Any:
    container = ref.container.get("securityContext") or {}
    if key in container:
        return container[key]
    return (ref.pod_spec.get("securityContext") or {}).get(key)


@pytest.mark.parametrize("name", ROOTS)
def test_container_security_restricted(rendered: Render, name: str) -> None:
    # The Pod Security "restricted" level, plus a read-only root file system.
    problems = []
    for ref in containers(rendered(name)):
        context = ref.container.get("securityContext") or {}
        if _effective(ref, "runAsNonRoot") is not True:
            problems.append(f"{ref.where('securityContext.runAsNonRoot')} is not true")
        user = _effective(ref, "runAsUser")
        if not isinstance(user, int) or user <= 0:
            problems.append(
                f"{ref.where('securityContext.runAsUser')} is {user!r}, "
                "expected a numeric non-root uid"
            )
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(
                f"{ref.where('securityContext.allowPrivilegeEscalation')} is not false"
            )
        if (context.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(
                f"{ref.where('securityContext.capabilities.drop')} is not [ALL]"
            )
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(
                f"{ref.where('securityContext.readOnlyRootFilesystem')} is not true"
            )
        if context.get("privileged"):
            problems.append(f"{ref.where('securityContext.privileged')} is true")
        seccomp = _effective(ref, "seccompProfile") or {}
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(
                f"{ref.where('securityContext.seccompProfile')} is not RuntimeDefault"
            )
        for index, port in enumerate(_container_ports(ref.container)):
            allowed = any(
                name.startswith(prefix) and ref.workload["metadata"]["name"] == workload
                for prefix, workload in HOST_PORT_ALLOWED
            )
            if port.get("hostPort") and not allowed:
                problems.append(f"{ref.where(f'ports[{index}].hostPort')} is set")
    for obj in rendered(name).objects:
        found = pod_spec(obj)
        if found is None:
            continue
        spec, path = found
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                problems.append(f"{rendered(name).describe(obj)} {path}.{key} is true")

    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ROOTS)
def test_pod_disables_service_links(rendered: Render, name: str) -> None:
    # Service links put <SERVICE>_PORT=tcp://... variables into every container;
    # for Services named edgepm-* those land in the EDGEPM_ prefix of our settings.
    rendering = rendered(name)
    for obj in rendering.objects:
        found = pod_spec(obj)
        if found is None:
            continue
        spec, path = found
        assert spec.get("enableServiceLinks") is False, (
            f"{rendering.describe(obj)} {path}.enableServiceLinks is not false"
        )
        assert spec.get("automountServiceAccountToken") is False, (
            f"{rendering.describe(obj)} {path}.automountServiceAccountToken is not "
            "false; no edgepm pod talks to the Kubernetes API"
        )


@pytest.mark.parametrize("name", ROOTS)
def test_image_tags_versioned(rendered: Render, name: str) -> None:
    problems = []
    for ref in containers(rendered(name)):
        image = ref.container["image"]
        repository, tag = _image_parts(image)
        if tag is None:
            problems.append(f"{ref.where('image')}: {image!r} has no tag")
        elif not VERSIONED_TAG.match(tag):
            problems.append(f"{ref.where('image')}: tag {tag!r} is not a version")
        if ref.container.get("imagePullPolicy") != "IfNotPresent":
            problems.append(
                f"{ref.where('imagePullPolicy')} is "
                f"{ref.container.get('imagePullPolicy')!r}, expected IfNotPresent "
                "(images are imported into K3s, not pulled)"
            )
        if repository in OWN_IMAGES and tag != PROJECT_VERSION:
            problems.append(
                f"{ref.where('image')}: {image!r} does not carry the project version "
                f"{PROJECT_VERSION} from pyproject.toml; set newTag in the overlay"
            )

    assert not problems, "\n".join(problems)


def _workloads_selected(rendering: Rendering, selector: dict[str, str]) -> list[dict]:
    return [
        obj
        for obj in rendering.objects
        if pod_spec(obj) is not None and selector.items() <= pod_labels(obj).items()
    ]


@pytest.mark.parametrize("name", ROOTS)
def test_service_ports_resolve(rendered: Render, name: str) -> None:
    rendering = rendered(name)
    problems = []
    for service in rendering.of_kind("Service"):
        selector = service["spec"].get("selector") or {}
        workloads = _workloads_selected(rendering, selector)
        if not workloads:
            problems.append(
                f"{rendering.describe(service)}: spec.selector {selector} "
                "matches no workload"
            )
            continue
        for index, port in enumerate(service["spec"]["ports"]):
            target = port.get("targetPort", port["port"])
            for workload in workloads:
                spec, _ = pod_spec(workload) or ({}, "")
                if not any(
                    _port_resolves(target, c) for c in spec.get("containers", ())
                ):
                    problems.append(
                        f"{rendering.describe(service)}: spec.ports[{index}]"
                        f".targetPort {target!r} is no containerPort of "
                        f"{workload['kind']}/"
                        f"{workload['metadata']['name']}"
                    )

    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ROOTS)
def test_ingress_backends_resolve(rendered: Render, name: str) -> None:
    rendering = rendered(name)
    for ingress in rendering.of_kind("Ingress"):
        assert ingress["spec"].get("ingressClassName") == "traefik", (
            f"{rendering.describe(ingress)}: spec.ingressClassName is not traefik, "
            "the ingress controller K3s installs"
        )
        for rule_index, rule in enumerate(ingress["spec"]["rules"]):
            for path_index, path in enumerate(rule["http"]["paths"]):
                where = (
                    f"{rendering.describe(ingress)}: spec.rules[{rule_index}]"
                    f".http.paths[{path_index}].backend.service"
                )
                backend = path["backend"]["service"]
                service = rendering.find("Service", backend["name"])
                assert service is not None, (
                    f"{where}.name {backend['name']!r} is not rendered"
                )
                requested_port = backend["port"].get(
                    "name", backend["port"].get("number")
                )
                offered = [(p.get("name"), p["port"]) for p in service["spec"]["ports"]]
                assert any(requested_port in pair for pair in offered), (
                    f"{where}.port {requested_port!r} is not a port of Service "
                    f"{backend['name']} ({offered})"
                )


@pytest.mark.parametrize("name", ROOTS)
def test_hpa_target_scales_on_cpu(rendered: Render, name: str) -> None:
    rendering = rendered(name)
    for hpa in rendering.of_kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        workload = rendering.find(target["kind"], target["name"])
        assert workload is not None, (
            f"{rendering.describe(hpa)}: spec.scaleTargetRef {target['name']!r} "
            "is not rendered"
        )
        assert "replicas" not in workload["spec"], (
            f"{rendering.describe(workload)}: spec.replicas is set although "
            f"{hpa['metadata']['name']} scales it; kubectl apply would reset the count"
        )
        for container in workload["spec"]["template"]["spec"]["containers"]:
            requests = (container.get("resources") or {}).get("requests") or {}
            assert "cpu" in requests, (
                f"{rendering.describe(workload)} container {container['name']}: "
                "resources.requests.cpu is missing; CPU utilization is relative to it"
            )


def _claim_specs(rendering: Rendering) -> list[tuple[str, dict[str, Any]]]:
    specs = [
        (rendering.describe(claim), claim["spec"])
        for claim in rendering.of_kind("PersistentVolumeClaim")
    ]
    for statefulset in rendering.of_kind("StatefulSet"):
        for index, template in enumerate(
            statefulset["spec"].get("volumeClaimTemplates", ())
        ):
            specs.append(
                (
                    f"{rendering.describe(statefulset)} "
                    f"spec.volumeClaimTemplates[{index}]",
                    template["spec"],
                )
            )
    return specs


@pytest.mark.parametrize("name", ROOTS)
def test_volume_claims_use_local_path(rendered: Render, name: str) -> None:
    for where, spec in _claim_specs(rendered(name)):
        assert spec.get("storageClassName") == STORAGE_CLASS, (
            f"{where}: spec.storageClassName is {spec.get('storageClassName')!r}, "
            f"expected {STORAGE_CLASS}, the StorageClass K3s ships"
        )
        assert spec.get("accessModes") == ["ReadWriteOnce"], (
            f"{where}: spec.accessModes is {spec.get('accessModes')}; local-path "
            "provides ReadWriteOnce only"
        )


@pytest.mark.parametrize("name", ROOTS)
def test_single_writer_uses_recreate(rendered: Render, name: str) -> None:
    # A Deployment that no HorizontalPodAutoscaler scales and that mounts a claim
    # read-write is one writer by design; a rolling update would run two.
    rendering = rendered(name)
    scaled = {
        hpa["spec"]["scaleTargetRef"]["name"]
        for hpa in rendering.of_kind("HorizontalPodAutoscaler")
    }
    for ref in containers(rendering):
        if (
            ref.workload["kind"] != "Deployment"
            or ref.workload["metadata"]["name"] in scaled
        ):
            continue
        claims = {
            volume["name"]
            for volume in ref.pod_spec.get("volumes") or ()
            if "persistentVolumeClaim" in volume
        }
        writes = [
            mount
            for mount in ref.container.get("volumeMounts") or ()
            if mount["name"] in claims and not mount.get("readOnly")
        ]
        if writes:
            strategy = (
                ref.workload["spec"].get("strategy", {}).get("type", "RollingUpdate")
            )
            assert strategy == "Recreate", (
                f"{rendering.describe(ref.workload)}: spec.strategy.type is "
                f"{strategy}, but {ref.name} writes to a ReadWriteOnce claim; "
                "use Recreate"
            )
            assert ref.workload["spec"].get("replicas", 1) == 1, (
                f"{rendering.describe(ref.workload)}: spec.replicas above 1 with a "
                "single-writer claim"
            )


def _site_of(rendering: Rendering) -> str | None:
    site = rendering.find("ConfigMap", "edgepm-site")
    return None if site is None else site["data"]["EDGEPM_SITE"]


@pytest.mark.parametrize("name", EDGE_ROOTS)
def test_edge_pods_pinned_to_site(rendered: Render, name: str) -> None:
    rendering = rendered(name)
    site = _site_of(rendering)
    assert site is not None, f"{name}: ConfigMap edgepm-site is not rendered"
    for workload_name in ("edgepm-agent", "edgepm-mosquitto"):
        workload = rendering.find("Deployment", workload_name)
        assert workload is not None, (
            f"{name}: Deployment {workload_name} is not rendered"
        )
        spec = workload["spec"]["template"]["spec"]
        terms = spec["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        expressions = [
            expression
            for term in terms
            for expression in term["matchExpressions"]
            if expression["key"] == SITE_LABEL
        ]
        where = (
            f"{rendering.describe(workload)} spec.template.spec.affinity.nodeAffinity"
        )
        assert expressions, f"{where} does not select on {SITE_LABEL}"
        assert expressions[0]["values"] == [site], (
            f"{where}: {SITE_LABEL} values are {expressions[0]['values']}, expected "
            f"[{site!r}] from ConfigMap edgepm-site"
        )
        tolerated = {
            toleration.get("key") for toleration in spec.get("tolerations", ())
        }
        assert EDGE_TAINT in tolerated, (
            f"{rendering.describe(workload)} spec.template.spec.tolerations: no "
            f"toleration for the {EDGE_TAINT} taint of edge nodes"
        )


def _broker_files(rendering: Rendering) -> tuple[dict[str, Any], dict[str, str]] | None:
    broker = rendering.find("Deployment", "edgepm-mosquitto")
    if broker is None:
        return None
    volumes = broker["spec"]["template"]["spec"]["volumes"]
    config_volume = next(volume for volume in volumes if "configMap" in volume)
    config = rendering.find("ConfigMap", config_volume["configMap"]["name"])
    assert config is not None
    return broker, dict(config["data"])


def _directives(config_text: str) -> dict[str, str]:
    directives = {}
    for line in config_text.splitlines():
        words = line.split(None, 1)
        if words and not words[0].startswith("#"):
            directives[words[0]] = words[1].strip() if len(words) > 1 else ""
    return directives


@pytest.mark.parametrize("name", BROKER_ROOTS)
def test_broker_config_for_low_latency(rendered: Render, name: str) -> None:
    rendering = rendered(name)
    found = _broker_files(rendering)
    assert found is not None, f"{name}: Deployment edgepm-mosquitto is not rendered"
    broker, files = found
    directives = _directives(files["mosquitto.conf"])
    where = f"{rendering.describe(broker)} mosquitto.conf"

    assert directives.get("set_tcp_nodelay") == "true", (
        f"{where}: set_tcp_nodelay is not true"
    )
    assert directives.get("max_queued_messages") == "0", (
        f"{where}: max_queued_messages is not 0"
    )
    assert directives.get("persistence") == "true", f"{where}: persistence is not true"
    assert directives.get("allow_anonymous") == "false", (
        f"{where}: allow_anonymous is not false"
    )

    ref = next(
        r
        for r in containers(rendering)
        if r.workload is broker and r.name == "mosquitto"
    )
    for key in ("persistence_location", "password_file", "acl_file"):
        path = directives.get(key, "")
        mount = mount_for(ref, path.rstrip("/"))
        assert mount is not None, f"{where}: {key} {path!r} is not under a volume mount"
        if key == "persistence_location":
            assert not mount.get("readOnly"), (
                f"{where}: {key} {path!r} is on the read-only mount "
                f"{mount['mountPath']}"
            )


@pytest.mark.parametrize("name", BROKER_ROOTS)
def test_broker_users_match_clients(rendered: Render, name: str) -> None:
    rendering = rendered(name)
    found = _broker_files(rendering)
    assert found is not None, f"{name}: Deployment edgepm-mosquitto is not rendered"
    broker, files = found
    acl_users = {
        line.split(None, 1)[1].strip()
        for line in files["acl"].splitlines()
        if line.startswith("user ")
    }
    refs = [
        ref for ref in containers(rendering) if ref.workload is broker and ref.is_init
    ]
    env = resolve_env(refs[0]).values
    password_users = {value for key, value in env.items() if key.endswith("_USERNAME")}

    assert password_users == acl_users, (
        f"{rendering.describe(broker)}: the password file has users "
        f"{sorted(password_users)} but the acl names {sorted(acl_users)}"
    )
    for ref in containers(rendering):
        username = resolve_env(ref).values.get("EDGEPM_MQTT_USERNAME")
        if username is not None:
            assert username in acl_users, (
                f"{ref.where('env')}: EDGEPM_MQTT_USERNAME={username!r} is not a user "
                f"of the broker's acl ({sorted(acl_users)})"
            )


def test_score_batch_parts_match_completions(rendered: Render) -> None:
    rendering = rendered("k3s/jobs/score-batch")
    job = rendering.find("Job", "edgepm-score-batch")
    assert job is not None, "k3s/jobs/score-batch renders no Job edgepm-score-batch"
    where = rendering.describe(job)
    assert job["spec"].get("completionMode") == "Indexed", (
        f"{where}: spec.completionMode is not Indexed"
    )

    ref = next(r for r in containers(rendering) if r.workload is job and not r.is_init)
    parts = resolve_env(ref).values.get("SCORE_PARTS")
    assert parts == str(job["spec"]["completions"]), (
        f"{where}: SCORE_PARTS={parts!r} but spec.completions is "
        f"{job['spec']['completions']}; each index must own one part"
    )
