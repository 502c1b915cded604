# syntax=docker/dockerfile:1
# pushrelay in a container: `docker build -t pushrelay .`, then
#   docker run -d --name pushrelay -p 8787:8787 -v pushrelay:/var/lib/pushrelay \
#     -e PUSHRELAY_ADMIN_TOKEN="$(openssl rand -hex 24)" pushrelay
# The SQLite file and the master key live in the /var/lib/pushrelay volume:
# back the volume up (the database cannot be read without its master key).
# On SIGTERM the relay drains for up to 10 s, Docker's default stop timeout:
# give it headroom with `docker stop -t 20` (Compose: stop_grace_period: 20s).

FROM rust:1-bookworm AS builder
WORKDIR /src
# What the build reads: the workspace manifests (all members must be present
# for cargo to load the workspace), the sources and the migrations embedded
# by sqlx::migrate!. Tests, fixtures and docs stay out (.dockerignore).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
COPY migrations ./migrations
# The registry and target caches survive between builds (BuildKit); the
# binary is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin pushrelay \
 && install -D -m 0755 target/release/pushrelay /out/pushrelay \
 && strip /out/pushrelay

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="pushrelay" \
      org.opencontainers.image.description="Wakes phones for incoming calls: CUCM UDS, Webex, Acrobits and SIP registrations in; APNs VoIP and FCM v1 out" \
      org.opencontainers.image.licenses="Apache-2.0"
# Nothing to install: rustls carries its own roots (webpki-roots), and the
# health check uses bash's /dev/tcp. No secret is baked in: the admin token
# is generated on first start (printed once) or passed as PUSHRELAY_ADMIN_TOKEN.
RUN groupadd --system --gid 10001 pushrelay \
 && useradd --system --uid 10001 --gid pushrelay --home-dir /var/lib/pushrelay --shell /usr/sbin/nologin pushrelay \
 && install -d -o pushrelay -g pushrelay -m 0700 /var/lib/pushrelay
COPY --from=builder /out/pushrelay /usr/local/bin/pushrelay
ENV PUSHRELAY_LISTEN=0.0.0.0:8787 \
    PUSHRELAY_DATABASE_URL=sqlite:///var/lib/pushrelay/pushrelay.db \
    PUSHRELAY_MASTER_KEY_FILE=/var/lib/pushrelay/master.key \
    PUSHRELAY_LOG_FORMAT=json
VOLUME ["/var/lib/pushrelay"]
WORKDIR /var/lib/pushrelay
# Numeric, so runAsNonRoot-style checks can see it is not root.
USER 10001:10001
EXPOSE 8787
# Plain-HTTP probe of /readyz (200 when the store answers) on the port of
# PUSHRELAY_LISTEN. With tls.cert_file/key_file set, probe from outside instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/\"${PUSHRELAY_LISTEN##*:}\" && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pushrelay"]
CMD ["serve"]
