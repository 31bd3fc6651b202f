# The operator's image: a static binary on a minimal non-root base. Not built in this
# repository's CI (no container engine there); see the README.
FROM rust:1.89-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y musl-tools
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin redis-operator

# Nothing but the binary: it talks only to the API server, with the CA of its ServiceAccount.
FROM scratch
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/redis-operator /redis-operator
USER 65532:65532
ENTRYPOINT ["/redis-operator"]
CMD ["run"]
