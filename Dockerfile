# agentpool's container image: the `agentpool` binary (server, launcher, run-task, worker), git,
# and the agent CLIs pinned in tools/agents/package-lock.json. No secret is baked in: tokens,
# keys and credentials arrive at run time through Secrets.
#
#   docker build -t agentpool:0.1.0 .
#
# There is no init in the image: a process an agent or a task's command leaves in the
# background is re-parented to PID 1 when its parent exits, and `agentpool` as PID 1 would
# never reap it (a zombie per process, until the container goes). On Kubernetes the pods
# agentpool creates set shareProcessNamespace, so the pause container is PID 1 and reaps them;
# elsewhere run the image with an init: `docker run --init agentpool:0.1.0 agentpool worker …`.

# --- build the binary -------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY crates crates
RUN cargo build --release --locked -p agentpool \
 && install -m 0755 target/release/agentpool /usr/local/bin/agentpool

# --- the agent CLIs, exactly as locked --------------------------------------------------------
FROM node:22-bookworm-slim AS agents
WORKDIR /opt/agentpool/agents
COPY tools/agents/package.json tools/agents/package-lock.json ./
# `npm install` with the lockfile present installs exactly what is locked (as scripts/test does).
RUN npm install --omit=dev --no-audit --no-fund

# --- runtime ----------------------------------------------------------------------------------
FROM node:22-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends git ca-certificates openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 agentpool \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/agentpool agentpool \
 && mkdir -p /work \
 && chown agentpool:agentpool /work
COPY --from=build /usr/local/bin/agentpool /usr/local/bin/agentpool
COPY --from=agents /opt/agentpool/agents/node_modules /opt/agentpool/agents/node_modules
ENV AGENTPOOL_AGENT_BIN_DIR=/opt/agentpool/agents/node_modules/.bin \
    AGENTPOOL_DATA_DIR=/tmp/agentpool \
    PATH=/opt/agentpool/agents/node_modules/.bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
USER 10001:10001
WORKDIR /home/agentpool
# The manifests set the command (`agentpool serve`, `launcher`, `run-task`).
CMD ["agentpool", "--help"]
