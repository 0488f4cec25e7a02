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
# Layers, slowest-changing first: torch; the runtime dependencies (only pyproject.toml and
# deploy/constraints.txt reach this layer, so a code change does not reinstall them); the
# antssl source; the job entrypoints and the smoke test.
# RAY_VERSION must equal the ray pin in pyproject.toml (tests/test_deploy.py checks it).
ARG RAY_VERSION=2.60.0
ARG VARIANT=py311-cpu
FROM rayproject/ray:${RAY_VERSION}-${VARIANT}

ARG RAY_VERSION
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# The base image's non-root user (uid 1000, group users) owns its Python environment; the
# manifests run the pods as that uid (runAsNonRoot).
USER ray
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from its own index: a plain `pip install torch` pulls the CUDA build from PyPI.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# Dependency layer: [project].dependencies of pyproject.toml at their tested versions.
COPY --chown=ray:users pyproject.toml deploy/constraints.txt /tmp/antssl-deps/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/antssl-deps/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/antssl-deps/requirements.txt \
 && pip install --no-cache-dir --constraint /tmp/antssl-deps/constraints.txt --requirement /tmp/antssl-deps/requirements.txt \
 && rm -rf /tmp/antssl-deps

# Source layer: antssl itself (a regular install, not editable); its dependencies are above,
# and `pip check` fails the build if the dependency layer missed one.
COPY --chown=ray:users pyproject.toml README.md deploy/constraints.txt /tmp/antssl-src/
COPY --chown=ray:users antssl/ /tmp/antssl-src/antssl/
RUN pip install --no-cache-dir --no-deps --constraint /tmp/antssl-src/constraints.txt /tmp/antssl-src \
 && rm -rf /tmp/antssl-src \
 && pip check

# Job entrypoints: `python jobs/<stage>.py --config …` runs from here (the pods' workingDir).
WORKDIR /home/ray/antssl
COPY --chown=ray:users jobs/ jobs/

# Smoke test: the versions, then every command's --help (each imports what it runs), so a
# runtime dependency missing from pyproject.toml fails the build, not the first job.
RUN python -c "import ray, torch, antssl.cli, antssl.serve.app; \
assert ray.__version__ == '${RAY_VERSION}', ray.__version__; \
assert torch.__version__.startswith('${TORCH_VERSION}'), torch.__version__" \
 && antssl --help > /dev/null \
 && for cmd in $(python -c "import argparse, antssl.cli as c; \
print(*next(a for a in c.build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices)"); do \
      antssl "$cmd" --help > /dev/null || exit 1; done \
 && for job in jobs/*.py; do python "$job" --help > /dev/null || exit 1; done
