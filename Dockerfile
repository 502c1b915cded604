# syntax=docker/dockerfile:1
# pushrelay in a container: `docker build -t pushrelay .`, then
#   docker run -d -p 8787:8787 -v pushrelay:/var/lib/pushrelay \
#     -e PUSHRELAY_ADMIN_TOKEN=$(openssl rand -hex 24) pushrelay
# The SQLite file and the master key live in the /var/lib/pushrelay volume:
# back the volume up (the database is unreadable without its master key).

FROM rust:1-bookworm AS builder
WORKDIR /src
# The workspace manifests first, so dependency builds are cached.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked --bin pushrelay \
 && strip target/release/pushrelay

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="pushrelay" \
      org.opencontainers.image.description="Wakes phones for incoming calls: CUCM UDS, Webex, Acrobits and SIP registrations in; APNs VoIP and FCM v1 out" \
      org.opencontainers.image.source="https://github.com/pushrelay/pushrelay"
# Nothing to install: rustls carries its own roots (webpki), and the health
# check is bash's /dev/tcp.
RUN groupadd --system --gid 10001 pushrelay \
 && useradd --system --uid 10001 --gid pushrelay --home-dir /var/lib/pushrelay --shell /usr/sbin/nologin pushrelay \
 && install -d -o pushrelay -g pushrelay -m 0700 /var/lib/pushrelay
COPY --from=builder /src/target/release/pushrelay /usr/local/bin/pushrelay
ENV PUSHRELAY_LISTEN=0.0.0.0:8787 \
    PUSHRELAY_DATABASE_URL=sqlite:///var/lib/pushrelay/pushrelay.db \
    PUSHRELAY_MASTER_KEY_FILE=/var/lib/pushrelay/master.key \
    PUSHRELAY_LOG_FORMAT=json
VOLUME ["/var/lib/pushrelay"]
WORKDIR /var/lib/pushrelay
USER 10001:10001
EXPOSE 8787
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8787 && printf 'GET /readyz HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3 | grep -q ' 200 '"]
# SIGTERM drains (in-flight calls, webhook pushes) within 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pushrelay"]
CMD ["serve"]
