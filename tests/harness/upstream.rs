//! Upstream registries for mirror tests: Debian's `docker-registry` (CNCF distribution
//! 2.8), optionally behind the token flow of a small token server, optionally redirecting
//! blob downloads to a "CDN", optionally over TLS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};

use crate::tools::require;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(addr: &str, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A token server issuing distribution-compatible JWTs (ES256, `x5c` header) for the
/// scopes asked, to holders of `user`/`password` (or anyone, when `open`).
pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`
    pub realm: String,
    /// The certificate the registry must trust (`rootcertbundle`).
    pub cert_pem: PathBuf,
    pub requests: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

pub const TOKEN_SERVICE: &str = "sealer-test-registry";
pub const TOKEN_ISSUER: &str = "sealer-test-issuer";

struct Issuer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    user: String,
    password: String,
    requests: Arc<AtomicUsize>,
}

impl Issuer {
    fn token(&self, scopes: &[String], subject: &str) -> String {
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&self.cert_der)]});
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER, "sub": subject, "aud": TOKEN_SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": hex::encode(crate::content::random_bytes(8)),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .unwrap();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

impl TokenServer {
    /// Serves `/token` on `bind_ip` (a loopback address) for `user`/`password`.
    pub async fn start(bind_ip: &str, user: &str, password: &str) -> TokenServer {
        use axum::extract::{Query, State};
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse;

        let dir = tempfile::tempdir().unwrap();
        let certified =
            rcgen::generate_simple_self_signed(vec!["sealer-test-token-issuer".to_string()])
                .unwrap();
        let cert_pem = dir.path().join("token-issuer.pem");
        std::fs::write(&cert_pem, certified.cert.pem()).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &certified.signing_key.serialize_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let issuer = Arc::new(Issuer {
            key,
            cert_der: certified.cert.der().to_vec(),
            user: user.into(),
            password: password.into(),
            requests: requests.clone(),
        });

        async fn token(
            State(issuer): State<Arc<Issuer>>,
            Query(params): Query<Vec<(String, String)>>,
            headers: HeaderMap,
        ) -> axum::response::Response {
            issuer.requests.fetch_add(1, Ordering::SeqCst);
            let expected = format!(
                "Basic {}",
                STANDARD.encode(format!("{}:{}", issuer.user, issuer.password))
            );
            let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
                == Some(expected.as_str());
            if !authorized {
                return (StatusCode::UNAUTHORIZED, "bad credentials").into_response();
            }
            let scopes: Vec<String> = params
                .iter()
                .filter(|(k, _)| k == "scope")
                .flat_map(|(_, v)| v.split(' ').map(str::to_string))
                .collect();
            let t = issuer.token(&scopes, &issuer.user);
            let body =
                serde_json::json!({"token": t, "access_token": t, "expires_in": 300}).to_string();
            ([("content-type", "application/json")], body).into_response()
        }

        let listener = tokio::net::TcpListener::bind(format!("{bind_ip}:0"))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/token", axum::routing::get(token))
            .with_state(issuer);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenServer {
            realm: format!("http://{addr}/token"),
            cert_pem,
            requests,
            _dir: dir,
            task,
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Options for a `docker-registry` upstream.
#[derive(Default)]
pub struct UpstreamOptions<'a> {
    pub token: Option<&'a TokenServer>,
    /// Redirect blob downloads to this base URL (the storage `redirect` middleware).
    pub redirect_to: Option<String>,
    /// Serve TLS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Keep using this storage root (to restart an upstream on the same content).
    pub root: Option<PathBuf>,
    /// Listen on this port (to restart on the same address).
    pub port: Option<u16>,
    /// Listen on this address instead of 127.0.0.1 (the control machine's, for test hosts
    /// to reach).
    pub ip: Option<std::net::IpAddr>,
    /// Ask for a login from this htpasswd file (bcrypt), instead of a token.
    pub htpasswd: Option<PathBuf>,
}

/// Debian's `docker-registry` (distribution 2.8.2) as an upstream.
pub struct DockerRegistry {
    child: Option<Child>,
    pub host: String,
    pub root: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl DockerRegistry {
    pub fn start(opts: UpstreamOptions) -> DockerRegistry {
        let bin = require("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let root = opts
            .root
            .clone()
            .unwrap_or_else(|| dir.path().join("storage"));
        let ip = opts.ip.unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        let port = opts.port.unwrap_or_else(|| {
            std::net::TcpListener::bind((ip, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let host = format!("{ip}:{port}");
        let mut config = format!(
            "version: 0.1\nlog: {{level: info, formatter: text, accesslog: {{disabled: false}}}}\n\
             storage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\n  maintenance: {{uploadpurging: {{enabled: false}}}}\n\
             http:\n  addr: {host}\n",
            root.display()
        );
        if let Some((cert, key)) = &opts.tls {
            config.push_str(&format!(
                "  tls: {{certificate: {}, key: {}}}\n",
                cert.display(),
                key.display()
            ));
        }
        if let Some(t) = opts.token {
            config.push_str(&format!(
                "auth:\n  token: {{realm: \"{}\", service: {TOKEN_SERVICE}, issuer: {TOKEN_ISSUER}, rootcertbundle: {}}}\n",
                t.realm,
                t.cert_pem.display()
            ));
        }
        if let Some(file) = &opts.htpasswd {
            config.push_str(&format!(
                "auth:\n  htpasswd: {{realm: test, path: {}}}\n",
                file.display()
            ));
        }
        if let Some(base) = &opts.redirect_to {
            config.push_str(&format!("middleware:\n  storage:\n    - name: redirect\n      options: {{baseurl: \"{base}\"}}\n"));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("registry.log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting docker-registry");
        wait_listening(&host, "docker-registry", &log);
        DockerRegistry {
            child: Some(child),
            host,
            root,
            log,
            _dir: dir,
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Access-log lines for `GET` of `path_part`.
    pub fn gets_of(&self, path_part: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains(&format!("\"GET {path_part}")))
            .count()
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A plain HTTP file server standing in for a CDN: serves `root` and logs, per request,
/// whether it carried an `Authorization` header.
pub struct Cdn {
    child: Child,
    pub base: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cdn {
    pub fn start(root: &Path) -> Cdn {
        require("python3");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("cdn.log");
        let child = Command::new("python3")
            .arg(crate::tools::fixtures().join("cdn.py"))
            .arg(port.to_string())
            .arg(root)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the CDN");
        let addr = format!("127.0.0.1:{port}");
        wait_listening(&addr, "the CDN", &log);
        Cdn {
            child,
            base: format!("http://{addr}"),
            log,
            _dir: dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Cdn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed certificate for 127.0.0.1 (and `localhost`): (cert PEM, key PEM) files.
pub fn self_signed_tls(dir: &Path) -> (PathBuf, PathBuf) {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
            127, 0, 0, 1,
        ])));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}
