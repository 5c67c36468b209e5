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
    /// An empty node, or an alias to nothing: nothing to read.
    Other,
}

impl Node {
    /// The value of `key`, its own or, failing that, one a merge key (`<<: *base`,
    /// `<<: [*a, *b]`) brings in.
    pub fn get(&self, key: &str) -> Option<(&Node, usize)> {
        let Node::Map(entries) = self else {
            return None;
        };
        let own = entries.iter().find(|(k, _, _)| k == key);
        if let Some((_, line, v)) = own {
            return Some((v, *line));
        }
        let (_, _, merged) = entries.iter().find(|(k, _, _)| k == "<<")?;
        match merged {
            Node::Seq(maps) => maps.iter().find_map(|m| m.get(key)),
            map => map.get(key),
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

/// How far aliases may expand one file, in bytes of text plus [`NODE_WEIGHT`] per node:
/// real files barely use them, while a few lines of nested aliases ("billion laughs")
/// would otherwise become gigabytes.
pub const MAX_EXPANSION: usize = 64 << 20;
const NODE_WEIGHT: usize = 64;

/// Anchored nodes, for aliases to copy, and what copies have cost so far.
#[derive(Default)]
struct Anchors {
    nodes: std::collections::HashMap<usize, (Node, usize)>,
    spent: usize,
}

impl Anchors {
    fn keep(&mut self, id: usize, node: &Node) {
        if id != 0 {
            self.nodes.insert(id, (node.clone(), weight(node)));
        }
    }

    /// A copy of the node an alias names, within the expansion budget.
    fn resolve(&mut self, id: usize, line: usize) -> Result<Node, (usize, String)> {
        let Some((node, cost)) = self.nodes.get(&id) else {
            return Ok(Node::Other);
        };
        self.spent += cost;
        if self.spent > MAX_EXPANSION {
            return Err((
                line,
                format!("aliases expand the file beyond {} MiB", MAX_EXPANSION >> 20),
            ));
        }
        Ok(node.clone())
    }
}

fn weight(node: &Node) -> usize {
    NODE_WEIGHT
        + match node {
            Node::Scalar { text, .. } => text.len(),
            Node::Map(entries) => entries.iter().map(|(k, _, v)| k.len() + weight(v)).sum(),
            Node::Seq(items) => items.iter().map(weight).sum(),
            Node::Other => 0,
        }
}

/// Every document in `src`, aliases replaced by what they name (merge keys `<<` are
/// read by [`Node::get`]). A syntax error, or aliases expanding beyond
/// [`MAX_EXPANSION`], gives its line and message.
pub fn documents(src: &str) -> Result<Vec<Node>, (usize, String)> {
    let mut docs = Vec::new();
    // Open containers, each with its anchor id (0: none).
    let mut stack: Vec<(Open, usize)> = Vec::new();
    let mut anchors = Anchors::default();
    for item in Parser::new_from_str(src) {
        let (event, span) =
            item.map_err(|e| (e.marker().line(), format!("not valid YAML: {}", e.info())))?;
        let line = span.start.line();
        let node = match event {
            Event::Scalar(text, _, anchor, _) => {
                let node = Node::Scalar {
                    text: text.into_owned(),
                    line,
                };
                anchors.keep(anchor, &node);
                node
            }
            Event::Alias(id) => anchors.resolve(id, line)?,
            Event::SequenceStart(anchor, _) => {
                stack.push((Open::Seq(Vec::new()), anchor));
                continue;
            }
            Event::MappingStart(anchor, _) => {
                let map = Open::Map {
                    entries: Vec::new(),
                    key: None,
                };
                stack.push((map, anchor));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some((open, anchor)) = stack.pop() else {
                    continue;
                };
                let node = match open {
                    Open::Seq(items) => Node::Seq(items),
                    Open::Map { entries, .. } => Node::Map(entries),
                };
                anchors.keep(anchor, &node);
                node
            }
            Event::DocumentEnd
            | Event::DocumentStart(_)
            | Event::StreamStart
            | Event::StreamEnd
            | Event::Nothing => continue,
        };
        match stack.last_mut() {
            None => docs.push(node),
            Some((Open::Seq(items), _)) => items.push(node),
            Some((Open::Map { entries, key }, _)) => match key.take() {
                Some((k, l)) => entries.push((k, l, node)),
                // A key waits for its value. A complex key (a mapping or sequence) keeps
                // its value reachable under an empty key.
                None => *key = Some((node.text().unwrap_or_default().to_string(), line)),
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
