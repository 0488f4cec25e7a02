"""The deployment: deploy/ manifests, the Dockerfile, and how they fit the package.

Offline and without ../shared (CI validates the manifests against the KubeRay CRD schemas
with tools/validate_manifests.py). These tests check what a schema cannot: that the
manifests run this package's real entrypoints, with the image, Ray version, config and
resources the code expects.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import importlib
import importlib.util
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
import yaml

from antssl.cli import build_parser
from antssl.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CONFIG_MOUNT = "/etc/antssl"
CONFIG_PATH = f"{CONFIG_MOUNT}/config.yaml"
STAGES = ("tiles", "cache", "pretrain", "embed", "cluster", "maps", "index", "evaluate", "pipeline")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


MANIFESTS = {p.name: _load(p) for p in sorted(DEPLOY.glob("*.yaml")) if p.name != "config.yaml"}
RAY_OBJECTS = [
    (name, doc)
    for name, docs in MANIFESTS.items()
    for doc in docs
    if str(doc.get("apiVersion", "")).startswith("ray.io/")
]
RAYJOBS = {name: doc for name, doc in RAY_OBJECTS if doc["kind"] == "RayJob"}
RAYSERVICE = next(doc for _, doc in RAY_OBJECTS if doc["kind"] == "RayService")
KUSTOMIZATION = MANIFESTS["kustomization.yaml"][0]
CONFIG: Config = load_config(DEPLOY / "config.yaml")


def cluster_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every RayCluster spec: the standalone one, each RayJob's and the RayService's."""
    for name, doc in RAY_OBJECTS:
        spec = doc["spec"]
        cluster = {
            "RayCluster": spec,
            "RayJob": spec.get("rayClusterSpec"),
            "RayService": spec.get("rayClusterConfig"),
        }[doc["kind"]]
        if cluster is not None:
            yield name, cluster


CLUSTERS = dict(cluster_specs())


def worker_groups(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return list(cluster.get("workerGroupSpecs") or [])


def pod(group: dict[str, Any]) -> dict[str, Any]:
    return dict(group["template"]["spec"])


def containers(cluster: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in [cluster["headGroupSpec"], *worker_groups(cluster)]:
        yield from pod(group)["containers"]


def gpus(group: dict[str, Any]) -> int:
    """GPUs per pod of a group (its Ray container's nvidia.com/gpu limit)."""
    limits = pod(group)["containers"][0].get("resources", {}).get("limits", {})
    return int(limits.get("nvidia.com/gpu", 0))


def cpus(group: dict[str, Any]) -> float:
    value = str(pod(group)["containers"][0]["resources"]["limits"]["cpu"])
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def gpu_groups(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [g for g in worker_groups(cluster) if gpus(g) > 0]


def cli_stages() -> set[str]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


# --- manifests and kustomize ---------------------------------------------------------------


def test_every_manifest_is_a_named_kubernetes_object() -> None:
    assert set(RAYJOBS) == {f"rayjob-{s}.yaml" for s in STAGES}
    assert {doc["kind"] for _, doc in RAY_OBJECTS} == {"RayCluster", "RayJob", "RayService"}
    for name, docs in MANIFESTS.items():
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), name
            if doc["kind"] != "Kustomization":
                assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), name
    for _, doc in RAY_OBJECTS:
        assert doc["apiVersion"] == "ray.io/v1"


def test_kustomization_applies_the_config_and_cluster_but_no_one_shot_or_example_files() -> None:
    resources = KUSTOMIZATION["resources"]
    assert all((DEPLOY / r).is_file() for r in resources)
    assert "raycluster.yaml" in resources
    # RayJobs are one run each, in stage order; applied together every stage would start at once.
    assert not [r for r in resources if r.startswith("rayjob-") or r.startswith("secret")]
    (generator,) = KUSTOMIZATION["configMapGenerator"]
    assert generator["name"] == "antssl-config" and generator["files"] == ["config.yaml"]
    # The ray.io objects name the ConfigMap literally: kustomize must not add a hash suffix.
    assert KUSTOMIZATION["generatorOptions"]["disableNameSuffixHash"] is True


def test_shipped_config_is_valid_and_points_at_object_storage() -> None:
    # load_config (above) validates every key and refuses credentials in the file.
    assert CONFIG.workspace.startswith("s3://")
    assert CONFIG.scenes.glob or CONFIG.scenes.uris or CONFIG.scenes.stac


# --- RayJobs run the package's real stages ------------------------------------------------


def _job_stage(job_file: Path) -> str:
    """The stage a jobs/*.py entrypoint hands to ``antssl.cli.main([stage, ...])``."""
    tree = ast.parse(job_file.read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "main"
            and node.args
            and isinstance(node.args[0], ast.List)
            and isinstance(node.args[0].elts[0], ast.Constant)
        ):
            return str(node.args[0].elts[0].value)
    raise AssertionError(f"{job_file} does not call main([<stage>, ...])")


@pytest.mark.parametrize("stage", STAGES)
def test_rayjob_entrypoint_runs_an_existing_cli_stage(stage: str) -> None:
    job = RAYJOBS[f"rayjob-{stage}.yaml"]
    assert job["metadata"]["name"] == f"antssl-{stage}"
    m = re.fullmatch(r"python (jobs/[\w]+\.py) --config (\S+)", job["spec"]["entrypoint"])
    assert m, job["spec"]["entrypoint"]
    script, config = m.groups()
    assert (ROOT / script).is_file()
    assert script == f"jobs/{stage}.py"
    assert _job_stage(ROOT / script) == stage
    assert stage in cli_stages()
    assert config == CONFIG_PATH
    # The entrypoint's arguments parse with the real CLI.
    args = build_parser().parse_args([stage, "--config", config])
    assert args.command == stage


@pytest.mark.parametrize("stage", STAGES)
def test_rayjob_runs_on_its_own_cluster_that_is_released(stage: str) -> None:
    spec = RAYJOBS[f"rayjob-{stage}.yaml"]["spec"]
    # Own cluster, not clusterSelector: a retry (backoffLimit) deletes the job's cluster first,
    # which must never be a shared one; everything a stage needs to resume is on the workspace.
    assert "clusterSelector" not in spec and spec["rayClusterSpec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["submissionMode"] == "K8sJobMode"
    assert "runtimeEnvYAML" not in spec


def _documented_seconds(text: str) -> dict[str, int]:
    """``{stage: seconds}`` from the deadline table in docs/operations.md."""
    rows = re.findall(r"^\| `?rayjob-(\w+)\.yaml`? \| (\d+) ", text, flags=re.M)
    return {stage: int(seconds) for stage, seconds in rows}


@pytest.mark.parametrize("stage", STAGES)
def test_rayjob_has_a_documented_deadline_and_does_not_retry_a_gpu_cluster(stage: str) -> None:
    name = f"rayjob-{stage}.yaml"
    spec = RAYJOBS[name]["spec"]
    deadline = spec["activeDeadlineSeconds"]
    # A job waiting for nodes that never come must end; a real run must fit (at least 1 h).
    assert isinstance(deadline, int) and 3600 <= deadline <= 7 * 24 * 3600
    assert _documented_seconds((ROOT / "docs" / "operations.md").read_text())[stage] == deadline
    if stage == "pipeline":  # every stage in one job: at least as long as the longest stage
        others = [RAYJOBS[f"rayjob-{s}.yaml"]["spec"]["activeDeadlineSeconds"] for s in STAGES]
        assert deadline >= max(others)
    # A bad config fails the same way on every try: a GPU cluster is brought up once, a CPU
    # one at most twice (one retry, for a lost node); the reason is written beside the value.
    cluster = spec["rayClusterSpec"]
    assert spec["backoffLimit"] == (0 if gpu_groups(cluster) else 1)
    line = next(ln for ln in (DEPLOY / name).read_text().splitlines() if "backoffLimit:" in ln)
    assert "#" in line, f"{name}: say why backoffLimit is {spec['backoffLimit']}"


def _pods(cluster: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in [cluster["headGroupSpec"], *worker_groups(cluster)]:
        yield pod(group)


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_every_pod_runs_as_non_root_without_privileges(name: str) -> None:
    for spec in _pods(CLUSTERS[name]):
        pod_sc = spec["securityContext"]
        # runAsNonRoot needs a numeric uid: the image names its user (ray), which the kubelet
        # cannot check. 1000 is the Ray image's user (the Dockerfile's USER).
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 1000, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert not sc.get("privileged") and "add" not in sc["capabilities"], name
            assert sc["readOnlyRootFilesystem"] is True, name
            # Ray writes its session (logs, sockets, spilled objects) under /tmp, the object
            # store under /dev/shm: both are writable emptyDirs.
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts["/tmp"] in empty_dirs and mounts["/dev/shm"] in empty_dirs, name


@pytest.mark.parametrize("stage", STAGES)
def test_rayjob_submitter_pod_runs_locked_down_without_credentials(stage: str) -> None:
    """K8sJobMode: KubeRay builds the submitter Job's pod from submitterPodTemplate (its default
    has no securityContext) and fills in the first container's command and env."""
    spec = RAYJOBS[f"rayjob-{stage}.yaml"]["spec"]
    submitter = spec["submitterPodTemplate"]["spec"]
    assert submitter["restartPolicy"] == "Never"  # a Job's pod; Always is rejected
    (c,) = submitter["containers"]
    assert c["name"] == "ray-job-submitter"  # KubeRay's own name for it
    assert "command" not in c and "args" not in c, "KubeRay generates the submit command"
    # The head's image: the same Ray CLI as the cluster it submits to.
    head_image = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert c["image"] == head_image["image"] and c["imagePullPolicy"] == "IfNotPresent"
    pod_sc, sc = submitter["securityContext"], c["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 1000
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert not sc.get("privileged") and "add" not in sc["capabilities"]
    assert sc["readOnlyRootFilesystem"] is True
    empty_dirs = {v["name"] for v in submitter["volumes"] if "emptyDir" in v}
    assert {m["mountPath"]: m["name"] for m in c["volumeMounts"]}["/tmp"] in empty_dirs
    # It only talks to the Ray dashboard (token from the Secret KubeRay injects): no storage
    # credentials, no cloud identity, no Kubernetes API token.
    assert "envFrom" not in c and "env" not in c
    assert "serviceAccountName" not in submitter
    assert submitter["automountServiceAccountToken"] is False
    limits, requests = c["resources"]["limits"], c["resources"]["requests"]
    assert set(limits) == set(requests) == {"cpu", "memory"}


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_autoscaler_sidecar_runs_without_privileges(name: str) -> None:
    cluster = CLUSTERS[name]
    assert cluster["enableInTreeAutoscaling"] is True
    sc = cluster["autoscalerOptions"]["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    # The sidecar shares the head pod's securityContext: a numeric uid and seccomp.
    head_sc = pod(cluster["headGroupSpec"])["securityContext"]
    assert head_sc["runAsUser"] == 1000 and head_sc["seccompProfile"]["type"] == "RuntimeDefault"


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_storage_credentials_come_from_the_secret_or_the_service_account(name: str) -> None:
    (account,) = MANIFESTS["serviceaccount.yaml"]
    assert account["kind"] == "ServiceAccount" and account["metadata"]["name"] == "antssl"
    # The ServiceAccount is long-lived: kustomize applies it before any RayJob names it.
    assert "serviceaccount.yaml" in KUSTOMIZATION["resources"]
    for spec in _pods(CLUSTERS[name]):
        assert spec["serviceAccountName"] == "antssl", name
        for c in spec["containers"]:
            refs = {s["secretRef"]["name"]: s["secretRef"] for s in c["envFrom"]}
            # Optional: with IRSA / workload identity there is no key Secret at all.
            assert refs["antssl-s3"].get("optional") is True, name
    docs = (ROOT / "docs" / "operations.md").read_text()
    for word in (
        "serviceAccountName",
        "eks.amazonaws.com/role-arn",
        "iam.gke.io/gcp-service-account",
    ):
        assert word in docs


def _validator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "validate_manifests", ROOT / "tools" / "validate_manifests.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_validator_project_rules_pass_here_and_catch_each_missing_property() -> None:
    """The validator's own rules (no CRD schemas needed) on the real manifests and on copies
    with one property removed each."""
    import copy

    v = _validator()
    for _, doc in RAY_OBJECTS:
        assert v.ray_object_problems(doc) == [], doc["metadata"]["name"]
    job = RAYJOBS["rayjob-pretrain.yaml"]

    def head(d: dict[str, Any]) -> dict[str, Any]:
        return dict(d["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"])

    def worker(d: dict[str, Any], i: int) -> dict[str, Any]:
        container = d["spec"]["rayClusterSpec"]["workerGroupSpecs"][i]["template"]["spec"]
        return dict(container["containers"][0])

    def no_tmp(d: dict[str, Any]) -> None:
        mounts = head(d)["containers"][0]["volumeMounts"]
        mounts[:] = [m for m in mounts if m["mountPath"] != "/tmp"]

    def submitter(d: dict[str, Any]) -> dict[str, Any]:
        spec: dict[str, Any] = d["spec"]["submitterPodTemplate"]["spec"]
        return spec

    def autoscaler(d: dict[str, Any]) -> dict[str, Any]:
        opts: dict[str, Any] = d["spec"]["rayClusterSpec"]["autoscalerOptions"]
        return opts

    broken = {
        "activeDeadlineSeconds": lambda d: d["spec"].pop("activeDeadlineSeconds"),
        "backoffLimit": lambda d: d["spec"].update(backoffLimit=2),
        "runAsNonRoot": lambda d: head(d)["securityContext"].pop("runAsNonRoot"),
        "allowPrivilegeEscalation": lambda d: worker(d, 1)["securityContext"].pop(
            "allowPrivilegeEscalation"
        ),
        "must include ALL": lambda d: worker(d, 0)["securityContext"]["capabilities"].update(
            drop=["NET_RAW"]
        ),
        "/tmp": no_tmp,
        # The pods and containers KubeRay adds: the K8sJobMode submitter, the autoscaler.
        "submitterPodTemplate: not set": lambda d: d["spec"].pop("submitterPodTemplate"),
        "submitterPodTemplate.spec.restartPolicy": lambda d: submitter(d).pop("restartPolicy"),
        "submitterPodTemplate.spec.containers[0].securityContext.allowPrivilegeEscalation": (
            lambda d: submitter(d)["containers"][0]["securityContext"].update(
                allowPrivilegeEscalation=True
            )
        ),
        "submitterPodTemplate.spec.containers[0]: runAsNonRoot": lambda d: submitter(d).pop(
            "securityContext"
        ),
        "autoscalerOptions": lambda d: autoscaler(d).pop("securityContext"),
        "autoscalerOptions.securityContext.capabilities.drop": lambda d: autoscaler(d)[
            "securityContext"
        ].pop("capabilities"),
        "not supported with submissionMode SidecarMode": lambda d: d["spec"].update(
            submissionMode="SidecarMode"
        ),
    }
    for word, breaks in broken.items():
        doc = copy.deepcopy(job)
        breaks(doc)
        problems = v.ray_object_problems(doc)
        assert problems and all(word in p for p in problems), (word, problems)
    # HTTPMode has no submitter pod: no template needed.
    http = copy.deepcopy(job)
    http["spec"].pop("submitterPodTemplate")
    http["spec"]["submissionMode"] = "HTTPMode"
    assert v.ray_object_problems(http) == []
    # A pod naming a ServiceAccount that deploy/ does not declare is a problem.
    pod_spec = {"serviceAccountName": "nobody", "containers": []}
    assert ("ServiceAccount", "nobody", False) in set(v.references(pod_spec))


# --- RayService --------------------------------------------------------------------------


def test_rayservice_import_path_is_the_package_build_app() -> None:
    serve = yaml.safe_load(RAYSERVICE["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    assert app["route_prefix"] == "/"
    module_name, attr = app["import_path"].split(":")
    assert app["import_path"] == "antssl.serve.app:build_app"
    build_app = getattr(importlib.import_module(module_name), attr)
    assert callable(build_app)
    assert app["args"] == {"config": CONFIG_PATH, "fit_to_cluster": False}
    # The args are what build_app's pydantic model accepts; the cluster autoscales from no
    # workers, so replicas are not sized from the CPUs Ray reports at start.
    from antssl.serve.schemas import ServeArgs

    args = ServeArgs.model_validate(app["args"])
    assert args.config == CONFIG_PATH and args.fit_to_cluster is False


def test_rayservice_times_requests_out_as_antssl_serve() -> None:
    from ray.serve.config import HTTPOptions

    from antssl.config import ServeConfig

    serve = yaml.safe_load(RAYSERVICE["spec"]["serveConfigV2"])
    options = HTTPOptions(**serve["http_options"])  # what Serve accepts
    assert options.request_timeout_s == ServeConfig().request_timeout_s


# --- images, Dockerfile, .dockerignore ---------------------------------------------------


def _dockerfile() -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]


def _arg(name: str) -> str:
    for line in _dockerfile():
        m = re.fullmatch(rf"ARG {name}=(\S+)", line)
        if m:
            return m.group(1)
    raise AssertionError(f"Dockerfile has no ARG {name}=<default>")


def test_images_are_pinned_to_the_package_version_and_match_the_hardware() -> None:
    seen = set()
    for name, cluster in CLUSTERS.items():
        gpu_images = {c["image"] for g in gpu_groups(cluster) for c in pod(g)["containers"]}
        for c in containers(cluster):
            image = c["image"]
            seen.add(image)
            flavour = "gpu" if image in gpu_images else "cpu"
            assert image == f"ghcr.io/antssl/antssl:{VERSION}-{flavour}", (name, image)
            assert c.get("imagePullPolicy") == "IfNotPresent", name
    assert seen == {f"ghcr.io/antssl/antssl:{VERSION}-cpu", f"ghcr.io/antssl/antssl:{VERSION}-gpu"}


def test_ray_version_is_one_everywhere() -> None:
    pin = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray["))
    assert pin.endswith(f"=={ray.__version__}")
    assert _arg("RAY_VERSION") == ray.__version__
    assert "FROM rayproject/ray:${RAY_VERSION}-${VARIANT}" in _dockerfile()
    variant = _arg("VARIANT")
    assert variant.endswith("-cpu"), "the default build is the CPU image"
    py = re.match(r"py(\d)(\d+)-", variant)
    assert py and (int(py[1]), int(py[2])) == sys.version_info[:2], (
        f"the image's Python ({variant}) differs from the one the tests and pins use"
    )
    for name, cluster in CLUSTERS.items():
        assert cluster["rayVersion"] == ray.__version__, name


def test_dockerfile_installs_pinned_dependencies_at_build_time() -> None:
    lines = _dockerfile()
    assert _arg("TORCH_VERSION") == torch.__version__.split("+")[0]
    assert _arg("TORCH_INDEX_URL").endswith("/whl/cpu")
    installs = [ln for ln in lines if "pip install" in ln]
    assert any("torch==${TORCH_VERSION}" in ln and "--index-url" in ln for ln in installs)
    assert any("--constraint" in ln and "constraints.txt" in ln for ln in installs)
    assert not any("-e " in ln or "--editable" in ln for ln in installs)
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] == "ray", "the image must run as the base image's non-root user"


def test_dockerfile_installs_dependencies_in_a_layer_before_the_source() -> None:
    """A code change rebuilds from the source COPY on: the dependency layer only sees
    pyproject.toml and the constraints."""
    lines = _dockerfile()
    source_copy = next(i for i, ln in enumerate(lines) if ln.startswith("COPY") and "antssl/" in ln)
    deps = [
        i
        for i, ln in enumerate(lines)
        if ln.startswith("RUN") and "pip install" in ln and "--requirement" in ln
    ]
    assert deps and deps[0] < source_copy, "dependencies are installed after the source is copied"
    dep_run = lines[deps[0]]
    assert "['project']['dependencies']" in dep_run and "--constraint" in dep_run
    before = [ln for ln in lines[: deps[0]] if ln.startswith("COPY")]
    for copy_line in before:  # nothing that changes with the code reaches the dependency layer
        sources = [p for p in copy_line.split()[1:-1] if not p.startswith("--")]
        assert set(sources) <= {"pyproject.toml", "deploy/constraints.txt"}, copy_line
    source_install = next(ln for ln in lines[source_copy:] if "pip install" in ln)
    assert "--no-deps" in source_install and "pip check" in source_install


def test_dockerfile_smoke_test_runs_every_command_help() -> None:
    lines = _dockerfile()
    jobs_copy = next(i for i, ln in enumerate(lines) if ln.startswith("COPY") and "jobs/" in ln)
    smoke = " ".join(ln for ln in lines[jobs_copy:] if ln.startswith("RUN"))
    assert "antssl --help" in smoke
    assert 'antssl "$cmd" --help' in smoke and "build_parser()" in smoke
    assert 'for job in jobs/*.py; do python "$job" --help' in smoke
    assert "|| exit 1" in smoke  # a failing command inside a for loop fails the build


def test_constraints_pin_every_runtime_dependency() -> None:
    pins = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"deploy/constraints.txt: {line!r} is not name==version"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    assert pins["ray"] == ray.__version__
    assert "torch" not in pins, "torch is pinned by the Dockerfile (CPU or CUDA wheel)"
    assert "antssl" not in pins
    for dep in PYPROJECT["project"]["dependencies"]:
        name = re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", dep)[0]).lower()
        if name != "torch":
            assert name in pins, f"{name} is not pinned in deploy/constraints.txt"


def _copy_sources() -> tuple[list[str], str]:
    """(sources of every COPY, the WORKDIR that jobs/ is copied into)."""
    sources: list[str] = []
    workdir = "/"
    jobs_dir = ""
    for line in _dockerfile():
        parts = line.split()
        if parts[0] == "WORKDIR":
            workdir = parts[1]
        if parts[0] == "COPY" and not any(p.startswith("--from") for p in parts):
            args = [p for p in parts[1:] if not p.startswith("--")]
            sources += args[:-1]
            if "jobs/" in args[:-1]:
                jobs_dir = workdir
    return sources, jobs_dir


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a parent folder counts."""
    ignored = False
    parts = path.rstrip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        for cand in candidates:
            if fnmatch.fnmatchcase(cand, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatchcase(cand, pattern[3:])
            ):
                ignored = not negate
                break
    return ignored


def test_everything_the_dockerfile_copies_exists_and_reaches_the_build() -> None:
    patterns = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    sources, jobs_dir = _copy_sources()
    assert {"pyproject.toml", "README.md", "antssl/", "jobs/"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), f"Dockerfile copies {src}, which does not exist"
        assert not _docker_ignored(src, patterns), f".dockerignore leaves out {src}"
    for heavy in (".venv", ".git", "tests", "workspace", "antssl-demo", "antssl/__pycache__"):
        assert _docker_ignored(heavy, patterns), f".dockerignore lets {heavy} into the build"
    # The jobs run from the image's WORKDIR, which every Ray container uses as workingDir.
    assert jobs_dir
    for name, cluster in CLUSTERS.items():
        for c in containers(cluster):
            assert c["workingDir"] == jobs_dir, name


# --- cluster shape --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_head_schedules_no_work_and_tokens_are_on(name: str) -> None:
    cluster = CLUSTERS[name]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["enableInTreeAutoscaling"] is True


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_gpu_groups_request_gpus_tolerate_gpu_nodes_and_scale_to_zero(name: str) -> None:
    for group in gpu_groups(CLUSTERS[name]):
        spec = pod(group)
        for c in spec["containers"]:
            res = c["resources"]
            assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
        assert any(
            t.get("key") == "nvidia.com/gpu" and t.get("operator") in ("Exists", "Equal")
            for t in spec["tolerations"]
        )
        assert group["minReplicas"] == 0
    for group in worker_groups(CLUSTERS[name]):
        if not gpus(group):
            assert "nvidia.com/gpu" not in str(pod(group)), "only GPU groups ask for GPUs"


def test_standalone_cluster_has_a_cpu_and_a_gpu_group() -> None:
    cluster = CLUSTERS["raycluster.yaml"]
    assert len(gpu_groups(cluster)) == 1
    assert len(worker_groups(cluster)) == 2


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_every_pod_gets_the_config_and_the_storage_credentials(name: str) -> None:
    cluster = CLUSTERS[name]
    for group in [cluster["headGroupSpec"], *worker_groups(cluster)]:
        spec = pod(group)
        config_volumes = {
            v["name"]
            for v in spec["volumes"]
            if v.get("configMap", {}).get("name") == "antssl-config"
        }
        for c in spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts.get(CONFIG_MOUNT) in config_volumes, name
            secrets = {s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s}
            assert "antssl-s3" in secrets, name


def test_config_resource_asks_fit_the_job_clusters() -> None:
    """A Ray task or actor bigger than any node never schedules: the job would hang."""
    t, e = CONFIG.train, CONFIG.embed
    for stage, gpu_ask in (
        ("pretrain", t.num_workers if t.use_gpu else 0),
        ("embed", e.concurrency * e.num_gpus),
        ("pipeline", max(t.num_workers if t.use_gpu else 0, e.concurrency * e.num_gpus)),
    ):
        cluster = RAYJOBS[f"rayjob-{stage}.yaml"]["spec"]["rayClusterSpec"]
        groups = gpu_groups(cluster)
        capacity = sum(gpus(g) * g["maxReplicas"] for g in groups)
        assert gpu_ask <= capacity, f"{stage}: config asks {gpu_ask} GPUs, cluster has {capacity}"
        if gpu_ask:
            node_cpus = max(cpus(g) for g in groups)
            assert t.cpus_per_worker <= node_cpus and e.cpus_per_actor <= node_cpus, stage
    for stage in ("pretrain", "pipeline"):
        # train checks ray.cluster_resources() before starting, i.e. the nodes already up:
        # the job's cluster starts with enough GPU workers instead of waiting for the autoscaler.
        cluster = RAYJOBS[f"rayjob-{stage}.yaml"]["spec"]["rayClusterSpec"]
        if t.use_gpu:
            start = sum(gpus(g) * g["replicas"] for g in gpu_groups(cluster))
            assert start >= t.num_workers, f"{stage}: starts with {start} GPUs"
        start_cpu = sum(cpus(g) * g.get("replicas", 0) for g in worker_groups(cluster))
        assert start_cpu >= t.num_workers * t.cpus_per_worker + 0.5, stage


# --- policy: no runtime installs, no secrets -----------------------------------------------


def test_no_manifest_installs_packages_at_run_time() -> None:
    runtime_envs = [
        yaml.safe_load(j["spec"].get("runtimeEnvYAML") or "{}") for j in RAYJOBS.values()
    ]
    serve = yaml.safe_load(RAYSERVICE["spec"]["serveConfigV2"])
    for app in serve["applications"]:
        runtime_envs.append(app.get("runtime_env") or {})
        for dep in app.get("deployments") or []:
            runtime_envs.append((dep.get("ray_actor_options") or {}).get("runtime_env") or {})
    for env in runtime_envs:
        assert not {"pip", "uv", "conda"} & set(env)
    for path in DEPLOY.glob("*.yaml"):
        assert "pip install" not in path.read_text(), path.name


def test_no_secret_values_outside_the_placeholder_example() -> None:
    secretish = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD)", re.IGNORECASE)
    for name, docs in MANIFESTS.items():
        for doc in docs:
            if doc["kind"] == "Secret":
                assert name == "secret-example.yaml"
                assert set(doc["stringData"].values()) == {"REPLACE_ME"}
                assert "data" not in doc
                continue
            for where, node in walk(doc):
                if isinstance(node, dict) and "name" in node and "value" in node:
                    assert not secretish.search(str(node["name"])), f"{name}: {where} has a value"
    for file in [*DEPLOY.glob("*"), ROOT / "Dockerfile"]:
        text = file.read_text()
        assert not re.search(r"AKIA[0-9A-Z]{16}", text), file.name
        # A real secret key is 40 base64 characters; the example's placeholders are not.
        assert not re.search(r"aws_secret_access_key\W+[A-Za-z0-9/+]{30,}", text, re.I), file.name
    # Every Secret a pod loads is described by the example (so operators know to create it).
    declared = {d["metadata"]["name"] for d in MANIFESTS["secret-example.yaml"]}
    for name, cluster in CLUSTERS.items():
        for c in containers(cluster):
            for src in c.get("envFrom", []):
                if "secretRef" in src:
                    assert src["secretRef"]["name"] in declared, name
