//! The text level of a Kubefile: logical lines (comments, blank lines and `\`
//! continuations), words (quotes and escapes, as in a Dockerfile) and `$VAR` expansion.

use std::collections::HashMap;

/// One instruction's text: its keyword, the rest, and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    pub line: usize,
    pub keyword: String,
    pub rest: String,
}

/// Splits a Kubefile into instructions. A line ending in `\` continues on the next;
/// comment lines (`#` first) and blank lines are skipped, also inside a continuation.
pub fn logical_lines(text: &str) -> Vec<LogicalLine> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
            continue;
        }
        let (start, mut buf) = current.take().unwrap_or((i + 1, String::new()));
        let (body, continues) = match line.trim_end().strip_suffix('\\') {
            // `\\` at the end is an escaped backslash, not a continuation.
            Some(b) if !b.ends_with('\\') => (b, true),
            _ => (line, false),
        };
        if !buf.is_empty() {
            buf.push(' ');
        }
        buf.push_str(body.trim());
        if continues {
            current = Some((start, buf));
        } else {
            push_line(&mut out, start, buf);
        }
    }
    if let Some((start, buf)) = current {
        push_line(&mut out, start, buf);
    }
    out
}

fn push_line(out: &mut Vec<LogicalLine>, line: usize, text: String) {
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    let (keyword, rest) = match text.split_once(char::is_whitespace) {
        Some((k, r)) => (k, r.trim()),
        None => (text, ""),
    };
    out.push(LogicalLine {
        line,
        keyword: keyword.to_ascii_uppercase(),
        rest: rest.to_string(),
    });
}

/// Most bytes one word or value may hold once its variables are expanded: `ENV A=$A$A`
/// repeated doubles a value each line, and a short Kubefile would otherwise take
/// gigabytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;

/// Variables visible to an instruction. `None` disables expansion (words are taken
/// literally, for commands a shell runs later).
pub type Vars<'a> = Option<&'a HashMap<String, String>>;

/// Splits `text` into words as a shell would: whitespace separates, `'…'` is literal,
/// `"…"` groups and expands variables, `\` escapes the next character. `$VAR`,
/// `${VAR}`, `${VAR:-default}` and `${VAR:+alternative}` expand from `vars`; an unset
/// variable expands to nothing, as in a Dockerfile.
pub fn words(text: &str, vars: Vars) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some('$') if vars.is_some() => expand(&mut chars, vars, &mut word)?,
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            '$' if vars.is_some() => {
                in_word = true;
                expand(&mut chars, vars, &mut word)?;
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        out.push(word);
    }
    Ok(out)
}

/// Expands variables in `text` without splitting it into words.
pub fn expand_all(text: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'$') => {
                out.push('$');
                chars.next();
            }
            '$' => expand(&mut chars, Some(vars), &mut out)?,
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Expands the variable after a `$` into `out`.
fn expand(
    chars: &mut std::iter::Peekable<std::str::Chars>,
    vars: Vars,
    out: &mut String,
) -> Result<(), String> {
    let vars = vars.expect("expansion only with variables");
    let lookup = |name: &str| vars.get(name).cloned().unwrap_or_default();
    match chars.peek() {
        Some('{') => {
            chars.next();
            let mut inner = String::new();
            loop {
                match chars.next() {
                    Some('}') => break,
                    Some(c) => inner.push(c),
                    None => return Err("unterminated ${…}".into()),
                }
            }
            let (name, modifier) = match inner.find(":-").or_else(|| inner.find(":+")) {
                Some(i) => (&inner[..i], Some((&inner[i..i + 2], &inner[i + 2..]))),
                None => (inner.as_str(), None),
            };
            if !is_name(name) {
                return Err(format!("bad variable name in ${{{inner}}}"));
            }
            let value = lookup(name);
            match modifier {
                None => out.push_str(&value),
                Some((":-", default)) if value.is_empty() => {
                    out.push_str(&expand_all(default, vars)?)
                }
                Some((":-", _)) => out.push_str(&value),
                Some((_, alternative)) if !value.is_empty() => {
                    out.push_str(&expand_all(alternative, vars)?)
                }
                Some(_) => {}
            }
        }
        Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_ascii_alphanumeric() || c == '_' {
                    name.push(c);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push_str(&lookup(&name));
        }
        // A lone `$` stays.
        _ => out.push('$'),
    }
    if out.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "a value expands to more than {} KiB",
            MAX_VALUE_BYTES >> 10
        ));
    }
    Ok(())
}

/// A variable name, as `sh` takes it: ARG and ENV names are exported to `RUN`.
pub use crate::shell::is_env_name as is_name;

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn continuations_comments_and_line_numbers() {
        let text = "# a comment\n\nFROM scratch\ncopy a \\\n  # inside\n  b \\\n  c\nRUN echo \\\\\nLABEL x=1\r\n";
        let lines = logical_lines(text);
        assert_eq!(
            lines,
            [
                LogicalLine {
                    line: 3,
                    keyword: "FROM".into(),
                    rest: "scratch".into()
                },
                LogicalLine {
                    line: 4,
                    keyword: "COPY".into(),
                    rest: "a b c".into()
                },
                LogicalLine {
                    line: 8,
                    keyword: "RUN".into(),
                    rest: "echo \\\\".into()
                },
                LogicalLine {
                    line: 9,
                    keyword: "LABEL".into(),
                    rest: "x=1".into()
                },
            ]
        );
    }

    #[test]
    fn words_quote_escape_and_expand() {
        let v = vars(&[("ARCH", "amd64"), ("NAME", "my app")]);
        assert_eq!(
            words(r#"a "b c" 'd $ARCH' e\ f ${ARCH}/x "$NAME""#, Some(&v)).unwrap(),
            ["a", "b c", "d $ARCH", "e f", "amd64/x", "my app"]
        );
        assert_eq!(
            words(
                "${MISSING:-dflt} ${ARCH:+set} ${MISSING:+no}x $ \\$ARCH",
                Some(&v)
            )
            .unwrap(),
            ["dflt", "set", "x", "$", "$ARCH"]
        );
        assert_eq!(words("$ARCH", None).unwrap(), ["$ARCH"]);
        assert!(
            words("\"open", Some(&v))
                .unwrap_err()
                .contains("double quote")
        );
        assert!(words("'open", None).unwrap_err().contains("single quote"));
        assert!(words("${A", Some(&v)).unwrap_err().contains("unterminated"));
        assert!(
            words("${1x}", Some(&v))
                .unwrap_err()
                .contains("bad variable")
        );
    }
}
