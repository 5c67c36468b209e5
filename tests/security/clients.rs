//! Real clients signing in: skopeo, podman, docker (through dockerd) and containerd's
//! ctr, each with the token flow as it implements it.

use std::process::Command;

use sealer_e2e::*;

use super::{POLICY, secured};

/// `skopeo login` or `podman login` into `authfile`, the certificate not verified.
fn login(mut cmd: Command, authfile: &str, user: &str, password: &str, host: &str) -> Command {
    cmd.args(["login", "--tls-verify=false", "--authfile", authfile])
        .args(["-u", user, "-p", password, host]);
    cmd
}

fn failure(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(!out.status.success(), "{cmd:?} should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn skopeo_podman_docker_and_ctr_sign_in_push_and_pull() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reg = secured(d, Some(POLICY), &[]);
    let host = reg.host.clone();
    let image = format!("oci:{}:app", test_image_layout().display());

    // skopeo: refused without credentials and with a wrong password; after login it
    // pushes and reads a/*, and is denied b/*.
    let auth = d.join("skopeo-auth.json");
    let skopeo = |args: &[&str]| {
        let mut cmd = Command::new(require("skopeo"));
        cmd.args(args);
        cmd
    };
    let err = failure(&mut skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &image,
        &format!("docker://{host}/a/app:1"),
    ]));
    assert!(err.contains("authentication required"), "{err}");
    let authfile = auth.display().to_string();
    let err = failure(&mut login(skopeo(&[]), &authfile, "alice", "wrong", &host));
    assert!(err.contains("invalid username"), "{err}");
    let out = run(&mut login(skopeo(&[]), &authfile, "alice", "a-pass", &host));
    assert!(out.contains("Login Succeeded"), "{out}");
    run(&mut skopeo(&[
        "copy",
        "--quiet",
        "--authfile",
        &authfile,
        "--dest-tls-verify=false",
        &image,
        &format!("docker://{host}/a/app:1"),
    ]));
    let out = run(&mut skopeo(&[
        "inspect",
        "--authfile",
        &authfile,
        "--tls-verify=false",
        &format!("docker://{host}/a/app:1"),
    ]));
    assert!(out.contains("\"Digest\""), "{out}");
    let err = failure(&mut skopeo(&[
        "copy",
        "--authfile",
        &authfile,
        "--dest-tls-verify=false",
        &image,
        &format!("docker://{host}/b/app:1"),
    ]));
    assert!(
        err.contains("denied") || err.contains("403 (Forbidden)"),
        "{err}"
    );

    // podman: bob logs in, pulls alice's image and pushes it to b/.
    let store = d.join("podman");
    let pauth = d.join("podman-auth.json").display().to_string();
    let podman = |args: &[&str]| containers_tool("podman", &store, args);
    let err = failure(&mut login(podman(&[]), &pauth, "bob", "nope", &host));
    assert!(err.contains("invalid username"), "{err}");
    run(&mut login(podman(&[]), &pauth, "bob", "b-pass", &host));
    let pulled = format!("{host}/a/app:1");
    run(&mut podman(&[
        "pull",
        "--quiet",
        "--tls-verify=false",
        "--authfile",
        &pauth,
        &pulled,
    ]));
    let pushed = format!("{host}/b/podman:1");
    run(&mut podman(&["tag", &pulled, &pushed]));
    run(&mut podman(&[
        "push",
        "--quiet",
        "--tls-verify=false",
        "--authfile",
        &pauth,
        &pushed,
    ]));

    // docker: dockerd checks the login; pulls and pushes with the stored credentials.
    let ctrd = Containerd::start();
    let dockerd = Dockerd::start(&ctrd, &format!("http://{host}"));
    // A docker CLI that finds `pass` keeps logins in it (not in config.json): give it
    // a password store of its own, and name the helper so the run does not depend on
    // what the machine has.
    let config = d.join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.json"), r#"{"credsStore":"pass"}"#).unwrap();
    let keys = password_store(&d.join("keys"));
    let docker = |args: &[&str]| {
        let mut cmd = dockerd.docker_cmd(args);
        cmd.env("DOCKER_CONFIG", &config)
            .envs(keys.iter().map(|(k, v)| (k, v)));
        cmd
    };
    let err = failure(&mut docker(&["login", "-u", "alice", "-p", "wrong", &host]));
    assert!(err.contains("unauthorized"), "{err}");
    let out = run(&mut docker(&[
        "login", "-u", "alice", "-p", "a-pass", &host,
    ]));
    assert!(out.contains("Login Succeeded"), "{out}");
    run(&mut docker(&["pull", "--quiet", &pulled]));
    let mine = format!("{host}/a/docker:1");
    run(&mut docker(&["tag", &pulled, &mine]));
    run(&mut docker(&["push", "--quiet", &mine]));
    let theirs = format!("{host}/b/docker:1");
    run(&mut docker(&["tag", &pulled, &theirs]));
    let err = failure(&mut docker(&["push", "--quiet", &theirs]));
    assert!(err.contains("denied"), "{err}");

    // containerd signs in with the OAuth form (POST /token).
    let out = failure(ctrd.ctr().args([
        "images",
        "pull",
        "--plain-http",
        "--user",
        "alice:wrong",
        &pulled,
    ]));
    assert!(out.contains("401") || out.contains("unauthorized"), "{out}");
    run(ctrd.ctr().args([
        "images",
        "pull",
        "--plain-http",
        "--user",
        "alice:a-pass",
        &pulled,
    ]));
    reg.log_where("containerd's POST /token", |l| {
        l.lines().any(|l| {
            l.contains("method=POST") && l.contains("uri=/token") && l.contains("status=200")
        })
    });
}

#[tokio::test]
async fn oras_py_signs_in_pushes_and_pulls_back() {
    require_oras_py();
    let dir = tempfile::tempdir().unwrap();
    let reg = secured(dir.path(), Some(POLICY), &[]);
    let work = dir.path().join("oras");
    std::fs::create_dir(&work).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("security/oras_login.py");
    // oras-py keeps logins in ~/.docker/config.json: a private HOME keeps them in the test.
    let out = run(Command::new("python3")
        .arg(script)
        .arg(&reg.host)
        .arg(&work)
        .env("HOME", &work));
    assert!(out.contains("ORAS LOGIN OK"), "{out}");
    reg.log_where("oras-py's manifest push as alice", |l| {
        l.lines().any(|l| {
            l.contains("method=PUT uri=/v2/a/oras/manifests/1")
                && l.contains("status=201")
                && l.contains("user=alice")
        })
    });
}

#[tokio::test]
async fn with_anonymous_pull_clients_read_without_signing_in_but_cannot_push() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reg = secured(d, None, &["--anonymous-pull"]);
    let host = reg.host.clone();
    skopeo_push(&host, "apps/web:1", Some("bob:b-pass"));

    let out = run(Command::new(require("skopeo")).args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{host}/apps/web:1"),
    ]));
    assert!(out.contains("\"Digest\""), "{out}");
    let store = d.join("podman");
    run(&mut containers_tool(
        "podman",
        &store,
        &[
            "pull",
            "--quiet",
            "--tls-verify=false",
            &format!("{host}/apps/web:1"),
        ],
    ));
    let err = failure(Command::new(require("skopeo")).args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}:app", test_image_layout().display()),
        &format!("docker://{host}/apps/web:2"),
    ]));
    // skopeo may read that the layers exist, then is refused the manifest.
    assert!(
        err.contains("authentication required") || err.contains("unauthorized"),
        "{err}"
    );
}

#[tokio::test]
async fn over_tls_clients_trust_the_ca_from_cert_and_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pki = d.join("pki");
    localhost_pki(&pki);
    let (cert, key) = (pki.join("tls.crt"), pki.join("tls.key"));
    let reg = secured(
        d,
        None,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(reg.scheme, "https");
    let host = reg.host.clone();
    // Clients read every *.crt in a cert dir as a CA (a *.key there is a client key).
    let certs = d.join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(pki.join("ca.crt"), certs.join("ca.crt")).unwrap();
    let certs = certs.display().to_string();

    // The challenge sends clients to the https token endpoint.
    let out = run(Command::new(require("curl"))
        .args(["-s", "-o", "/dev/null", "-D", "-", "--cacert"])
        .arg(pki.join("ca.crt"))
        .arg(format!("https://{host}/v2/")));
    assert!(
        out.contains(&format!("realm=\"https://{host}/token\"")),
        "{out}"
    );

    let image = format!("oci:{}:app", test_image_layout().display());
    run(Command::new(require("skopeo")).args([
        "copy",
        "--quiet",
        "--dest-cert-dir",
        &certs,
        "--dest-creds",
        "alice:a-pass",
        &image,
        &format!("docker://{host}/apps/web:1"),
    ]));
    let store = d.join("podman");
    let pauth = d.join("podman-auth.json").display().to_string();
    let podman = |args: &[&str]| containers_tool("podman", &store, args);
    run(&mut podman(&[
        "login",
        "--cert-dir",
        &certs,
        "--authfile",
        &pauth,
        "-u",
        "bob",
        "-p",
        "b-pass",
        &host,
    ]));
    run(&mut podman(&[
        "pull",
        "--quiet",
        "--cert-dir",
        &certs,
        "--authfile",
        &pauth,
        &format!("{host}/apps/web:1"),
    ]));
    // Without the CA the certificate is not trusted.
    let err = failure(Command::new(require("skopeo")).args([
        "inspect",
        "--creds",
        "alice:a-pass",
        &format!("docker://{host}/apps/web:1"),
    ]));
    assert!(err.contains("certificate"), "{err}");
}
