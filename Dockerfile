# The operator's image, for those with a container engine. `make image` builds the same image
# without one (same binary build, same final stage; tests/image.rs checks that they agree).
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# glibc linked statically: the binary needs nothing from the image.
RUN RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin redis-operator

# Nothing but the binary: it talks only to the API server, with the CA of its ServiceAccount.
FROM scratch
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/redis-operator /redis-operator
USER 65532:65532
ENTRYPOINT ["/redis-operator"]
CMD ["run"]
