//! Connecting to a cluster that needs TLS or SASL, as managed Kafka services
//! do: the librdkafka properties in `[kafka]` pass through unchanged
//! (`security.protocol`, `ssl.ca.location`, `sasl.*`). Tried against tansu
//! behind a TLS listener (socat's, with a certificate made for the test:
//! tansu 0.6's command line cannot enable its own) and with SCRAM
//! authentication.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sluice_tests::kafka::{Broker, Storage, tansu_bin};
use sluice_tests::*;

/// A self-signed certificate for 127.0.0.1 and its key, in `dir`.
fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Whether a client with the librdkafka `properties` gets the broker's
/// metadata: the security settings under test are what makes it answer.
fn answers(properties: &[(&str, &str)]) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let mut c = rdkafka::ClientConfig::new();
    for (k, v) in properties {
        c.set(*k, *v);
    }
    let client: BaseConsumer = c.create().unwrap();
    client
        .fetch_metadata(None, Duration::from_secs(3))
        .is_ok_and(|md| !md.brokers().is_empty())
}

/// The aggregator through a host whose `[kafka]` table is `kafka`: every
/// order in, its totals exact, every update published.
fn aggregate_through(kafka: &str) {
    let host = HostProc::start(kafka, |m| stage(m, &["aggregator"]));
    let (events, expected) = orders(300, 10, 29, "secure-");
    host.produce("orders", &Value::Array(events));
    host.wait_caught_up("aggregator", Duration::from_secs(60));
    host.assert_aggregator_totals(&expected);
    wait_for(Duration::from_secs(60), "300 updates published", || {
        (host.read_all("totals").len() == 300).then_some(())
    });
    let status = host.get("/v1/status");
    assert_eq!(status["kafka"]["reachable"], true, "{status}");
}

/// A child process killed (by PID) when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kafka_over_tls_with_the_clusters_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    // Clients reach the broker only through the TLS listener: it is the
    // address the broker advertises.
    let tls_port = free_port();
    let mut broker = Broker::start(Storage::Memory);
    broker.restart_with(&[], Some(tls_port));
    let _proxy = Killed(
        Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                cert.display(),
                key.display()
            ))
            .arg(format!("TCP:127.0.0.1:{}", broker.port))
            // Its complaints about probe connections are noise here.
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("socat (scripts/test.sh installs it)"),
    );
    wait_for(Duration::from_secs(10), "the TLS listener", || {
        std::net::TcpStream::connect(("127.0.0.1", tls_port)).ok()
    });
    let bootstrap = format!("127.0.0.1:{tls_port}");
    assert!(
        !answers(&[("bootstrap.servers", &bootstrap)]),
        "the listener answers plaintext: the test would prove nothing"
    );
    aggregate_through(&format!(
        "[kafka]\n\"bootstrap.servers\" = \"127.0.0.1:{tls_port}\"\n\"security.protocol\" = \"ssl\"\n\"ssl.ca.location\" = \"{}\"\n",
        cert.display()
    ));
}

#[test]
fn kafka_with_scram_authentication() {
    // Users are created while the broker does not ask for them yet, and
    // kept (SQLite) when it restarts asking.
    let mut broker = Broker::start(Storage::Sqlite);
    let created = Command::new(tansu_bin())
        .args(["user", "create", "--broker"])
        .arg(format!("tcp://127.0.0.1:{}", broker.port))
        .args(["--mechanism", "scram512", "sluice", "s3cret"])
        .output()
        .expect("tansu user create");
    assert!(
        created.status.success(),
        "tansu user create: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    broker.restart_with(&["--authentication"], None);
    let bootstrap = format!("127.0.0.1:{}", broker.port);
    let scram = |password| {
        answers(&[
            ("bootstrap.servers", &bootstrap),
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "sluice"),
            ("sasl.password", password),
        ])
    };
    assert!(
        !answers(&[("bootstrap.servers", &bootstrap)]) && !scram("wrong"),
        "the broker answers without the right credentials: the test would prove nothing"
    );
    aggregate_through(&format!(
        "[kafka]\n\"bootstrap.servers\" = \"127.0.0.1:{}\"\n\"security.protocol\" = \"sasl_plaintext\"\n\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"sluice\"\n\"sasl.password\" = \"s3cret\"\n",
        broker.port
    ));
}
