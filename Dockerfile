# netif-collector image: the static `collector` binary on an empty base.
#
#   docker build -t ghcr.io/example/netif-collector:0.1.0 .
#
# (ghcr.io/example/... is the placeholder manifests/base/daemonset.yaml
# refers to; push to your own registry and set the image there.)
#
# Build stage: the same toolchain `cargo xtask setup` installs on Debian 12 —
# Debian's rustc-web/cargo-web 1.96 (LLVM 22) and rust-web-src for the BPF
# crate's `-Z build-std=core`, llvm-22-dev for bpf-linker. No rustup.
# Keep target/ out of the build context (a .dockerignore with `target` and
# `collector-ebpf/target`): the build starts from sources.
FROM debian:bookworm AS builder

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Versions are not pinned: bookworm-security replaces these packages (the
# 1.96 rustc-web and llvm-22 come from there), so a pin would break the build
# at the next security update instead of making it reproducible.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        cargo-web \
        gcc \
        libc6-dev \
        libzstd-dev \
        llvm-22-dev \
        rust-web-src \
        rustc-web \
        zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

# bpf-linker links the BPF crate; built against Debian's LLVM 22, the
# version and features xtask/src/setup.rs uses.
ENV PATH=/root/.cargo/bin:/usr/lib/llvm-22/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN cargo install bpf-linker --locked --version 0.13.0 \
        --no-default-features --features llvm-22

WORKDIR /src
COPY . .

# The BPF object first, on its own so that its errors read first (collector's
# build script, which embeds it, finds it built), then
# the collector itself, statically linked against glibc: it resolves no
# host names and loads no NSS modules, so nothing is needed at run time
# beyond the kernel. An explicit --target keeps build scripts and proc
# macros dynamic (crt-static applies to the target only).
RUN cargo xtask build-ebpf --release \
    && target="$(rustc -vV | sed -n 's/^host: //p')" \
    && RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --release --locked -p collector --target "${target}" \
    && install -D -m 0755 "target/${target}/release/collector" /out/collector

# Run stage: nothing but the binary — no shell, no package manager, no libc.
# `kubectl exec <pod> -- collector snapshot` still works (PATH below).
FROM scratch

LABEL org.opencontainers.image.title="netif-collector" \
      org.opencontainers.image.description="Per-node network interface metrics (netlink + eBPF) for Prometheus" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/collector /usr/local/bin/collector
ENV PATH=/usr/local/bin

# No USER: loading the eBPF probes needs CAP_BPF and CAP_PERFMON, which
# Kubernetes only gives a uid-0 container (no ambient capabilities), and
# the CNI result cache that names pods (and tracefs, for the classic
# fallback) is readable by root only. The DaemonSet drops every other
# capability, makes the root filesystem read-only and forbids privilege
# escalation, so uid 0 here carries no more than those two capabilities.
# /metrics on 2112; /healthz and /readyz for the kubelet on 2113.
EXPOSE 2112 2113
ENTRYPOINT ["/usr/local/bin/collector"]
CMD ["serve"]
