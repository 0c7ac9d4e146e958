"""deploy/: every file parsed, every command checked against the CLI, every variable against the code.

There is no Docker engine or Kubernetes cluster here, so the compose file, the
Dockerfile and the manifests are parsed and cross-checked: the commands they run must
parse as ``reqworker`` commands, the environment variables they set must be ones the
code (or Flower, or the profiles) reads, names they refer to must exist. What can run
here does: the Redis settings start a real ``redis-server`` and survive a restart, the
systemd units pass ``systemd-analyze verify``, and the healthchecks run against a real
worker and a real Flower.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import click
import pytest
import redis
import yaml

from producer.cli import main as cli_main
from producer.demo.localredis import LocalRedis, find_redis_server, free_port
from producer.flower import AUTH_ENV
from tests.support import eventually
from tests.support.deployfiles import DEPLOY, ENV_EXAMPLE, ROOT, deploy_profiles, env_file, example_env
from tests.support.flower import FlowerProcess
from tests.support.loopback import LoopbackAPI
from tests.support.stack import Stack, make_stack
from worker.preflight import shutdown_grace_s
from worker.settings import Settings
from worker.startup import check_visibility

K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
REDIS_ENV_EXAMPLE = DEPLOY / "redis.env.example"
FLOWER_PORT = 5555
#: The port workers serve their Prometheus metrics on in compose and Kubernetes.
METRICS_PORT = 9808
GRAFANA = DEPLOY / "grafana"
PROMETHEUS = DEPLOY / "prometheus"
#: Variables of Python itself that the image may set.
PYTHON_ENV = frozenset({"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"})
#: Redis' password (redis.env) and the variable redis-cli logs in with.
REDIS_ENV = frozenset({"REDIS_PASSWORD", "REDISCLI_AUTH"})
#: Share of a Redis' memory limit its maxmemory may take (the rest: fork copy-on-write,
#: client buffers, fragmentation).
MAXMEMORY_SHARE = 0.75
#: Operators' filled-in copies of the examples: never in git, not read by these tests.
FILLED_IN = frozenset({"reqworker.env", "redis.env", ".env"})


# --- reading the files ----------------------------------------------------------------------


@cache
def code_env_vars() -> frozenset[str]:
    """Every REQWORKER_* variable the code mentions (worker/, producer/, celeryconfig.py)."""
    sources = [ROOT / "celeryconfig.py", *(ROOT / "worker").rglob("*.py"),
               *(ROOT / "producer").rglob("*.py")]
    found: set[str] = set()
    for source in sources:
        found.update(re.findall(r"\bREQWORKER_[A-Z][A-Z0-9_]*\b", source.read_text()))
    return frozenset(found)


def is_flower_option(name: str) -> bool:
    """Whether Flower reads ``name`` (FLOWER_ and one of its options, as Flower checks it)."""
    from flower.options import default_options

    if name == "FLOWER_UNAUTHENTICATED_API":
        return True
    return name.startswith("FLOWER_") and name[len("FLOWER_"):].lower() in default_options


def profile_vars(path: Path) -> set[str]:
    """The ${VARIABLES} a profiles file expands (in its values, not its comments)."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.update(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(tomllib.loads(path.read_text()))
    return found


def check_env_names(names: Iterable[str], where: str) -> None:
    """Each variable a deploy file sets is read by reqworker, by Flower, or by the profiles."""
    secrets = profile_vars(DEPLOY / "apis.toml")
    for name in names:
        if name.startswith("REQWORKER_"):
            assert name in code_env_vars(), f"{where}: reqworker never reads {name}"
        elif name.startswith("FLOWER_"):
            assert is_flower_option(name), f"{where}: Flower has no option {name}"
        else:
            assert name in secrets | PYTHON_ENV | REDIS_ENV, \
                f"{where}: {name} is neither a reqworker setting nor a secret apis.toml names"


def cli_command(argv: list[str], where: str) -> click.Context:
    """Parse ``argv`` (after ``reqworker``) as the CLI would, without running it."""
    assert argv, f"{where}: no command"
    name, *rest = argv
    command = cli_main.get_command(click.Context(cli_main), name)
    assert command is not None, f"{where}: reqworker has no command {name!r}"
    try:
        return command.make_context(name, list(rest))
    except click.UsageError as exc:
        raise AssertionError(f"{where}: `reqworker {shlex.join(argv)}`: {exc}") from None


def parse_seconds(value: str | int | float) -> float:
    """'90', 90, '90s', '1m30s', '1min 30s' -> seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(min|sec|[hms]?)", value.strip())
    assert parts, f"not a duration: {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def grace_needed_s() -> float:
    """A stopping worker must be able to finish the longest job run of the profiles, with room."""
    return shutdown_grace_s(deploy_profiles())


def redis_password() -> str:
    return env_file(REDIS_ENV_EXAMPLE)["REDIS_PASSWORD"]


def interpolate(text: str) -> str:
    """What compose (${REDIS_PASSWORD:?…}) and Kubernetes ($(REDIS_PASSWORD)) make of a value."""
    text = re.sub(r"\$\{REDIS_PASSWORD(:\?[^}]*)?\}", redis_password(), text)
    return text.replace("$(REDIS_PASSWORD)", redis_password())


def parse_bytes(value: str) -> int:
    """'768mb', '1g', '1Gi', '512Mi' -> bytes (Redis, compose and Kubernetes units)."""
    match = re.fullmatch(r"(\d+)\s*([kmgKMG]i?[bB]?)?", value.strip())
    assert match, f"not a size: {value!r}"
    unit = (match.group(2) or "").lower().rstrip("b")
    power = {"": 0, "k": 1, "m": 2, "g": 3, "ki": 1, "mi": 2, "gi": 3}[unit]
    return int(match.group(1)) * int(1024 ** power)


def yaml_docs(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path.name}: not YAML mappings"
    assert all(isinstance(d, dict) for d in docs), f"{path.name}: not YAML mappings"
    return docs


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml_docs(DEPLOY / "docker-compose.yml")[0]
    return doc


def compose_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return out


def docker_exec_form(args: str, what: str) -> list[str]:
    value = json.loads(args)
    why = f"Dockerfile {what} must use the exec (JSON) form, so signals reach the process"
    assert isinstance(value, list), why
    assert all(isinstance(v, str) for v in value), why
    return value


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit: section -> key -> values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: cannot read {raw!r}"
        assert current is not None, f"{path.name}: cannot read {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_specifiers(text: str) -> str:
    return text.replace("%i", "1").replace("%H", "host").replace("%%", "%")


def units() -> dict[str, dict[str, dict[str, list[str]]]]:
    return {p.name: read_unit(p) for p in sorted(SYSTEMD.glob("*.service"))}


def kustomization() -> dict[str, Any]:
    doc: dict[str, Any] = yaml_docs(K8S / "kustomization.yaml")[0]
    return doc


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for name in kustomization()["resources"] for doc in yaml_docs(K8S / name)]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"no single {kind} {name} in deploy/k8s"
    return found[0]


def k8s_container(deployment: str, container: str) -> dict[str, Any]:
    spec = k8s_object("Deployment", deployment)["spec"]["template"]["spec"]
    found = [c for c in spec["containers"] if c["name"] == container]
    assert len(found) == 1
    result: dict[str, Any] = found[0]
    return result


def k8s_generated(kind: str) -> dict[str, dict[str, Any]]:
    key = {"ConfigMap": "configMapGenerator", "Secret": "secretGenerator"}[kind]
    return {g["name"]: g for g in kustomization().get(key, [])}


def k8s_env_file(name: str) -> Path:
    """A generator's env file: k8s/reqworker.env is the operator's copy of the example."""
    path = K8S / name
    if path.exists():
        return path
    return {"reqworker.env": ENV_EXAMPLE, "redis.env": REDIS_ENV_EXAMPLE}.get(name, path)


def k8s_config_env() -> dict[str, str]:
    """The environment the pods get from the generated ConfigMap(s) and Secret(s)."""
    env: dict[str, str] = {}
    for kind in ("ConfigMap", "Secret"):
        for generator in k8s_generated(kind).values():
            for literal in generator.get("literals", []):
                name, _, value = literal.partition("=")
                env[name] = value
            for name in generator.get("envs", []):
                env.update(env_file(k8s_env_file(name)))
    return env


# --- every file is of a kind these tests read ----------------------------------------------


def test_every_deploy_file_is_one_these_tests_read() -> None:
    readers = {".yml", ".yaml", ".service", ".toml", ".conf", ".md", ".example", ".json"}
    names = {"Dockerfile", ".gitignore"}
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.name not in FILLED_IN:
            assert path.suffix in readers or path.name in names, f"unchecked file {path}"


def test_every_yaml_file_parses() -> None:
    files = [*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")]
    assert len(files) >= 5
    for path in files:
        yaml_docs(path)


def test_filled_in_secrets_are_kept_out_of_git() -> None:
    def patterns(path: Path) -> set[str]:
        return {line.strip() for line in path.read_text().splitlines()
                if line.strip() and not line.startswith("#")}

    ignored = patterns(DEPLOY / ".gitignore")
    assert {"reqworker.env", "redis.env", ".env", "k8s/reqworker.env", "k8s/redis.env"} <= ignored
    docker = patterns(ROOT / ".dockerignore")
    assert {f"deploy/{name}" for name in ignored} <= docker, "secrets must stay out of the image"


# --- profiles and environment ---------------------------------------------------------------


def test_the_example_profiles_load_and_a_worker_would_start_with_them() -> None:
    profiles = deploy_profiles()
    assert profiles
    env = {**example_env(), **compose_env(compose()["services"]["worker"])}
    check_visibility(Settings.from_env(env), profiles)
    check_visibility(Settings.from_env(k8s_config_env()), profiles)


def test_the_env_example_provides_every_secret_the_profiles_name() -> None:
    missing = profile_vars(DEPLOY / "apis.toml") - set(example_env())
    assert not missing, f"reqworker.env.example lacks {sorted(missing)}"
    # Every secret is a variable: no credential is written in the profiles themselves.
    profiles = tomllib.loads((DEPLOY / "apis.toml").read_text())["apis"]
    for name, table in profiles.items():
        for key in ("token", "client_id", "client_secret"):
            value = table.get("auth", {}).get(key)
            assert value is None or re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", value), \
                f"apis.{name}.auth.{key} must be a ${{VARIABLE}}"


def test_the_env_example_sets_only_variables_something_reads() -> None:
    check_env_names(env_file(ENV_EXAMPLE, commented=True), "reqworker.env.example")
    # Flower listens beyond loopback in every deployment here, so it needs its login.
    assert example_env().get(AUTH_ENV, "").count(":") >= 1


def test_the_kubernetes_profiles_are_the_same_file() -> None:
    assert (K8S / "apis.toml").read_text() == (DEPLOY / "apis.toml").read_text()


# --- Dockerfile -------------------------------------------------------------------------------


def test_the_image_is_built_from_python_311_or_newer() -> None:
    froms = [args.split()[0] for word, args in dockerfile() if word == "FROM"]
    assert froms
    for image in froms:
        match = re.fullmatch(r"python:3\.(\d+)(-[a-z0-9.-]+)?", image)
        assert match, image
        assert int(match.group(1)) >= 11, image


def test_the_image_copies_everything_the_package_build_needs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # A subpackage (producer.demo) comes with its package's directory.
    needed = {"pyproject.toml", *(p.split(".")[0] for p in project["tool"]["setuptools"]["packages"]),
              *(f"{m}.py" for m in project["tool"]["setuptools"].get("py-modules", []))}
    if isinstance(project["project"].get("readme"), str):
        needed.add(project["project"]["readme"])
    copied: set[str] = set()
    for word, args in dockerfile():
        if word != "COPY" or "--from=" in args:
            continue
        *sources, _ = [a for a in args.split() if not a.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repo"
            copied.add(source.rstrip("/"))
    assert needed <= copied, f"Dockerfile does not copy {sorted(needed - copied)}"


def test_the_image_installs_pinned_dependencies_before_the_source() -> None:
    steps = dockerfile()
    stages: list[list[tuple[str, str]]] = []
    for word, args in steps:
        if word == "FROM":
            stages.append([])
        stages[-1].append((word, args))
    build, final = stages[0], stages[-1]

    def first(stage: list[tuple[str, str]], test: Any) -> int:
        return next(i for i, step in enumerate(stage) if test(step))

    source = first(build, lambda s: s[0] == "COPY" and ("worker/" in s[1] or "producer/" in s[1]))
    deps = first(build, lambda s: s[0] == "RUN" and "-c constraints.txt" in s[1])
    assert deps < source, "dependencies must be installed before the source is copied"
    for word, args in build[:deps]:
        if word == "COPY":
            assert set(args.split()[:-1]) <= {"pyproject.toml", "constraints.txt"}, args
    # The build's own way of listing the dependencies gives pyproject's list.
    script = re.search(r'python -c "(.*?)" > requirements.txt', build[deps][1])
    assert script
    listed = subprocess.run([sys.executable, "-c", script.group(1)],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert listed == [r.replace(" ", "") for r in
                      tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    installs = [i for i, (w, a) in enumerate(final) if w == "RUN" and "pip install" in a]
    app = first(final, lambda s: s[0] == "COPY" and "/app" in s[1])
    assert installs[0] < app < installs[1], "the final image installs dependencies first, too"


def test_the_image_runs_reqworker_as_a_numeric_non_root_user() -> None:
    steps = dockerfile()
    entry = docker_exec_form(next(a for w, a in steps if w == "ENTRYPOINT"), "ENTRYPOINT")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert entry == ["reqworker"]
    assert "reqworker" in project["project"]["scripts"]
    cli_command(docker_exec_form(next(a for w, a in steps if w == "CMD"), "CMD"), "Dockerfile CMD")
    user = [a for w, a in steps if w == "USER"][-1]
    uid = user.partition(":")[0]
    assert uid.isdigit(), "USER must be a numeric uid (runAsNonRoot checks it)"
    assert int(uid) != 0, "USER must not be root"
    for deployment in ("reqworker-worker", "reqworker-flower"):
        pod = k8s_object("Deployment", deployment)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == int(uid)
    exposed = {int(port.split("/")[0]) for w, a in steps if w == "EXPOSE" for port in a.split()}
    assert exposed == {FLOWER_PORT, METRICS_PORT}


def test_the_image_sets_no_secret_and_only_known_variables() -> None:
    names: list[str] = []
    for word, args in dockerfile():
        if word == "ENV":
            names += re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=", args)
        if word == "ARG":
            names.append(args.split("=")[0])
    assert names
    check_env_names(names, "Dockerfile")
    assert not any(re.search("SECRET|TOKEN|PASSWORD|AUTH", n) for n in names)


# --- docker compose ---------------------------------------------------------------------------


def test_compose_runs_redis_with_its_config_and_a_volume() -> None:
    doc = compose()
    redis_service = doc["services"]["redis"]
    command = redis_service["command"]
    assert command[0] == "redis-server"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in redis_service["volumes"]}
    assert (DEPLOY / mounts[command[1]]).resolve() == (DEPLOY / "redis.conf").resolve()
    assert mounts["/data"] in doc["volumes"]
    assert "ports" not in redis_service, "Redis has no password here: publish no port"
    assert redis_service["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_compose_workers_can_be_scaled_and_stop_gracefully() -> None:
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "hostname" not in worker
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert parse_seconds(worker["stop_grace_period"]) >= grace_needed_s()
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["restart"] in ("always", "unless-stopped", "on-failure")
    assert "healthcheck" in worker


def test_compose_commands_are_reqworker_commands() -> None:
    services = compose()["services"]
    for name in ("worker", "flower"):
        service = services[name]
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == \
            (DEPLOY / "Dockerfile").resolve()
        ctx = cli_command(service["command"], f"compose {name}")
        if name == "flower":
            assert ctx.params["port"] == FLOWER_PORT
            assert f"127.0.0.1:{FLOWER_PORT}:{FLOWER_PORT}" in service["ports"]
            assert "healthcheck" in service


def test_compose_mounts_and_env_files_exist() -> None:
    for name in ("worker", "flower"):
        service = compose()["services"][name]
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"compose {name} mounts missing {source}"
            if target.endswith("apis.toml"):
                assert compose_env(service).get("REQWORKER_APIS", target) == target
        for env_name in service["env_file"]:
            assert env_name == "reqworker.env"
            assert ENV_EXAMPLE.exists()


def test_compose_sets_only_variables_something_reads() -> None:
    for name, service in compose()["services"].items():
        check_env_names(compose_env(service), f"compose {name}")


# --- systemd ---------------------------------------------------------------------------------


def test_systemd_units_parse_and_restart() -> None:
    found = units()
    assert set(found) == {"reqworker-worker@.service", "reqworker-flower.service",
                          "reqworker-redis.service"}
    for name, unit in found.items():
        assert {"Unit", "Service", "Install"} <= set(unit), name
        assert unit["Service"]["Restart"][-1] in ("on-failure", "always"), name
        assert unit["Install"]["WantedBy"] == ["multi-user.target"], name
        for dependency in unit["Unit"].get("Wants", []) + unit["Unit"].get("After", []):
            for other in dependency.split():
                if other.startswith("reqworker-"):
                    assert other in found, f"{name} depends on {other}, which deploy/ lacks"


def test_systemd_commands_are_reqworker_commands() -> None:
    for name in ("reqworker-worker@.service", "reqworker-flower.service"):
        service = units()[name]["Service"]
        argv = shlex.split(unit_specifiers(service["ExecStart"][-1]))
        assert Path(argv[0]).name == "reqworker", name
        ctx = cli_command(argv[1:], name)
        if name.startswith("reqworker-flower"):
            assert ctx.params["port"] == FLOWER_PORT
        assert service["EnvironmentFile"][-1].endswith("/reqworker.env")
        assert service.get("RestartPreventExitStatus") == ["2"], "exit 2 is bad configuration"
        env = dict(e.partition("=")[::2] for v in service.get("Environment", []) for e in v.split())
        check_env_names(env, name)


def test_the_systemd_worker_stops_gracefully() -> None:
    service = units()["reqworker-worker@.service"]["Service"]
    assert service["KillMode"] == ["mixed"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert parse_seconds(service["TimeoutStopSec"][-1]) >= grace_needed_s()
    assert "%i" in service["ExecStart"][-1], "each instance needs its own node name"


def test_the_systemd_redis_runs_the_shared_config() -> None:
    service = units()["reqworker-redis.service"]["Service"]
    argv = shlex.split(service["ExecStart"][-1])
    assert Path(argv[0]).name == "redis-server"
    assert Path(argv[1]).name == "redis.conf"
    assert (DEPLOY / "redis.conf").exists()


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    reqworker = Path(sys.executable).parent / "reqworker"
    reqworker_path = str(reqworker) if reqworker.exists() else shutil.which("reqworker")
    if reqworker_path is None:
        pytest.skip("no reqworker script installed")
    paths = []
    for source in sorted(SYSTEMD.glob("*.service")):
        text = source.read_text().replace("/opt/reqworker/.venv/bin/reqworker", reqworker_path)
        text = text.replace("/usr/bin/redis-server", find_redis_server())
        target = tmp_path / source.name.replace("@.service", "@1.service")
        target.write_text(text)
        paths.append(str(target))
    done = subprocess.run(["systemd-analyze", "verify", *paths], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr


# --- Kubernetes -------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_and_file() -> None:
    kust = kustomization()
    listed = set(kust["resources"])
    for generator in [*k8s_generated("ConfigMap").values(), *k8s_generated("Secret").values()]:
        listed.update(generator.get("files", []))
        listed.update(generator.get("envs", []))
    present = {p.name for p in K8S.iterdir() if p.name != "kustomization.yaml"}
    assert present - {"reqworker.env"} <= listed, f"not in kustomization: {present - listed}"
    for name in listed:
        assert (K8S / name).exists() or k8s_env_file(name).exists(), name


def test_k8s_objects_are_well_formed() -> None:
    known = {("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("v1", "Service"),
             ("networking.k8s.io/v1", "NetworkPolicy"), ("policy/v1", "PodDisruptionBudget")}
    for obj in k8s_objects():
        assert (obj["apiVersion"], obj["kind"]) in known, obj.get("kind")
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])
        if obj["kind"] in ("Deployment", "StatefulSet"):
            selector = obj["spec"]["selector"]["matchLabels"]
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), obj["metadata"]["name"]
            for container in obj["spec"]["template"]["spec"]["containers"]:
                assert container["image"], container["name"]
                assert container.get("resources"), container["name"]


def test_k8s_commands_are_reqworker_commands() -> None:
    for deployment, container in (("reqworker-worker", "worker"), ("reqworker-flower", "flower")):
        spec = k8s_container(deployment, container)
        assert spec["image"].split(":")[0].endswith("reqworker")
        assert "command" not in spec, "the image's entrypoint is reqworker; give args"
        ctx = cli_command(spec["args"], f"k8s {deployment}")
        if container == "flower":
            assert ctx.params["port"] == FLOWER_PORT
            assert {"name": "http", "containerPort": FLOWER_PORT} in spec["ports"]


def test_k8s_config_and_secret_references_exist() -> None:
    configmaps, secrets = k8s_generated("ConfigMap"), k8s_generated("Secret")
    for deployment in ("reqworker-worker", "reqworker-flower"):
        pod = k8s_object("Deployment", deployment)["spec"]["template"]["spec"]
        for container in pod["containers"]:
            refs = container["envFrom"]
            assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} <= set(configmaps)
            assert {r["secretRef"]["name"] for r in refs if "secretRef" in r} <= set(secrets)
            assert any("secretRef" in r for r in refs), "secrets come from a Secret"
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in pod.get("volumes", [])}
        for volume in pod.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps


def test_k8s_workers_read_the_mounted_profiles() -> None:
    env = k8s_config_env()
    worker = k8s_container("reqworker-worker", "worker")
    mount = next(m for m in worker["volumeMounts"] if m["name"] == "apis")
    pod = k8s_object("Deployment", "reqworker-worker")["spec"]["template"]["spec"]
    source = next(v for v in pod["volumes"] if v["name"] == "apis")["configMap"]["name"]
    files = k8s_generated("ConfigMap")[source]["files"]
    assert env["REQWORKER_APIS"] == f"{mount['mountPath']}/{Path(files[0]).name}"


def test_k8s_sets_only_variables_something_reads() -> None:
    check_env_names(k8s_config_env(), "k8s kustomization")
    for deployment in ("reqworker-worker", "reqworker-flower"):
        for container in k8s_object("Deployment", deployment)["spec"]["template"]["spec"][
                "containers"]:
            check_env_names([e["name"] for e in container.get("env", [])], deployment)


def test_k8s_workers_stop_gracefully() -> None:
    worker = k8s_object("Deployment", "reqworker-worker")["spec"]
    assert worker["template"]["spec"]["terminationGracePeriodSeconds"] >= grace_needed_s()
    assert worker["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_k8s_worker_liveness_asks_neither_the_broker_nor_the_fleet() -> None:
    probe = k8s_container("reqworker-worker", "worker")["livenessProbe"]
    command = probe["exec"]["command"]
    assert command[:3] == ["python", "-m", "worker.alive"]
    assert not any(word in " ".join(command) for word in ("inspect", "ping", "celery", "redis"))
    max_age_s = float(command[command.index("--max-age") + 1])
    # A stale heartbeat, not a slow probe, is what fails it; the heartbeat is far more frequent.
    from worker.alive import EVERY_S
    assert max_age_s >= 4 * EVERY_S
    assert probe["timeoutSeconds"] >= 5
    assert "readinessProbe" not in k8s_container("reqworker-worker", "worker")


def test_k8s_a_disruption_budget_keeps_workers_running_through_a_drain() -> None:
    budget = k8s_object("PodDisruptionBudget", "reqworker-worker")["spec"]
    worker = k8s_object("Deployment", "reqworker-worker")["spec"]
    labels = worker["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert budget.get("maxUnavailable") == 1
    assert "minAvailable" not in budget
    assert worker["replicas"] > budget["maxUnavailable"], "a drain must leave a worker running"


def test_k8s_only_pods_that_use_redis_may_reach_it() -> None:
    policy = k8s_object("NetworkPolicy", "redis-reqworker-only")["spec"]
    redis_pod = k8s_object("StatefulSet", "redis")["spec"]["template"]
    assert policy["podSelector"]["matchLabels"].items() <= redis_pod["metadata"]["labels"].items()
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    [source] = rule["from"]
    admitted = source["podSelector"]["matchLabels"]
    assert set(source) == {"podSelector"}, "no namespace-wide or IP-wide admission"
    port = next(p for p in redis_pod["spec"]["containers"][0]["ports"] if p["name"] == "redis")
    assert rule["ports"] == [{"protocol": "TCP", "port": port["containerPort"]}]
    for deployment in ("reqworker-worker", "reqworker-flower"):
        pod = k8s_object("Deployment", deployment)["spec"]["template"]
        assert admitted.items() <= pod["metadata"]["labels"].items(), f"{deployment} is shut out"
    assert not admitted.items() <= redis_pod["metadata"]["labels"].items()


def test_k8s_secret_key_references_exist() -> None:
    secrets = k8s_generated("Secret")
    for obj in k8s_objects():
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for container in obj["spec"]["template"]["spec"]["containers"]:
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                keys = {k for name in secrets[ref["name"]]["envs"] for k in env_file(k8s_env_file(name))}
                assert ref["key"] in keys, f"{obj['metadata']['name']}: no {ref['key']} in {ref['name']}"


def test_k8s_flower_is_one_replica_behind_a_service_prometheus_can_find() -> None:
    flower = k8s_object("Deployment", "reqworker-flower")
    service = k8s_object("Service", "reqworker-flower")
    assert flower["spec"]["replicas"] == 1
    labels = flower["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    port = service["spec"]["ports"][0]
    assert port["port"] == FLOWER_PORT
    assert port["targetPort"] == "http"
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(FLOWER_PORT)
    container = k8s_container("reqworker-flower", "flower")
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthcheck"


def k8s_container_env(deployment: str, container: str) -> dict[str, str]:
    """A container's own env entries, as Kubernetes expands them (the example password)."""
    env: dict[str, str] = {}
    for entry in k8s_container(deployment, container).get("env", []):
        env[entry["name"]] = interpolate(entry["value"]) if "value" in entry else redis_password()
    return env


def test_k8s_redis_serves_the_url_the_pods_use_with_its_password() -> None:
    service = k8s_object("Service", "redis")
    host_port = f"{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    for deployment, container in (("reqworker-worker", "worker"), ("reqworker-flower", "flower")):
        env = k8s_container_env(deployment, container)
        # declared before use, or Kubernetes leaves $(REDIS_PASSWORD) as it is
        names = [e["name"] for e in k8s_container(deployment, container)["env"]]
        assert names.index("REDIS_PASSWORD") < names.index("REQWORKER_REDIS_URL")
        assert env["REQWORKER_REDIS_URL"] == f"redis://:{redis_password()}@{host_port}/0"


# --- README -------------------------------------------------------------------------------------


def readme() -> str:
    return (DEPLOY / "README.md").read_text()


def test_readme_yaml_parses_and_scrapes_flowers_metrics() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", readme(), re.S)
    assert blocks
    for block in blocks:
        yaml.safe_load(block)
    scrape = yaml.safe_load(blocks[0])["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["static_configs"][0]["targets"][0].endswith(f":{FLOWER_PORT}")


def test_readme_names_every_setting_and_only_real_ones() -> None:
    text = readme()
    named = set(re.findall(r"\bREQWORKER_[A-Z][A-Z0-9_]*\b", text))
    assert named == set(code_env_vars()), named ^ set(code_env_vars())
    for name in set(re.findall(r"\bFLOWER_[A-Z][A-Z0-9_]*\b", text)):
        assert is_flower_option(name), name
    files = text[text.index("| file |"):].split("\n\n")[0]
    for path in re.findall(r"^\| `([^`]+)` \|", files, re.M):
        assert (DEPLOY / path).exists(), path


def test_readme_commands_are_reqworker_commands() -> None:
    commands = 0
    for block in re.findall(r"```sh\n(.*?)```", readme(), re.S):
        for line in block.splitlines():
            words = shlex.split(line.split("#")[0].split("<")[0])
            if "run" in words and "worker" in words:
                cli_command(words[words.index("worker", words.index("run")) + 1:], line)
                commands += 1
    assert commands >= 2


# --- metrics: where workers serve them, where Prometheus looks, what Grafana shows -----------


def series_of(metric: Any) -> set[str]:
    """The sample names a prometheus-client metric exposes."""
    from prometheus_client import Counter, Gauge, Histogram

    name = metric.describe()[0].name
    if isinstance(metric, Counter):
        return {f"{name}_total"}
    if isinstance(metric, Histogram):
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    assert isinstance(metric, Gauge), metric
    return {name}


@cache
def reqworker_series() -> frozenset[str]:
    """Every series a worker serves: its counters, and the gauges read at scrape time."""
    from prometheus_client import Counter, Histogram

    import worker.metrics
    from worker.metricserver import FLEET_GAUGES

    found = set(FLEET_GAUGES)
    for value in vars(worker.metrics).values():
        if isinstance(value, Counter | Histogram):
            found |= series_of(value)
    return frozenset(found)


@cache
def flower_series() -> frozenset[str]:
    from flower.events import get_prometheus_metrics

    return frozenset(n for metric in vars(get_prometheus_metrics()).values() for n in series_of(metric))


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((GRAFANA / "reqworker-dashboard.json").read_text())
    return doc


def dashboard_panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def scrape_jobs(path: Path) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in yaml_docs(path)[0]["scrape_configs"]}


def test_compose_workers_serve_metrics_where_prometheus_looks() -> None:
    worker = compose()["services"]["worker"]
    ctx = cli_command(worker["command"], "compose worker")
    assert ctx.params["metrics_port"] == METRICS_PORT
    assert ctx.params["metrics_address"] == "0.0.0.0"
    assert str(METRICS_PORT) in worker["expose"]
    jobs = scrape_jobs(PROMETHEUS / "compose.yml")
    dns = jobs["reqworker-workers"]["dns_sd_configs"][0]
    assert dns["names"] == ["worker"]
    assert dns["type"] == "A"
    assert dns["port"] == METRICS_PORT
    assert jobs["reqworker-flower"]["static_configs"][0]["targets"] == [f"flower:{FLOWER_PORT}"]


def test_compose_monitoring_runs_prometheus_and_grafana_with_the_dashboard() -> None:
    services = compose()["services"]
    mounts = {}
    for name in ("prometheus", "grafana"):
        service = services[name]
        assert service["profiles"] == ["monitoring"], "monitoring is started on request"
        assert all(p.startswith("127.0.0.1:") for p in service["ports"])
        for volume in service["volumes"]:
            source, target = volume.split(":")[:2]
            assert (DEPLOY / source).exists(), f"compose {name} mounts missing {source}"
            mounts[target] = (DEPLOY / source).resolve()
    assert mounts["/etc/prometheus/prometheus.yml"] == (PROMETHEUS / "compose.yml").resolve()
    provisioning = mounts["/etc/grafana/provisioning"]
    provider = yaml_docs(provisioning / "dashboards" / "reqworker.yaml")[0]["providers"][0]
    folder = provider["options"]["path"]
    shown = [t for t, source in mounts.items() if source == (GRAFANA / "reqworker-dashboard.json").resolve()]
    assert shown
    assert Path(shown[0]).parent == Path(folder)
    source = yaml_docs(provisioning / "datasources" / "prometheus.yaml")[0]["datasources"][0]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"


def test_k8s_worker_pods_serve_metrics_prometheus_finds() -> None:
    container = k8s_container("reqworker-worker", "worker")
    ctx = cli_command(container["args"], "k8s worker")
    assert ctx.params["metrics_port"] == METRICS_PORT
    assert ctx.params["metrics_address"] == "0.0.0.0"
    assert {"name": "metrics", "containerPort": METRICS_PORT} in container["ports"]
    annotations = k8s_object("Deployment", "reqworker-worker")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(METRICS_PORT),
                           "prometheus.io/path": "/metrics"}
    jobs = scrape_jobs(PROMETHEUS / "kubernetes.yml")
    relabels = jobs["reqworker-workers"]["relabel_configs"]
    sources = {tuple(r["source_labels"]) for r in relabels}
    assert ("__meta_kubernetes_pod_annotation_prometheus_io_scrape",) in sources
    assert ("__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port") in sources
    assert jobs["reqworker-workers"]["kubernetes_sd_configs"][0]["role"] == "pod"


def test_systemd_workers_serve_metrics_on_their_instance_port() -> None:
    exec_start = units()["reqworker-worker@.service"]["Service"]["ExecStart"][-1]
    argv = shlex.split(exec_start.replace("%i", "9101").replace("%H", "host"))
    ctx = cli_command(argv[1:], "systemd worker")
    assert ctx.params["metrics_port"] == 9101
    assert ctx.params["hostname"] == "worker9101@host"
    targets = scrape_jobs(PROMETHEUS / "systemd.yml")["reqworker-workers"]["static_configs"][0]["targets"]
    for target in targets:
        port = int(target.rsplit(":", 1)[1])
        assert f"reqworker-worker@{port}" in readme(), f"README does not start the worker on {port}"


def test_the_dashboard_shows_every_worker_series_and_only_real_ones() -> None:
    exprs = [t["expr"] for p in dashboard_panels() for t in p["targets"]]
    named = {n for e in exprs for n in re.findall(r"\b((?:reqworker|flower)_[a-z_]+)\b", e)}
    assert named - reqworker_series() - flower_series() == set()
    families = {n.removesuffix("_total").removesuffix("_bucket") for n in named}
    for series in reqworker_series():
        family = series.removesuffix("_total").removesuffix("_bucket").removesuffix("_sum")
        family = family.removesuffix("_count")
        assert family in families, f"the dashboard does not show {series}"
    assert named & flower_series(), "the dashboard shows Flower's series too"
    assert all(e.count("(") == e.count(")") for e in exprs)


def test_the_dashboard_is_well_formed_grafana() -> None:
    doc = dashboard()
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            for var in re.findall(r"\$(?!__)(\w+)", target["expr"]):
                assert var in variables, f"{panel['title']}: no variable ${var}"


# --- what can run here: Redis with the deploy settings -----------------------------------------


def k8s_redis_container() -> dict[str, Any]:
    pod = k8s_object("StatefulSet", "redis")["spec"]["template"]["spec"]
    found: dict[str, Any] = next(c for c in pod["containers"] if c["name"] == "redis")
    return found


def _redis_variants() -> dict[str, list[str]]:
    """The arguments each deployment gives redis-server, with the example password in place."""
    compose_cmd = compose()["services"]["redis"]["command"]
    k8s_args = k8s_redis_container()["args"]
    systemd = shlex.split(units()["reqworker-redis.service"]["Service"]["ExecStart"][-1])
    conf = str(DEPLOY / "redis.conf")
    variants = {"compose": [conf, *compose_cmd[2:]], "k8s": k8s_args[1:],
                "systemd": [conf, *systemd[2:]]}
    return {name: [interpolate(a) for a in args] for name, args in variants.items()}


def _redis_memory_limits() -> dict[str, int]:
    """The memory limit each deployment puts on Redis, in bytes."""
    return {
        "compose": parse_bytes(compose()["services"]["redis"]["mem_limit"]),
        "k8s": parse_bytes(k8s_redis_container()["resources"]["limits"]["memory"]),
        "systemd": parse_bytes(units()["reqworker-redis.service"]["Service"]["MemoryMax"][-1]),
    }


class RedisWith:
    """redis-server with a deployment's arguments, moved to a free loopback port and a temp dir."""

    def __init__(self, args: list[str], data_dir: Path, password: str | None = None) -> None:
        self.port = free_port()
        overrides = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(data_dir),
                     "--daemonize", "no", "--loglevel", "warning"]
        self.proc = subprocess.Popen([find_redis_server(), *args, *overrides],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.client = redis.Redis(port=self.port, socket_connect_timeout=0.5, decode_responses=True,
                                  password=password)

        def answers() -> bool:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"redis-server refused {args}: {err}")
            try:
                return bool(self.client.ping())
            except redis.ConnectionError:
                return False

        eventually(answers, within_s=30, what="redis-server's answer")

    def stop(self) -> None:
        """SIGTERM: Redis flushes the append-only file and exits."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


@pytest.mark.integration
@pytest.mark.parametrize("variant", ["compose", "k8s", "systemd"])
def test_redis_settings_keep_jobs_across_a_restart_behind_a_password(variant: str,
                                                                     tmp_path: Path) -> None:
    args = _redis_variants()[variant]
    first = RedisWith(args, tmp_path, password=redis_password())
    try:
        config = first.client.config_get("*")
        assert config["appendonly"] == "yes"
        assert config["appendfsync"] == "everysec"
        assert config["maxmemory-policy"] == "noeviction"
        assert config["save"].strip(), "RDB snapshots for backups"
        # Redis refuses writes before its container (or unit) is killed for memory.
        maxmemory = int(config["maxmemory"])
        assert 0 < maxmemory <= MAXMEMORY_SHARE * _redis_memory_limits()[variant], variant
        first.client.lpush("reqworker", "a queued job")
        # No one without the password reads the tokens.
        stranger = redis.Redis(port=first.port, socket_connect_timeout=0.5)
        with pytest.raises(redis.AuthenticationError):
            stranger.get("reqworker:token:example")
    finally:
        first.stop()
    second = RedisWith(args, tmp_path, password=redis_password())
    try:
        assert second.client.lrange("reqworker", 0, -1) == ["a queued job"]
    finally:
        second.stop()


def test_redis_healthchecks_log_in_with_the_password() -> None:
    service = compose()["services"]["redis"]
    assert compose_env(service)["REDISCLI_AUTH"] == redis_password()
    env = {e["name"]: e for e in k8s_redis_container()["env"]}
    assert env["REDISCLI_AUTH"]["valueFrom"] == env["REDIS_PASSWORD"]["valueFrom"]
    assert k8s_redis_container()["readinessProbe"]["exec"]["command"] == ["redis-cli", "ping"]


def test_every_url_carries_the_one_redis_password() -> None:
    """compose, systemd (reqworker.env) and Kubernetes reach Redis with redis.env's password."""
    urls = [compose_env(compose()["services"][name])["REQWORKER_REDIS_URL"]
            for name in ("worker", "flower")]
    urls.append(example_env()["REQWORKER_REDIS_URL"])
    urls.append(k8s_container_env("reqworker-worker", "worker")["REQWORKER_REDIS_URL"])
    for url in urls:
        assert redis.connection.parse_url(url)["password"] == redis_password(), url


# --- TLS: the example URLs, read the way reqworker reads them ------------------------------------


def tls_examples() -> list[str]:
    """Every rediss:// URL deploy/ offers: README.md and reqworker.env.example."""
    text = readme() + ENV_EXAMPLE.read_text()
    found = sorted(set(re.findall(r"rediss://[^\s`'\")]+", text)))
    assert found, "deploy/ shows no TLS example"
    return found


def test_the_tls_examples_work_for_broker_results_and_cache() -> None:
    from ssl import CERT_REQUIRED

    from celery import Celery

    from celeryconfig import celery_settings
    from worker.redisconn import command_client
    from worker.resultstore import FinishedStaysFinished

    for url in tls_examples():
        settings = Settings.from_env({"REQWORKER_REDIS_URL": url})
        app = Celery("tls", set_as_current=False)
        app.conf.update(celery_settings(settings))
        backend = app.backend  # Celery's result backend raises on a rediss:// URL it cannot use
        assert isinstance(backend, FinishedStaysFinished)
        assert backend.connparams["ssl_cert_reqs"] == CERT_REQUIRED, url
        assert backend.connparams["connection_class"] is redis.SSLConnection
        broker = app.connection_for_write()
        assert broker.transport_cls == "worker.transport:Transport"
        assert broker.ssl["ssl_cert_reqs"] == CERT_REQUIRED
        pool = command_client(url, settings).connection_pool
        assert pool.connection_class is redis.SSLConnection
        assert pool.connection_kwargs["ssl_cert_reqs"] == "required"
        assert backend.connparams["ssl_ca_certs"] == pool.connection_kwargs["ssl_ca_certs"] \
            == broker.ssl["ssl_ca_certs"]


def test_a_tls_url_without_ssl_cert_reqs_is_refused_in_one_line() -> None:
    from worker.settings import SettingsError

    with pytest.raises(SettingsError, match="ssl_cert_reqs"):
        Settings.from_env({"REQWORKER_REDIS_URL": "rediss://:pw@redis.example.net:6380/0"})


# --- what can run here: the healthchecks against a real worker and a real Flower ----------------


@pytest.fixture(scope="module")
def stack(redis_server: LocalRedis, loopback_api: LoopbackAPI,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with make_stack(redis_server.url, loopback_api, tmp_path_factory.mktemp("deploy"),
                    **{AUTH_ENV: "ops:deploy-pw"}) as s:
        yield s


def _probe(argv: list[str], env: dict[str, str]) -> int:
    """Run a container's probe command (`python …` is this interpreter here)."""
    assert argv[0] == "python"
    return subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True,
                          timeout=60).returncode


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


@pytest.mark.integration
def test_the_worker_liveness_survives_a_redis_outage_and_fails_for_a_dead_worker(
        loopback_api: LoopbackAPI, tmp_path: Path) -> None:
    compose_check = compose()["services"]["worker"]["healthcheck"]["test"]
    assert compose_check[0] == "CMD"
    k8s_check = k8s_container("reqworker-worker", "worker")["livenessProbe"]["exec"]["command"]
    assert compose_check[1:] == k8s_check, "one probe for compose and Kubernetes"
    alive = tmp_path / "alive"
    own_redis = LocalRedis().start()
    try:
        with make_stack(own_redis.url, loopback_api, tmp_path,
                        REQWORKER_ALIVE_FILE=str(alive)) as own:
            worker = own.worker("deploy-alive", concurrency=2)
            try:
                assert _probe(k8s_check, own.env) == 0
                own_redis.stop()  # Redis goes away: the worker waits for it, and lives
                _age(alive, 600)
                assert _probe(k8s_check, own.env) != 0, "a stale heartbeat fails the probe"
                eventually(lambda: _probe(k8s_check, own.env) == 0, within_s=60, every_s=1,
                           what="a heartbeat while Redis is down")
                assert worker.proc.poll() is None
            finally:
                worker.stop()
            _age(alive, 600)
            assert _probe(k8s_check, own.env) != 0, "a stopped worker fails the probe"
    finally:
        own_redis.stop()


@pytest.mark.integration
def test_the_flower_healthchecks_pass_without_a_login(stack: Stack) -> None:
    flower = FlowerProcess(stack.env, stack.tmp / "deploy-flower.log").wait_ready()
    try:
        check = compose()["services"]["flower"]["healthcheck"]["test"]
        assert check[0] == "CMD"
        assert check[1] == "python"
        argv = [sys.executable, *[a.replace(f"127.0.0.1:{FLOWER_PORT}", f"127.0.0.1:{flower.port}")
                                  for a in check[2:]]]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        path = k8s_container("reqworker-flower", "flower")["livenessProbe"]["httpGet"]["path"]
        # Probes and Prometheus come without credentials (see deploy/README.md).
        assert flower.get(path, auth=None).status_code == 200
        metrics = flower.get("/metrics", auth=None)
        assert metrics.status_code == 200
        assert "flower_" in metrics.text
    finally:
        flower.stop()
