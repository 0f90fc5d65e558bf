# CPU image for the data preparation and evaluation stages (and the in-cluster submit Job):
# Python 3.11, torch 2.13.0 (CPU build), the rlhf package with kfp and kfp-kubernetes. Build
# from the repository root with `make images` (see images/README.md), or:
#
#   docker build -f images/cpu.Dockerfile -t ghcr.io/rlhf-project/rlhf:0.1.0-cpu .
#
# No ENTRYPOINT: KFP runs each component as `sh -ec '... python3 -m kfp.dsl.executor_main ...'`.
# No credentials, data or model weights are baked in: MLflow, S3 and hub access come from the
# environment of the pod (MLFLOW_TRACKING_URI, AWS_* from Kubernetes Secrets, ...).
FROM python:3.11-slim

ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from PyTorch's CPU index: the package's own torch==2.13.0 is then already
# satisfied and pip never pulls the CUDA wheels.
RUN pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"

# constraints.txt: the exact versions the project was tested with (`make lock`).
COPY pyproject.toml README.md constraints.txt /tmp/rlhf-src/
COPY src/rlhf /tmp/rlhf-src/src/rlhf
RUN pip install -c /tmp/rlhf-src/constraints.txt "/tmp/rlhf-src[tracking]" \
    && rm -rf /tmp/rlhf-src \
    && python -m pip check \
    && python -c "import rlhf, torch, kfp, kfp.kubernetes; print('rlhf', rlhf.__version__, 'torch', torch.__version__, 'kfp', kfp.__version__)"

# A non-root user with a writable home (caches: ~/.cache/rlhf, ~/.cache/huggingface).
RUN groupadd --gid 10001 rlhf \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin rlhf
USER 10001:10001
ENV HOME=/home/rlhf
WORKDIR /home/rlhf

ARG VERSION=dev
LABEL org.opencontainers.image.title="rlhf (CPU)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.description="RLHF stages for Kubeflow Pipelines, CPU build" \
      org.opencontainers.image.licenses="Apache-2.0"
