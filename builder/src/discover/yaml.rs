//! YAML documents as a small tree that keeps every scalar's text exactly as written (so a
//! tag `1.20` stays `1.20`, not the number 1.2) and the line it is on.

use saphyr_parser::{Event, Parser};

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Scalar {
        text: String,
        line: usize,
    },
    /// Entries in document order: key text, the key's line, value.
    Map(Vec<(String, usize, Node)>),
    Seq(Vec<Node>),
    /// An alias or an empty node: nothing to read.
    Other,
}

impl Node {
    pub fn get(&self, key: &str) -> Option<(&Node, usize)> {
        match self {
            Node::Map(entries) => entries
                .iter()
                .find(|(k, _, _)| k == key)
                .map(|(_, line, v)| (v, *line)),
            _ => None,
        }
    }

    pub fn text(&self) -> Option<&str> {
        match self {
            Node::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// A container being built: a sequence, or a mapping waiting for a key or a value.
enum Open {
    Seq(Vec<Node>),
    Map {
        entries: Vec<(String, usize, Node)>,
        key: Option<(String, usize)>,
    },
}

/// Every document in `src`. A syntax error gives its line and message.
pub fn documents(src: &str) -> Result<Vec<Node>, (usize, String)> {
    let mut docs = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    for item in Parser::new_from_str(src) {
        let (event, span) = item.map_err(|e| (e.marker().line(), e.info().to_string()))?;
        let line = span.start.line();
        let node = match event {
            Event::Scalar(text, ..) => {
                // A key waits for its value; anything else is a complete node.
                if let Some(Open::Map {
                    key: key @ None, ..
                }) = stack.last_mut()
                {
                    *key = Some((text.into_owned(), line));
                    continue;
                }
                Node::Scalar {
                    text: text.into_owned(),
                    line,
                }
            }
            Event::Alias(_) => Node::Other,
            Event::SequenceStart(..) => {
                stack.push(Open::Seq(Vec::new()));
                continue;
            }
            Event::MappingStart(..) => {
                stack.push(Open::Map {
                    entries: Vec::new(),
                    key: None,
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::Seq(items)) => Node::Seq(items),
                Some(Open::Map { entries, .. }) => Node::Map(entries),
                None => continue,
            },
            Event::DocumentEnd
            | Event::DocumentStart(_)
            | Event::StreamStart
            | Event::StreamEnd
            | Event::Nothing => continue,
        };
        match stack.last_mut() {
            None => docs.push(node),
            Some(Open::Seq(items)) => items.push(node),
            Some(Open::Map { entries, key }) => match key.take() {
                Some((k, l)) => entries.push((k, l, node)),
                // A complex key (a mapping or sequence used as a key): keep its value
                // reachable under an empty key.
                None => *key = Some((String::new(), line)),
            },
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_keep_their_text_and_line() {
        let docs = documents("a: 1.20\nb:\n  - x\n  - {c: 'd'}\n---\n- 3\n").unwrap();
        assert_eq!(docs.len(), 2);
        let (a, line) = docs[0].get("a").unwrap();
        assert_eq!((a.text(), line), (Some("1.20"), 1));
        let (Node::Seq(b), _) = docs[0].get("b").unwrap() else {
            panic!("b is a sequence")
        };
        assert_eq!(b[0].text(), Some("x"));
        let (c, line) = b[1].get("c").unwrap();
        assert_eq!((c.text(), line), (Some("d"), 4));
        assert_eq!(
            docs[1],
            Node::Seq(vec![Node::Scalar {
                text: "3".into(),
                line: 6
            }])
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let (line, message) = documents("a: b\nc: [d\n").unwrap_err();
        assert!(line >= 2, "{line}: {message}");
    }
}
