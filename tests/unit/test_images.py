"""The Dockerfiles, without a Docker engine: what they declare (non-root user, no secrets, the
packages the stages need), and the package installing the way the CPU image installs it: the
Dockerfile's own RUN commands, run in a fresh virtualenv on a copy of exactly the files its COPY
lines send (marked ``image``: a few minutes; `make test-images`, run by CI)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from compiled_yaml import load_without_sdk_version

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
CONTEXT_DIR = "/tmp/rlhf-src"  # where the Dockerfiles COPY the package


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in dockerfile.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def _args(steps: list[tuple[str, str]]) -> dict[str, str]:
    defaults = {}
    for word, rest in steps:
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value
    return defaults


@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_dockerfile_runs_as_non_root_without_secrets(name):
    steps = _instructions(IMAGES / f"{name}.Dockerfile")
    words = [w for w, _ in steps]
    assert "ENTRYPOINT" not in words and "CMD" not in words  # KFP gives the command
    users = [i for i, (w, _) in enumerate(steps) if w == "USER"]
    assert users, "no USER: the image would run as root"
    uid = steps[users[-1]][1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it
    last_install = max(i for i, (w, r) in enumerate(steps) if w == "RUN" and "pip" in r)
    assert users[-1] > last_install, "the installs run as root, the image runs as the user"
    for word, rest in steps:
        if word in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(KEY|SECRET|TOKEN|PASSWORD)\w*=", rest, re.I), rest
        if word in ("COPY", "ADD"):
            sources = rest.split()[:-1]
            # The package sources only: no .env, kubeconfig, model weights or data.
            assert set(sources) <= {"pyproject.toml", "README.md", "constraints.txt", "src/rlhf"}
            assert "constraints.txt" in sources or sources == ["src/rlhf"], rest
    run = " ".join(r for w, r in steps if w == "RUN")
    assert "import rlhf, torch, kfp, kfp.kubernetes" in run
    # Every install takes the locked versions (constraints.txt), as make test and make demo do.
    assert all(
        f"-c {CONTEXT_DIR}/constraints.txt" in r
        for w, r in steps
        if w == "RUN" and "pip install" in r and "TORCH" not in r
    ), run
    if name == "cpu":  # (the CUDA base image's conda packages are not pip's to check)
        assert "pip check" in run


def test_cuda_dockerfile_has_deepspeed_on_the_pinned_torch():
    steps = _instructions(IMAGES / "cuda.Dockerfile")
    base = _args(steps)["BASE_IMAGE"]
    assert base.startswith("pytorch/pytorch:2.13.0-cuda") and base.endswith("-runtime")
    run = " ".join(r for w, r in steps if w == "RUN")
    assert f'pip install -c {CONTEXT_DIR}/constraints.txt "{CONTEXT_DIR}[deepspeed]"' in run
    assert "2.13.0" in run  # the check that the base image's torch is the pinned one


def test_cuda_image_carries_what_the_mpi_runtime_runs():
    """Kubeflow Trainer's deepspeed-distributed runtime runs mpirun in the launcher pod and
    ``sshd -f /home/mpiuser/.sshd_config`` in the node pods, as uid 1000, with the SSH key
    mounted on /home/mpiuser/.ssh; the launcher starts the ranks on port 2222."""
    from rlhf.pipeline.mpi_launch import MPI_HOME, SSHD_PORT

    steps = _instructions(IMAGES / "cuda.Dockerfile")
    run = " ".join(r for w, r in steps if w == "RUN")
    install = re.search(r"apt-get install -y --no-install-recommends ([^&]+)&&", run)
    assert install and {"openmpi-bin", "openssh-server", "openssh-client"} <= set(
        install.group(1).split()
    )
    assert "useradd --create-home --uid 1000 --user-group --shell /bin/bash mpiuser" in run
    assert MPI_HOME == "/home/mpiuser"
    sshd = run.split(f"> {MPI_HOME}/.sshd_config")[0].rsplit("printf", 1)[1]
    for setting in (f"'Port {SSHD_PORT}'", f"'HostKey {MPI_HOME}/.ssh/id_rsa'", "'UsePAM no'",
                    f"'AuthorizedKeysFile {MPI_HOME}/.ssh/authorized_keys'",
                    "'PasswordAuthentication no'"):  # fmt: skip
        assert setting in sshd, setting
    client = run.split("> /etc/ssh/ssh_config.d/mpi.conf")[0].rsplit("printf", 1)[1]
    assert f"'    Port {SSHD_PORT}'" in client and "StrictHostKeyChecking no" in client
    assert "ssh-keygen" not in run  # no key baked in: the TrainJob's own is mounted
    # Installed before the image switches to its non-root user.
    apt = next(i for i, (w, r) in enumerate(steps) if w == "RUN" and "openmpi-bin" in r)
    assert apt < max(i for i, (w, _) in enumerate(steps) if w == "USER")


def test_default_images_match_the_dockerfiles_and_the_make_target():
    from rlhf import __version__
    from rlhf.pipeline.images import CPU_IMAGE, CUDA_IMAGE

    assert CPU_IMAGE.endswith(f"/rlhf:{__version__}-cpu")
    assert CUDA_IMAGE.endswith(f"/rlhf:{__version__}-cuda")
    dry = subprocess.run(
        ["make", "-n", "images"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert f"-f images/cpu.Dockerfile --build-arg VERSION={__version__} -t {CPU_IMAGE} ." in dry
    assert f"-f images/cuda.Dockerfile --build-arg VERSION={__version__} -t {CUDA_IMAGE} ." in dry


def _torch_index() -> str:
    """The Dockerfile's TORCH_INDEX (PyTorch's CPU wheels) is not reachable from CI: use the
    Makefile's TORCH_INDEX when set, else the index pip uses here (whose configured find-links
    hold the CPU wheel of torch 2.13.0 on the project's machines)."""
    return os.environ.get("TORCH_INDEX") or os.environ.get(
        "PIP_INDEX_URL", "https://pypi.org/simple"
    )


@pytest.mark.image
def test_package_installs_the_way_the_cpu_image_installs_it(tmp_path):
    steps = _instructions(IMAGES / "cpu.Dockerfile")
    context = tmp_path / "context"
    for word, rest in steps:
        if word == "COPY":  # the same files, to the same layout, as `docker build` sends
            *sources, dest = rest.split()
            target = context / dest.removeprefix(f"{CONTEXT_DIR}/").removeprefix(CONTEXT_DIR)
            for source in sources:
                src = ROOT / source
                if src.is_dir():
                    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(src, target / src.name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    args = {**_args(steps), "TORCH_INDEX": _torch_index()}
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    env.pop("PYTHONPATH", None)
    for word, rest in steps:
        if word != "RUN" or "pip" not in rest:
            continue
        command = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
        command = command.replace(CONTEXT_DIR, str(context))
        done = subprocess.run(["bash", "-ec", command], env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    assert not context.exists()  # the RUN line removed the sources, as in the image
    # The installed (not editable) package compiles the committed pipelines: nothing it needs
    # at run time was left out of the wheel.
    out = tmp_path / "compiled"
    subprocess.run(
        [str(venv / "bin" / "rlhf"), "compile", "--out", str(out), "--no-components"],
        env=env, cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    for fresh in out.rglob("*.yaml"):
        committed = ROOT / "pipelines" / fresh.relative_to(out)
        assert load_without_sdk_version(fresh.read_text()) == load_without_sdk_version(
            committed.read_text()
        ), committed
