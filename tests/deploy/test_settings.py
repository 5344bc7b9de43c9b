"""The manifests give each edgepm process what its code reads: EDGEPM_* variables,
settings that validate, paths on volumes, listen addresses the probes reach, addresses
of Services that exist, and command lines its parser accepts."""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.code_env import (
    CommandLineError,
    PackageEnv,
    parse_command_line,
    path_fields,
    scan_package,
    script_package,
    settings_fields,
)
from tests.deploy.dockerfiles import IMAGES, image_cmd, read_stages
from tests.deploy.manifests import (
    ContainerRef,
    Rendering,
    command_line,
    containers,
    expand_references,
    kustomization_roots,
    mount_for,
    resolve_env,
)

ROOTS = kustomization_roots()
Render = Callable[[str], Rendering]

# Subcommands that only read the files their settings point to: init-db records the
# versions it finds in the model store, and the API serves them.
READ_ONLY_COMMANDS = {
    ("edgepm-control-plane", "init-db"),
    ("edgepm-control-plane", "serve"),
}
# The servers and the settings fields that set where they listen.
LISTENERS = {
    ("edgepm-agent",): ("http_host", "http_port"),
    ("edgepm-control-plane", "serve"): ("http_host", "http_port"),
    ("edgepm-control-plane", "dashboard"): ("dashboard_host", "dashboard_port"),
}
# Addresses on which the kubelet's probes and the Services reach a pod.
POD_ADDRESSES = ("0.0.0.0", "::")
# Settings fields that name another service: (host field, port field) or a URL field.
CLIENT_ADDRESSES = {
    "edge_agent": [("mqtt_host", "mqtt_port"), ("control_plane_url", None)],
    "control_plane": [("database_url", None)],
}
# Settings a command line does not use, by console script, subcommand and an option
# it must have (None: any): the dashboard reads only the database, and score-batch with
# --model reads neither the database nor the model store.
UNUSED_SETTINGS = {
    ("edgepm-control-plane", "dashboard", None): {"model_store"},
    ("edgepm-control-plane", "score-batch", "--model"): {"database_url", "model_store"},
}
_SHELL_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_CLUSTER_DOMAIN = ".svc.cluster.local"


@dataclass(frozen=True)
class Process:
    """One of our containers with the command it runs and its environment."""

    ref: ContainerRef
    argv: list[str]
    package: str
    env: dict[str, str]

    @property
    def command(self) -> tuple[str, ...]:
        """The console script and its subcommand: ("edgepm-control-plane", "serve")."""
        return tuple(self.argv[:2]) if len(self.argv) > 1 else tuple(self.argv)

    def unused_settings(self) -> set[str]:
        """Return the settings fields this command line does not use."""
        unused: set[str] = set()
        for (*command, flag), fields in UNUSED_SETTINGS.items():
            if tuple(command) == self.command and (flag is None or flag in self.argv):
                unused |= fields
        return unused


def _exec_line(script: str, env: dict[str, str]) -> list[str]:
    """Return the argv of a shell script's ``exec`` line, with variables expanded."""
    joined = re.sub(r"\\\n\s*", " ", script)
    for line in joined.splitlines():
        words = line.strip()
        if words.startswith("exec "):
            expanded = _SHELL_VARIABLE.sub(
                lambda m: env.get(m.group(1), m.group(0)), words
            )
            return shlex.split(expanded)[1:]
    return []


def processes(rendering: Rendering) -> Iterator[Process]:
    """Yield the containers that run our images, with their command and environment."""
    for ref in containers(rendering):
        image = ref.container["image"].rpartition(":")[0]
        if image not in IMAGES:
            continue
        env = resolve_env(ref).values
        # The kubelet expands $(NAME) in command and args from the container's env.
        argv = [
            expand_references(word, env) for word in command_line(ref, image_cmd(image))
        ]
        if argv[:2] == ["/bin/sh", "-c"] and len(argv) > 2:
            argv = _exec_line(argv[2], env)
        package = script_package(argv[0]) if argv else None
        assert package is not None, (
            f"{ref.where('args')}: {argv[:1]} is not a console script of pyproject.toml"
        )
        yield Process(ref, argv, package, env)


def _required(scan: PackageEnv, env: dict[str, str]) -> list[str]:
    return sorted(
        name for name in scan.names if name not in env and name not in scan.defaults
    )


@pytest.mark.parametrize("name", ROOTS)
def test_code_env_names_set_or_defaulted(rendered: Render, name: str) -> None:
    problems = []
    for process in processes(rendered(name)):
        scan = scan_package(process.package)
        for missing in _required(scan, process.env):
            problems.append(
                f"{process.ref.where('env')}: {missing} is read by "
                f"{scan.names[missing]} and has no default there; set it in the "
                "container's env or its ConfigMap"
            )

    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ROOTS)
def test_container_env_names_known(rendered: Render, name: str) -> None:
    # A misspelled variable is ignored by the code, which then runs on its default.
    problems = []
    for process in processes(rendered(name)):
        scan = scan_package(process.package)
        for variable in sorted(process.env):
            if variable.startswith("EDGEPM_") and variable not in scan.names:
                problems.append(
                    f"{process.ref.where('env')}: {variable} is set but "
                    f"{process.package}/ never reads it; check the spelling"
                )

    assert not problems, "\n".join(problems)


def _settings(process: Process) -> list[Any]:
    """Return the settings the process builds, leaving out those that fail to build.

    test_settings_build_from_manifest_env reports the failures.
    """
    built = []
    for cls in scan_package(process.package).settings_classes:
        # Each package raises its own error type (SettingsError, ConfigError).
        with contextlib.suppress(Exception):
            built.append(cls.from_env(process.env))
    return built


@pytest.mark.parametrize("name", ROOTS)
def test_settings_build_from_manifest_env(rendered: Render, name: str) -> None:
    problems = []
    for process in processes(rendered(name)):
        for cls in scan_package(process.package).settings_classes:
            try:
                cls.from_env(process.env)
            except Exception as exc:  # each package raises its own error type
                problems.append(
                    f"{process.ref.where('env')}: {cls.__qualname__}.from_env rejects "
                    f"the container's environment: {exc}"
                )

    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ROOTS)
def test_setting_paths_on_volumes(rendered: Render, name: str) -> None:
    problems = []
    for process in processes(rendered(name)):
        for settings in _settings(process):
            for field, path in path_fields(settings).items():
                if field in process.unused_settings():
                    continue
                mount = mount_for(process.ref, str(path))
                variable = f"EDGEPM_{field.upper()}"
                if mount is None:
                    problems.append(
                        f"{process.ref.where('volumeMounts')}: {variable}={path} is on "
                        "no volume mount, so it is on the read-only root file system"
                    )
                elif (
                    mount.get("readOnly") and process.command not in READ_ONLY_COMMANDS
                ):
                    problems.append(
                        f"{process.ref.where('volumeMounts')}: {variable}={path} is on "
                        f"the read-only mount {mount['mountPath']}, but "
                        f"{' '.join(process.command)} writes there"
                    )

    assert not problems, "\n".join(problems)


def _container_ports(ref: ContainerRef) -> dict[int | str, int]:
    ports: dict[int | str, int] = {}
    for port in ref.container.get("ports") or ():
        ports[port["containerPort"]] = port["containerPort"]
        if "name" in port:
            ports[port["name"]] = port["containerPort"]
    return ports


@pytest.mark.parametrize("name", ROOTS)
def test_servers_listen_on_pod_address(rendered: Render, name: str) -> None:
    problems = []
    for process in processes(rendered(name)):
        fields = LISTENERS.get(process.command) or LISTENERS.get(process.command[:1])
        if fields is None:
            continue
        host_field, port_field = fields
        for settings in _settings(process):
            values = settings_fields(settings)
            host, port = values[host_field], values[port_field]
            where = process.ref.where("env")
            if host not in POD_ADDRESSES:
                problems.append(
                    f"{where}: EDGEPM_{host_field.upper()}={host} is not reachable by "
                    "the kubelet's probes or a Service; set 0.0.0.0"
                )
            ports = _container_ports(process.ref)
            if port not in ports.values():
                problems.append(
                    f"{process.ref.where('ports')}: EDGEPM_{port_field.upper()}={port} "
                    f"is not a containerPort ({sorted(set(ports.values()))})"
                )
            probe = (process.ref.container.get("readinessProbe") or {}).get("httpGet")
            if probe is not None and ports.get(probe["port"]) != port:
                problems.append(
                    f"{process.ref.where('readinessProbe.httpGet.port')}: "
                    f"{probe['port']!r} is not the port the server listens on ({port})"
                )

    assert not problems, "\n".join(problems)


def _namespace(rendering: Rendering) -> str | None:
    for obj in rendering.objects:
        if "namespace" in obj["metadata"]:
            return str(obj["metadata"]["namespace"])
    return None


def _service_problem(
    host: str, port: int, rendering: Rendering, everything: list[Rendering]
) -> str | None:
    """Return why host:port reaches no rendered Service, or None when it does."""
    if host.endswith(_CLUSTER_DOMAIN):
        host = host[: -len(_CLUSTER_DOMAIN)]
    elif host.endswith(".svc"):
        host = host[: -len(".svc")]
    service_name, _, namespace = host.partition(".")
    if not namespace:
        pool = [rendering]
    else:
        pool = [other for other in everything if _namespace(other) == namespace]
    if not pool:
        return f"no kustomization renders namespace {namespace!r}"
    for candidate in pool:
        service = candidate.find("Service", service_name)
        if service is None:
            continue
        offered = [entry["port"] for entry in service["spec"]["ports"]]
        if port in offered:
            return None
        return (
            f"Service {service_name} in {candidate.name} offers ports {offered}, "
            f"not {port}"
        )
    return f"no Service {service_name!r} in {', '.join(c.name for c in pool)}"


def _url_address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443, "postgresql": 5432, "postgres": 5432}
    return parts.hostname or "", parts.port or default.get(parts.scheme, 0)


@pytest.mark.parametrize("name", ROOTS)
def test_clients_reach_services(rendered: Render, name: str) -> None:
    rendering = rendered(name)
    everything = [rendered(root) for root in ROOTS]
    problems = []
    for process in processes(rendering):
        addresses: list[tuple[str, str, int]] = []
        for settings in _settings(process):
            values = settings_fields(settings)
            for host_field, port_field in CLIENT_ADDRESSES.get(process.package, ()):
                if host_field not in values or host_field in process.unused_settings():
                    continue
                if port_field is None:
                    if values[host_field].startswith("sqlite"):
                        problems.append(
                            f"{process.ref.where('env')}: EDGEPM_{host_field.upper()} "
                            "is a SQLite file; deployments use PostgreSQL"
                        )
                        continue
                    host, port = _url_address(values[host_field])
                else:
                    host, port = values[host_field], values[port_field]
                addresses.append((f"EDGEPM_{host_field.upper()}", host, port))
        if process.package == "simulators":
            arguments = parse_command_line(process.argv)
            addresses.append(("--host/--port", arguments.host, arguments.port))
        for label, host, port in addresses:
            problem = _service_problem(host, port, rendering, everything)
            if problem:
                problems.append(
                    f"{process.ref.where('env')}: {label} {host}:{port}: {problem}"
                )

    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ROOTS)
def test_container_args_parse(rendered: Render, name: str) -> None:
    problems = []
    for process in processes(rendered(name)):
        try:
            parse_command_line(process.argv)
        except CommandLineError as exc:
            problems.append(f"{process.ref.where('args')}: {exc}")

    assert not problems, "\n".join(problems)


def _secret_ref(container: dict[str, Any], variable: str) -> tuple[str, str] | None:
    for entry in container.get("env") or ():
        if entry["name"] == variable:
            selector = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if selector:
                return selector["name"], selector["key"]
    return None


@pytest.mark.parametrize("name", ROOTS)
def test_database_login_matches_postgres(rendered: Render, name: str) -> None:
    rendering = rendered(name)
    server = rendering.find("StatefulSet", "edgepm-postgres")
    if server is None:
        return  # no database here; its clients are checked where it runs
    server_container = server["spec"]["template"]["spec"]["containers"][0]
    server_env = {e["name"]: e.get("value") for e in server_container["env"]}
    server_secret = _secret_ref(server_container, "POSTGRES_PASSWORD")
    for process in processes(rendering):
        url = process.env.get("EDGEPM_DATABASE_URL")
        if url is None:
            continue
        parts = urlsplit(url)
        where = process.ref.where("env")
        assert parts.username == server_env["POSTGRES_USER"], (
            f"{where}: EDGEPM_DATABASE_URL user {parts.username!r} is not the "
            f"POSTGRES_USER {server_env['POSTGRES_USER']!r} of "
            f"{rendering.describe(server)}"
        )
        assert parts.path.lstrip("/") == server_env["POSTGRES_DB"], (
            f"{where}: EDGEPM_DATABASE_URL database {parts.path!r} is not the "
            f"POSTGRES_DB {server_env['POSTGRES_DB']!r} of {rendering.describe(server)}"
        )
        assert parts.password is None, (
            f"{where}: EDGEPM_DATABASE_URL carries a password; give it as PGPASSWORD "
            "from the Secret"
        )
        assert _secret_ref(process.ref.container, "PGPASSWORD") == server_secret, (
            f"{where}: PGPASSWORD does not come from the Secret key the server's "
            f"POSTGRES_PASSWORD comes from ({server_secret})"
        )


@pytest.mark.parametrize("name", ROOTS)
def test_simulator_publishes_to_agent_site(rendered: Render, name: str) -> None:
    rendering = rendered(name)
    sites = {
        p.env.get("EDGEPM_SITE")
        for p in processes(rendering)
        if p.package == "edge_agent"
    }
    for process in processes(rendering):
        if process.package != "simulators":
            continue
        site = parse_command_line(process.argv).site
        assert site in sites, (
            f"{process.ref.where('args')}: --site={site} is not the site of this "
            f"kustomization's agent ({sorted(sites)})"
        )


def _image_paths(image: str) -> list[str]:
    """Return the absolute destinations the final stage of an image copies files to."""
    stage = read_stages(IMAGES[image])[-1]
    return [copy.arguments.split()[-1] for copy in stage.all("COPY")]


@pytest.mark.parametrize("name", ROOTS)
def test_argument_paths_exist_in_pod(rendered: Render, name: str) -> None:
    problems = []
    for process in processes(rendered(name)):
        image = process.ref.container["image"].rpartition(":")[0]
        for position, word in enumerate(process.argv):
            if not word.startswith("/"):
                continue
            flag = process.argv[position - 1] if position else ""
            mount = mount_for(process.ref, word)
            in_image = any(
                word == path or word.startswith(path.rstrip("/") + "/")
                for path in _image_paths(image)
            )
            if mount is None and not in_image:
                problems.append(
                    f"{process.ref.where('args')}: {flag} {word} is neither on a "
                    f"volume mount nor copied into {image} by {IMAGES[image].name}"
                )
            elif flag == "--output" and (mount is None or mount.get("readOnly")):
                problems.append(
                    f"{process.ref.where('args')}: {flag} {word} is not on a writable "
                    "volume mount"
                )

    assert not problems, "\n".join(problems)
