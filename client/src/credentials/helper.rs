//! Docker credential helpers: `docker-credential-NAME get|store|erase` on PATH, speaking
//! JSON on stdin and stdout (`{"ServerURL","Username","Secret"}`). A helper is the
//! user's own program, named in their own config file; it is still bounded: an answer
//! within a minute (one may wait for a keyring to unlock) and of at most 64 KiB.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::Credentials;

const TIMEOUT: Duration = Duration::from_secs(60);
const MAX_ANSWER: u64 = 64 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    secret: String,
}

/// What the helper `name` holds for `server`; `None` when it holds nothing.
pub fn get(name: &str, server: &str) -> anyhow::Result<Option<Credentials>> {
    let (ok, answer) = call(name, "get", server.as_bytes())?;
    if !ok {
        if not_found(&answer) {
            return Ok(None);
        }
        bail!("docker-credential-{name} get failed: {}", answer.trim());
    }
    let entry: Entry = serde_json::from_str(&answer)
        .with_context(|| format!("docker-credential-{name} get gave no credentials JSON"))?;
    // Old helpers answer an unknown server with empty fields.
    if entry.username.is_empty() && entry.secret.is_empty() {
        return Ok(None);
    }
    if entry.username == "<token>" {
        bail!(
            "docker-credential-{name} holds an identity token for {server}, which sealer cannot \
             use: log in with a username and password"
        );
    }
    Ok(Some(Credentials {
        username: entry.username,
        password: entry.secret,
    }))
}

/// Gives the login for `server` to the helper `name`.
pub fn store(name: &str, server: &str, c: &Credentials) -> anyhow::Result<()> {
    let entry = Entry {
        server_url: server.to_string(),
        username: c.username.clone(),
        secret: c.password.clone(),
    };
    let (ok, answer) = call(name, "store", &serde_json::to_vec(&entry)?)?;
    if !ok {
        bail!("docker-credential-{name} store failed: {}", answer.trim());
    }
    Ok(())
}

/// Removes the login for `server` from the helper `name`; whether it held one.
pub fn erase(name: &str, server: &str) -> anyhow::Result<bool> {
    let (ok, answer) = call(name, "erase", server.as_bytes())?;
    if ok {
        Ok(true)
    } else if not_found(&answer) {
        Ok(false)
    } else {
        bail!("docker-credential-{name} erase failed: {}", answer.trim())
    }
}

fn not_found(answer: &str) -> bool {
    answer.contains("credentials not found")
}

/// Runs `docker-credential-NAME ACTION` with `input`; whether it succeeded, and what it
/// printed (helpers print their errors on stdout).
fn call(name: &str, action: &str, input: &[u8]) -> anyhow::Result<(bool, String)> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("{name:?} is not a credential helper name");
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "the docker config names the credential helper {name:?}, but {program} is not on PATH"
            ),
            _ => anyhow::anyhow!("cannot run {program}: {e}"),
        })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // Written and closed on its own thread: a helper that never reads cannot block us.
    std::thread::spawn(move || stdin.write_all(&input));
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut answer = Vec::new();
        stdout
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .map(|_| answer)
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{program} {action} gave no answer within {} s",
                TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let answer = reader.join().expect("reader thread")?;
    Ok((
        status.success(),
        String::from_utf8_lossy(&answer).into_owned(),
    ))
}
