# syntax=docker/dockerfile:1
# The antssl image: the official Ray image, torch, and antssl with its dependencies pinned
# (deploy/constraints.txt). Everything is installed here; nothing is pip-installed when a
# job or the service starts.
#
#   CPU (head, CPU workers, the service):
#     docker build -t ghcr.io/antssl/antssl:0.1.0-cpu .
#   GPU workers (CUDA 12.8 base image and the matching torch wheel):
#     docker build -t ghcr.io/antssl/antssl:0.1.0-gpu \
#       --build-arg VARIANT=py311-cu128 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#
# RAY_VERSION must equal the ray pin in pyproject.toml (tests/test_deploy.py checks it).
ARG RAY_VERSION=2.60.0
ARG VARIANT=py311-cpu
FROM rayproject/ray:${RAY_VERSION}-${VARIANT}

ARG RAY_VERSION
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# The base image's non-root user owns its Python environment.
USER ray
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from its own index: a plain `pip install torch` pulls the CUDA build from PyPI.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# antssl (a regular install, not editable) with every dependency at its tested version.
COPY --chown=ray:users pyproject.toml README.md deploy/constraints.txt /tmp/antssl-src/
COPY --chown=ray:users antssl/ /tmp/antssl-src/antssl/
RUN pip install --no-cache-dir --constraint /tmp/antssl-src/constraints.txt /tmp/antssl-src \
 && rm -rf /tmp/antssl-src \
 && python -c "import ray, torch, antssl.cli, antssl.serve.app; \
assert ray.__version__ == '${RAY_VERSION}', ray.__version__; \
assert torch.__version__.startswith('${TORCH_VERSION}'), torch.__version__"

# Job entrypoints: `python jobs/<stage>.py --config …` runs from here (the pods' workingDir).
WORKDIR /home/ray/antssl
COPY --chown=ray:users jobs/ jobs/
