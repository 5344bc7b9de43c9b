# The control plane image: edgepm-control-plane (serve, dashboard, train, score-batch,
# init-db) and edgepm-simulate. Build from the repository root, with the project's
# version as the tag:
#   docker build -f docker/control-plane.Dockerfile -t edgepm/control-plane:0.1.0 .
# docs/deploy.md shows how to save it and import it into K3s.

FROM python:3.11.13-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# The project with the exact versions pyproject.toml pins; the same file pins the
# agent image's onnxruntime.
COPY pyproject.toml README.md ./
COPY edge_agent ./edge_agent
COPY control_plane ./control_plane
COPY simulators ./simulators
RUN pip install --no-cache-dir .

FROM python:3.11.13-slim-bookworm

# tini as PID 1 forwards SIGTERM to the server and reaps orphaned processes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 edgepm \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin edgepm

COPY --from=build /opt/venv /opt/venv
# The AI4I 2020 data set, which the first training run uses
# (edgepm-control-plane train --data /opt/edgepm/data/ai4i2020.csv).
COPY data/ai4i2020.csv /opt/edgepm/data/ai4i2020.csv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /opt/edgepm
EXPOSE 8080 8050
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["edgepm-control-plane", "serve"]
