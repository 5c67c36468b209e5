//! Hostile build inputs: what a Kubefile, its downloads and its archives hold is bounded,
//! fails with a clear error, and never runs or reaches beyond the build.

use std::time::Duration;

use sealer_e2e::*;

use crate::*;

/// `sealer build` of a context holding only `kubefile`, with `flags`; its stderr when
/// it fails, `None` when it succeeds.
fn build_fails(sealer: &Sealer, kubefile: &str, flags: &[&str]) -> Option<String> {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Kubefile"), kubefile).unwrap();
    let mut args = vec!["build", "-q", "-t", "t:1"];
    args.extend(flags);
    args.push(ctx.path().to_str().unwrap());
    let out = sealer.run(&args);
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn app_downloads_are_bounded_pinned_and_stay_on_their_host() {
    let server = Hostile::start().await;
    let other = Hostile::start().await;
    let sealer = Sealer::new();
    let app = |path: &str| format!("FROM scratch\nAPP a {}{path}\n", server.url);

    // An endless body stops at the size cap.
    server.answer(
        "/endless.yaml",
        Answer::Endless {
            content_type: "text/plain".into(),
        },
    );
    let err = build_fails(
        &sealer,
        &app("/endless.yaml"),
        &["--max-download-size", "1MiB"],
    )
    .expect("an endless download fails");
    assert!(
        err.contains("larger than the limit of 1048576 bytes"),
        "{err}"
    );

    // A server that stops sending fails after the stall timeout instead of hanging.
    server.answer(
        "/stalled.yaml",
        Answer::Trickle {
            total: 1000,
            chunk: 10,
            pause: Duration::from_secs(30),
        },
    );
    let err = build_fails(
        &sealer,
        &app("/stalled.yaml"),
        &["--download-timeout", "1s"],
    )
    .expect("a stalled download fails");
    assert!(err.contains("no data for 1s"), "{err}");

    // A redirect to another host, or from https to http, is not followed.
    let body = "kind: ConfigMap\n";
    other.answer("/x.yaml", Answer::ok("text/plain", body));
    server.answer(
        "/moved.yaml",
        Answer::redirect(&format!(
            "{}/x.yaml",
            other.url.replace("127.0.0.1", "localhost")
        )),
    );
    let err = build_fails(&sealer, &app("/moved.yaml"), &[]).expect("a redirect away fails");
    assert!(err.contains("redirected to another host"), "{err}");
    assert_eq!(other.asked("/x.yaml"), 0);
    // On its own host it is followed.
    server.answer("/here.yaml", Answer::ok("text/plain", body));
    server.answer("/near.yaml", Answer::redirect("/here.yaml"));
    assert_eq!(build_fails(&sealer, &app("/near.yaml"), &[]), None);

    // A pinned checksum: the wrong file fails, the right one is taken.
    let good = sha256(body.as_bytes());
    let good = good.trim_start_matches("sha256:");
    let wrong = "0".repeat(64);
    let err = build_fails(&sealer, &app(&format!("/here.yaml#sha256={wrong}")), &[])
        .expect("a checksum mismatch fails");
    assert!(err.contains(&format!("not the pinned {wrong}")), "{err}");
    assert_eq!(
        build_fails(&sealer, &app(&format!("/here.yaml#sha256={good}")), &[]),
        None
    );
}

/// A tar holding `entries` (name, content); names of any length (GNU long names).
fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, body) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *body).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = std::process::Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = gz.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(&data).unwrap();
    });
    let out = gz.wait_with_output().unwrap();
    writer.join().unwrap();
    out.stdout
}

#[test]
fn archives_and_values_are_bounded_and_sparse_files_refused() {
    let sealer = Sealer::new();
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path();
    let add = |file: &str, flags: &[&str]| {
        let kubefile = format!("FROM scratch\nADD {file} /\n");
        std::fs::write(c.join("Kubefile"), kubefile).unwrap();
        let mut args = vec!["build", "-q", "-t", "t:1"];
        args.extend(flags);
        args.push(c.to_str().unwrap());
        let out = sealer.run(&args);
        (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
    };

    // A long name of 8 MiB compresses to a few KiB; it is refused, not held in memory.
    let long = "n".repeat(8 << 20);
    let bomb = gzip(&tar_of(&[(&long, b"x")]));
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    std::fs::write(c.join("names.tar.gz"), &bomb).unwrap();
    let err = add("names.tar.gz", &[]).expect("a huge long name fails");
    assert!(
        err.contains("names.tar.gz") && err.contains("headers"),
        "{err}"
    );

    // What one ADD unpacks to is capped.
    let big = vec![0u8; 3 << 20];
    std::fs::write(c.join("big.tar.gz"), gzip(&tar_of(&[("big", &big)]))).unwrap();
    let err = add("big.tar.gz", &["--max-add-size", "1MiB"]).expect("past the cap fails");
    assert!(err.contains("size limit"), "{err}");
    assert_eq!(
        add("big.tar.gz", &[]),
        None,
        "within the default it is taken"
    );

    // A sparse file: an 8 GiB entry from a tiny archive.
    let sparse = c.join("holes");
    run(std::process::Command::new("truncate")
        .args(["-s", "8G"])
        .arg(&sparse));
    run(std::process::Command::new("tar")
        .arg("--sparse")
        .arg("-czf")
        .arg(c.join("sparse.tar.gz"))
        .arg("-C")
        .arg(c)
        .arg("holes"));
    std::fs::remove_file(&sparse).unwrap();
    let err = add("sparse.tar.gz", &[]).expect("a sparse file fails");
    assert!(err.contains("holes") && err.contains("sparse"), "{err}");

    // A bundle with a huge long name: `sealer load` refuses it.
    let bundle = c.join("bundle.tar");
    std::fs::write(&bundle, tar_of(&[("index.json", b"{}"), (&long, b"x")])).unwrap();
    let err = sealer.fails(&["load", "-i", bundle.to_str().unwrap()]);
    assert!(err.contains("headers"), "{err}");

    // A value that doubles on each line, and values that add up: clear errors.
    let mut doubling = String::from("FROM scratch\nENV A=0123456789abcdef\n");
    for _ in 0..40 {
        doubling.push_str("ENV A=$A$A\n");
    }
    let err = build_fails(&sealer, &doubling, &["--dry-run"]).expect("doubling fails");
    assert!(err.contains("expands to more than 64 KiB"), "{err}");
    let value = "v".repeat(60 << 10);
    let mut many = format!("FROM scratch\nARG BIG={value}\n");
    for i in 0..20 {
        many.push_str(&format!("ENV K{i}=$BIG\n"));
    }
    let err = build_fails(&sealer, &many, &["--dry-run"]).expect("adding up fails");
    assert!(err.contains("more than 1024 KiB in all"), "{err}");
}

#[test]
fn a_killed_build_leaves_nothing_behind_for_long_and_a_running_one_is_kept() {
    let sealer = Sealer::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Kubefile"), "FROM scratch\nRUN sleep 60\n").unwrap();
    let scratch = sealer.root().join("builder/tmp");
    let folders = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&scratch)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("build-")
            })
            .collect()
    };
    // Whether a build holds the folder's lock (`flock -n` fails while one does).
    let locked = |f: &std::path::Path| {
        !std::process::Command::new(require("flock"))
            .arg("-n")
            .arg(f.join(".lock"))
            .arg("true")
            .status()
            .unwrap()
            .success()
    };
    // Starts a build and waits until it holds the lock of a folder of its own.
    let start = |sealer: &Sealer| {
        let before = folders();
        let child = sealer
            .cmd(&["build", "-q", "-t", "t:1", ctx.path().to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !folders()
            .iter()
            .any(|f| !before.contains(f) && f.join(".lock").exists() && locked(f))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no build folder appeared"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    };
    // Backdates every build folder past the age at which a new build looks at it.
    let age = || {
        for f in folders() {
            run(std::process::Command::new("touch")
                .args(["-d", "2 hours ago"])
                .arg(&f));
        }
    };

    let mut killed = start(&sealer);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let left = folders();
    assert_eq!(left.len(), 1, "{left:?}");
    age();
    // A running build's folder stays while a new build sweeps.
    let mut running = start(&sealer);
    age();
    let out = sealer.run(&[
        "build",
        "-q",
        "-t",
        "t:2",
        "--dry-run",
        ctx.path().to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let now = folders();
    assert!(
        !now.contains(&left[0]),
        "the killed build's folder is gone: {now:?}"
    );
    assert_eq!(now.len(), 1, "the running build's folder is kept: {now:?}");
    running.kill().unwrap();
    running.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_takes_no_manifest_larger_than_the_cap() {
    let server = Hostile::start().await;
    server.answer(
        "/v2/big/manifests/1",
        Answer::Endless {
            content_type: "application/vnd.oci.image.manifest.v1+json".into(),
        },
    );
    let sealer = Sealer::new();
    let image = format!("{}/big:1", server.host);
    let err = sealer.fails(&["pull", "--insecure-registry", &server.host, &image]);
    assert!(
        err.contains("manifest") && err.contains("larger than"),
        "{err}"
    );
    assert!(sealer.images().is_empty());
}

/// The content of `path` in the image `t:1` (its last layer holding it).
fn file_in_image(sealer: &Sealer, path: &str) -> String {
    let info = sealer.inspect("t:1");
    let layers = info["platforms"][0]["layers"].as_array().unwrap().clone();
    for l in layers.iter().rev() {
        let hex = &l["digest"].as_str().unwrap()[7..];
        let blob = sealer
            .root()
            .join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "zstd -dc {} | tar xOf - {path} 2>/dev/null",
                blob.display()
            ))
            .output()
            .unwrap();
        if !out.stdout.is_empty() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
    }
    panic!("{path} is in no layer")
}

/// Whether a process with exactly these arguments runs on this machine.
fn running(args: &[&str]) -> bool {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted))
}

#[test]
fn run_gets_a_clean_environment_a_time_limit_and_leaves_no_process_behind() {
    let sealer = Sealer::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Kubefile"),
        "FROM scratch\nARG WHO=arg\nENV GREETING=env\n\
         RUN (sleep 417 &); env | sort > env.txt\n",
    )
    .unwrap();
    let out = sealer
        .cmd(&["build", "-q", "-t", "t:1", ctx.path().to_str().unwrap()])
        .env("SEALER_TEST_TOKEN", "builder-secret")
        .env("DOCKER_CONFIG", "/root/.docker")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = file_in_image(&sealer, "env.txt");
    assert!(
        env.contains("WHO=arg") && env.contains("GREETING=env"),
        "{env}"
    );
    assert!(
        env.contains("PATH=") && env.contains("SEALER_ROOTFS="),
        "{env}"
    );
    assert!(
        !env.contains("builder-secret") && !env.contains("DOCKER_CONFIG"),
        "the builder's environment leaked: {env}"
    );
    let home = env.lines().find_map(|l| l.strip_prefix("HOME=")).unwrap();
    assert!(home.contains("/builder/tmp/build-"), "HOME={home}");
    assert!(
        !running(&["sleep", "417"]),
        "a process RUN started outlived it"
    );

    // A RUN that does not end is killed at the limit.
    let started = std::time::Instant::now();
    let err = build_fails(
        &sealer,
        "FROM scratch\nRUN sleep 418\n",
        &["--run-timeout", "2s"],
    )
    .expect("a RUN past its limit fails");
    assert!(
        err.contains("RUN sleep 418 did not finish within 2s"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(!running(&["sleep", "418"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_run_has_no_network_no_writable_store_and_no_logins() {
    let server = Hostile::start().await;
    server.answer("/hello", Answer::ok("text/plain", "hello"));
    let sealer = Sealer::new();
    // A login the builder holds, which RUN must not read.
    std::fs::create_dir_all(sealer.auth_file().parent().unwrap()).unwrap();
    std::fs::write(sealer.auth_file(), r#"{"auths":{"x":{"auth":"c2VjcmV0"}}}"#).unwrap();
    let kubefile = format!(
        "FROM scratch\n\
         RUN (curl -sf -m 3 {}/hello || echo unreachable) > net.txt; \
         (touch \"$SEALER_ROOTFS/../../../../planted\" && echo written || echo refused) > store.txt; \
         (cat {} 2>/dev/null || echo hidden) > login.txt; echo $$ > pid.txt; \
         echo home > \"$HOME/x\" && cp \"$HOME/x\" home.txt\n",
        server.url,
        sealer.auth_file().display()
    );
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Kubefile"), &kubefile).unwrap();
    let build = |flags: &[&str]| {
        let mut args = vec!["build", "-q", "--no-cache", "-t", "t:1"];
        args.extend(flags);
        args.push(ctx.path().to_str().unwrap());
        sealer.ok(&args);
    };
    build(&["--isolate"]);
    assert_eq!(file_in_image(&sealer, "net.txt").trim(), "unreachable");
    assert_eq!(file_in_image(&sealer, "store.txt").trim(), "refused");
    assert_eq!(file_in_image(&sealer, "login.txt").trim(), "hidden");
    assert_eq!(file_in_image(&sealer, "pid.txt").trim(), "1");
    assert_eq!(file_in_image(&sealer, "home.txt").trim(), "home");
    assert!(!sealer.root().join("planted").exists());
    assert_eq!(server.asked("/hello"), 0);

    // Without --isolate the same RUN reaches all three: what the docs say it can do.
    build(&[]);
    assert_eq!(file_in_image(&sealer, "net.txt").trim(), "hello");
    assert_eq!(file_in_image(&sealer, "store.txt").trim(), "written");
    assert!(file_in_image(&sealer, "login.txt").contains("c2VjcmV0"));
}

#[test]
fn a_fifo_in_the_context_is_an_error_not_a_hang() {
    let sealer = Sealer::new();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ctx.path().join("d")).unwrap();
    run(std::process::Command::new("mkfifo").arg(ctx.path().join("d/pipe")));
    std::fs::write(ctx.path().join("Kubefile"), "FROM scratch\nCOPY d d\n").unwrap();
    let mut child = sealer
        .cmd(&["build", "-q", "-t", "t:1", ctx.path().to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the build hung on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("d/pipe") && err.contains("FIFO"), "{err}");
}

#[test]
fn load_never_moves_a_name_silently_nor_gives_a_cloudimage_name_to_a_carried_image() {
    let up = example_upstream();
    let flags = upstream_flags(&up.host);
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("pod.yaml"), "image: nginx:1.25\n").unwrap();
    std::fs::write(
        ctx.path().join("Kubefile"),
        "FROM scratch\nCOPY pod.yaml manifests/\n",
    )
    .unwrap();
    // A CloudImage carrying docker.io/library/nginx:1.25, saved.
    let maker = Sealer::new();
    maker.build("example.com/b:1", ctx.path(), &flags);
    let bundle = ctx.path().join("b.tar");
    maker.ok(&["save", "-o", bundle.to_str().unwrap(), "example.com/b:1"]);
    let load = |store: &Sealer| {
        let out = store.run(&["load", "-i", bundle.to_str().unwrap()]);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let nginx = "docker.io/library/nginx:1.25";

    // Where that name holds a CloudImage, the carried image does not take it.
    let store = Sealer::new();
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("f"), "a\n").unwrap();
    std::fs::write(other.path().join("Kubefile"), "FROM scratch\nCOPY f f\n").unwrap();
    let a = store.build("example.com/a:1", other.path(), &[]);
    store.ok(&["tag", "example.com/a:1", nginx]);
    let said = load(&store);
    assert!(
        said.contains(&format!(
            "warning: {nginx} not tagged: a carried image may not take a CloudImage's name"
        )),
        "{said}"
    );
    assert_eq!(store.inspect(nginx)["digest"], a.as_str());
    assert_eq!(store.inspect(nginx)["cloudImage"], true);

    // Where it names another image (here a plain image manifest), it moves, and the
    // load says so.
    let store = Sealer::new();
    store.build("example.com/a:1", other.path(), &[]);
    let plain = store.inspect("example.com/a:1")["platforms"][0]["manifest"]
        .as_str()
        .unwrap()
        .to_string();
    store.ok(&["tag", &format!("example.com/a@{plain}"), nginx]);
    let said = load(&store);
    assert!(
        said.contains(&format!("warning: {nginx} now names"))
            && said.contains(&format!("no longer {plain}")),
        "{said}"
    );
}
