//! Sign-in and authorization: every route with no, wrong and insufficient credentials,
//! the token flow, repository isolation (mount, HEAD, GET), and real clients logging in
//! (docker, podman, skopeo, containerd's ctr).

mod bundles;
mod clients;
mod connections;
mod gc;
mod integrity;
mod limits;
mod upstreams;

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::{Method, StatusCode};
use sealer_e2e::*;
use serde_json::Value;

/// alice may pull and push `a/*` only; bob may do everything; nobody is anonymous.
const POLICY: &str = r#"
[[allow]]
repositories = ["a/*"]
users = ["alice"]
actions = ["pull", "push"]

[[allow]]
repositories = ["**"]
users = ["bob"]
actions = ["pull", "push", "delete"]
"#;

/// An htpasswd file made by Apache's `htpasswd -B` (bcrypt), as operators make them.
pub fn htpasswd(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let file = dir.join("htpasswd");
    for (i, (user, password)) in users.iter().enumerate() {
        let mut cmd = Command::new(require("htpasswd"));
        cmd.arg(if i == 0 { "-Bbc" } else { "-Bb" })
            .arg(&file)
            .args([user, password]);
        run(&mut cmd);
    }
    file
}

/// A registry requiring sign-in, with `flags` added; the files live in `dir`.
pub fn secured(dir: &Path, policy: Option<&str>, flags: &[&str]) -> Registry {
    let users = htpasswd(dir, &[("alice", "a-pass"), ("bob", "b-pass")]);
    let mut args = vec!["--htpasswd".to_string(), users.display().to_string()];
    if let Some(p) = policy {
        let path = dir.join("policy.toml");
        std::fs::write(&path, p).unwrap();
        args.push("--policy".into());
        args.push(path.display().to_string());
    }
    args.extend(flags.iter().map(|f| f.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Registry::spawn(&dir.join("store"), dir.join("registry.log"), &args, &[])
}

/// What a route needs, for the challenge's scope.
struct Probe {
    method: Method,
    path: String,
    scope: Option<&'static str>,
}

fn probe(method: Method, path: String, scope: Option<&'static str>) -> Probe {
    Probe {
        method,
        path,
        scope,
    }
}

async fn send(client: &reqwest::Client, reg: &Registry, p: &Probe) -> reqwest::Response {
    let mut req = client
        .request(p.method.clone(), reg.url(&p.path))
        .header("accept", "*/*");
    if p.method == Method::PUT && p.path.contains("/manifests/") {
        req = req
            .header("content-type", OCI_MANIFEST)
            .body(b"{}".to_vec());
    }
    req.send().await.unwrap()
}

async fn token(reg: &Registry, creds: Option<(&str, &str)>, scopes: &[&str]) -> reqwest::Response {
    let mut url = reqwest::Url::parse(&reg.url("/token")).unwrap();
    url.query_pairs_mut()
        .append_pair("service", "sealer-registry");
    for s in scopes {
        url.query_pairs_mut().append_pair("scope", s);
    }
    let req = client().get(url);
    let req = match creds {
        Some((u, p)) => req.basic_auth(u, Some(p)),
        None => req,
    };
    req.send().await.unwrap()
}

async fn token_of(reg: &Registry, creds: Option<(&str, &str)>, scopes: &[&str]) -> String {
    let resp = token(reg, creds, scopes).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert!(body["expires_in"].as_u64().unwrap() >= 60, "{body}");
    assert!(body["issued_at"].as_str().unwrap().contains('T'), "{body}");
    let t = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["access_token"].as_str(), Some(t.as_str()));
    t
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://form/").unwrap();
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or("").to_string()
}

/// `token` with `from` replaced by `to` in its claims, the signature kept.
fn forge(token: &str, from: &str, to: &str) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert!(claims.contains(from), "{claims}");
    let claims = URL_SAFE_NO_PAD.encode(claims.replace(from, to));
    format!("{}.{claims}.{}", parts[0], parts[2])
}

/// Starts an upload as bob and returns its path.
async fn open_upload(reg: &Registry, repo: &str) -> String {
    let resp = client_as("bob", "b-pass")
        .post(reg.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    header(&resp, "location")
}

#[tokio::test]
async fn every_route_refuses_missing_wrong_and_insufficient_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = secured(dir.path(), Some(POLICY), &[]);
    reg.login = Some(("bob".into(), "b-pass".into()));
    let a = push_image(&reg, "a/x", "1", 1, 64).await;
    let b = push_image(&reg, "b/x", "1", 1, 64).await;
    let layer = sha256(&b.layers[0]);

    let probes = |upload: &str| {
        vec![
            probe(
                Method::GET,
                "/v2/b/x/manifests/1".into(),
                Some("repository:b/x:pull"),
            ),
            probe(
                Method::HEAD,
                "/v2/b/x/manifests/1".into(),
                Some("repository:b/x:pull"),
            ),
            probe(
                Method::GET,
                format!("/v2/b/x/blobs/{layer}"),
                Some("repository:b/x:pull"),
            ),
            probe(
                Method::HEAD,
                format!("/v2/b/x/blobs/{layer}"),
                Some("repository:b/x:pull"),
            ),
            probe(
                Method::GET,
                "/v2/b/x/tags/list".into(),
                Some("repository:b/x:pull"),
            ),
            probe(
                Method::GET,
                format!("/v2/b/x/referrers/{}", b.digest),
                Some("repository:b/x:pull"),
            ),
            probe(
                Method::PUT,
                "/v2/b/x/manifests/2".into(),
                Some("repository:b/x:pull,push"),
            ),
            probe(
                Method::POST,
                "/v2/b/x/blobs/uploads/".into(),
                Some("repository:b/x:pull,push"),
            ),
            probe(
                Method::GET,
                upload.to_string(),
                Some("repository:b/x:pull,push"),
            ),
            probe(
                Method::PATCH,
                upload.to_string(),
                Some("repository:b/x:pull,push"),
            ),
            probe(
                Method::PUT,
                upload.to_string(),
                Some("repository:b/x:pull,push"),
            ),
            probe(
                Method::DELETE,
                upload.to_string(),
                Some("repository:b/x:pull,push"),
            ),
            probe(
                Method::DELETE,
                format!("/v2/b/x/manifests/{}", b.digest),
                Some("repository:b/x:delete"),
            ),
            probe(
                Method::DELETE,
                format!("/v2/b/x/blobs/{layer}"),
                Some("repository:b/x:delete"),
            ),
        ]
    };
    let upload = open_upload(&reg, "b/x").await;
    let realm = format!(
        "Bearer realm=\"http://{}/token\",service=\"sealer-registry\"",
        reg.host
    );

    let anonymous = client();
    let wrong = client_as("alice", "not-her-password");
    let alice = client_as("alice", "a-pass");
    for p in probes(&upload) {
        let what = format!("{} {}", p.method, p.path);
        // No credentials: a challenge naming where to sign in and the scope to ask for.
        let resp = send(&anonymous, &reg, &p).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "anonymous {what}");
        let challenge = header(&resp, "www-authenticate");
        let expected = format!("{realm},scope=\"{}\"", p.scope.unwrap());
        assert_eq!(challenge, expected, "{what}");
        if p.method != Method::HEAD {
            assert_error(resp, 401, "UNAUTHORIZED").await;
        }
        // A wrong password is never let through.
        let resp = send(&wrong, &reg, &p).await;
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "wrong password {what}"
        );
        // Signed in, but b/x is not alice's.
        let resp = send(&alice, &reg, &p).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "alice {what}");
        if p.method != Method::HEAD {
            let body = assert_error(resp, 403, "DENIED").await;
            let message = body["errors"][0]["message"].as_str().unwrap().to_string();
            assert!(message.starts_with("alice may not"), "{message}");
        }
    }

    // bob may do all of it (the deletes last, so the reads still find their content).
    let bob = client_as("bob", "b-pass");
    for p in probes(&upload) {
        if p.path.contains("/uploads/") && p.method != Method::POST {
            continue; // a session is used up by its PUT or DELETE; checked below
        }
        let resp = send(&bob, &reg, &p).await;
        let status = resp.status();
        assert!(
            !matches!(status.as_u16(), 401 | 403),
            "bob {} {}: {status}",
            p.method,
            p.path
        );
    }
    let resp = bob.delete(reg.url(&upload)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    // /v2/: signing in works, anonymous callers are sent to sign in (so logins check).
    let resp = anonymous.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&resp, "www-authenticate"), realm);
    let resp = wrong.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = alice.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    // The catalog shows each caller only what it may pull.
    let resp = anonymous.get(reg.url("/v2/_catalog")).send().await.unwrap();
    assert_eq!(
        header(&resp, "www-authenticate"),
        format!("{realm},scope=\"registry:catalog:*\"")
    );
    let listed = |c: reqwest::Client| {
        let url = reg.url("/v2/_catalog");
        async move {
            let v: Value = c.get(url).send().await.unwrap().json().await.unwrap();
            v["repositories"].clone()
        }
    };
    assert_eq!(listed(alice.clone()).await, serde_json::json!(["a/x"]));
    assert_eq!(listed(bob.clone()).await, serde_json::json!(["a/x", "b/x"]));

    // The token flow: a token carries what was asked for and allowed, nothing more.
    let t = token_of(
        &reg,
        Some(("alice", "a-pass")),
        &["repository:a/x:pull", "repository:b/x:pull"],
    )
    .await;
    let with_token = client_bearer(&t);
    let resp = with_token
        .get(reg.url("/v2/a/x/manifests/1"))
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = with_token
        .get(reg.url("/v2/b/x/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "DENIED").await;
    // The token says who alice is; the policy decides each request, also for scopes the
    // token was not asked for (oras-py keeps one token through a push).
    let resp = with_token
        .get(reg.url("/v2/a/x/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = with_token
        .post(reg.url("/v2/a/x/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = with_token
        .delete(reg.url(&format!("/v2/a/x/manifests/{}", a.digest)))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "DENIED").await;
    // A token's signature covers its grants: granting oneself b/x breaks it.
    let resp = client_bearer(&forge(&t, "a/x", "b/x"))
        .get(reg.url("/v2/b/x/tags/list"))
        .send()
        .await
        .unwrap();
    assert_error(resp, 401, "UNAUTHORIZED").await;

    // Wrong passwords get no token; anonymous callers get one without grants.
    let resp = token(&reg, Some(("alice", "nope")), &["repository:a/x:pull"]).await;
    assert_error(resp, 401, "UNAUTHORIZED").await;
    let t = token_of(&reg, None, &["repository:a/x:pull"]).await;
    let resp = client_bearer(&t)
        .get(reg.url("/v2/a/x/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // containerd's OAuth form.
    let resp = client()
        .post(reg.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "a-pass"),
            ("service", "sealer-registry"),
            ("scope", "repository:a/x:pull repository:a/x:push"),
            ("client_id", "test"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    let resp = client_bearer(body["access_token"].as_str().unwrap())
        .post(reg.url("/v2/a/x/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    // The access log names the user of each request.
    reg.log_where("the user in the access log", |l| {
        l.lines()
            .any(|l| l.contains("/v2/b/x/manifests/1") && l.contains("user=alice"))
            && l.lines()
                .any(|l| l.contains("/v2/b/x/manifests/1") && l.contains("user=bob"))
    });
}

#[tokio::test]
async fn a_reader_of_a_cannot_get_a_blob_of_b_by_mount_head_or_get() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = secured(dir.path(), Some(POLICY), &[]);
    reg.login = Some(("bob".into(), "b-pass".into()));
    let secret = random_bytes(4096);
    let digest = push_blob(&reg, "b/x", &secret).await;
    push_image(&reg, "a/y", "1", 1, 64).await;

    let alice = client_as("alice", "a-pass");
    let resp = alice
        .get(reg.url(&format!("/v2/b/x/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_error(resp, 403, "DENIED").await;
    let resp = alice
        .head(reg.url(&format!("/v2/b/x/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // Through her own repository: the blob is not linked there.
    let resp = alice
        .get(reg.url(&format!("/v2/a/y/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_error(resp, 404, "BLOB_UNKNOWN").await;

    // A mount from b/x is an ordinary upload for her: 202, and nothing is linked.
    let mount = format!("/v2/a/y/blobs/uploads/?mount={digest}&from=b/x");
    let resp = alice.post(reg.url(&mount)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "alice's mount");
    // The same with a token that asked for b/x too.
    let t = token_of(
        &reg,
        Some(("alice", "a-pass")),
        &["repository:a/y:pull,push", "repository:b/x:pull"],
    )
    .await;
    let resp = client_bearer(&t)
        .post(reg.url(&mount))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "alice's mount by token"
    );
    let resp = alice
        .head(reg.url(&format!("/v2/a/y/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // bob, who may read b/x, mounts it.
    let resp = client_as("bob", "b-pass")
        .post(reg.url(&format!("/v2/a/z/blobs/uploads/?mount={digest}&from=b/x")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "bob's mount");
    let got = alice
        .get(reg.url(&format!("/v2/a/z/blobs/{digest}")))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), secret.as_slice());
}

#[tokio::test]
async fn bad_auth_files_fail_the_start_with_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    std::fs::write(&users, "alice:$apr1$x8nFXl3O$3yMbNr1bFwXo4bY8vS6Vn/\n").unwrap();
    let out = output(
        Command::new(binary("sealer-registry"))
            .args(["serve", "--addr", "127.0.0.1:0", "--root"])
            .arg(dir.path().join("store"))
            .arg("--htpasswd")
            .arg(&users),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("htpasswd") && err.contains("line 1"), "{err}");
    assert!(err.contains("htpasswd -B"), "{err}");

    let users = htpasswd(dir.path(), &[("alice", "a")]);
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[[allow]]\nrepositories = [\"x\"]\ngroups = [\"ops\"]\nactions = [\"pull\"]\n",
    )
    .unwrap();
    let out = output(
        Command::new(binary("sealer-registry"))
            .args(["serve", "--addr", "127.0.0.1:0", "--root"])
            .arg(dir.path().join("store"))
            .arg("--htpasswd")
            .arg(&users)
            .arg("--policy")
            .arg(&policy),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("policy.toml") && err.contains("no group \"ops\""),
        "{err}"
    );

    let out = output(Command::new(binary("sealer-registry")).args([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--anonymous-pull",
    ]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--htpasswd"));
}

#[tokio::test]
async fn pushes_tag_changes_and_deletes_are_audited_with_their_user() {
    let dir = tempfile::tempdir().unwrap();
    let mut reg = secured(dir.path(), Some(POLICY), &[]);
    reg.login = Some(("bob".into(), "b-pass".into()));
    let image = push_image(&reg, "a/x", "1", 1, 64).await;
    let (config, layer) = (sha256(&image.config), sha256(&image.layers[0]));
    reg.login = Some(("alice".into(), "a-pass".into()));
    let resp = put_manifest(&reg, "a/x", "2", OCI_MANIFEST, &image.manifest).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    reg.login = Some(("bob".into(), "b-pass".into()));
    for path in [
        "/v2/a/x/manifests/1".to_string(),
        format!("/v2/a/x/manifests/{}", image.digest),
        format!("/v2/a/x/blobs/{layer}"),
    ] {
        let resp = delete(&reg, &path).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{path}");
    }

    let log = reg.log_where("the audit lines", |l| l.contains("action=delete-blob"));
    let audit: Vec<&str> = log.lines().filter(|l| l.contains(" audit: ")).collect();
    let m = image.digest.as_str();
    let expected = [
        ("bob", "push-blob", "-", config.as_str()),
        ("bob", "push-blob", "-", layer.as_str()),
        ("bob", "push", "-", m),
        ("bob", "tag", "1", m),
        ("alice", "push", "-", m),
        ("alice", "tag", "2", m),
        ("bob", "untag", "1", "-"),
        ("bob", "delete", "-", m),
        ("bob", "delete-blob", "-", layer.as_str()),
    ];
    assert_eq!(audit.len(), expected.len(), "{audit:#?}");
    for (line, (user, action, reference, digest)) in audit.iter().zip(expected) {
        for part in [
            format!("user={user} "),
            format!("action={action} "),
            "repository=a/x ".to_string(),
            format!("reference={reference} "),
            format!("digest={digest}"),
        ] {
            assert!(line.contains(&part), "{part:?} not in {line}");
        }
    }
}

#[tokio::test]
async fn metrics_can_be_kept_to_signed_in_users() {
    let dir = tempfile::tempdir().unwrap();
    let reg = secured(dir.path(), None, &["--metrics-auth"]);
    let resp = client().get(reg.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&resp, "www-authenticate").starts_with("Basic "));
    let resp = client_as("alice", "wrong")
        .get(reg.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = client_as("alice", "a-pass")
        .get(reg.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("sealer_registry_http_requests")
    );

    // Without the flag a signed-in registry's metrics stay open to scrapers.
    let other = tempfile::tempdir().unwrap();
    let open = secured(other.path(), None, &[]);
    let resp = client().get(open.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let reg = Registry::start_with(&["--no-metrics"]);
    let resp = client().get(reg.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // Everything else is served as before.
    let resp = client().get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
