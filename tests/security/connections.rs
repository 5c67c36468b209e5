//! Connections that send nothing, idle ones and ones that stop reading cannot hold the
//! registry: each is closed in bounded time, and a flood of silent sockets cannot keep
//! real clients out even when file descriptors run short.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sealer_e2e::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long until the server closes `tcp` (reads until EOF or an error), at most
/// `give_up`; `None` if it is still open then.
async fn closed_within(tcp: &mut TcpStream, give_up: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = give_up.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Raises this test process's open-file limit to its hard limit (it holds 1100 sockets).
fn raise_own_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain rlimit calls on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= 4096,
        "the test needs 4096 open files: {lim:?}"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_from_accept() {
    let reg = Registry::start_with(&["--header-timeout", "2s"]);
    // Nothing at all: the HTTP/1-or-2 detection must not wait for ever.
    let mut silent = TcpStream::connect(&reg.host).await.unwrap();
    let after = closed_within(&mut silent, Duration::from_secs(15)).await;
    let after = after.expect("a silent connection is still open after 15 s");
    assert!(after >= Duration::from_secs(1), "closed after {after:?}");

    // The HTTP/2 preface and settings, then no request.
    let mut h2 = TcpStream::connect(&reg.host).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let after = closed_within(&mut h2, Duration::from_secs(15)).await;
    assert!(
        after.is_some(),
        "an HTTP/2 connection without a request stays open"
    );
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_though_it_answers_pings() {
    let reg = Registry::start_with(&[
        "--idle-timeout",
        "2s",
        "--log-level",
        "info,sealer_registry::listen=debug",
    ]);
    // A client that pings every 500 ms while idle, as gRPC-style clients do.
    let c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .http2_keep_alive_interval(Duration::from_millis(500))
        .http2_keep_alive_while_idle(true)
        .build()
        .unwrap();
    let resp = c.get(reg.url("/v2/")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    reg.log_where("the idle connection closed", |l| l.contains("idle: closed"));
    // Told by a GOAWAY, the client simply connects again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.get(reg.url("/v2/")).send().await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_download_whose_client_stops_reading_is_closed() {
    let reg = Registry::start_with(&["--write-timeout", "2s"]);
    let blob = random_bytes(64 * 1024 * 1024);
    let digest = push_blob(&reg, "big/blob", &blob).await;
    let mut tcp = TcpStream::connect(&reg.host).await.unwrap();
    tcp.write_all(
        format!("GET /v2/big/blob/blobs/{digest} HTTP/1.1\r\nHost: r\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    // Read nothing while the server's writes stall, then drain what was sent.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 1024 * 1024];
    let drained = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the connection was never closed");
    assert!(
        received < blob.len(),
        "the server waited for the client: {received} bytes arrived"
    );
    // The registry goes on serving.
    assert_eq!(get(&reg, "/v2/").await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_sockets_cannot_keep_clients_out_when_files_run_short() {
    raise_own_nofile();
    let reg = Registry::start_with_nofile(&["--header-timeout", "60s"], 1024);
    let mut silent = Vec::with_capacity(1100);
    for i in 0..1100 {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&reg.host)).await {
            Ok(Ok(s)) => silent.push(s),
            other => {
                let log = reg.log_text();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!("connect {i}: {other:?}\n{tail:#?}");
            }
        }
    }
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(15), get(&reg, "/v2/"))
        .await
        .expect("/v2/ did not answer with 1100 silent sockets open");
    assert_eq!(resp.status(), StatusCode::OK);
    // And again: the registry is not stuck on a full file table.
    let resp = tokio::time::timeout(Duration::from_secs(15), get(&reg, "/v2/"))
        .await
        .expect("/v2/ did not answer a second time");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(30));
    drop(silent);
}
