# syntax=docker/dockerfile:1
# gatehouse-agent image: the node agent with its eBPF programs embedded in the binary.
# Build from the repository root:
#   docker build -f deploy/docker/agent.Dockerfile -t <registry>/gatehouse-agent:<tag> .

# Stage 1: the eBPF toolchain of shared/design/TOOLCHAIN.md, as `cargo xtask setup` installs
# it: Debian's rustc-web + rust-web-src (std sources for -Z build-std=core) and LLVM 22
# from bookworm-security, and bpf-linker 0.13.0 linked against that LLVM. The rustup
# toolchain of the base image (the workspace's rust-version) builds everything else.
FROM rust:1.95-bookworm AS toolchain
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        rustc-web rust-web-src llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
RUN LLVM_PREFIX=/usr/lib/llvm-22 LLVM_SYS_221_PREFIX=/usr/lib/llvm-22 \
    cargo install bpf-linker@0.13.0 --no-default-features --features llvm-22

# Stage 2: the eBPF object, then the agent that embeds it (agent/build.rs copies
# $GATEHOUSE_EBPF_OBJECT into the binary; `test -s` refuses an image without probes).
FROM toolchain AS build
WORKDIR /src
COPY . .
RUN cargo xtask build-ebpf --release \
    && test -s target/ebpf/gatehouse-ebpf.o
RUN GATEHOUSE_EBPF_OBJECT=/src/target/ebpf/gatehouse-ebpf.o \
    cargo build --release --locked -p gatehouse-agent --bin gatehouse-agent

# Stage 3: glibc + libgcc only. The agent runs as UID 0 because Kubernetes grants the eBPF
# capabilities (CAP_BPF, CAP_PERFMON, CAP_SYS_RESOURCE) only to root; the DaemonSet drops
# every other capability and mounts the root filesystem read-only.
# Pin a digest (@sha256:...) for production builds.
FROM gcr.io/distroless/cc-debian12:latest AS runtime
COPY --from=build /src/target/release/gatehouse-agent /usr/local/bin/gatehouse-agent
# kubectl (TLS) and the plain-HTTP ops port (/healthz, /readyz, /metrics).
EXPOSE 8443 9090
ENTRYPOINT ["/usr/local/bin/gatehouse-agent"]
