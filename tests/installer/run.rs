//! `sealer run` onto two test hosts with no route to any upstream: the image's files on
//! both, the registry on the master serving the carried images, both hosts' containerd
//! pointed at it, the launch command run on master0; a second run sends nothing.

use std::path::Path;
use std::process::Command;

use sealer_e2e::*;

pub(crate) fn sealer(root: &Path, args: &[&str]) -> String {
    let out = Command::new(binary("sealer"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env("HOME", root.parent().unwrap())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sealer {args:?} failed:\n{text}");
    text
}

pub(crate) fn sealer_fails(root: &Path, args: &[&str]) -> String {
    let out = Command::new(binary("sealer"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env("HOME", root.parent().unwrap())
        .output()
        .unwrap();
    assert!(!out.status.success(), "sealer {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The example CloudImage built into `store`, from a local upstream that then goes away.
fn build_example(store: &Path) {
    let up = example_upstream();
    let mut args = vec!["build", "-q", "-t", "example.com/shop:1.0"];
    let flags = upstream_flags(&up.host);
    args.extend(flags.iter().map(String::as_str));
    args.push(examples().to_str().unwrap());
    sealer(store, &args);
}

/// A Clusterfile for the example on `master` and `node` (registry over plain HTTP),
/// written into `dir`.
fn write_clusterfile(dir: &Path, master: &TestHost, node: &TestHost) -> std::path::PathBuf {
    let clusterfile = dir.join("Clusterfile");
    std::fs::write(
        &clusterfile,
        format!(
            "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata: {{name: shop}}\nspec:\n  \
             image: example.com/shop:1.0\n  cmd: [\"echo launched with $Mode > launched\"]\n  \
             env: [Mode=test]\n  ssh: {{pk: {key}}}\n  hosts:\n  \
             - {{ips: [{m}], roles: [master], ssh: {{port: {mp}}}}}\n  \
             - {{ips: [{n}], roles: [node], ssh: {{port: {np}}}}}\n  \
             registry: {{localRegistry: {{insecure: true}}}}\n",
            key = test_key().display(),
            m = master.ip,
            mp = master.port,
            n = node.ip,
            np = node.port,
        ),
    )
    .unwrap();
    clusterfile
}

/// The password of the HA cluster's registry.
const REGISTRY_PASSWORD: &str = "s3cret:with-colon";

/// The example on two masters (a TLS registry on each, `ha`, with a login) and a node,
/// with hooks and a Config document.
fn write_ha_clusterfile(
    dir: &Path,
    m1: &TestHost,
    m2: &TestHost,
    n1: &TestHost,
) -> std::path::PathBuf {
    let clusterfile = dir.join("Clusterfile");
    let host = |h: &TestHost, role: &str| {
        format!(
            "  - {{ips: [{}], roles: [{role}], ssh: {{port: {}}}}}\n",
            h.ip, h.port
        )
    };
    std::fs::write(
        &clusterfile,
        format!(
            "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata: {{name: shop}}\nspec:\n  \
             image: example.com/shop:1.0\n  cmd: [\"echo launched with $Mode > launched\"]\n  \
             env: [Mode=test]\n  ssh: {{pk: {key}}}\n  hosts:\n{m1}{m2}{n1}  \
             registry:\n    localRegistry: {{domain: sea.hub, port: 5000, ha: true, username: admin, password: \"{REGISTRY_PASSWORD}\"}}\n\
             ---\napiVersion: sealer.io/v1\nkind: Config\nmetadata: {{name: env}}\n\
             spec: {{path: etc/cluster.env, data: \"REPLICAS=3\\n\"}}\n\
             ---\napiVersion: sealer.io/v1\nkind: Plugin\nmetadata: {{name: before}}\n\
             spec: {{type: SHELL, action: pre-install, data: \"echo \\\"$Mode $(ls manifests 2>/dev/null | wc -l)\\\" > /var/lib/sealer/hook-pre-install\"}}\n\
             ---\napiVersion: sealer.io/v1\nkind: Plugin\nmetadata: {{name: nodes}}\n\
             spec: {{type: SHELL, action: post-init-host, scope: node, data: \"cat etc/cluster.env > /var/lib/sealer/hook-post-init\"}}\n\
             ---\napiVersion: sealer.io/v1\nkind: Plugin\nmetadata: {{name: tidy}}\n\
             spec: {{type: SHELL, action: pre-clean-host, data: \"rm -f /var/lib/sealer/hook-*\"}}\n",
            key = test_key().display(),
            m1 = host(m1, "master"),
            m2 = host(m2, "master"),
            n1 = host(n1, "node"),
        ),
    )
    .unwrap();
    clusterfile
}

/// A Clusterfile for the example (launch: `echo launched > launched`) on `hosts` with
/// their roles, and `extra` lines under `spec` (indented two spaces), written into `dir`.
pub(crate) fn write_cluster(
    dir: &Path,
    hosts: &[(&TestHost, &str)],
    extra: &str,
) -> std::path::PathBuf {
    let mut text = format!(
        "apiVersion: sealer.io/v2\nkind: Cluster\nmetadata: {{name: shop}}\nspec:\n  \
         image: example.com/shop:1.0\n  cmd: [\"echo launched > launched\"]\n  \
         ssh: {{pk: {}}}\n  hosts:\n",
        test_key().display()
    );
    for (h, role) in hosts {
        text.push_str(&format!(
            "  - {{ips: [{}], roles: [{role}], ssh: {{port: {}}}}}\n",
            h.ip, h.port
        ));
    }
    text.push_str(extra);
    let path = dir.join("Clusterfile");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts containerd on `host` (its state under /var/lib/sealer/ctd and /run/sealer/ctd)
/// and pulls `image` with the mirror configuration sealer wrote; returns `ctr images ls`.
fn containerd_pull(host: &TestHost, image: &str) -> String {
    require("containerd");
    require("ctr");
    host.ssh(&format!(
        "set -e\nif ! ctr --address /run/sealer/ctd/sock version > /dev/null 2>&1; then\n\
         mkdir -p /run/sealer/ctd\ncat > /run/sealer/ctd/config.toml <<EOF\n\
         version = 2\nroot = \"/var/lib/sealer/ctd\"\nstate = \"/run/sealer/ctd/state\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"/run/sealer/ctd/sock\"\n\
         [ttrpc]\n  address = \"/run/sealer/ctd/sock.ttrpc\"\n[debug]\n  address = \"/run/sealer/ctd/debug.sock\"\n\
         [metrics]\n  address = \"\"\nEOF\n\
         setsid containerd --config /run/sealer/ctd/config.toml > /run/sealer/ctd/log 2>&1 < /dev/null &\necho $! > /run/sealer/ctd/pid\n\
         for i in $(seq 100); do ctr --address /run/sealer/ctd/sock version > /dev/null 2>&1 && break; sleep 0.1; done\nfi\n\
         ctr --address /run/sealer/ctd/sock images pull --hosts-dir /etc/containerd/certs.d {image} > /dev/null\n\
         ctr --address /run/sealer/ctd/sock images ls -q",
    ))
}

fn stop_containerd(host: &TestHost) {
    host.ssh("kill $(cat /run/sealer/ctd/pid); sleep 0.5; umount -R /var/lib/sealer/ctd 2>/dev/null; rm -rf /var/lib/sealer/ctd /run/sealer/ctd");
}

/// What is left in the folders sealer writes on a host (names, one per line).
pub(crate) fn leftovers(host: &TestHost) -> String {
    host.ssh("ls -A /var/lib/sealer /etc/containerd /etc/containers /run/sealer /root/.docker | grep -v '^/' | grep -v '^$' || true")
        .trim()
        .to_string()
}

/// Whether process `pid` runs (the hosts share the machine's process table).
fn alive(host: &TestHost, pid: &str) -> bool {
    host.ssh(&format!(
        "kill -0 {} 2>/dev/null && echo alive || echo gone",
        pid.trim()
    ))
    .trim()
        == "alive"
}

/// The status of `GET https://sea.hub:5000/v2/` from `host`, trusting the cluster's CA,
/// with the registry's login (`-u USER:PASSWORD`) or none (`""`).
fn tls_v2_status(host: &TestHost, login: &str) -> String {
    host.ssh(&format!("curl -sS --cacert /var/lib/sealer/cluster/pki/ca.crt {login} https://sea.hub:5000/v2/ -o /dev/null -w '%{{http_code}}'"))
}

fn blobs_on(host: &TestHost) -> usize {
    host.ssh("ls /var/lib/sealer/cluster/blobs/sha256 2>/dev/null | wc -l")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sealer_run_puts_the_image_on_two_hosts_and_a_rerun_sends_nothing() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    build_example(&store);
    let master = TestHost::start();
    let node = TestHost::start();
    let clusterfile = write_clusterfile(work.path(), &master, &node);
    // The node had a mirror configuration of its own.
    node.ssh("mkdir -p /etc/containerd/certs.d/docker.io && echo '# theirs' > /etc/containerd/certs.d/docker.io/hosts.toml",
    );
    let out = sealer(&store, &["run", "-q", "-f", clusterfile.to_str().unwrap()]);
    assert!(
        out.contains("on 2 host(s)") && out.contains("launched"),
        "{out}"
    );

    for host in [&master, &node] {
        // The image's files, the registry's name, the runtime's mirror.
        let files = host.ssh("ls /var/lib/sealer/data/shop/rootfs/manifests");
        assert!(files.contains("app.yaml"), "{files}");
        let hosts = host.ssh("grep sea.hub /etc/hosts");
        assert!(
            hosts.starts_with(&format!("{} sea.hub", master.ip)),
            "{hosts}"
        );
        let toml = host.ssh("cat /etc/containerd/certs.d/docker.io/hosts.toml");
        assert!(toml.contains("http://sea.hub:5000"), "{toml}");
    }
    assert_eq!(
        master
            .ssh("cat /var/lib/sealer/data/shop/rootfs/launched")
            .trim(),
        "launched with test"
    );
    // Only on master0.
    assert!(
        node.ssh("ls /var/lib/sealer/data/shop/rootfs")
            .lines()
            .all(|l| l != "launched")
    );
    // The registry's store took the image's layers from the blobs sent to the master (the
    // same files, hard-linked), not from a second copy.
    let shared = master.ssh(
        "n=0; for f in /var/lib/sealer/cluster/blobs/sha256/*; do h=$(basename $f); \
         r=/var/lib/sealer/cluster/registry/blobs/sha256/$(echo $h | cut -c1-2)/$h; \
         if [ -e $r ]; then [ $f -ef $r ] || echo copied $h; n=$((n+1)); fi; done; echo shared $n",
    );
    assert!(!shared.contains("copied"), "{shared}");
    assert!(!shared.contains("shared 0"), "{shared}");

    // The registry on the master serves the carried images by their names.
    let resp = client()
        .get(format!("http://{}:5000/v2/library/nginx/manifests/1.25?ns=docker.io", master.ip))
        .header("accept", "application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,application/vnd.docker.distribution.manifest.v2+json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Nobody on the network writes to it: no push, no tag over a carried image, no
    // delete, no metrics (it has no login to keep them to).
    let base = format!("http://{}:5000", master.ip);
    let nginx = format!("{base}/v2/library/nginx/manifests/1.25?ns=docker.io");
    let attempts = [
        client().post(format!("{base}/v2/library/app/blobs/uploads/")),
        client()
            .put(format!("{base}/v2/ghcr.io/x/manifests/1"))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body("{}"),
        client().delete(&nginx),
    ];
    for attempt in attempts {
        let resp = attempt.send().await.unwrap();
        assert_eq!(resp.status(), 405, "{}", resp.url());
    }
    let resp = client().get(&nginx).send().await.unwrap();
    assert_eq!(resp.status(), 200, "still served");
    let resp = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // containerd on the node pulls a carried image through the cluster's registry, with
    // no route to docker.io.
    let pulled = containerd_pull(&node, "docker.io/library/nginx:1.25");
    assert!(pulled.contains("docker.io/library/nginx:1.25"), "{pulled}");
    let log = master.ssh("cat /var/log/sealer/registry.log");
    assert!(
        log.lines().any(
            |l| l.contains("/v2/library/nginx/manifests/1.25?ns=docker.io")
                && l.contains("status=200")
        ),
        "the pull went through the cluster registry:\n{log}"
    );

    // Nothing changed: nothing is sent, nothing launched again.
    let again = sealer(&store, &["run", "-q", "-f", clusterfile.to_str().unwrap()]);
    assert!(
        again.contains("0 blob(s) sent (0 B)") && !again.contains("launched"),
        "{again}"
    );

    // delete --all: hosts as they were. (The test's own containerd goes first.)
    stop_containerd(&node);
    let registry_pid = master.ssh("cat /run/sealer/registry.pid");
    let out = sealer(&store, &["delete", "--all", "--cluster", "shop"]);
    assert!(out.contains("shop removed from 2 host(s)"), "{out}");
    for host in [&master, &node] {
        assert_eq!(
            leftovers(host),
            "certs.d".repeat(usize::from(host.ip == node.ip)),
            "{} {}",
            host.ip,
            host.ssh("find /etc/containerd /etc/containers")
        );
        assert!(!host.ssh("cat /etc/hosts").contains("sea.hub"));
    }
    assert_eq!(
        node.ssh("cat /etc/containerd/certs.d/docker.io/hosts.toml")
            .trim(),
        "# theirs"
    );
    assert_eq!(
        node.ssh("ls -A /etc/containerd/certs.d").trim(),
        "docker.io"
    );
    assert!(!alive(&master, &registry_pid), "the registry was stopped");
    assert!(!work.path().join(".sealer/shop").exists());
}

/// Two masters with a TLS registry each (`ha`), a node, hooks and a Config; containerd
/// pulls over TLS and keeps pulling with the first registry down; `scale-up` adds a
/// node and `delete -n` takes it off again; `delete --all` leaves nothing behind.
#[test]
fn ha_tls_registries_hooks_scale_up_and_delete_of_a_node() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    build_example(&store);
    let (m1, m2, n1) = (TestHost::start(), TestHost::start(), TestHost::start());
    let clusterfile = write_ha_clusterfile(work.path(), &m1, &m2, &n1);
    let file = clusterfile.to_str().unwrap();

    // apply shows the plan, then carries it out.
    let plan = sealer(&store, &["apply", "--dry-run", "-f", file]);
    assert!(
        plan.contains("add:") && plan.contains(&n1.ip.to_string()),
        "{plan}"
    );
    assert!(
        !work.path().join(".sealer/shop/Clusterfile").exists(),
        "a dry run changes nothing"
    );
    let out = sealer(&store, &["apply", "-q", "-f", file]);
    assert!(
        out.contains("on 3 host(s)") && out.contains("launched"),
        "{out}"
    );

    // Hooks: pre-install on master0 before the files were laid out; post-init-host on
    // the node only, after the Config document was written into the files.
    assert_eq!(
        m1.ssh("cat /var/lib/sealer/hook-pre-install").trim(),
        "test 0"
    );
    assert!(
        m2.ssh("ls /var/lib/sealer/hook-pre-install 2>&1 || true")
            .contains("No such file"),
        "pre-install runs on master0 only"
    );
    assert_eq!(
        n1.ssh("cat /var/lib/sealer/hook-post-init").trim(),
        "REPLICAS=3"
    );
    assert!(
        m1.ssh("ls /var/lib/sealer")
            .lines()
            .all(|l| l != "hook-post-init")
    );

    // Each master serves over TLS under its own name; each host trusts the CA.
    for (host, near) in [(&m1, &m1), (&m2, &m2), (&n1, &m1)] {
        let line = host.ssh("grep sea.hub /etc/hosts");
        assert!(line.starts_with(&format!("{} sea.hub", near.ip)), "{line}");
        // The registry wants its login, and the host has it.
        assert_eq!(tls_v2_status(host, ""), "401");
        assert_eq!(tls_v2_status(host, "-u admin:wrong"), "401");
        let login = format!("-u 'admin:{REGISTRY_PASSWORD}'");
        assert_eq!(tls_v2_status(host, &login), "200");
        // Read-only even for the login; metrics only with it.
        let push = host.ssh(&format!("curl -sS --cacert /var/lib/sealer/cluster/pki/ca.crt {login} -X POST https://sea.hub:5000/v2/library/app/blobs/uploads/ -o /dev/null -w '%{{http_code}}'"));
        assert_eq!(push, "405");
        let metrics = |login: &str| {
            host.ssh(&format!("curl -sS --cacert /var/lib/sealer/cluster/pki/ca.crt {login} https://sea.hub:5000/metrics -o /dev/null -w '%{{http_code}}'"))
        };
        assert_eq!(metrics(""), "401");
        assert_eq!(metrics(&login), "200");
        assert_eq!(
            host.ssh("stat -c %a /var/lib/sealer/cluster/pki/login")
                .trim(),
            "600"
        );
    }
    let toml = n1.ssh("cat /etc/containerd/certs.d/docker.io/hosts.toml");
    assert!(
        toml.contains("https://sea.hub:5000") && toml.contains(&format!("https://{}:5000", m2.ip)),
        "{toml}"
    );
    assert!(
        toml.contains("ca = \"/var/lib/sealer/cluster/pki/ca.crt\""),
        "{toml}"
    );
    // The login: a header for containerd (the file only root reads), auths for docker
    // and podman.
    use base64::Engine;
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{REGISTRY_PASSWORD}"));
    assert!(
        toml.contains(&format!("Authorization = [\"Basic {basic}\"]")),
        "{toml}"
    );
    assert_eq!(
        n1.ssh("stat -c %a /etc/containerd/certs.d/docker.io/hosts.toml")
            .trim(),
        "600"
    );
    // The registry's htpasswd here is for this user only, like the CA's key.
    use std::os::unix::fs::PermissionsExt;
    let htpasswd = std::fs::metadata(work.path().join(".sealer/shop/pki/htpasswd")).unwrap();
    assert_eq!(htpasswd.permissions().mode() & 0o777, 0o600);
    let auths: serde_json::Value =
        serde_json::from_str(&n1.ssh("cat /root/.docker/config.json")).unwrap();
    assert_eq!(auths["auths"]["sea.hub:5000"]["auth"], basic.as_str());
    assert_eq!(
        auths["auths"][format!("{}:5000", m2.ip)]["auth"],
        basic.as_str()
    );
    let podman =
        n1.ssh("cat /etc/containers/registries.conf.d/sealer.conf; ls /etc/containers/certs.d");
    assert!(
        podman.contains("location = \"sea.hub:5000/docker.io\"")
            && podman.contains(&format!("{}:5000", m2.ip)),
        "{podman}"
    );

    // containerd on the node pulls through the first registry, then through the second
    // while the first is down.
    let pulled = containerd_pull(&n1, "docker.io/library/nginx:1.25");
    assert!(pulled.contains("docker.io/library/nginx:1.25"), "{pulled}");
    m1.ssh("kill $(cat /run/sealer/registry.pid)");
    let pulled = containerd_pull(&n1, "docker.io/library/busybox:1.36");
    assert!(
        pulled.contains("docker.io/library/busybox:1.36"),
        "{pulled}"
    );
    let log = m2.ssh("cat /var/log/sealer/registry.log");
    assert!(
        log.lines().any(
            |l| l.contains("/v2/library/busybox/manifests/1.36?ns=docker.io")
                && l.contains("status=200")
        ),
        "the second registry served the pull:\n{log}"
    );
    stop_containerd(&n1);

    // podman on the node reads the drop-in and certs.d sealer wrote: over TLS, to the
    // second registry while the first is still down.
    require("podman");
    let pulled = n1.ssh(
        "set -e\necho '{\"default\":[{\"type\":\"insecureAcceptAnything\"}]}' > /run/sealer/policy.json\n\
         podman --root /var/lib/sealer/podman --runroot /run/sealer/podman --storage-driver vfs \
         pull --signature-policy /run/sealer/policy.json --quiet docker.io/library/httpd:2.4.58 > /dev/null\n\
         podman --root /var/lib/sealer/podman --runroot /run/sealer/podman --storage-driver vfs images --format '{{.Repository}}:{{.Tag}}'\n\
         podman --root /var/lib/sealer/podman --runroot /run/sealer/podman --storage-driver vfs rmi -a -f > /dev/null 2>&1 || true\n\
         umount -R /var/lib/sealer/podman 2>/dev/null || true; rm -rf /var/lib/sealer/podman /run/sealer/podman /run/sealer/policy.json",
    );
    assert!(
        pulled.contains("docker.io/library/httpd:2.4.58"),
        "{pulled}"
    );
    let log = m2.ssh("cat /var/log/sealer/registry.log");
    assert!(
        log.lines().any(
            |l| l.contains("/v2/docker.io/library/httpd/manifests/2.4.58")
                && l.contains("status=200")
        ),
        "podman pulled through the second registry by its path-prefixed name:\n{log}"
    );

    // A re-run brings the stopped registry back and sends nothing.
    let again = sealer(&store, &["run", "-q", "-f", file]);
    assert!(
        again.contains("0 blob(s) sent (0 B)") && !again.contains("launched"),
        "{again}"
    );
    let v2 = tls_v2_status(&m1, &format!("-u 'admin:{REGISTRY_PASSWORD}'"));
    assert_eq!(v2, "200");

    // scale-up: the new node gets everything, the others nothing.
    let n2 = TestHost::start();
    let state = work.path().join(".sealer/shop/Clusterfile");
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("Mode=test"));
    let per_host = blobs_on(&n1);
    let out = sealer(
        &store,
        &[
            "scale-up",
            "-q",
            "--cluster",
            "shop",
            "-n",
            &n2.ip.to_string(),
            "--port",
            &n2.port.to_string(),
        ],
    );
    assert!(
        out.contains(&format!(" {per_host} blob(s) sent")),
        "only the new node was sent anything: {out}"
    );
    assert_eq!(
        n2.ssh("cat /var/lib/sealer/hook-post-init").trim(),
        "REPLICAS=3"
    );
    assert!(
        n2.ssh("cat /etc/containerd/certs.d/docker.io/hosts.toml")
            .contains("https://sea.hub:5000")
    );
    assert!(
        std::fs::read_to_string(&state)
            .unwrap()
            .contains(&n2.ip.to_string())
    );

    // delete -n: the node is as it was, the others keep running.
    let out = sealer(
        &store,
        &[
            "delete",
            "-q",
            "--cluster",
            "shop",
            "-n",
            &n2.ip.to_string(),
        ],
    );
    assert!(out.contains("1 host(s) removed from shop"), "{out}");
    assert_eq!(leftovers(&n2), "");
    assert!(!n2.ssh("cat /etc/hosts").contains("sea.hub"));
    assert!(
        !std::fs::read_to_string(&state)
            .unwrap()
            .contains(&n2.ip.to_string())
    );
    assert!(
        n1.ssh("ls /var/lib/sealer/data/shop/rootfs")
            .contains("manifests")
    );
    let err = sealer_fails(
        &store,
        &[
            "delete",
            "-q",
            "--cluster",
            "shop",
            "-m",
            &m1.ip.to_string(),
        ],
    );
    assert!(err.contains("master0"), "{err}");

    // delete --all: nothing left on any host, no registry running.
    let pids: Vec<String> = [&m1, &m2]
        .iter()
        .map(|h| h.ssh("cat /run/sealer/registry.pid").trim().to_string())
        .collect();
    let out = sealer(&store, &["delete", "--all", "--cluster", "shop"]);
    assert!(out.contains("shop removed from 3 host(s)"), "{out}");
    for host in [&m1, &m2, &n1] {
        assert_eq!(leftovers(host), "", "{}", host.ip);
        assert!(!host.ssh("cat /etc/hosts").contains("sea.hub"));
    }
    for pid in pids {
        assert!(!alive(&m1, &pid), "registry {pid} was stopped");
    }
}

#[test]
fn a_host_lost_mid_run_is_named_and_a_rerun_finishes_without_resending() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    build_example(&store);
    let master = TestHost::start();
    let mut node = TestHost::start();
    let clusterfile = write_clusterfile(work.path(), &master, &node);

    // The node goes away once sealer is sending it files (its second command).
    let child = Command::new(binary("sealer"))
        .arg("--root")
        .arg(&store)
        .args(["run", "-q", "-f"])
        .arg(&clusterfile)
        .env("HOME", work.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while node.logins() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "sealer never logged in"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    node.stop();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{}:", node.ip)) && err.contains("run again"),
        "{err}"
    );
    assert!(
        !err.contains(&format!("{}:", master.ip)),
        "only the lost host is named: {err}"
    );

    let master_had = blobs_on(&master);

    // Back (its disk lost): a re-run finishes, and what the master got is not sent again.
    node.restart();
    let again = sealer(&store, &["run", "-q", "-f", clusterfile.to_str().unwrap()]);
    let per_host = blobs_on(&master);
    assert_eq!(blobs_on(&node), per_host);
    // (Plus the registry's content: one delta bundle, to the master.)
    let expected = 2 * per_host - master_had + 1;
    assert!(
        again.contains(&format!(" {expected} blob(s) sent")),
        "{per_host} per host, the master had {master_had}: {again}"
    );
    let files = node.ssh("ls /var/lib/sealer/data/shop/rootfs/manifests");
    assert!(files.contains("app.yaml"), "{files}");
    assert_eq!(
        master
            .ssh("cat /var/lib/sealer/data/shop/rootfs/launched")
            .trim(),
        "launched with test"
    );
}

/// `externalRegistry`: a registry the site already has (Debian's `docker-registry` over
/// TLS with a login, as distribution or Harbor would be): `sealer run` pushes the image's
/// container images to it under path-prefixed names and points the hosts at it with its
/// CA and login; no registry runs on the hosts; a re-run pushes nothing; a wrong
/// password is a clear error.
#[test]
fn an_external_registry_gets_the_images_and_the_hosts_pull_through_it() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    build_example(&store);

    // The site's registry: TLS from its own CA, bcrypt logins.
    // It listens on the control machine's address, which the hosts reach.
    let site_ip = network().control_ip();
    let pki = work.path().join("site-pki");
    pki_for(&pki, "site.test", &site_ip.to_string());
    let htpasswd = work.path().join("site-htpasswd");
    run(Command::new(require("htpasswd")).args([
        "-Bbc",
        htpasswd.to_str().unwrap(),
        "deployer",
        "site-pass",
    ]));
    let site = DockerRegistry::start(UpstreamOptions {
        tls: Some((pki.join("tls.crt"), pki.join("tls.key"))),
        htpasswd: Some(htpasswd),
        ip: Some(site_ip),
        ..UpstreamOptions::default()
    });
    let port = site.host.rsplit_once(':').unwrap().1;

    let (master, node) = (TestHost::start(), TestHost::start());
    let write = |password: &str| {
        write_cluster(
            work.path(),
            &[(&master, "master"), (&node, "node")],
            &format!(
                "  registry:\n    externalRegistry: {{domain: {site_ip}, port: {port}, \
                 username: deployer, password: {password}, ca: {ca}}}\n",
                ca = pki.join("ca.crt").display(),
            ),
        )
    };

    // A wrong password: the run stops, naming the registry, before any host is wired.
    let clusterfile = write("wrong");
    let file = clusterfile.to_str().unwrap();
    let err = sealer_fails(&store, &["run", "-q", "-f", file]);
    assert!(
        err.contains(&format!("external registry {site_ip}:{port}")) && err.contains("401"),
        "{err}"
    );
    assert!(!node.ssh("ls /etc/containerd").contains("certs.d"));

    write("site-pass");
    let out = sealer(&store, &["run", "-q", "-f", file]);
    assert!(out.contains("on 2 host(s)"), "{out}");
    // The images are in the site's registry under their upstream's name.
    let repos = site
        .root
        .join("docker/registry/v2/repositories/docker.io/library");
    for name in ["nginx", "busybox", "httpd"] {
        assert!(repos.join(name).is_dir(), "{name} was pushed");
    }
    // No registry on the hosts, no sea.hub; the site's CA and the login on each.
    for host in [&master, &node] {
        assert!(!host.ssh("ls /run/sealer").contains("registry.pid"));
        assert!(!host.ssh("cat /etc/hosts").contains("sea.hub"));
        let toml = host.ssh("cat /etc/containerd/certs.d/docker.io/hosts.toml");
        assert!(
            toml.contains(&format!("[host.\"https://{site_ip}:{port}/v2/docker.io\"]"))
                && toml.contains("override_path = true")
                && toml.contains("ca = \"/var/lib/sealer/cluster/pki/ca.crt\""),
            "{toml}"
        );
    }

    // containerd on the node pulls through the site's registry, by the prefixed path.
    let pulled = containerd_pull(&node, "docker.io/library/nginx:1.25");
    assert!(pulled.contains("docker.io/library/nginx:1.25"), "{pulled}");
    let log = site.log_text();
    // (It answers 401 to anyone not signed in.)
    assert!(
        log.lines().any(
            |l| l.contains("uri=\"/v2/docker.io/library/nginx/manifests/1.25")
                && l.contains("containerd/")
                && l.contains("http.response.status=200")
        ),
        "the pull went to the site's registry, signed in:\n{log}"
    );
    stop_containerd(&node);

    // A re-run pushes nothing and sends nothing.
    let puts = |log: &str| {
        log.lines()
            .filter(|l| l.contains("response completed") && l.contains("method=PUT"))
            .count()
    };
    let before = puts(&site.log_text());
    let again = sealer(&store, &["run", "-q", "-f", file]);
    assert!(again.contains("0 blob(s) sent (0 B)"), "{again}");
    assert_eq!(puts(&site.log_text()), before, "nothing pushed again");

    let out = sealer(&store, &["delete", "--all", "--cluster", "shop"]);
    assert!(out.contains("shop removed from 2 host(s)"), "{out}");
    for host in [&master, &node] {
        assert_eq!(leftovers(host), "", "{}", host.ip);
    }
}

/// `containerRuntime: docker`: the host's own `daemon.json` gets the cluster's registry
/// merged in (its other settings kept), its CA in `/etc/docker/certs.d`, and dockerd on
/// the host pulls a carried image through the registry over TLS with no route to Docker
/// Hub; `delete --all` gives the host its `daemon.json` back.
#[test]
fn docker_on_a_host_pulls_through_the_cluster_registry() {
    require("dockerd");
    require("docker");
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    build_example(&store);
    let host = TestHost::start();
    // The host's docker settings, as an operator left them (private folders, no bridge).
    let theirs = "{\n  \"data-root\": \"/var/lib/sealer/docker\",\n  \"exec-root\": \"/run/sealer/docker\",\n  \
                  \"pidfile\": \"/run/sealer/docker.pid\",\n  \"hosts\": [\"unix:///run/sealer/docker.sock\"],\n  \
                  \"storage-driver\": \"vfs\",\n  \"iptables\": false,\n  \"ip6tables\": false,\n  \
                  \"ip-masq\": false,\n  \"bridge\": \"none\"\n}\n";
    host.ssh(&format!(
        "cat > /etc/docker/daemon.json <<'EOF'\n{theirs}EOF"
    ));
    let clusterfile = write_cluster(
        work.path(),
        &[(&host, "master")],
        "  containerRuntime: {type: docker}\n",
    );
    let file = clusterfile.to_str().unwrap();
    let out = sealer(&store, &["run", "-q", "-f", file]);
    assert!(out.contains("on 1 host(s)"), "{out}");

    let daemon: serde_json::Value =
        serde_json::from_str(&host.ssh("cat /etc/docker/daemon.json")).unwrap();
    assert_eq!(daemon["registry-mirrors"][0], "https://sea.hub:5000");
    assert_eq!(daemon["data-root"], "/var/lib/sealer/docker", "theirs kept");
    assert!(
        host.ssh("cat /etc/docker/certs.d/sea.hub:5000/ca.crt")
            .contains("BEGIN CERTIFICATE")
    );

    // dockerd reads what sealer wrote, and pulls through the registry.
    let docker = "docker -H unix:///run/sealer/docker.sock";
    let pulled = host.ssh(&format!(
        "set -e\nsetsid dockerd --config-file /etc/docker/daemon.json > /run/sealer/dockerd.log 2>&1 < /dev/null &\n\
         for i in $(seq 300); do {docker} version > /dev/null 2>&1 && break; sleep 0.2; done\n\
         {docker} pull -q docker.io/library/nginx:1.25 > /dev/null\n\
         {docker} images --format '{{{{.Repository}}}}:{{{{.Tag}}}}'"
    ));
    assert!(pulled.contains("nginx:1.25"), "{pulled}");
    let log = host.ssh("cat /var/log/sealer/registry.log");
    assert!(
        log.lines()
            .any(|l| l.contains("/v2/library/nginx/manifests/1.25")
                && l.contains("status=200")
                && l.contains("docker/")),
        "dockerd pulled through the cluster registry:\n{log}"
    );
    host.ssh(&format!(
        "{docker} rmi -f docker.io/library/nginx:1.25 > /dev/null 2>&1 || true\n\
         kill $(cat /run/sealer/docker.pid); for i in $(seq 100); do [ -e /run/sealer/docker.pid ] || break; sleep 0.2; done\n\
         umount -R /var/lib/sealer/docker 2>/dev/null || true; rm -rf /var/lib/sealer/docker /run/sealer/docker /run/sealer/dockerd.log\n\
         rm -f /etc/docker/key.json # dockerd's own"
    ));

    let out = sealer(&store, &["delete", "--all", "--cluster", "shop"]);
    assert!(out.contains("shop removed from 1 host(s)"), "{out}");
    assert_eq!(host.ssh("cat /etc/docker/daemon.json"), theirs);
    assert_eq!(host.ssh("ls -A /etc/docker").trim(), "daemon.json");
}

/// The JSON lines `sealer run --json` printed, and its summary (the last).
fn json_run(store: &Path, file: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let out = sealer(store, &["run", "--json", "-f", file]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = lines.last().cloned().unwrap();
    assert_eq!(summary["event"], "summary", "{out}");
    (lines, summary)
}

/// `sealer run` on four hosts, two of them registry hosts: every blob (binaries, file
/// layers, the registry's content) leaves this machine once, each host is fed by the one
/// before it, the progress names who fed whom, the nodes spread across the registries,
/// and nothing is left listening but sshd and the registries.
#[test]
fn a_run_relays_from_host_to_host_and_leaves_this_machine_once() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    build_example(&store);
    let hosts: Vec<TestHost> = (0..4).map(|_| TestHost::start()).collect();
    let clusterfile = write_cluster(
        work.path(),
        &[
            (&hosts[0], "master"),
            (&hosts[1], "master"),
            (&hosts[2], "node"),
            (&hosts[3], "node"),
        ],
        "  registry:\n    localRegistry: {domain: sea.hub, port: 5000, ha: true}\n",
    );
    let file = clusterfile.to_str().unwrap();
    let (lines, summary) = json_run(&store, file);

    // Each blob left once: what this machine sent is what a registry host received.
    let per_host = &summary["per_host"];
    let received = |h: &TestHost| per_host[h.ip.to_string()]["bytes"].as_u64().unwrap();
    let out = summary["bytes_from_control"].as_u64().unwrap();
    assert_eq!(out, received(&hosts[0]), "{summary}");
    assert_eq!(received(&hosts[0]), received(&hosts[1]), "{summary}");
    assert!(
        received(&hosts[2]) < out,
        "nodes get no registry content: {summary}"
    );
    assert_eq!(
        summary["bytes_sent"].as_u64().unwrap(),
        (0..4).map(|i| received(&hosts[i])).sum::<u64>()
    );
    // A chain: each host fed by the one before it; the progress says so.
    for i in 1..4 {
        assert_eq!(
            per_host[hosts[i].ip.to_string()]["from"],
            hosts[i - 1].ip.to_string()
        );
        let label = format!("{} <- {}", hosts[i].ip, hosts[i - 1].ip);
        assert!(
            lines
                .iter()
                .any(|l| l["event"] == "done" && l["task"] == label.as_str()),
            "no progress for {label}"
        );
    }
    // The nodes take the registry hosts in turn.
    for (node, near) in [(&hosts[2], &hosts[0]), (&hosts[3], &hosts[1])] {
        let line = node.ssh("grep sea.hub /etc/hosts");
        assert!(line.starts_with(&format!("{} sea.hub", near.ip)), "{line}");
    }
    for h in &hosts {
        let listening = h.net.listening();
        assert!(
            listening.contains(":22 ")
                && listening
                    .lines()
                    .all(|l| l.contains(":22 ") || l.contains(":5000 ")),
            "{}: {listening}",
            h.ip
        );
    }

    // Nothing changed: nothing is sent, from here or between hosts.
    let (_, again) = json_run(&store, file);
    assert_eq!(again["bytes_from_control"], 0, "{again}");
    assert_eq!(again["bytes_sent"], 0, "{again}");
}
