# The streamscore worker image (used by docker-compose.yml).
#
#   docker build -t streamscore:local .
#   docker run --rm -e STREAMSCORE_BOOTSTRAP_SERVERS=... streamscore:local
#
# Dependencies are installed against requirements.lock (the same pins CI uses)
# in a layer that only changes when pyproject.toml or the lock changes.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STREAMSCORE_HOME=/data

WORKDIR /app

# 1. Dependencies: install the distribution once with empty package stubs, so
#    this layer is cached across source edits.
COPY pyproject.toml requirements.lock README.md ./
RUN mkdir -p streams features models \
    && touch streams/__init__.py features/__init__.py models/__init__.py \
    && pip install -c requirements.lock . \
    && rm -rf streams features models build *.egg-info

# 2. The project itself; the feature repo is read at run time by `streamscore bootstrap`.
COPY streams ./streams
COPY features ./features
COPY models ./models
COPY feature_repo ./feature_repo
RUN pip install --no-deps -c requirements.lock . \
    && rm -rf build *.egg-info

# Run unprivileged; /data holds the registry and local state (a volume in compose).
# /app/feature_repo/data exists (owned by the user) so that the compose volume mounted
# there starts writable: Docker copies a mount point's ownership into a new volume.
RUN useradd --create-home --uid 10001 streamscore \
    && mkdir -p /data /app/feature_repo/data \
    && chown -R streamscore:streamscore /data /app
USER streamscore
VOLUME ["/data"]

# CMD, not ENTRYPOINT: docker-compose.yml replaces the command with a shell line.
CMD ["streamscore", "worker"]
