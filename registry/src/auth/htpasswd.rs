//! Users and their bcrypt password hashes, from an Apache htpasswd file
//! (`htpasswd -B`), the format distribution and zot read.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};

#[derive(Debug, Default, Clone)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// Checked when the user does not exist, at the file's highest cost, so an unknown
    /// user takes as long as a wrong password and names cannot be probed by timing.
    dummy: String,
}

impl Htpasswd {
    pub fn load(path: &Path) -> anyhow::Result<Htpasswd> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the htpasswd file {}", path.display()))?;
        Htpasswd::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// A `user:hash` line for `user` with `password` (bcrypt, cost 10): what `sealer
    /// run` writes for a registry with a login.
    pub fn entry(user: &str, password: &str) -> anyhow::Result<String> {
        if user.is_empty() || user.contains(':') || user.contains('\n') {
            bail!("{user:?} cannot be a user name (empty, or holds ':' or a line break)");
        }
        Ok(format!(
            "{user}:{}\n",
            bcrypt::hash(password, 10).context("bcrypt")?
        ))
    }

    /// One `user:hash` per line; blank lines and `#` comments are skipped. Only bcrypt
    /// hashes are accepted: MD5 (`$apr1$`), SHA-1 and crypt hashes are too weak.
    pub fn parse(text: &str) -> anyhow::Result<Htpasswd> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                bail!("line {n}: expected USER:HASH");
            };
            if user.is_empty() {
                bail!("line {n}: the user name is empty");
            }
            if !is_bcrypt(hash) {
                bail!(
                    "line {n}: the password of {user:?} is not a bcrypt hash; create it with `htpasswd -B`"
                );
            }
            if users.insert(user.to_string(), hash.to_string()).is_some() {
                bail!("line {n}: {user:?} is listed twice");
            }
        }
        let cost = users.values().filter_map(|h| cost(h)).max().unwrap_or(5);
        let dummy = bcrypt::hash("not a password", cost).context("bcrypt")?;
        Ok(Htpasswd { users, dummy })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `password` is `user`'s. Slow on purpose (bcrypt): call off the runtime.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.users.get(user) {
            Some(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            None => {
                let _ = bcrypt::verify(password, &self.dummy);
                false
            }
        }
    }
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2y$", "$2b$", "$2a$", "$2x$"]
        .iter()
        .any(|p| hash.starts_with(p))
        && hash.len() == 60
        && cost(hash).is_some()
}

/// The cost in `$2y$NN$...`.
fn cost(hash: &str) -> Option<u32> {
    hash.get(4..6)?
        .parse()
        .ok()
        .filter(|c| (4..=31).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_bcrypt_passwords_and_refuses_weak_hashes() {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        let file = Htpasswd::parse(&format!("# users\n\nalice:{hash}\n")).unwrap();
        assert_eq!(file.len(), 1);
        assert!(file.verify("alice", "s3cret"));
        assert!(!file.verify("alice", "S3cret"));
        assert!(!file.verify("bob", "s3cret"));

        let md5 = Htpasswd::parse("bob:$apr1$x8nFXl3O$3yMbNr1bFwXo4bY8vS6Vn/\n").unwrap_err();
        assert!(format!("{md5:#}").contains("line 1"), "{md5:#}");
        assert!(format!("{md5:#}").contains("htpasswd -B"), "{md5:#}");
        let twice = Htpasswd::parse(&format!("a:{hash}\na:{hash}\n")).unwrap_err();
        assert!(format!("{twice:#}").contains("line 2"), "{twice:#}");
        assert!(Htpasswd::parse("nocolon\n").is_err());
    }

    #[test]
    fn an_entry_made_here_is_read_back() {
        let line = Htpasswd::entry("admin", "pa:ss").unwrap();
        let file = Htpasswd::parse(&line).unwrap();
        assert!(file.verify("admin", "pa:ss"));
        assert!(!file.verify("admin", "pass"));
        assert!(Htpasswd::entry("a:b", "x").is_err());
        assert!(Htpasswd::entry("", "x").is_err());
    }

    #[test]
    fn an_unknown_user_is_checked_against_a_hash_of_the_same_cost() {
        // A malformed dummy would return at once and let timing tell users apart.
        let file = Htpasswd::parse(&format!("a:{}\n", bcrypt::hash("p", 6).unwrap())).unwrap();
        assert!(is_bcrypt(&file.dummy));
        assert_eq!(cost(&file.dummy), Some(6));
    }
}
