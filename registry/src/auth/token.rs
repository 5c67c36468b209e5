//! The Docker token flow's bearer tokens: JWTs the registry issues at `/token` and checks
//! on every request, with the repository scopes granted (distribution's "token
//! authentication specification").

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::policy::Action;

const ISSUER: &str = "sealer-registry";

/// One requested scope: `repository:apps/web:pull,push`, `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    /// Parses `TYPE:NAME:ACTIONS`. The name sits between the first and last colon, so a
    /// type with a class (`repository(plugin)`) or a name with a port still parses.
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Scope {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// Every scope in the `scope` parameters: repeated (docker, podman) or
    /// space-separated in one (containerd's OAuth form). Malformed ones are ignored, as
    /// distribution's token servers do.
    pub fn parse_all<'a>(params: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        params
            .into_iter()
            .flat_map(str::split_whitespace)
            .filter_map(Scope::parse)
            .collect()
    }

    /// The repository actions asked for; `*` asks for all of them.
    pub fn repository_actions(&self) -> impl Iterator<Item = Action> + '_ {
        let all = self.actions.iter().any(|a| a == "*");
        Action::ALL
            .into_iter()
            .filter(move |a| all || self.actions.iter().any(|x| x == a.as_str()))
    }
}

/// One grant inside a token (the JWT `access` claim).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user; empty for an anonymous token.
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    pub access: Vec<Grant>,
}

/// Signs and checks tokens (HS256) with a key made at start, or read from a file that
/// several replicas share (`auth.token_key_file`), so a token from one is good at all.
/// Tokens live minutes and clients fetch new ones after a restart, so a key made at start
/// is never stored.
pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    service: String,
    pub ttl: Duration,
}

/// A shared token key: the file's content (surrounding whitespace trimmed), at least 32
/// bytes, e.g. `head -c 32 /dev/urandom | base64 > token.key`.
fn read_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read the token key {}", path.display()))?;
    let key = text.trim_ascii().to_vec();
    anyhow::ensure!(
        key.len() >= 32,
        "the token key {} is {} bytes; it needs at least 32 (e.g. head -c 32 /dev/urandom | base64)",
        path.display(),
        key.len()
    );
    Ok(key)
}

impl Signer {
    pub fn new(service: &str, ttl: Duration, key_file: Option<&Path>) -> anyhow::Result<Signer> {
        let key = match key_file {
            Some(path) => read_key(path)?,
            None => {
                let mut key = vec![0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                    .map_err(|_| anyhow::anyhow!("no randomness for the token key"))?;
                key
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[service]);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = 5;
        validation.validate_nbf = true;
        Ok(Signer {
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            validation,
            service: service.to_string(),
            ttl,
        })
    }

    pub fn issue(&self, user: Option<&str>, access: Vec<Grant>) -> anyhow::Result<(String, u64)> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            iss: ISSUER.to_string(),
            sub: user.unwrap_or("").to_string(),
            aud: self.service.clone(),
            exp: now + self.ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok((token, now))
    }

    /// The claims of a token this registry signed and that has not expired.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|t| t.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_as_clients_send_them() {
        let s = Scope::parse_all([
            "repository:apps/web:pull,push",
            "repository:a:pull repository(plugin):b/c:*",
            "registry:catalog:*",
            "garbage",
        ]);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "apps/web");
        assert_eq!(
            s[0].repository_actions().collect::<Vec<_>>(),
            [Action::Pull, Action::Push]
        );
        assert_eq!(s[2].kind, "repository(plugin)");
        assert_eq!(s[2].repository_actions().count(), 3);
        assert_eq!(s[3].kind, "registry");
        assert_eq!(s[3].name, "catalog");
    }

    #[test]
    fn tokens_verify_only_with_the_key_and_audience_that_made_them() {
        let signer = Signer::new("svc", Duration::from_secs(60), None).unwrap();
        let grant = Grant {
            kind: "repository".into(),
            name: "a/b".into(),
            actions: vec!["pull".into()],
        };
        let (token, _) = signer.issue(Some("alice"), vec![grant.clone()]).unwrap();
        let claims = signer.verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.access, [grant]);

        let other = Signer::new("svc", Duration::from_secs(60), None).unwrap();
        assert!(other.verify(&token).is_none(), "another key");
        let mut tampered = token.clone();
        tampered.insert(tampered.find('.').unwrap() + 2, 'x');
        assert!(signer.verify(&tampered).is_none(), "changed claims");
        let mut elsewhere = signer;
        elsewhere.validation.set_audience(&["other"]);
        assert!(elsewhere.verify(&token).is_none(), "another audience");

        let expired = Signer::new("svc", Duration::ZERO, None).unwrap();
        let (old, _) = expired.issue(None, vec![]).unwrap();
        let mut late = expired;
        late.validation.leeway = 0;
        std::thread::sleep(Duration::from_millis(1100));
        assert!(late.verify(&old).is_none(), "expired");
    }

    #[test]
    fn replicas_with_one_key_file_accept_each_others_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token.key");
        std::fs::write(&file, "c2VhbGVyIHJlcGxpY2FzIHNoYXJlIHRoaXMga2V5IQ==\n").unwrap();
        let a = Signer::new("svc", Duration::from_secs(60), Some(&file)).unwrap();
        let b = Signer::new("svc", Duration::from_secs(60), Some(&file)).unwrap();
        let (token, _) = a.issue(Some("alice"), vec![]).unwrap();
        assert_eq!(b.verify(&token).unwrap().sub, "alice");
        std::fs::write(&file, "short").unwrap();
        let err = Signer::new("svc", Duration::from_secs(60), Some(&file))
            .err()
            .unwrap();
        assert!(err.to_string().contains("at least 32"), "{err}");
    }
}
