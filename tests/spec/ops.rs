//! Running it: zero configuration, config file and environment, `--help`, access log,
//! `/metrics` and `/healthz`.

use std::process::Command;

use reqwest::StatusCode;
use sealer_e2e::*;
use serde_json::json;

#[tokio::test]
async fn healthz_answers() {
    let reg = Registry::in_process().await;
    let resp = get(&reg, "/healthz").await;
    assert_eq!(resp.status(), StatusCode::OK);
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn metrics_count_requests_latency_bytes_and_uploads() {
    let reg = Registry::in_process().await;
    let data = random_bytes(10_000);
    push_blob(&reg, "o/metrics", &data).await;
    let c = client();
    get(&reg, &format!("/v2/o/metrics/blobs/{}", sha256(&data)))
        .await
        .bytes()
        .await
        .unwrap();
    get(&reg, "/v2/o/metrics/manifests/nope")
        .await
        .bytes()
        .await
        .unwrap();
    c.post(reg.url("/v2/o/metrics/blobs/uploads/"))
        .via(&reg)
        .await
        .unwrap();
    c.post(reg.url("/v2/o/metrics/blobs/uploads/"))
        .via(&reg)
        .await
        .unwrap();

    let text = get(&reg, "/metrics").await.text().await.unwrap();
    assert_eq!(
        metric(
            &text,
            r#"sealer_registry_http_requests_total{route="blob",method="GET",status="200"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"sealer_registry_http_requests_total{route="manifest",method="GET",status="404"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            r#"sealer_registry_http_requests_total{route="blob_upload",method="POST",status="201"}"#
        ),
        1.0
    );
    assert!(
        metric(
            &text,
            r#"sealer_registry_http_request_duration_seconds_count{route="blob",method="GET"}"#
        ) >= 1.0
    );
    assert!(text.contains(r#"sealer_registry_http_request_duration_seconds_bucket{le="#));
    assert!(metric(&text, "sealer_registry_http_received_bytes_total") >= 10_000.0);
    assert!(metric(&text, "sealer_registry_http_sent_bytes_total") >= 10_000.0);
    assert_eq!(metric(&text, "sealer_registry_uploads_in_progress"), 2.0);
}

#[tokio::test]
async fn every_request_gets_one_access_log_line() {
    let reg = Registry::start();
    client()
        .get(reg.url("/v2/o/log/manifests/missing?ns=docker.io"))
        .header("user-agent", "probe/1")
        .send()
        .await
        .unwrap();
    let log = reg.log_where("the access line", |l| {
        l.contains("/v2/o/log/manifests/missing")
    });
    let lines: Vec<_> = log
        .lines()
        .filter(|l| l.contains("/v2/o/log/manifests/missing"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    for field in [
        "method=GET",
        "status=404",
        "route=\"manifest\"",
        "user_agent=\"probe/1\"",
        "duration_ms=",
        "uri=/v2/o/log/manifests/missing?ns=docker.io ",
    ] {
        assert!(lines[0].contains(field), "{field} in {}", lines[0]);
    }
    // Rounded to a tenth of a millisecond.
    let ms = lines[0].split("duration_ms=").nth(1).unwrap();
    let ms = ms.split(' ').next().unwrap();
    assert!(ms.split('.').nth(1).is_none_or(|d| d.len() == 1), "{ms}");

    // HTTP/2 requests are logged by their path too, not the whole URL.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    h2.get(reg.url("/v2/o/log/manifests/h2"))
        .send()
        .await
        .unwrap();
    let log = reg.log_where("the HTTP/2 access line", |l| {
        l.contains("/v2/o/log/manifests/h2")
    });
    let line = log
        .lines()
        .find(|l| l.contains("/v2/o/log/manifests/h2"))
        .unwrap();
    assert!(line.contains("uri=/v2/o/log/manifests/h2 "), "{line}");

    let json_reg = Registry::start_with(&["--log-format", "json"]);
    client()
        .put(json_reg.url("/v2/o/log/manifests/v1"))
        .body("{")
        .send()
        .await
        .unwrap();
    let log = json_reg.log_where("the JSON access line", |l| {
        l.contains("/v2/o/log/manifests/v1")
    });
    let entry: serde_json::Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["uri"] == "/v2/o/log/manifests/v1")
        .unwrap_or_else(|| panic!("no JSON access line in {log}"));
    assert_eq!(entry["method"], "PUT");
    assert_eq!(entry["status"], 400);
    assert_eq!(entry["bytes_in"], 1);
}

#[tokio::test]
async fn the_config_file_and_environment_configure_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("registry.toml");
    std::fs::write(
        &cfg,
        "[manifests]\nmax_size = 2000\n[delete]\nenabled = false\n",
    )
    .unwrap();
    let cfg_arg = cfg.to_str().unwrap();
    let reg = Registry::spawn(
        &dir.path().join("a"),
        dir.path().join("a.log"),
        &["--config", cfg_arg],
        &[],
    );
    let img = push_image(&reg, "o/cfg", "v1", 1, 10).await;
    let big = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_CONFIG, &img.config),
        vec![],
        json!({"annotations": {"p": "x".repeat(3000)}}),
    );
    assert_error(
        put_manifest(&reg, "o/cfg", "big", OCI_MANIFEST, &big).await,
        413,
        "SIZE_INVALID",
    )
    .await;
    assert_error(
        delete(&reg, "/v2/o/cfg/manifests/v1").await,
        405,
        "UNSUPPORTED",
    )
    .await;

    // The environment overrides the file.
    let reg = Registry::spawn(
        &dir.path().join("b"),
        dir.path().join("b.log"),
        &["--config", cfg_arg],
        &[("SEALER_REGISTRY_MAX_MANIFEST_BYTES", "100000")],
    );
    let img = push_image(&reg, "o/cfg", "v1", 1, 10).await;
    let big = image_manifest(
        OCI_MANIFEST,
        descriptor(OCI_CONFIG, &img.config),
        vec![],
        json!({"annotations": {"p": "x".repeat(3000)}}),
    );
    assert_eq!(
        put_manifest(&reg, "o/cfg", "big", OCI_MANIFEST, &big)
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[test]
fn a_bad_config_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[manifests]\nmax_sise = 1\n").unwrap();
    let out = output(
        Command::new(binary("sealer-registry"))
            .args(["serve", "--config"])
            .arg(&cfg),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml") && err.contains("max_sise"),
        "{err}"
    );
}

#[test]
fn help_documents_every_option() {
    let help = run(Command::new(binary("sealer-registry")).args(["serve", "--help"]));
    for flag in [
        "--addr",
        "--root",
        "--config",
        "--log-format",
        "--log-level",
        "--upload-expiry",
        "--max-manifest-bytes",
        "--no-delete",
        "--strict-indexes",
        "--shutdown-timeout",
        "--upstream",
        "--offline",
        "--tag-ttl",
        "SEALER_REGISTRY_ADDR",
        "SEALER_REGISTRY_ROOT",
        "127.0.0.1:5000",
        "/var/lib/sealer/registry",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    let completions = run(Command::new(binary("sealer-registry")).args(["completions", "bash"]));
    assert!(completions.contains("--upload-expiry"));
}

#[test]
fn zero_configuration_uses_the_default_address_and_store() {
    // The documented default store for root, and the default address when it is free.
    let root_default = std::path::Path::new("/var/lib/sealer/registry");
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let free = std::net::TcpListener::bind("127.0.0.1:5000")
        .map(drop)
        .is_ok();
    assert!(is_root, "the test suite runs as root (CI does)");
    assert!(
        free,
        "port 5000 must be free for the zero-configuration test"
    );
    let mut child = Command::new(binary("sealer-registry"))
        .arg("serve")
        .env_remove("SEALER_REGISTRY_ADDR")
        .env_remove("SEALER_REGISTRY_ROOT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let body = reqwest::blocking_get("http://127.0.0.1:5000/v2/");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(line.contains("http://127.0.0.1:5000"), "{line}");
    assert!(line.contains(root_default.to_str().unwrap()), "{line}");
    assert_eq!(body, "{}");
    assert!(root_default.join("blobs").is_dir());
    assert!(status.success());
}

mod reqwest {
    pub use ::reqwest::*;
    /// A tiny blocking GET over a raw socket (the async client needs a runtime).
    pub fn blocking_get(url: &str) -> String {
        use std::io::{Read, Write};
        let rest = url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(
            s,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
    }
}
