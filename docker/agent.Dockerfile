# The edge agent image (edgepm-agent). Build from the repository root, with the
# project's version as the tag:
#   docker build -f docker/agent.Dockerfile -t edgepm/agent:0.1.0 .
# docs/deploy.md shows how to save it and import it into K3s.

FROM python:3.11.13-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Only the agent's dependencies, at the versions pyproject.toml pins. The agent needs
# neither scikit-learn, pandas nor Dash, and a small image suits a small node.
COPY pyproject.toml README.md ./
COPY docker/select_requirements.py docker/agent-packages.txt docker/
RUN python docker/select_requirements.py pyproject.toml docker/agent-packages.txt \
        > /tmp/agent-requirements.txt \
    && pip install --no-cache-dir -r /tmp/agent-requirements.txt

# The agent's code alone; its dependencies are in place already.
COPY edge_agent ./edge_agent
RUN pip install --no-cache-dir --no-deps .

FROM python:3.11.13-slim-bookworm

# tini as PID 1 forwards SIGTERM to the agent and reaps orphaned processes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 edgepm \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin edgepm

COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EDGEPM_DATA_DIR=/var/lib/edgepm/data \
    EDGEPM_MODEL_DIR=/var/lib/edgepm/models
RUN mkdir -p /var/lib/edgepm/data /var/lib/edgepm/models \
    && chown -R 10001:10001 /var/lib/edgepm

USER 10001:10001
WORKDIR /var/lib/edgepm
EXPOSE 9100
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["edgepm-agent"]
