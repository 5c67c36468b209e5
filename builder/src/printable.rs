//! Names from outside (files in a build context or an image, text a tool printed) made
//! safe to show: control characters, bidirectional overrides and bytes that are not
//! UTF-8 become escapes, so a file name cannot forge lines or colours on a terminal or
//! in a log, and every name can be printed and written as JSON.

use std::fmt::Write;
use std::path::Path;

/// A path as it may be shown: `a\nb` for a newline, `\xff` for a byte that is not UTF-8,
/// `\\` for a backslash (so the escapes are unambiguous).
pub fn path(p: &Path) -> String {
    escape(p.as_os_str().as_encoded_bytes())
}

/// Text as it may be shown, by the same rules as [`path`].
pub fn text(s: &str) -> String {
    escape(s.as_bytes())
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' || c.is_control() || is_bidi_control(c) {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Characters that reorder the text around them when displayed.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// For `#[serde(serialize_with)]`: a path as [`path`] shows it.
pub fn serialize_path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn plain_names_are_unchanged_and_others_escaped() {
        assert_eq!(
            path(Path::new("charts/web/values.yaml")),
            "charts/web/values.yaml"
        );
        assert_eq!(text("café"), "café");
        let hostile = OsStr::from_bytes(b"a\nimage: evil\x1b[2J\xff\\\xe2\x80\xae.yaml");
        assert_eq!(
            path(Path::new(hostile)),
            "a\\nimage: evil\\u{1b}[2J\\xff\\\\\\u{202e}.yaml"
        );
    }
}
