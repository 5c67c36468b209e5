//! TLS: serving over rustls from PEM files that are re-read when they change (renewing
//! a certificate needs no restart), and the CA and server certificate `sealer-registry
//! cert` makes for sites with no public CA; and TLS toward upstreams and object stores
//! ([`client`]).

pub mod client;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often the files are looked at for a change, at most.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Reads a certificate chain and its key from PEM files.
pub fn load_pem(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let cert_pem =
        std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key_pem = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .with_context(|| format!("{} is not a PEM private key file", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .with_context(|| format!("{}: unsupported key type", key.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().with_context(|| {
        format!(
            "{} and {} do not belong together",
            cert.display(),
            key.display()
        )
    })?;
    Ok(certified)
}

/// The certificate to present, re-read from its files when their modification times
/// change. A file caught half-written keeps the previous certificate in use.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamp: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
    key: Arc<CertifiedKey>,
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl ReloadingCert {
    pub fn open(cert: &Path, key: &Path) -> anyhow::Result<ReloadingCert> {
        let stamp = (modified(cert), modified(key));
        let loaded = load_pem(cert, key)?;
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            state: Mutex::new(Loaded {
                stamp,
                checked: Instant::now(),
                key: Arc::new(loaded),
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().expect("certificate lock");
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let stamp = (modified(&self.cert), modified(&self.key));
            if stamp != state.stamp {
                match load_pem(&self.cert, &self.key) {
                    Ok(k) => {
                        state.key = Arc::new(k);
                        state.stamp = stamp;
                        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "TLS certificate not reloaded; still serving the previous one")
                    }
                }
            }
        }
        state.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A rustls server configuration over `cert` and `key`, offering HTTP/2 and HTTP/1.1.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let resolver = ReloadingCert::open(cert, key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// A CA and a server certificate for `domains` and `ips`, as `sealer-registry cert`
/// writes them.
pub struct Issued {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// False when an existing CA in the folder signed the certificate.
    pub new_ca: bool,
}

/// Writes `ca.crt`/`ca.key` (kept if already there, so hosts that trust the CA keep
/// trusting new certificates) and `tls.crt`/`tls.key` for `domains` and `ips` into
/// `dir`. Keys are written mode 0600, each file by rename so none is seen half-written.
pub fn issue(dir: &Path, domains: &[String], ips: &[IpAddr], days: u32) -> anyhow::Result<Issued> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    if domains.is_empty() && ips.is_empty() {
        bail!("give at least one --domain or --ip for the certificate");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (ca_cert, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let now = time::OffsetDateTime::now_utc();
    let validity = |p: &mut CertificateParams, days: u32| {
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(i64::from(days));
    };
    let new_ca = !(ca_cert.exists() && ca_key.exists());
    let (ca_pem, ca_key_pair) = if new_ca {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "sealer registry CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, 3650);
        let cert = params.self_signed(&key)?;
        write_atomic(&ca_key, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&ca_cert, cert.pem().as_bytes(), 0o644)?;
        (cert.pem(), key)
    } else {
        let pem = std::fs::read_to_string(&ca_cert)
            .with_context(|| format!("cannot read {}", ca_cert.display()))?;
        let key_pem = std::fs::read_to_string(&ca_key)
            .with_context(|| format!("cannot read {}", ca_key.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{} is not a PEM private key", ca_key.display()))?;
        (pem, key)
    };
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key_pair)
        .with_context(|| format!("{} is not a CA certificate", ca_cert.display()))?;

    let mut params = CertificateParams::new(domains.to_vec())?;
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let mut dn = DistinguishedName::new();
    let cn = domains
        .first()
        .cloned()
        .unwrap_or_else(|| ips[0].to_string());
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    // The chain: the server certificate, then the CA.
    write_atomic(
        &cert_path,
        format!("{}{}", cert.pem(), ca_pem).as_bytes(),
        0o644,
    )?;
    Ok(Issued {
        ca_cert,
        cert: cert_path,
        key: key_path,
        new_ca,
    })
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    crate::storage::fs::durable::write_file(path, bytes, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_chain_to_a_kept_ca_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let ips = ["10.0.0.1".parse().unwrap()];
        let first = issue(dir.path(), &["sea.hub".into()], &ips, 365).unwrap();
        assert!(first.new_ca);
        let ca = std::fs::read(&first.ca_cert).unwrap();
        load_pem(&first.cert, &first.key).unwrap();

        let second = issue(
            dir.path(),
            &["sea.hub".into(), "reg.local".into()],
            &ips,
            30,
        )
        .unwrap();
        assert!(!second.new_ca, "the CA is kept");
        assert_eq!(std::fs::read(&second.ca_cert).unwrap(), ca);
        let chain = std::fs::read_to_string(&second.cert).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(chain.ends_with(&String::from_utf8(ca).unwrap()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&second.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // A certificate with the wrong key is refused, naming both files.
        let other = tempfile::tempdir().unwrap();
        let third = issue(other.path(), &["x".into()], &[], 1).unwrap();
        let err = load_pem(&second.cert, &third.key).unwrap_err();
        assert!(
            format!("{err:#}").contains("do not belong together"),
            "{err:#}"
        );
        assert!(issue(other.path(), &[], &[], 1).is_err());
    }

    #[test]
    fn a_renewed_certificate_is_served_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = issue(dir.path(), &["a.example".into()], &[], 30).unwrap();
        let cert = ReloadingCert::open(&first.cert, &first.key).unwrap();
        let before = cert.current().cert[0].clone();
        // A half-written file keeps the old certificate.
        std::fs::write(&first.cert, "-----BEGIN CERTIFICATE-----\n").unwrap();
        std::thread::sleep(RELOAD_CHECK + Duration::from_millis(100));
        assert_eq!(cert.current().cert[0], before);
        issue(dir.path(), &["b.example".into()], &[], 30).unwrap();
        std::thread::sleep(RELOAD_CHECK + Duration::from_millis(100));
        assert_ne!(
            cert.current().cert[0],
            before,
            "the new certificate is served"
        );
    }
}
