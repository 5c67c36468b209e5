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
