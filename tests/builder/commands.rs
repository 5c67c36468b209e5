//! The image commands on the local store (tag, rmi and its garbage collection), logins,
//! and the errors a user gets for bad input.

use sealer_e2e::*;

use crate::*;

#[test]
fn tag_and_rmi_keep_what_other_tags_need_and_free_the_rest() {
    let (_up, sealer, digest) = built_example();
    let blobs = sealer.blob_count();

    // A tag in another repository shares every blob.
    sealer.ok(&["tag", "example.com/shop:1.0", "127.0.0.1:5999/team/shop:rc"]);
    let rows = sealer.images();
    assert_eq!(
        image_row(&rows, "127.0.0.1:5999/team/shop", "rc")["digest"],
        digest.as_str()
    );
    assert_eq!(sealer.blob_count(), blobs);

    // Removing one name frees nothing another name still reaches.
    let out = sealer.ok(&["rmi", "example.com/shop:1.0"]);
    assert!(out.contains("freed 0 blob(s)"), "{out}");
    assert!(
        sealer.inspect("127.0.0.1:5999/team/shop:rc")["containerImages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["present"] == true)
    );

    // Removing the last CloudImage name frees its own layers and config, but not the
    // container images, which keep their own tags.
    let out = sealer.ok(&["rmi", "127.0.0.1:5999/team/shop:rc"]);
    assert!(out.contains("freed 7 blob(s)"), "{out}");
    assert_eq!(sealer.blob_count(), blobs - 7);
    let mut images: Vec<String> = EXAMPLE_IMAGES
        .iter()
        .map(|i| match i.split_once('/') {
            Some(("library", _)) => format!("docker.io/{i}"),
            Some(("prometheus", _)) => format!("quay.io/{i}"),
            _ => format!("registry.k8s.io/{i}"),
        })
        .collect();
    images.sort();
    sealer.ok(&[vec!["rmi".to_string()], images].concat());
    assert_eq!(sealer.blob_count(), 0);
    assert!(sealer.images().is_empty());

    let err = sealer.fails(&["rmi", "example.com/shop:1.0"]);
    assert!(
        err.contains("example.com/shop:1.0 is not in the local store"),
        "{err}"
    );
}

/// `sealer login HOST -u USER --password-stdin`, which must succeed; its output.
fn login(sealer: &Sealer, host: &str, user: &str, password: &str) -> String {
    let mut login = sealer.cmd(&["login", host, "-u", user, "--password-stdin"]);
    login
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = login.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "sealer login {host} failed");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn login_checks_credentials_saves_them_and_push_uses_them() {
    const USER: &str = "builder-user";
    const PASSWORD: &str = "builder-pass";
    let tokens = TokenServer::start("127.0.0.1", USER, PASSWORD).await;
    let reg = DockerRegistry::start(UpstreamOptions {
        token: Some(&tokens),
        ..Default::default()
    });
    let (_up, sealer, _) = built_example();
    let target = format!("{}/apps/shop:1.0", reg.host);

    // Without a login the registry refuses the push, and says so.
    let err = sealer.fails(&["push", "example.com/shop:1.0", &target]);
    assert!(err.contains(&reg.host), "{err}");

    let err = sealer.fails(&["login", &reg.host, "-u", USER, "-p", "wrong"]);
    assert!(
        err.contains(&format!("cannot log in to {}", reg.host)),
        "{err}"
    );
    assert!(!sealer.auth_file().exists(), "a failed login saves nothing");

    login(&sealer, &reg.host, USER, PASSWORD);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sealer.auth_file()).unwrap()).unwrap();
    use base64::Engine;
    assert_eq!(
        saved["auths"][reg.host.as_str()]["auth"],
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );

    // skopeo, reading the same config.json, sees what sealer pushed.
    sealer.ok(&["push", "example.com/shop:1.0", &target]);
    let raw = run(std::process::Command::new(require("skopeo"))
        .args(["inspect", "--raw", "--tls-verify=false", "--authfile"])
        .arg(sealer.auth_file())
        .arg(format!("docker://{target}")));
    assert!(raw.contains("sealer.image.container.images"), "{raw}");

    sealer.ok(&["logout", &reg.host]);
    let err = sealer.fails(&["logout", &reg.host]);
    assert!(err.contains("not logged in"), "{err}");
    let fresh = Sealer::new();
    let err = fresh.fails(&["pull", &target]);
    assert!(err.contains("401") || err.contains("credentials"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_keeps_the_password_in_the_credential_helper_the_config_names() {
    const USER: &str = "helper-user";
    const PASSWORD: &str = "helper-pass";
    let tokens = TokenServer::start("127.0.0.1", USER, PASSWORD).await;
    let reg = DockerRegistry::start(UpstreamOptions {
        token: Some(&tokens),
        ..Default::default()
    });
    let (_up, sealer, _) = built_example();
    let keys = tempfile::tempdir().unwrap();
    let env = password_store(keys.path());
    let sealer = env.iter().fold(sealer, |s, (k, v)| s.with_env(k, v));
    require("docker-credential-pass");
    std::fs::create_dir_all(sealer.auth_file().parent().unwrap()).unwrap();
    // The host's own helper comes before the store (which does not exist here), and is
    // what skopeo reads too.
    std::fs::write(
        sealer.auth_file(),
        format!(
            r#"{{"credsStore":"sealer-test-absent","credHelpers":{{"{}":"pass"}},"detachKeys":"ctrl-e"}}"#,
            reg.host
        ),
    )
    .unwrap();

    let said = login(&sealer, &reg.host, USER, PASSWORD);
    assert!(said.contains("docker-credential-pass"), "{said}");

    // The file names the login, as docker's does, but holds no secret; the helper does.
    let text = std::fs::read_to_string(sealer.auth_file()).unwrap();
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    assert!(!text.contains(PASSWORD) && !text.contains(&basic), "{text}");
    let saved: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(saved["auths"][reg.host.as_str()], serde_json::json!({}));
    assert_eq!(saved["detachKeys"], "ctrl-e", "other settings are kept");
    let mut ask = std::process::Command::new(require("docker-credential-pass"));
    ask.arg("list").envs(env.iter().map(|(k, v)| (k, v)));
    assert!(run(&mut ask).contains(&reg.host));

    // Pushing signs in through the helper; skopeo, reading the same file, sees it.
    sealer.ok(&[
        "push",
        "example.com/shop:1.0",
        &format!("{}/apps/shop:1.0", reg.host),
    ]);
    let raw = run(std::process::Command::new(require("skopeo"))
        .args(["inspect", "--raw", "--tls-verify=false", "--authfile"])
        .arg(sealer.auth_file())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg(format!("docker://{}/apps/shop:1.0", reg.host)));
    assert!(raw.contains("sealer.image.container.images"), "{raw}");

    // Logging out erases it from the helper too.
    sealer.ok(&["logout", &reg.host]);
    assert!(!run(&mut ask).contains(&reg.host));
    let err = sealer.fails(&["pull", &format!("{}/apps/shop:1.0", reg.host)]);
    assert!(err.contains("401") || err.contains("credentials"), "{err}");
}

#[test]
fn bad_input_names_the_file_line_and_every_missing_image() {
    let sealer = Sealer::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Kubefile"),
        "FROM scratch\nCOPY app.yaml manifests/\nLAUNCH [\"nothere\"]\n",
    )
    .unwrap();
    std::fs::write(
        ctx.path().join("app.yaml"),
        "kind: Pod\nspec:\n  containers:\n    - image: nginx:1.25\n    - image: quay.io/x/missing:1\n",
    )
    .unwrap();
    let kubefile = ctx.path().join("Kubefile");
    let err = sealer.fails(&["build", "-t", "x:1", ctx.path().to_str().unwrap()]);
    assert!(
        err.contains(&format!("{}:3", kubefile.display())) && err.contains("nothere"),
        "{err}"
    );

    std::fs::write(
        &kubefile,
        "FROM scratch\nCOPY app.yaml manifests/\nBOGUS x\n",
    )
    .unwrap();
    let err = sealer.fails(&["build", "-t", "x:1", ctx.path().to_str().unwrap()]);
    assert!(err.contains(&format!("{}:3", kubefile.display())), "{err}");

    std::fs::write(&kubefile, "FROM scratch\nCOPY ../etc/passwd etc/\n").unwrap();
    let err = sealer.fails(&["build", "-t", "x:1", ctx.path().to_str().unwrap()]);
    assert!(err.contains("inside the build context"), "{err}");

    // Images the upstream lacks fail the build, all of them named; nothing is tagged.
    let up = DockerRegistry::start(UpstreamOptions::default());
    skopeo_push(&up.host, "library/nginx:1.25", None);
    std::fs::write(&kubefile, "FROM scratch\nCOPY app.yaml manifests/\n").unwrap();
    let mut args = vec!["build".to_string(), "-t".into(), "x:1".into()];
    args.extend(upstream_flags(&up.host));
    args.extend([
        "--image-list".into(),
        ctx.path().join("more").display().to_string(),
    ]);
    std::fs::write(ctx.path().join("more"), "registry.k8s.io/also-missing:2\n").unwrap();
    args.push(ctx.path().display().to_string());
    let err = sealer.fails(&args);
    assert!(
        err.contains("2 of 3 container image(s) cannot be fetched"),
        "{err}"
    );
    assert!(err.contains("quay.io/x/missing:1"), "{err}");
    assert!(err.contains("registry.k8s.io/also-missing:2"), "{err}");
    assert!(
        !sealer
            .images()
            .iter()
            .any(|r| r["name"] == "docker.io/library/x")
    );
}

#[test]
fn a_relative_store_root_works() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(
        std::process::Command::new(binary("sealer"))
            .current_dir(dir.path())
            .args(["--root", "store", "images", "--json"]),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    assert!(dir.path().join("store/blobs").is_dir());
}
