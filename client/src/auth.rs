//! Registry authentication toward upstreams: `WWW-Authenticate` challenges, the bearer
//! token flow (distribution's token spec) and which token realms may be trusted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use url::{Host, Url};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
        scope: params.get("scope").cloned(),
    })
}

/// `key=value` or `key="quoted, value"` pairs separated by commas.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            continue;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_string();
        }
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
    out
}

/// Whether a token realm may receive the upstream's credentials: it must be on the
/// upstream's own registrable domain (`auth.docker.io` for `registry-1.docker.io`), or on
/// the very same host when that is an IP address or a single-label name.
pub fn realm_is_trusted(realm: &Url, endpoint: &Url) -> bool {
    // Credentials go to the realm: never over a weaker scheme than the upstream's.
    if realm.scheme() != endpoint.scheme() {
        return false;
    }
    let (Some(r), Some(e)) = (realm.host(), endpoint.host()) else {
        return false;
    };
    match (r, e) {
        (Host::Domain(r), Host::Domain(e)) => {
            let (r, e) = (r.to_ascii_lowercase(), e.to_ascii_lowercase());
            if r == e {
                return true;
            }
            match (psl::domain_str(&r), psl::domain_str(&e)) {
                (Some(rd), Some(ed)) => rd == ed,
                _ => false,
            }
        }
        (r, e) => r == e,
    }
}

/// The token endpoint's answer.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token and when to stop using it (a little before it expires; 60 s when the
    /// server does not say, as the token spec prescribes).
    pub fn into_token(self) -> Option<(String, Instant)> {
        let token = self.token.or(self.access_token)?;
        let lifetime = Duration::from_secs(self.expires_in.unwrap_or(60).max(1));
        let margin = (lifetime / 10).min(Duration::from_secs(10));
        Some((token, Instant::now() + lifetime - margin))
    }
}

/// Tokens by scope until they expire.
#[derive(Debug, Default)]
pub struct TokenCache {
    tokens: std::sync::Mutex<HashMap<String, (String, Instant)>>,
}

impl TokenCache {
    pub fn get(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().expect("token cache lock");
        tokens
            .get(scope)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }

    pub fn put(&self, scope: &str, token: String, until: Instant) {
        self.tokens
            .lock()
            .expect("token cache lock")
            .insert(scope.to_string(), (token, until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_and_basic_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        let odd = parse_challenge(r#"bearer realm=http://x/token, scope="a,b""#).unwrap();
        assert!(
            matches!(odd, Challenge::Bearer { ref realm, ref scope, .. } if realm == "http://x/token" && scope.as_deref() == Some("a,b"))
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(
            parse_challenge("Bearer service=\"x\""),
            None,
            "a realm is required"
        );
    }

    #[test]
    fn realms_must_be_on_the_upstreams_domain() {
        let u = |s: &str| Url::parse(s).unwrap();
        let hub = u("https://registry-1.docker.io");
        assert!(realm_is_trusted(&u("https://auth.docker.io/token"), &hub));
        assert!(!realm_is_trusted(&u("https://evil.example/token"), &hub));
        assert!(!realm_is_trusted(
            &u("https://docker.io.evil.example/token"),
            &hub
        ));
        // The password would cross the network in clear.
        assert!(!realm_is_trusted(&u("http://auth.docker.io/token"), &hub));
        let local = u("http://127.0.0.1:6000");
        assert!(realm_is_trusted(&u("http://127.0.0.1:7000/token"), &local));
        assert!(!realm_is_trusted(&u("http://127.0.0.2/token"), &local));
        assert!(realm_is_trusted(
            &u("http://localhost:1/t"),
            &u("http://localhost:2")
        ));
    }

    #[test]
    fn tokens_expire() {
        let cache = TokenCache::default();
        cache.put("s", "t".into(), Instant::now() + Duration::from_secs(60));
        assert_eq!(cache.get("s").as_deref(), Some("t"));
        cache.put("s", "old".into(), Instant::now() - Duration::from_secs(1));
        assert_eq!(cache.get("s"), None);
        let (t, until) = TokenResponse {
            token: None,
            access_token: Some("a".into()),
            expires_in: None,
        }
        .into_token()
        .unwrap();
        assert_eq!(t, "a");
        assert!(until > Instant::now() + Duration::from_secs(45));
    }
}
