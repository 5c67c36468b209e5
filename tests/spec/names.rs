//! Names and tags (spec "Definitions", "Pulling manifests"): any depth, NAME_INVALID,
//! the tag grammar, and errors for everything else.

use reqwest::StatusCode;
use sealer_e2e::*;

#[tokio::test]
async fn names_of_any_depth_work_everywhere() {
    let reg = Registry::in_process().await;
    let name = "a/b.c/d-e/f__g/h/i/j";
    let img = push_image(&reg, name, "v1", 1, 10).await;
    let resp = get(&reg, &format!("/v2/{name}/manifests/v1")).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = get(&reg, &format!("/v2/{name}/blobs/{}", sha256(&img.config))).await;
    assert_eq!(resp.bytes().await.unwrap().as_ref(), img.config.as_slice());
    let body: serde_json::Value = get(&reg, &format!("/v2/{name}/tags/list"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["name"], name);
}

#[tokio::test]
async fn bad_names_are_name_invalid_on_every_endpoint() {
    let reg = Registry::in_process().await;
    let long = format!("{}/x", "a".repeat(260));
    let digest = sha256(b"x");
    let c = client();
    for name in ["Upper/case", "a/-b", "a__/b", "x/_y", long.as_str()] {
        for (method, path) in [
            ("GET", format!("/v2/{name}/manifests/latest")),
            ("PUT", format!("/v2/{name}/manifests/latest")),
            ("GET", format!("/v2/{name}/blobs/{digest}")),
            ("POST", format!("/v2/{name}/blobs/uploads/")),
            ("GET", format!("/v2/{name}/tags/list")),
            ("GET", format!("/v2/{name}/referrers/{digest}")),
        ] {
            let resp = c
                .request(method.parse().unwrap(), reg.url(&path))
                .body("{}")
                .via(&reg)
                .await
                .unwrap();
            assert_error(resp, 400, "NAME_INVALID").await;
        }
    }
}

#[tokio::test]
async fn dot_dot_in_a_name_never_reaches_the_disk() {
    // `..` must not be normalised away by a client, so speak raw HTTP.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let reg = Registry::start();
    for path in [
        "/v2/a/../../etc/manifests/latest",
        "/v2/a/%2e%2e/b/manifests/latest",
        "/v2/../x/manifests/latest",
    ] {
        let mut s = tokio::net::TcpStream::connect(&reg.host).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{path}: {out}");
        assert!(out.contains("NAME_INVALID"), "{path}: {out}");
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let reg = Registry::in_process().await;
    let c = client();
    assert_error(get(&reg, "/v2/x/unknown/thing").await, 404, "UNSUPPORTED").await;
    let resp = c
        .post(reg.url("/v2/x/manifests/latest"))
        .via(&reg)
        .await
        .unwrap();
    assert_eq!(header(&resp, "allow"), "GET, HEAD, PUT, DELETE");
    assert_error(resp, 405, "UNSUPPORTED").await;
}
