//! Unit tests of docker config.json logins: read, written, credential helpers.
use super::*;

#[test]
fn reads_auths_including_docker_hubs_legacy_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    std::fs::write(
        &path,
        format!(r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"quay.io":{{"username":"bob","password":"pw"}}}}}}"#),
    )
    .unwrap();
    let hub = from_docker_config(&path, "docker.io").unwrap().unwrap();
    assert_eq!(
        (hub.username.as_str(), hub.password.as_str()),
        ("alice", "s3cret")
    );
    let quay = from_docker_config(&path, "quay.io").unwrap().unwrap();
    assert_eq!(quay.username, "bob");
    assert!(from_docker_config(&path, "ghcr.io").unwrap().is_none());
}

#[test]
fn a_hosts_own_helper_comes_before_the_store_and_a_missing_one_is_named() {
    let config: DockerConfig = serde_json::from_str(
        r#"{"credsStore":"pass","credHelpers":{"gcr.io":"gcloud","index.docker.io":"desktop"}}"#,
    )
    .unwrap();
    assert_eq!(config.helper("gcr.io"), Some("gcloud"));
    assert_eq!(config.helper("docker.io"), Some("desktop"));
    assert_eq!(config.helper("quay.io"), Some("pass"));
    assert_eq!(DockerConfig::default().helper("quay.io"), None);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, r#"{"credsStore":"sealer-test-absent"}"#).unwrap();
    let err = format!("{:#}", from_docker_config(&path, "quay.io").unwrap_err());
    assert!(
        err.contains("docker-credential-sealer-test-absent is not on PATH"),
        "{err}"
    );
    let creds = Credentials {
        username: "u".into(),
        password: "p".into(),
    };
    assert!(save_login(&path, "quay.io", &creds).is_err());
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        r#"{"credsStore":"sealer-test-absent"}"#,
        "a login the helper did not take is not written to the file instead"
    );
}
