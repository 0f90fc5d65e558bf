# CUDA image for the training stages: PyTorch's CUDA runtime image (torch 2.13.0), the rlhf
# package with kfp, kfp-kubernetes and its deepspeed extra. Build from the repository root with
# `make images` (see images/README.md), or:
#
#   docker build -f images/cuda.Dockerfile -t ghcr.io/rlhf-project/rlhf:0.1.0-cuda .
#
# BASE_IMAGE must carry torch 2.13.0 (the package pins it; the build stops otherwise). Pick the
# tag of pytorch/pytorch for 2.13.0 with the CUDA version your nodes' drivers support; use a
# "-devel" tag instead of "-runtime" when DeepSpeed must compile CUDA ops at run time (nvcc).
#
# No ENTRYPOINT: KFP runs each component as `sh -ec '... python3 -m kfp.dsl.executor_main ...'`;
# the MPI runtime's pods run mpirun (the launcher) or sshd (the nodes), installed below.
# No credentials, data or model weights are baked in.
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# No `pip check` here: the base image's conda environment carries packages pip does not manage.
# The base image's torch must be the pinned release, or pip would replace it with PyPI's build.
RUN python3 -c "import torch, sys; v = torch.__version__.split('+')[0]; \
sys.exit(0 if v == '2.13.0' else f'base image has torch {torch.__version__}, need 2.13.0')"

# constraints.txt: the exact versions the project was tested with (`make lock`), DeepSpeed's too.
COPY pyproject.toml README.md constraints.txt /tmp/rlhf-src/
COPY src/rlhf /tmp/rlhf-src/src/rlhf
RUN python3 -m pip install -c /tmp/rlhf-src/constraints.txt "/tmp/rlhf-src[deepspeed]" \
    && rm -rf /tmp/rlhf-src \
    && python3 -m pip show deepspeed > /dev/null \
    && python3 -c "import rlhf, torch, kfp, kfp.kubernetes; print('rlhf', rlhf.__version__, 'torch', torch.__version__, 'kfp', kfp.__version__)"

# Kubeflow Trainer's MPI runtime (deepspeed-distributed; docs/kubeflow.md, section 9): its
# launcher pod runs mpirun, which starts the ranks on the node pods over SSH; those pods run
# `/usr/sbin/sshd -De -f /home/mpiuser/.sshd_config`, and both run as uid 1000 with the
# TrainJob's SSH key mounted on /home/mpiuser/.ssh (id_rsa, authorized_keys). So: OpenMPI's
# mpirun and orted, an SSH server and client, the user `mpiuser` (uid 1000, a login shell: orted
# is started through it) and an sshd configuration it can run as non-root, on port 2222, with
# the mounted key as its host key (no key is baked in). The client asks no host-key question.
RUN apt-get update \
    && apt-get install -y --no-install-recommends openmpi-bin openssh-server openssh-client \
    && rm -rf /var/lib/apt/lists/* \
    && if getent passwd 1000 > /dev/null; then userdel --remove "$(getent passwd 1000 | cut -d: -f1)"; fi \
    && useradd --create-home --uid 1000 --user-group --shell /bin/bash mpiuser \
    && printf '%s\n' 'Port 2222' 'HostKey /home/mpiuser/.ssh/id_rsa' \
        'PidFile /home/mpiuser/.sshd.pid' 'AuthorizedKeysFile /home/mpiuser/.ssh/authorized_keys' \
        'PasswordAuthentication no' 'KbdInteractiveAuthentication no' 'UsePAM no' \
        'StrictModes no' 'PermitUserEnvironment no' > /home/mpiuser/.sshd_config \
    && printf '%s\n' 'Host *' '    Port 2222' '    StrictHostKeyChecking no' \
        '    UserKnownHostsFile /dev/null' '    LogLevel ERROR' > /etc/ssh/ssh_config.d/mpi.conf \
    && mkdir -p /home/mpiuser/.cache && chown -R mpiuser:mpiuser /home/mpiuser \
    && mpirun --version && test -x /usr/sbin/sshd

RUN groupadd --gid 10001 rlhf \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin rlhf
USER 10001:10001
ENV HOME=/home/rlhf
WORKDIR /home/rlhf

ARG VERSION=dev
LABEL org.opencontainers.image.title="rlhf (CUDA)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.description="RLHF stages for Kubeflow Pipelines, CUDA build with DeepSpeed" \
      org.opencontainers.image.licenses="Apache-2.0"
