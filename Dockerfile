# guild-gateway: multi-stage build, small non-root runtime image.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# Dependencies first, so code changes do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY actors/Cargo.toml actors/Cargo.toml
# The tools' crate is a workspace member (tests use it), so cargo needs its manifest and
# targets to load the workspace; the image never builds it, so stubs stay.
COPY dev/Cargo.toml dev/Cargo.toml
RUN mkdir -p src actors/src dev/src benches \
    && echo 'fn main() {}' > src/main.rs && touch actors/src/lib.rs \
    && touch dev/src/lib.rs && echo 'fn main() {}' > dev/src/main.rs \
    && for b in $(grep -A1 '^\[\[bench\]\]' Cargo.toml | sed -n 's/^name = "\(.*\)"/\1/p'); do echo 'fn main() {}' > benches/$b.rs; done \
    && cargo build --release --locked --bin guild-gateway || true
COPY schema.sql ./
COPY actors actors
COPY src src
RUN touch src/main.rs actors/src/lib.rs && cargo build --release --locked --bin guild-gateway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/guild-gateway /usr/local/bin/guild-gateway
USER 10001:10001
EXPOSE 3000
ENTRYPOINT ["/usr/local/bin/guild-gateway"]
CMD ["serve"]
