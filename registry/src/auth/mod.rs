//! Who is calling and what they may do: users from an htpasswd file, a policy of grants
//! per repository pattern, and the bearer tokens of the Docker token flow.
//!
//! Independent of HTTP: the routes turn headers into [`Credentials`] and a [`Refusal`]
//! into a 401 challenge or a 403.

pub mod htpasswd;
pub mod policy;
pub mod token;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use dashmap::DashMap;
use tokio::sync::Semaphore;

use self::htpasswd::Htpasswd;
pub use self::policy::{Action, Actions, Policy, Principal};
use self::token::{Grant, Scope, Signer};

/// `[auth]` in the config file, or `--htpasswd`, `--policy`, `--anonymous-pull`.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub htpasswd: PathBuf,
    pub policy: Option<PathBuf>,
    pub anonymous_pull: bool,
    /// `/metrics` only for signed-in users.
    pub metrics_auth: bool,
    /// Challenge with `Bearer` and serve `/token` (the Docker token flow); otherwise
    /// challenge with `Basic`.
    pub token: bool,
    /// The `service` of challenges and the audience of tokens.
    pub service: String,
    /// Where clients fetch tokens; by default `/token` on the host they called.
    pub realm: Option<String>,
    pub token_ttl: Duration,
    /// The tokens' signing key, shared by replicas; made at start when `None`.
    pub token_key: Option<PathBuf>,
}

impl AuthSettings {
    pub fn new(htpasswd: PathBuf) -> AuthSettings {
        AuthSettings {
            htpasswd,
            policy: None,
            anonymous_pull: false,
            metrics_auth: false,
            token: true,
            service: "sealer-registry".into(),
            realm: None,
            token_ttl: Duration::from_secs(300),
            token_key: None,
        }
    }
}

/// What a request carried in `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// The grants of the bearer token it showed, if it showed one (what the token
    /// server gave for the scopes asked; the policy decides each request).
    token: Option<Vec<Grant>>,
}

/// Why a request may not go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Sign in, or fetch a token for `scope`, and try again (401).
    Unauthenticated {
        message: String,
        scope: Option<String>,
    },
    /// Signed in but not allowed (403 DENIED).
    Denied(String),
}

/// A token issued at `/token`.
pub struct Issued {
    pub token: String,
    pub issued_at: u64,
    pub expires_in: u64,
}

pub struct Auth {
    users: Htpasswd,
    policy: Policy,
    anonymous_rules: bool,
    signer: Option<Signer>,
    settings: AuthSettings,
    /// Password checks that passed, by a hash of user and password: bcrypt takes tens of
    /// milliseconds by design, and Basic clients send the password on every request.
    verified: DashMap<[u8; 32], Instant>,
    /// Bounds concurrent bcrypt checks so wrong passwords cannot take every core.
    hashing: Semaphore,
}

const VERIFIED_FOR: Duration = Duration::from_secs(300);
const VERIFIED_MAX: usize = 4096;

impl Auth {
    pub fn open(settings: AuthSettings) -> anyhow::Result<Auth> {
        let users = Htpasswd::load(&settings.htpasswd)?;
        if users.is_empty() {
            bail!(
                "the htpasswd file {} lists no user",
                settings.htpasswd.display()
            );
        }
        let mut policy = match &settings.policy {
            Some(path) => Policy::load(path)?,
            None => Policy::every_user_everything(),
        };
        if settings.anonymous_pull {
            policy = policy.with_anonymous_pull();
        }
        let anonymous_rules = policy.grants_anonymous();
        let signer = if settings.token {
            Some(
                Signer::new(
                    &settings.service,
                    settings.token_ttl,
                    settings.token_key.as_deref(),
                )
                .context("token key")?,
            )
        } else {
            None
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Auth {
            users,
            policy,
            anonymous_rules,
            signer,
            settings,
            verified: DashMap::new(),
            hashing: Semaphore::new(cores),
        })
    }

    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Who the credentials name.
    pub async fn authenticate(&self, credentials: Credentials) -> Result<Caller, Refusal> {
        match credentials {
            Credentials::None => Ok(Caller {
                principal: Principal::Anonymous,
                token: None,
            }),
            Credentials::Basic { user, password } => {
                if self.password_ok(&user, &password).await {
                    Ok(Caller {
                        principal: Principal::User(user),
                        token: None,
                    })
                } else {
                    Err(unauthenticated("invalid username or password", None))
                }
            }
            Credentials::Bearer(token) => {
                let claims = self
                    .signer
                    .as_ref()
                    .and_then(|s| s.verify(&token))
                    .ok_or_else(|| unauthenticated("invalid or expired token", None))?;
                let principal = if claims.sub.is_empty() {
                    Principal::Anonymous
                } else {
                    Principal::User(claims.sub)
                };
                Ok(Caller {
                    principal,
                    token: Some(claims.access),
                })
            }
        }
    }

    async fn password_ok(&self, user: &str, password: &str) -> bool {
        let key: [u8; 32] = {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(user.as_bytes());
            ctx.update(&[0]);
            ctx.update(password.as_bytes());
            ctx.finish().as_ref().try_into().expect("32 bytes")
        };
        if let Some(at) = self.verified.get(&key) {
            if at.elapsed() < VERIFIED_FOR {
                return true;
            }
        }
        let Ok(_permit) = self.hashing.acquire().await else {
            return false;
        };
        let users = self.users.clone();
        let (user, password) = (user.to_string(), password.to_string());
        let ok = tokio::task::spawn_blocking(move || users.verify(&user, &password))
            .await
            .unwrap_or(false);
        if ok {
            if self.verified.len() >= VERIFIED_MAX {
                self.verified.clear();
            }
            self.verified.insert(key, Instant::now());
        }
        ok
    }

    /// For `/v2/`: a caller who signed in or holds a token. Anonymous callers are sent
    /// to sign in, as Docker Hub does, so `docker login` really checks the password;
    /// with Basic challenges they pass when anonymous pulls are allowed.
    pub fn check_base(&self, caller: &Caller) -> Result<(), Refusal> {
        let anonymous_ok = self.signer.is_none() && self.anonymous_rules;
        if caller.principal != Principal::Anonymous || caller.token.is_some() || anonymous_ok {
            Ok(())
        } else {
            Err(unauthenticated("authentication required", None))
        }
    }

    /// For `/v2/_catalog`: as `/v2/`; the listing then shows only what the caller may
    /// pull ([`Auth::policy_allows`]).
    pub fn check_catalog(&self, caller: &Caller) -> Result<(), Refusal> {
        self.check_base(caller).map_err(|_| {
            unauthenticated("authentication required", Some("registry:catalog:*".into()))
        })
    }

    /// Whether `caller` may do `action` to `repository`: the policy decides, on every
    /// request. A bearer token says who the caller is; its grants are not required to
    /// name the request, because clients such as oras-py keep one token across the
    /// scopes of a push (as ghcr.io allows). A token lives minutes and never grants more
    /// than the policy gives its user.
    pub fn check(&self, caller: &Caller, repository: &str, action: Action) -> Result<(), Refusal> {
        if self.policy_allows(&caller.principal, repository, action) {
            return Ok(());
        }
        match &caller.principal {
            Principal::Anonymous => Err(unauthenticated(
                "authentication required",
                Some(challenge_scope(repository, action)),
            )),
            Principal::User(user) => Err(Refusal::Denied(format!(
                "{user} may not {action} {repository}"
            ))),
        }
    }

    pub fn may(&self, caller: &Caller, repository: &str, action: Action) -> bool {
        self.check(caller, repository, action).is_ok()
    }

    /// The policy alone: for repositories the caller did not name itself (the catalog,
    /// the fully qualified name a mirror request is answered from).
    pub fn policy_allows(&self, who: &Principal, repository: &str, action: Action) -> bool {
        self.policy.allowed(who, repository).contains(action)
    }

    /// A token for the scopes asked for, granting what the policy allows of them.
    /// Anonymous callers get a token too (with anonymous grants, maybe none).
    pub async fn issue(
        &self,
        credentials: Credentials,
        scopes: &[Scope],
    ) -> Result<Issued, Refusal> {
        let Some(signer) = &self.signer else {
            return Err(unauthenticated("token authentication is off", None));
        };
        if matches!(credentials, Credentials::Bearer(_)) {
            return Err(unauthenticated(
                "sign in with a user name and password to get a token",
                None,
            ));
        }
        let caller = self.authenticate(credentials).await?;
        let access = scopes
            .iter()
            .filter_map(|scope| self.grant(&caller.principal, scope))
            .collect();
        let user = match &caller.principal {
            Principal::Anonymous => None,
            Principal::User(u) => Some(u.as_str()),
        };
        let (token, issued_at) = signer
            .issue(user, access)
            .map_err(|e| unauthenticated(&format!("cannot sign a token: {e}"), None))?;
        Ok(Issued {
            token,
            issued_at,
            expires_in: signer.ttl.as_secs(),
        })
    }

    fn grant(&self, who: &Principal, scope: &Scope) -> Option<Grant> {
        let actions: Vec<String> = if scope.kind.starts_with("repository") {
            let asked = Actions::of(scope.repository_actions());
            self.policy
                .allowed(who, &scope.name)
                .intersect(asked)
                .iter()
                .map(|a| a.as_str().to_string())
                .collect()
        } else if scope.kind == "registry" && scope.name == "catalog" {
            vec!["*".to_string()]
        } else {
            return None;
        };
        Some(Grant {
            kind: scope.kind.clone(),
            name: scope.name.clone(),
            actions,
        })
    }

    /// Whether clients are sent to `/token` (Bearer) or asked for a password (Basic).
    pub fn token_flow(&self) -> bool {
        self.signer.is_some()
    }
}

fn unauthenticated(message: &str, scope: Option<String>) -> Refusal {
    Refusal::Unauthenticated {
        message: message.to_string(),
        scope,
    }
}

/// The scope a client should ask for; pushes ask for pull too, as docker does.
fn challenge_scope(repository: &str, action: Action) -> String {
    let actions = match action {
        Action::Push => "pull,push",
        other => other.as_str(),
    };
    format!("repository:{repository}:{actions}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_auth(
        policy: Option<&str>,
        anonymous_pull: bool,
        token: bool,
    ) -> (Auth, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let users = dir.path().join("htpasswd");
        std::fs::write(
            &users,
            format!(
                "alice:{}\nbob:{}\n",
                bcrypt::hash("a-pass", 4).unwrap(),
                bcrypt::hash("b-pass", 4).unwrap()
            ),
        )
        .unwrap();
        let mut settings = AuthSettings::new(users);
        if let Some(p) = policy {
            let path = dir.path().join("policy.toml");
            std::fs::write(&path, p).unwrap();
            settings.policy = Some(path);
        }
        settings.anonymous_pull = anonymous_pull;
        settings.token = token;
        (Auth::open(settings).unwrap(), dir)
    }

    fn basic(user: &str, password: &str) -> Credentials {
        Credentials::Basic {
            user: user.into(),
            password: password.into(),
        }
    }

    const A_ONLY: &str = r#"
[[allow]]
repositories = ["a/*"]
users = ["alice"]
actions = ["pull"]
[[allow]]
repositories = ["**"]
users = ["bob"]
actions = ["pull", "push", "delete"]
"#;

    #[tokio::test]
    async fn passwords_tokens_and_grants() {
        let (auth, _dir) = open_auth(Some(A_ONLY), false, true);
        assert!(auth.authenticate(basic("alice", "wrong")).await.is_err());
        assert!(auth.authenticate(basic("carol", "a-pass")).await.is_err());
        let alice = auth.authenticate(basic("alice", "a-pass")).await.unwrap();
        assert!(auth.check(&alice, "a/x", Action::Pull).is_ok());
        assert_eq!(
            auth.check(&alice, "b/x", Action::Pull),
            Err(Refusal::Denied("alice may not pull b/x".into()))
        );
        assert!(matches!(
            auth.check(&alice, "a/x", Action::Push),
            Err(Refusal::Denied(_))
        ));

        // A token carries only what was asked for and allowed.
        let scopes = Scope::parse_all(["repository:a/x:pull,push", "repository:b/x:pull"]);
        let issued = auth.issue(basic("alice", "a-pass"), &scopes).await.unwrap();
        let caller = auth
            .authenticate(Credentials::Bearer(issued.token))
            .await
            .unwrap();
        assert_eq!(caller.principal, Principal::User("alice".into()));
        assert_eq!(
            caller.token.as_ref().unwrap()[0].actions,
            vec!["pull".to_string()]
        );
        assert!(auth.check(&caller, "a/x", Action::Pull).is_ok());
        assert!(matches!(
            auth.check(&caller, "b/x", Action::Pull),
            Err(Refusal::Denied(_))
        ));
        // The token names its user; the policy, not the token's scopes, decides.
        assert!(auth.check(&caller, "a/y", Action::Pull).is_ok());
        assert!(matches!(
            auth.check(&caller, "a/y", Action::Push),
            Err(Refusal::Denied(_))
        ));
        assert!(auth.issue(basic("alice", "nope"), &scopes).await.is_err());
        assert!(
            auth.authenticate(Credentials::Bearer("x.y.z".into()))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn anonymous_callers_are_challenged_unless_allowed() {
        let (auth, _dir) = open_auth(None, false, true);
        let anon = auth.authenticate(Credentials::None).await.unwrap();
        assert!(auth.check_base(&anon).is_err());
        assert_eq!(
            auth.check(&anon, "x", Action::Push),
            Err(Refusal::Unauthenticated {
                message: "authentication required".into(),
                scope: Some("repository:x:pull,push".into())
            })
        );
        // Without a policy every user may do everything.
        let bob = auth.authenticate(basic("bob", "b-pass")).await.unwrap();
        assert!(auth.check(&bob, "any/thing", Action::Delete).is_ok());

        let (open, _dir) = open_auth(None, true, true);
        let issued = open
            .issue(
                Credentials::None,
                &Scope::parse_all(["repository:x:pull,push"]),
            )
            .await
            .unwrap();
        let anon = open
            .authenticate(Credentials::Bearer(issued.token))
            .await
            .unwrap();
        assert!(open.check_base(&anon).is_ok());
        assert!(open.check(&anon, "x", Action::Pull).is_ok());
        assert!(open.check(&anon, "x", Action::Push).is_err());

        // Basic challenges: anonymous pulls need no sign-in at all.
        let (basic_only, _dir) = open_auth(None, true, false);
        let anon = basic_only.authenticate(Credentials::None).await.unwrap();
        assert!(basic_only.check_base(&anon).is_ok());
        assert!(basic_only.check(&anon, "x", Action::Pull).is_ok());
        assert!(basic_only.issue(Credentials::None, &[]).await.is_err());
    }
}
