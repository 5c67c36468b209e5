//! Routing: `?ns=`, path-prefixed and bare names reach the upstream and land in one
//! local repository; pushes to mirrored names are refused.

use reqwest::StatusCode;
use sealer_e2e::*;

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_three_ways_of_naming_an_image_reach_the_upstream_through_token_auth() {
    // Credentials: Basic in the config file for docker.io, from a docker config.json for
    // example.org.
    let tokens = TokenServer::start("127.0.0.1", USER, PASSWORD).await;
    let up = DockerRegistry::start(UpstreamOptions {
        token: Some(&tokens),
        ..Default::default()
    });
    skopeo_push(&up.host, "library/app:1", Some(&creds()));
    skopeo_push(&up.host, "org/app:2", Some(&creds()));
    let tokens_before = tokens.requests.load(std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{}", up.host);
    // example.org's credentials come from a docker config.json, as `docker login` writes it.
    let docker_config = dir.path().join("config.json");
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, creds());
    std::fs::write(
        &docker_config,
        format!(r#"{{"auths": {{"example.org": {{"auth": "{auth}"}}}}}}"#),
    )
    .unwrap();
    let reg = mirror(
        dir.path(),
        &format!(
            "{}[[mirror.upstreams]]\nhost = \"example.org\"\nendpoint = \"{endpoint}\"\ndocker_config = \"{}\"\n",
            upstream_entry("docker.io", &endpoint),
            docker_config.display()
        ),
        &[],
    );

    for (path, local) in [
        (
            "/v2/library/app/manifests/1?ns=docker.io",
            "docker.io/library/app",
        ),
        (
            "/v2/docker.io/library/app/manifests/1",
            "docker.io/library/app",
        ),
        ("/v2/library/app/manifests/1", "docker.io/library/app"),
        ("/v2/app/manifests/1?ns=docker.io", "docker.io/library/app"),
        (
            "/v2/org/app/manifests/2?ns=example.org",
            "example.org/org/app",
        ),
        ("/v2/example.org/org/app/manifests/2", "example.org/org/app"),
    ] {
        let resp = get(&reg, path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert!(
            reg.root
                .join("repositories")
                .join(local)
                .join("_manifests")
                .is_dir(),
            "{path} cached under {local}"
        );
    }
    let anonymous = client()
        .get(format!("http://{}/v2/library/app/manifests/1", up.host))
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        StatusCode::UNAUTHORIZED,
        "the upstream really requires a token"
    );
    let resp = get(&reg, "/v2/library/app/manifests/1?ns=docker.io").await;
    assert_eq!(header(&resp, "oci-namespace"), "docker.io");
    // One token per repository scope, reused for every later request.
    let fetched = tokens.requests.load(std::sync::atomic::Ordering::SeqCst) - tokens_before;
    assert_eq!(
        fetched, 2,
        "one token per repository, cached for every later request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_to_mirrored_names_are_refused_and_bare_pushes_are_local() {
    let up = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let reg = hub_mirror(dir.path(), &up.host, &[]);
    for path in [
        "/v2/docker.io/library/x/blobs/uploads/",
        "/v2/library/x/blobs/uploads/?ns=docker.io",
    ] {
        let resp = client().post(reg.url(path)).send().await.unwrap();
        assert_error(resp, 403, "DENIED").await;
    }
    let resp = put_manifest(&reg, "docker.io/library/x", "1", OCI_MANIFEST, b"{}").await;
    assert_error(resp, 403, "DENIED").await;
    push_image(&reg, "team/app", "1", 1, 100).await;
}
