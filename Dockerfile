# The ardrag worker image: the project with every extra, run by Prefect workers (docker-compose.yml).
# CPU by default; for the GPU pool build with a CUDA torch, e.g.
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t ardrag-worker:gpu .
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"

# ffmpeg for the video codecs (PyAV wheels bundle their own; the CLI is handy for inspection), curl for
# healthchecks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 ardrag
WORKDIR /opt/ardrag

# torch first, pinned, from the chosen index (an unpinned torch pulls gigabytes of CUDA packages).
RUN pip install --no-cache-dir "${TORCH_SPEC}" --index-url "${TORCH_INDEX}"

# Dependencies before the code, so that code changes do not reinstall them.
COPY pyproject.toml constraints.txt README.md ./
COPY ardrag/__init__.py ardrag/__init__.py
RUN pip install --no-cache-dir ".[all]" -c constraints.txt && pip uninstall -y ardrag

COPY ardrag ardrag
COPY flows flows
COPY annotation annotation
COPY studio studio
COPY datasets datasets
COPY prefect.yaml ./
RUN pip install --no-cache-dir --no-deps -e . && mkdir -p /data && chown ardrag /data

USER ardrag
ENV ARDRAG_HOME=/opt/ardrag \
    ARDRAG_DATA_DIR=/data \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
CMD ["prefect", "worker", "start", "--pool", "cpu", "--type", "process"]
