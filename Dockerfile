# One image for every Skylark target:
#   skylark                all-in-one (SQLite in /data, in-process bus)
#   skylark api | signaling | sfu | packager | migrate
# Build:  docker build -t skylark .
# Run:    docker run --rm -p 8080:8080 -p 7882:7882/udp -p 7881:7881 -p 1935:1935 \
#           -e SKYLARK_RTC_PUBLIC_IP=<this host's IP> -v skylark-data:/data skylark
# The Helm chart (deploy/helm/skylark) runs this image once per target.

# --- build -------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
# services/signaling/build.rs runs `npm ci` in web/ to embed hls.js and mpegts.js
# (pinned in web/package-lock.json) into the binary. protoc is vendored by a crate.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The same build command CI checks (tests/helm/check.py compares them).
RUN cargo build --release --locked -p skylark

# --- runtime -----------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 skylark \
    && useradd --system --uid 10001 --gid skylark --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin skylark \
    && mkdir /data \
    && chown skylark:skylark /data
COPY --from=builder /src/target/release/skylark /usr/local/bin/skylark
# SQLite and generated secrets of the all-in-one target; Kubernetes mounts an emptyDir here.
ENV SKYLARK_DATA_DIR=/data
WORKDIR /data
USER 10001:10001
# HTTP (web, REST, WHIP/WHEP, WebSocket, HLS, FLV, /metrics), WebRTC media, RTMP ingest.
# Internal gRPC (api 7001, sfu 7002) is not published by default.
EXPOSE 8080 7882/udp 7881 1935
ENTRYPOINT ["skylark"]
