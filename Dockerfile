# cdrflow's container image: one binary, every role (`ingest`, `aggregate`, `migrate`,
# `reconcile`, `backfill`, `report`) chosen by the command.
#
#   docker build -t cdrflow:dev .
#   docker run --rm cdrflow:dev ingest --help
#
# Stage 1 builds with the Rust toolchain and OpenSSL's headers (librdkafka is built in, with
# TLS and SASL); stage 2 is Debian slim with the runtime libraries only, as a non-root user.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin cdrflow \
    && install -m 0755 target/release/cdrflow /usr/local/bin/cdrflow

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/cdrflow --create-home cdrflow
COPY --from=build /usr/local/bin/cdrflow /usr/local/bin/cdrflow
USER 10001
WORKDIR /var/lib/cdrflow
# /metrics, /healthz, /readyz (set metrics.addr or CDRFLOW_METRICS_ADDR to 0.0.0.0:9464).
EXPOSE 9464
ENV CDRFLOW_LOG_JSON=true
ENTRYPOINT ["/usr/local/bin/cdrflow"]
CMD ["--help"]
