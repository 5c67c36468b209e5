//! Words for `sh`: whatever a CloudImage or Clusterfile names (files, folders, values)
//! reaches a shell on the hosts only as one quoted word, never as shell syntax.

/// `s` quoted as one word for `sh`.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Whether `key` can be an environment variable's name in `sh` (`export KEY=...`).
pub fn is_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_word_stays_one_word_whatever_it_holds() {
        for s in [
            "plain",
            "it's",
            "$(touch x)",
            "a b\nc",
            "'",
            "`id`;rm -rf /",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }

    #[test]
    fn env_names_are_shell_names() {
        for ok in ["A", "_x", "Mode", "HTTP_PROXY2"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A;touch x", "A B", "$(id)", "ÄB"] {
            assert!(!is_env_name(bad), "{bad}");
        }
    }
}
