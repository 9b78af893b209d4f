# syntax=docker/dockerfile:1
#
# Spangraph images. `docker compose up --build` builds both targets:
#   grafana    Grafana with the Spangraph datasource plugin installed (the default target)
#   spangraph  the standalone CLI: `spangraph serve|demo|loadgen`
#
# The frontend and backend stages run on the build machine's platform and
# cross-compile, so `--platform linux/arm64` builds do not emulate npm or Go.

# grafana/grafana-oss is no longer published from 12.4.0 on; grafana/grafana
# is the same open-source build. Every base image is pinned to a version.
ARG GRAFANA_IMAGE=grafana/grafana:12.4.10

# --- frontend: dist/ (module.js, plugin.json, img/) -------------------------
FROM --platform=$BUILDPLATFORM node:20.20.2-bookworm AS frontend
WORKDIR /src
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY .config/ .config/
COPY tsconfig.json webpack.config.ts plugin.json README.md ./
COPY src/ src/
COPY provisioning/dashboards/ provisioning/dashboards/
RUN npm run build

# --- backend: the plugin binary and the CLI ---------------------------------
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS backend
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY pkg/ pkg/
# Grafana starts the plugin executable named in plugin.json ("gpx_spangraph")
# with the suffix _<os>_<arch>. Built with the tags and flags of the plugin
# SDK's mage targets (Magefile.go), so the image runs what `mage` builds.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
      go build -trimpath -tags arrow_json_stdlib -ldflags '-w -s -extldflags "-static"' \
        -o /out/gpx_spangraph_${TARGETOS}_${TARGETARCH} ./pkg && \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
      go build -trimpath -ldflags "-s -w" -o /out/spangraph ./pkg/cmd/spangraph

# --- spangraph: the standalone CLI ------------------------------------------
# distroless has no version tags: pinned by digest (static-debian12:nonroot
# of 2026-08); `crane digest gcr.io/distroless/static-debian12:nonroot`
# gives the current one.
FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab AS spangraph
COPY --from=backend /out/spangraph /usr/local/bin/spangraph
# `serve` keeps its store in ./data.
WORKDIR /home/nonroot
# OTLP/gRPC, OTLP/HTTP, the Prometheus-compatible query API.
EXPOSE 4317 4318 9097
ENTRYPOINT ["/usr/local/bin/spangraph"]
CMD ["demo"]

# --- grafana: Grafana with the plugin ---------------------------------------
FROM ${GRAFANA_IMAGE} AS grafana
ARG TARGETOS
ARG TARGETARCH
# Grafana's state lives in /var/lib/grafana/data rather than in
# /var/lib/grafana itself, so that a volume holding it does not also hold
# (and, after a rebuild, keep serving a stale copy of) the plugin below in
# /var/lib/grafana/plugins.
ENV GF_PATHS_DATA=/var/lib/grafana/data
RUN mkdir -p /var/lib/grafana/data
# Grafana passes the keys of [plugin.<id>] to the plugin process as
# GF_PLUGIN_<KEY>, each overridden by an environment variable of that name
# when one is set (docker-compose.yaml sets them). Only keys present here
# reach the plugin: Grafana forwards no other GF_PLUGIN_* variable to
# plugin processes. So every key the plugin reads is listed; an empty one
# keeps Spangraph's default.
COPY <<EOF /etc/grafana/grafana.ini
[plugin.seed-spangraph-datasource]
config_file =
data_dir = /var/lib/grafana/data/spangraph
otlp_grpc = 0.0.0.0:4317
otlp_http = 0.0.0.0:4318
http =
collection_interval = 15s
checkpoint_interval =
retention = 24h
rolling_window =
max_exemplars =
max_tenants =
tenant_idle_timeout =
memory_limit =
log_level = info
remote_write_url =
cluster_join =
cluster_listen =
cluster_advertise =
cluster_instance_id =
cluster_tokens =
cluster_heartbeat_timeout =
query_backend_url =
query_backend_bearer_token_file =
query_backend_tenant_header =
query_backend_timeout =
EOF
COPY --from=frontend /src/dist/ /var/lib/grafana/plugins/seed-spangraph-datasource/
COPY --from=backend /out/gpx_spangraph_${TARGETOS}_${TARGETARCH} /var/lib/grafana/plugins/seed-spangraph-datasource/
ENV GF_PLUGINS_ALLOW_LOADING_UNSIGNED_PLUGINS=seed-spangraph-datasource
EXPOSE 3000 4317 4318
