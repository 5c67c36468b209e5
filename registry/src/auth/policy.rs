//! Who may pull, push and delete which repositories (`--policy FILE`, TOML).
//!
//! ```toml
//! [groups]
//! ci = ["jenkins", "tekton"]
//!
//! [[allow]]
//! repositories = ["apps/**"]
//! groups = ["ci"]
//! actions = ["pull", "push"]
//!
//! [[allow]]
//! repositories = ["**"]
//! anonymous = true
//! actions = ["pull"]
//! ```
//!
//! Rules only grant; a caller may do the union of what every rule naming it allows.
//! Patterns are globs over repository names: `*` stays within one path segment, `**`
//! crosses segments (`apps/**` covers `apps/web` and `apps/team/web`).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

use anyhow::{Context, bail};
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;

/// What a caller may do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Action::Pull => 1,
            Action::Push => 2,
            Action::Delete => 4,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of actions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Actions(u8);

impl Actions {
    pub const NONE: Actions = Actions(0);
    pub const ALL: Actions = Actions(7);

    pub fn of(actions: impl IntoIterator<Item = Action>) -> Actions {
        Actions(actions.into_iter().fold(0, |a, x| a | x.bit()))
    }

    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    pub fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn intersect(self, other: Actions) -> Actions {
        Actions(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    User(String),
}

impl Principal {
    /// The name for logs: the user, or `-`.
    pub fn name(&self) -> &str {
        match self {
            Principal::Anonymous => "-",
            Principal::User(u) => u,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    groups: HashMap<String, Vec<String>>,
    #[serde(default)]
    allow: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    repositories: Vec<String>,
    /// User names; `"*"` is every signed-in user.
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    /// Callers without credentials.
    #[serde(default)]
    anonymous: bool,
    actions: Vec<Action>,
}

#[derive(Debug)]
struct Rule {
    repositories: GlobSet,
    users: HashSet<String>,
    every_user: bool,
    anonymous: bool,
    actions: Actions,
}

impl Rule {
    fn names(&self, who: &Principal) -> bool {
        match who {
            Principal::Anonymous => self.anonymous,
            Principal::User(u) => self.every_user || self.users.contains(u),
        }
    }
}

/// The rules, compiled.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// Without a policy file: every signed-in user may do everything.
    pub fn every_user_everything() -> Policy {
        Policy {
            rules: vec![Rule {
                repositories: any_repository(),
                users: HashSet::new(),
                every_user: true,
                anonymous: false,
                actions: Actions::ALL,
            }],
        }
    }

    pub fn load(path: &Path) -> anyhow::Result<Policy> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the policy file {}", path.display()))?;
        Policy::parse(&text).with_context(|| format!("invalid policy file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Policy> {
        let file: PolicyFile = toml::from_str(text)?;
        let mut rules = Vec::with_capacity(file.allow.len());
        for (i, rule) in file.allow.into_iter().enumerate() {
            let n = i + 1;
            if rule.repositories.is_empty() {
                bail!("allow rule {n}: `repositories` is empty");
            }
            let mut set = GlobSetBuilder::new();
            for pattern in &rule.repositories {
                set.add(glob(pattern).with_context(|| format!("allow rule {n}"))?);
            }
            let mut users: HashSet<String> = HashSet::new();
            let mut every_user = false;
            for user in rule.users {
                if user == "*" {
                    every_user = true;
                } else {
                    users.insert(user);
                }
            }
            for group in &rule.groups {
                let Some(members) = file.groups.get(group) else {
                    bail!("allow rule {n}: no group {group:?} in [groups]");
                };
                users.extend(members.iter().cloned());
            }
            if users.is_empty() && !every_user && !rule.anonymous {
                bail!("allow rule {n}: names no one (set `users`, `groups` or `anonymous`)");
            }
            rules.push(Rule {
                repositories: set.build().with_context(|| format!("allow rule {n}"))?,
                users,
                every_user,
                anonymous: rule.anonymous,
                actions: Actions::of(rule.actions),
            });
        }
        Ok(Policy { rules })
    }

    /// Adds anonymous pull of every repository.
    pub fn with_anonymous_pull(mut self) -> Policy {
        self.rules.push(Rule {
            repositories: any_repository(),
            users: HashSet::new(),
            every_user: false,
            anonymous: true,
            actions: Actions::of([Action::Pull]),
        });
        self
    }

    /// Whether any rule names anonymous callers.
    pub fn grants_anonymous(&self) -> bool {
        self.rules.iter().any(|r| r.anonymous)
    }

    /// What `who` may do to `repository`.
    pub fn allowed(&self, who: &Principal, repository: &str) -> Actions {
        self.rules
            .iter()
            .filter(|r| r.names(who) && r.repositories.is_match(repository))
            .fold(Actions::NONE, |a, r| a.union(r.actions))
    }
}

fn glob(pattern: &str) -> anyhow::Result<Glob> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .with_context(|| format!("bad repository pattern {pattern:?}"))
}

fn any_repository() -> GlobSet {
    let mut set = GlobSetBuilder::new();
    set.add(glob("**").expect("a valid pattern"));
    set.build().expect("a valid pattern set")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(u: &str) -> Principal {
        Principal::User(u.into())
    }

    fn names(a: Actions) -> Vec<&'static str> {
        a.iter().map(Action::as_str).collect()
    }

    #[test]
    fn rules_grant_by_pattern_user_group_and_anonymity() {
        let p = Policy::parse(
            r#"
[groups]
ci = ["jenkins"]

[[allow]]
repositories = ["a/*"]
users = ["alice"]
actions = ["pull"]

[[allow]]
repositories = ["apps/**"]
groups = ["ci"]
actions = ["pull", "push"]

[[allow]]
repositories = ["public/**"]
users = ["*"]
anonymous = true
actions = ["pull"]

[[allow]]
repositories = ["a/x"]
users = ["alice"]
actions = ["delete"]
"#,
        )
        .unwrap();
        assert_eq!(names(p.allowed(&user("alice"), "a/x")), ["pull", "delete"]);
        assert_eq!(names(p.allowed(&user("alice"), "a/y")), ["pull"]);
        // `*` stays within a segment.
        assert!(p.allowed(&user("alice"), "a/x/y").is_empty());
        assert!(p.allowed(&user("alice"), "b/x").is_empty());
        assert!(p.allowed(&user("alice"), "ab/x").is_empty());
        assert_eq!(
            names(p.allowed(&user("jenkins"), "apps/team/web")),
            ["pull", "push"]
        );
        assert!(p.allowed(&user("jenkins"), "apps").is_empty());
        assert!(p.allowed(&user("bob"), "apps/web").is_empty());
        assert_eq!(names(p.allowed(&user("bob"), "public/x")), ["pull"]);
        assert_eq!(
            names(p.allowed(&Principal::Anonymous, "public/a/b")),
            ["pull"]
        );
        assert!(p.allowed(&Principal::Anonymous, "a/x").is_empty());
    }

    #[test]
    fn defaults_and_anonymous_pull() {
        let p = Policy::every_user_everything();
        assert_eq!(p.allowed(&user("x"), "any/depth/name"), Actions::ALL);
        assert!(p.allowed(&Principal::Anonymous, "x").is_empty());
        let p = p.with_anonymous_pull();
        assert_eq!(names(p.allowed(&Principal::Anonymous, "a/b")), ["pull"]);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |t: &str| format!("{:#}", Policy::parse(t).unwrap_err());
        assert!(
            err("[[allow]]\nrepositories=[\"x\"]\ngroups=[\"nope\"]\nactions=[\"pull\"]\n")
                .contains("no group \"nope\"")
        );
        assert!(
            err("[[allow]]\nrepositories=[\"x\"]\nactions=[\"pull\"]\n").contains("names no one")
        );
        assert!(
            err("[[allow]]\nrepositories=[\"x\"]\nusers=[\"a\"]\nactions=[\"read\"]\n")
                .contains("read")
        );
        assert!(
            err("[[allow]]\nrepositories=[\"a[\"]\nusers=[\"a\"]\nactions=[\"pull\"]\n")
                .contains("a[")
        );
        assert!(err("[[allow]]\nrepos=[\"x\"]\n").contains("repos"));
    }
}
