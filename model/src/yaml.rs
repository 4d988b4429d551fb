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

/// Parses the first document of `text`. An empty document is `Ok(None)`.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
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
                builder.push(node, anchor)?;
            }
            Event::Alias(id) => {
                let node = builder.anchors.get(&id).cloned().ok_or(SyntaxError {
                    line,
                    message: "alias to an unknown anchor".to_string(),
                })?;
                builder.push(node, 0)?;
            }
            Event::SequenceStart(anchor, _) => builder.open(line, Value::Seq(Vec::new()), anchor),
            Event::MappingStart(anchor, _) => builder.open(line, Value::Map(Vec::new()), anchor),
            Event::SequenceEnd | Event::MappingEnd => builder.close()?,
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) => {}
        }
    }
    Ok(builder.root)
}

#[derive(Default)]
struct Builder {
    stack: Vec<(Node, usize, Option<Node>)>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
}

impl Builder {
    fn open(&mut self, line: usize, value: Value, anchor: usize) {
        self.stack.push((Node { line, value }, anchor, None));
    }

    fn close(&mut self) -> Result<(), SyntaxError> {
        let (node, anchor, pending_key) = self.stack.pop().ok_or(SyntaxError {
            line: 0,
            message: "unbalanced collection end".to_string(),
        })?;
        if let Some(key) = pending_key {
            return Err(SyntaxError {
                line: key.line,
                message: "mapping key without a value".to_string(),
            });
        }
        self.push(node, anchor)
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some((parent, _, pending_key)) = self.stack.last_mut() else {
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
