//! Settings from flags and environment variables laid over the host config
//! file: how `sluice run` turns its command line into a [`HostConfig`].
//!
//! clap has already chosen between a flag and its environment variable; each
//! setting given replaces the file's value, and the result is validated as a
//! whole, as a file alone would be.

use std::path::{Path, PathBuf};

use anyhow::bail;

use super::{HostConfig, KafkaConfig, parse_duration};

/// Settings given as flags or environment variables (clap resolves flag >
/// env); each one set replaces the config file's value.
#[derive(Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub modules_dir: Option<PathBuf>,
    pub listen: Option<std::net::SocketAddr>,
    pub token: Option<String>,
    pub kafka_bootstrap_servers: Option<String>,
    pub shutdown_timeout: Option<String>,
}

/// The config file (or defaults without one) with `o` applied on top.
pub fn host_config(file: Option<&Path>, o: Overrides) -> anyhow::Result<HostConfig> {
    let mut config = match file {
        Some(path) => {
            if !path.exists() {
                bail!(
                    "config file {} does not exist (see examples/quickstart/sluice.toml for one)",
                    path.display()
                );
            }
            HostConfig::load(path).map_err(anyhow::Error::msg)?
        }
        None => HostConfig::default(),
    };
    if let Some(d) = o.data_dir {
        config.data_dir = d;
    }
    if let Some(d) = o.modules_dir {
        config.modules_dir = Some(d);
    }
    if let Some(l) = o.listen {
        config.api.listen = l;
    }
    if let Some(t) = o.token.filter(|t| !t.trim().is_empty()) {
        config.api.token = Some(t);
    }
    if let Some(b) = o.kafka_bootstrap_servers {
        let k = config.kafka.get_or_insert_with(KafkaConfig::default);
        k.properties.insert("bootstrap.servers".into(), b);
    }
    if let Some(t) = o.shutdown_timeout {
        config.shutdown_timeout = parse_duration(&t)
            .map_err(|e| anyhow::anyhow!("--shutdown-timeout / SLUICE_SHUTDOWN_TIMEOUT: {e}"))?;
    }
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn overrides_replace_the_file_and_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sluice.toml");
        std::fs::write(
            &file,
            "data-dir = \"d\"\nshutdown-timeout = \"10s\"\n[api]\nlisten = \"127.0.0.1:1000\"\n",
        )
        .unwrap();
        let c = host_config(Some(&file), Overrides::default()).unwrap();
        assert_eq!(c.api.listen.port(), 1000);
        assert_eq!(c.data_dir, dir.path().join("d"));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));

        let c = host_config(
            Some(&file),
            Overrides {
                listen: Some("127.0.0.1:2000".parse().unwrap()),
                kafka_bootstrap_servers: Some("127.0.0.1:9092".into()),
                shutdown_timeout: Some("3s".into()),
                token: Some("a-token-long-enough-1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.api.listen.port(), 2000);
        assert_eq!(
            c.data_dir,
            dir.path().join("d"),
            "not overridden: the file's"
        );
        assert_eq!(
            c.kafka.unwrap().properties["bootstrap.servers"],
            "127.0.0.1:9092"
        );
        assert_eq!(c.shutdown_timeout, Duration::from_secs(3));
        assert_eq!(c.api.token.as_deref(), Some("a-token-long-enough-1"));

        let e = host_config(
            None,
            Overrides {
                token: Some("short".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("api.token"), "{e}");
        let e = host_config(
            None,
            Overrides {
                shutdown_timeout: Some("soon".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("--shutdown-timeout"), "{e}");
    }

    #[test]
    fn the_example_configs_load() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for f in [
            "quickstart/sluice.toml",
            "kafka/sluice.toml",
            "service/sluice.toml",
        ] {
            HostConfig::load(&root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        let svc = HostConfig::load(&root.join("service/sluice.toml")).unwrap();
        assert_eq!(svc.data_dir, PathBuf::from("/var/lib/sluice/data"));
        assert!(!svc.api.listen.ip().is_loopback());
    }
}
