//! A small YAML document tree that remembers the line of every node, so config errors can say `file:line`.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// One YAML node and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub line: usize,
    pub value: Value,
}

/// The shapes a YAML node can take. Scalars keep their text and whether they were plain
/// (unquoted), which decides whether `true` or `42` is a boolean or number.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar { text: String, plain: bool },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// A document that is not YAML at all, with the place the parser gave up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

impl Node {
    /// True for `null`, `~` and empty plain scalars.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if text.is_empty() || text == "~" || text == "null" || text == "Null" || text == "NULL")
    }

    /// The scalar's text, whatever its style.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// A plain `true`/`false` scalar.
    pub fn as_bool(&self) -> Option<bool> {
        match &self.value {
            Value::Scalar { text, plain: true } => match text.as_str() {
                "true" | "True" | "TRUE" => Some(true),
                "false" | "False" | "FALSE" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// A plain integer scalar.
    pub fn as_i64(&self) -> Option<i64> {
        match &self.value {
            Value::Scalar { text, plain: true } => text.parse().ok(),
            _ => None,
        }
    }

    /// The node as JSON: plain scalars become null, booleans and numbers where they read as
    /// such, everything else a string; mappings need string keys (others are skipped).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Scalar { .. } if self.is_null() => J::Null,
            Value::Scalar { text, plain } => {
                if let Some(b) = self.as_bool() {
                    return J::Bool(b);
                }
                if let Some(i) = self.as_i64() {
                    return J::from(i);
                }
                if *plain {
                    if let Some(n) = text
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                    {
                        return J::Number(n);
                    }
                }
                J::String(text.clone())
            }
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(pairs) => J::Object(
                pairs
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.to_json())))
                    .collect(),
            ),
        }
    }

    /// What kind of node this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Scalar { .. } if self.is_null() => "null",
            Value::Scalar { .. } if self.as_bool().is_some() => "a boolean",
            Value::Scalar { .. } if self.as_i64().is_some() => "a number",
            Value::Scalar { .. } => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

/// The largest document read, in bytes (a config of 100,000 repositories is about 10 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;
/// The most nodes a document may hold, aliases expanded (100,000 repositories are ~1M).
pub const MAX_NODES: usize = 2_000_000;
/// The most nodes aliases may copy: an alias bomb (a few hundred bytes that expand to billions
/// of nodes) stops here, having copied at most this many.
pub const MAX_ALIAS_NODES: usize = 100_000;
/// The deepest nesting of collections.
pub const MAX_DEPTH: usize = 64;

/// Parses the first document of `text`. An empty document is `Ok(None)`. Size, node count
/// (with aliases expanded) and nesting depth are bounded; past a bound the error names it.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(SyntaxError {
            line: 1,
            message: format!(
                "the document is {} bytes, over the {MAX_DOCUMENT_BYTES}-byte limit",
                text.len()
            ),
        });
    }
    let mut builder = Builder::default();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| SyntaxError {
            line: e.marker().line(),
            message: e.info().to_string(),
        })?;
        let line = span.start.line();
        match event {
            Event::StreamEnd | Event::DocumentEnd => {
                if builder.root.is_some() {
                    break;
                }
            }
            Event::Scalar(text, style, anchor, _tag) => {
                let node = Node {
                    line,
                    value: Value::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                };
                builder.count(line, 1)?;
                builder.push(node, anchor)?;
            }
            Event::Alias(id) => {
                let size = builder
                    .anchors
                    .get(&id)
                    .map(|(_, size)| *size)
                    .ok_or(SyntaxError {
                        line,
                        message: "alias to an unknown anchor".to_string(),
                    })?;
                // Counted before it is copied: the bound holds the memory too.
                builder.alias_nodes = builder.alias_nodes.saturating_add(size);
                if builder.alias_nodes > MAX_ALIAS_NODES {
                    return Err(SyntaxError {
                        line,
                        message: format!(
                            "aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?)"
                        ),
                    });
                }
                builder.count(line, size)?;
                let node = builder
                    .anchors
                    .get(&id)
                    .map(|(n, _)| n.clone())
                    .ok_or(SyntaxError {
                        line,
                        message: "alias to an unknown anchor".to_string(),
                    })?;
                builder.push(node, 0)?;
            }
            Event::SequenceStart(anchor, _) => {
                builder.open(line, Value::Seq(Vec::new()), anchor)?
            }
            Event::MappingStart(anchor, _) => builder.open(line, Value::Map(Vec::new()), anchor)?,
            Event::SequenceEnd | Event::MappingEnd => builder.close()?,
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => {}
        }
    }
    Ok(builder.root)
}

/// A collection being built: the node, its anchor, a key waiting for its value, and the node
/// count when it opened (so an anchored collection knows its size).
type Open = (Node, usize, Option<Node>, usize);

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    /// Anchored nodes and their sizes in nodes.
    anchors: HashMap<usize, (Node, usize)>,
    root: Option<Node>,
    nodes: usize,
    alias_nodes: usize,
}

impl Builder {
    fn count(&mut self, line: usize, n: usize) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                line,
                message: format!("the document has more than {MAX_NODES} nodes"),
            });
        }
        Ok(())
    }

    fn open(&mut self, line: usize, value: Value, anchor: usize) -> Result<(), SyntaxError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(SyntaxError {
                line,
                message: format!("collections nest deeper than {MAX_DEPTH} levels"),
            });
        }
        self.count(line, 1)?;
        let at_open = self.nodes;
        self.stack
            .push((Node { line, value }, anchor, None, at_open));
        Ok(())
    }

    fn close(&mut self) -> Result<(), SyntaxError> {
        let (node, anchor, pending_key, at_open) = self.stack.pop().ok_or(SyntaxError {
            line: 0,
            message: "unbalanced collection end".to_string(),
        })?;
        let size = self.nodes - at_open + 1;
        if let Some(key) = pending_key {
            return Err(SyntaxError {
                line: key.line,
                message: "mapping key without a value".to_string(),
            });
        }
        self.push_sized(node, anchor, size)
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        self.push_sized(node, anchor, 1)
    }

    fn push_sized(&mut self, node: Node, anchor: usize, size: usize) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        let Some((parent, _, pending_key, _)) = self.stack.last_mut() else {
            if self.root.is_none() {
                self.root = Some(node);
            }
            return Ok(());
        };
        match &mut parent.value {
            Value::Seq(items) => items.push(node),
            Value::Map(entries) => match pending_key.take() {
                Some(key) => entries.push((key, node)),
                None => *pending_key = Some(node),
            },
            Value::Scalar { .. } => {
                return Err(SyntaxError {
                    line: node.line,
                    message: "value inside a scalar".to_string(),
                })
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_bomb_stops_at_the_node_bound() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            doc.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                std::iter::repeat_n(prev.as_str(), 10)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        assert!(doc.len() < 1000, "a few hundred bytes: {}", doc.len());
        let e = parse(&doc).unwrap_err();
        assert!(
            e.message
                .contains("aliases expand to more than 100000 nodes"),
            "{e}"
        );
        assert!(e.line > 1, "{e}");
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("nest deeper than 64"), "{e}");
        let fine = format!("{}{}", "[".repeat(10), "]".repeat(10));
        assert!(parse(&fine).is_ok());
    }

    #[test]
    fn aliases_still_expand_within_the_bound() {
        let root = parse("base: &b {x: 1}\nuse: *b\n").unwrap().unwrap();
        let Value::Map(entries) = root.value else {
            panic!()
        };
        assert_eq!(entries[1].1.value, entries[0].1.value);
    }

    #[test]
    fn lines_are_remembered() {
        let doc = parse("a: 1\nb:\n  - x\n  - 'y'\nc: &anc {k: v}\nd: *anc\n")
            .unwrap()
            .unwrap();
        let Value::Map(entries) = &doc.value else {
            panic!("not a map")
        };
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[1].0.line, 2);
        let Value::Seq(items) = &entries[1].1.value else {
            panic!("not a seq")
        };
        assert_eq!(items[1].line, 4);
        assert_eq!(items[1].as_str(), Some("y"));
        assert_eq!(
            entries[3].1,
            Node {
                line: 5,
                ..entries[2].1.clone()
            }
        );
        assert_eq!(entries[0].1.as_i64(), Some(1));
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let err = parse("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(err.line >= 2, "{err:?}");
    }

    #[test]
    fn empty_document_is_none() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# just a comment\n").unwrap(), None);
    }
}
