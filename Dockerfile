# syntax=docker/dockerfile:1
# One static binary for every service (rdev api|worker|streamer|up|...).
#   docker build -t rdev .                      # distroless, no shell
#   docker build --target worker -t rdev-worker .  # + sh and coreutils for local jobs
# See docs/deployment.md for the choices made here.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# The whole context at once (.dockerignore keeps it to sources): a
# go.work workspace needs every module's go.mod; the cache mounts keep
# downloads and builds between builds instead of a layer.
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.date=${DATE}" -o /out/rdev ./cmd/rdev

# The local executor runs jobs as `sh -c` processes next to the worker, so
# its image carries a shell and the usual tools. Jobs run as the worker's
# own user (rdev, 10001); extend this image with what your jobs need.
FROM debian:bookworm-slim AS worker
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates coreutils git \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --home-dir /data --create-home rdev
COPY --from=build /out/rdev /usr/local/bin/rdev
USER 10001:10001
WORKDIR /data
ENV RDEV_DATA_DIR=/data
ENTRYPOINT ["/usr/local/bin/rdev"]
CMD ["worker"]

# The default image, last so that a plain `docker build .` builds it: no
# shell, no package manager; CA certificates and tzdata; user nonroot.
FROM gcr.io/distroless/static-debian12:nonroot AS rdev
COPY --from=build /out/rdev /usr/local/bin/rdev
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/rdev"]
CMD ["up", "--http-addr", "0.0.0.0:8080", "--data-dir", "/tmp/rdev"]
