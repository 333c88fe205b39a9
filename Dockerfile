# syntax=docker/dockerfile:1
# The image charts/tideshift runs. Two stages: a Rust toolchain builds the release binary, and
# a distroless runtime (glibc, CA certificates, no shell, no package manager) carries only it.
# The binary is built in the `dist` profile (Cargo.toml): the release profile with fat LTO.
# The builder is Debian 12 (bookworm) like the runtime, so the binary's glibc matches.
#
#   docker build -t tideshift/tideshift:0.1.0 .
#
# tests/chart/run runs the `cargo build` command below (no Docker engine runs in the project's
# CI): in the dev profile by default, verbatim with TIDESHIFT_CHART_RELEASE_BUILD=1.

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the registry and compiled dependencies between builds, so only
# the crate itself recompiles when the sources change.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked --bin tideshift \
    && install -D -m 0555 target/dist/tideshift /out/tideshift

FROM gcr.io/distroless/cc-debian12:nonroot
# 65532 is distroless's `nonroot`; the chart's securityContext runs as the same UID, with a
# read-only root filesystem: the daemon writes nothing to disk.
COPY --from=builder /out/tideshift /usr/local/bin/tideshift
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tideshift"]
CMD ["run"]
