//! Maps container images to what runs them: nothing is pulled; `redis` runs host binaries, the
//! operator's image runs from the OCI layout the agent is given (see `oci.rs`).

/// What a supported image stands for on this host.
#[derive(Debug, PartialEq, Eq)]
pub struct HostImage {
    /// The repository's last path part this entry matches (`redis` matches `docker.io/library/redis:7`).
    pub name: &'static str,
    /// The image's default command, used when the container sets none.
    pub default_command: &'static [&'static str],
    /// The image's WORKDIR, used when the container sets no `workingDir`.
    pub working_dir: &'static str,
}

/// Images this agent runs from host binaries. The official redis image has `WORKDIR /data` and
/// runs `redis-server`.
pub const SUPPORTED: &[HostImage] = &[HostImage {
    name: "redis",
    default_command: &["redis-server"],
    working_dir: "/data",
}];

/// The operator's image name: run from the agent's `--operator-image-dir`, not from the host.
pub const OPERATOR_IMAGE: &str = "redis-operator";

/// The image has no host equivalent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "image {image:?} is not supported by the local node agent; supported images (any registry, tag or digest): {supported}"
)]
pub struct Unsupported {
    pub image: String,
    pub supported: String,
}

/// The repository's last path part: `registry:5000/library/redis:7.2@sha256:..` -> `redis`.
pub fn repository_name(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    // A colon left in the last part can only start a tag (a registry port precedes a '/').
    last.split(':').next().unwrap_or(last)
}

pub fn resolve(image: &str) -> Result<&'static HostImage, Unsupported> {
    let name = repository_name(image);
    SUPPORTED
        .iter()
        .find(|known| known.name == name)
        .ok_or_else(|| Unsupported {
            image: image.to_owned(),
            supported: SUPPORTED
                .iter()
                .map(|known| known.name)
                .chain([OPERATOR_IMAGE])
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_images_from_any_registry_tag_or_digest_run_redis_server() {
        for image in [
            "redis",
            "redis:7.0",
            "docker.io/library/redis:7.2",
            "localhost:5000/cache/redis:7.2-alpine",
            "redis@sha256:0123abcd",
            "bitnami/redis:latest",
        ] {
            let host = resolve(image).unwrap_or_else(|e| panic!("{image}: {e}"));
            assert_eq!(host.default_command, ["redis-server"], "{image}");
        }
    }

    #[test]
    fn unknown_images_name_the_image_and_the_supported_ones() {
        let err = resolve("nginx:1.27").unwrap_err();
        assert_eq!(err.image, "nginx:1.27");
        let message = err.to_string();
        assert!(message.contains("\"nginx:1.27\""), "{message}");
        assert!(message.contains("redis, redis-operator"), "{message}");
        // A port in the registry is not a tag.
        assert!(resolve("localhost:5000/redis-exporter").is_err());
        assert_eq!(repository_name("localhost:5000/redis"), "redis");
    }
}

/// Arguments `redis-server` takes instead of starting a server.
const REDIS_NON_SERVER_FLAGS: &[&str] = &[
    "-v",
    "--version",
    "-h",
    "--help",
    "--test-memory",
    "--check-system",
];

/// The official redis image is built with protected mode off; Debian's redis-server keeps it
/// on, so a plain `redis:7` pod would refuse clients on its pod IP. For `redis-server [config]
/// [options]`, returns the argv that starts it from a file holding the image's defaults, then
/// `include`-ing the given config, so that the config and the options still decide; and that
/// file's text. `None` when argv is not a server start.
pub fn official_redis_defaults(
    argv: &[String],
    defaults_file: &str,
) -> Option<(Vec<String>, String)> {
    let program = argv.first()?;
    if !program.ends_with("redis-server")
        || argv
            .iter()
            .any(|a| REDIS_NON_SERVER_FLAGS.contains(&a.as_str()))
    {
        return None;
    }
    let mut text =
        String::from("# The official redis image's compiled-in defaults\nprotected-mode no\n");
    let mut rest = &argv[1..];
    if let Some(config) = rest.first().filter(|a| !a.starts_with('-')) {
        text.push_str(&format!("include {config}\n"));
        rest = &rest[1..];
    } else if rest.first().is_some_and(|a| a == "-") {
        // The config comes on stdin; leave it to Debian's defaults.
        return None;
    }
    let mut new = vec![program.clone(), defaults_file.to_owned()];
    new.extend(rest.iter().cloned());
    Some((new, text))
}

#[cfg(test)]
mod official_defaults_tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn a_config_file_is_included_after_the_image_defaults() {
        let (argv, text) = official_redis_defaults(
            &strings(&["/usr/bin/redis-server", "/etc/redis.conf", "--port", "7000"]),
            "/pod/defaults.conf",
        )
        .unwrap();
        assert_eq!(
            argv,
            strings(&[
                "/usr/bin/redis-server",
                "/pod/defaults.conf",
                "--port",
                "7000"
            ])
        );
        assert!(
            text.contains("protected-mode no\ninclude /etc/redis.conf\n"),
            "{text}"
        );
    }

    #[test]
    fn options_alone_still_get_the_defaults_and_other_commands_are_left_alone() {
        let (argv, text) =
            official_redis_defaults(&strings(&["redis-server", "--port", "7000"]), "/d.conf")
                .unwrap();
        assert_eq!(
            argv,
            strings(&["redis-server", "/d.conf", "--port", "7000"])
        );
        assert!(!text.contains("include"));
        assert!(official_redis_defaults(&strings(&["redis-server", "--version"]), "/d").is_none());
        assert!(official_redis_defaults(&strings(&["redis-cli", "ping"]), "/d").is_none());
        assert!(official_redis_defaults(&strings(&["redis-server", "-"]), "/d").is_none());
    }
}
