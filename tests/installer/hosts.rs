//! Running commands on hosts over SSH: one reused connection per host, each host its
//! own files, keys and passwords, and errors that name the host and the cause.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sealer_e2e::*;
use sealer_installer::clusterfile::{Auth, Login};
use sealer_installer::hosts::ssh::{SshHost, SshOptions};
use sealer_installer::hosts::{Host, HostError, on_all};

fn options(dir: &std::path::Path) -> SshOptions {
    SshOptions {
        control_dir: dir.join("ssh"),
        known_hosts: dir.join("known_hosts"),
        connect_timeout: Duration::from_secs(5),
    }
}

fn root_login(host: &TestHost) -> Login {
    Login {
        user: "root".into(),
        port: host.port,
        auth: Auth::Key {
            path: test_key().to_path_buf(),
            passphrase: None,
        },
    }
}

/// Connects to each test host as root with the test key.
pub async fn connect_all(test_hosts: &[TestHost], state: &std::path::Path) -> Vec<Arc<dyn Host>> {
    let mut hosts: Vec<Arc<dyn Host>> = Vec::new();
    for h in test_hosts {
        let c = SshHost::connect(h.ip, &root_login(h), &options(state))
            .await
            .unwrap();
        hosts.push(Arc::new(c));
    }
    hosts
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_run_on_every_host_over_one_connection_each_in_its_own_files() {
    let test_hosts: Vec<TestHost> = (0..3).map(|_| TestHost::start()).collect();
    let state = tempfile::tempdir().unwrap();
    let hosts = connect_all(&test_hosts, state.path()).await;

    // Each host writes its address into its own /var/lib/sealer.
    let wrote = on_all(&hosts, 2, |h| async move {
        h.check(&format!("echo {} > /var/lib/sealer/who", h.ip()))
            .await
    })
    .await;
    assert!(wrote.iter().all(|(_, r)| r.is_ok()), "{wrote:?}");
    // Many commands, in parallel, over the same connections.
    for _ in 0..5 {
        let read = on_all(&hosts, 3, |h| async move {
            h.check("cat /var/lib/sealer/who").await.unwrap()
        })
        .await;
        for (ip, who) in read {
            assert_eq!(who.trim(), ip.to_string(), "each host sees its own file");
        }
    }
    assert!(
        !std::path::Path::new("/var/lib/sealer/who").exists(),
        "the test machine's own /var/lib/sealer is untouched"
    );
    for h in &test_hosts {
        assert_eq!(h.logins(), 1, "one login per host, reused:\n{}", h.log());
    }

    // Input reaches the command; a failure names the host, the command and stderr.
    let host = &hosts[0];
    let data = b"content sent over stdin\n".repeat(10_000);
    let out = host
        .run_with_input(
            "cat > /var/lib/sealer/in && sha256sum /var/lib/sealer/in",
            &data,
        )
        .await
        .unwrap();
    assert!(
        out.stdout
            .starts_with(sha256(&data).trim_start_matches("sha256:")),
        "{out:?}"
    );
    let err = host.check("echo broken >&2; exit 3").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("host {}", test_hosts[0].ip))
            && text.contains("exit 3")
            && text.contains("broken"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn passwords_work_and_wrong_secrets_or_dead_hosts_are_clear_errors() {
    password_user();
    let mut h = TestHost::start();
    let state = tempfile::tempdir().unwrap();
    let opts = options(state.path());
    let with_password = |password: &str| Login {
        user: HOST_PASSWORD_USER.into(),
        port: h.port,
        auth: Auth::Password(password.into()),
    };

    let host = SshHost::connect(h.ip, &with_password(HOST_PASSWORD), &opts)
        .await
        .unwrap();
    assert_eq!(
        host.check("id -un").await.unwrap().trim(),
        HOST_PASSWORD_USER
    );
    assert_eq!(
        host.check("id -un").await.unwrap().trim(),
        HOST_PASSWORD_USER
    );
    assert_eq!(h.logins(), 1, "{}", h.log());

    let wrong = SshHost::connect(h.ip, &with_password("not-the-password"), &opts)
        .await
        .err()
        .expect("a wrong password is refused");
    assert!(matches!(wrong, HostError::Auth { .. }), "{wrong}");
    let text = wrong.to_string();
    assert!(
        text.contains(&format!("host {}", h.ip)) && text.contains("login refused for sealer-test"),
        "{text}"
    );

    let missing = Login {
        user: "root".into(),
        port: h.port,
        auth: Auth::Key {
            path: state.path().join("no-such-key"),
            passphrase: None,
        },
    };
    let err = SshHost::connect(h.ip, &missing, &opts).await.err().unwrap();
    assert!(
        err.to_string().contains("no-such-key does not exist"),
        "{err}"
    );

    // A key the host does not accept.
    let other_key = state.path().join("other");
    run(std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other_key));
    let refused = Login {
        user: "root".into(),
        port: h.port,
        auth: Auth::Key {
            path: other_key,
            passphrase: None,
        },
    };
    let err = SshHost::connect(h.ip, &refused, &opts).await.err().unwrap();
    assert!(matches!(err, HostError::Auth { .. }), "{err}");

    // The host goes away: connecting again names it as unreachable, and a command on
    // the open connection fails instead of hanging.
    let ip: IpAddr = h.ip;
    h.stop();
    let err = SshHost::connect(ip, &root_login(&h), &opts)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, HostError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&format!("host {ip}")), "{err}");
    let err = host.check("true").await.unwrap_err();
    assert!(err.to_string().contains(&format!("host {ip}")), "{err}");
}
