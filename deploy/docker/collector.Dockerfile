# syntax=docker/dockerfile:1
# gatehouse-collector image: the collector, plus the `gatehouse` CLI (handy in a debug pod).
# Build from the repository root:
#   docker build -f deploy/docker/collector.Dockerfile -t <registry>/gatehouse-collector:<tag> .

# Stage 1: the workspace's toolchain (rust-version 1.95); the collector needs no eBPF parts.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p gatehouse-collector --bin gatehouse-collector --bin gatehouse

# Stage 2: glibc + libgcc, non-root (UID 65532); the Deployment also makes the root
# filesystem read-only and drops every capability.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=build /src/target/release/gatehouse-collector /usr/local/bin/gatehouse-collector
COPY --from=build /src/target/release/gatehouse /usr/local/bin/gatehouse
USER 65532:65532
# Health + metrics (HTTP), agent ingest (TLS, HTTP/2), audit query API (TLS).
EXPOSE 9080 9443 9444
ENTRYPOINT ["/usr/local/bin/gatehouse-collector"]
