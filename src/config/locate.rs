//! Maps a key path such as `routes[0].split[1].cluster` to the line it stands on in the YAML text.
//!
//! serde gives us the path of a semantic error but not its line, and serde_yaml keeps no spans, so
//! this module walks the document once with yaml-rust2's event parser, which does carry positions.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line numbers (1-based) of every node in a YAML document, by key path.
#[derive(Debug, Default)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Index `text`. A document that does not parse yields an empty index: the caller reports the
    /// syntax error itself, through serde.
    pub fn new(text: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut walker, false).is_err() {
            return Self::default();
        }
        Self {
            lines: walker.lines,
        }
    }

    /// The line of `path`, or of its nearest ancestor that is in the document.
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return Some(*line);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    /// In a mapping; `key` is the pending key once read, awaiting its value.
    Map {
        path: String,
        key: Option<String>,
    },
    Seq {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Walker {
    /// Called for each node start; returns the node's path, or `None` when the node is a map key.
    fn enter_node(&mut self, line: usize, scalar: Option<&str>) -> Option<String> {
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                p
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) if path.is_empty() => k,
                Some(k) => format!("{path}.{k}"),
                None => {
                    // This node is a key: remember it and its line.
                    let k = scalar.unwrap_or("?").to_string();
                    let full = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    self.lines.entry(full).or_insert(line);
                    *key = Some(k);
                    return None;
                }
            },
        };
        self.lines.entry(path.clone()).or_insert(line);
        Some(path)
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(value, ..) => {
                self.enter_node(line, Some(&value));
            }
            Event::Alias(_) => {
                self.enter_node(line, None);
            }
            Event::MappingStart(..) => {
                let path = self.enter_node(line, None).unwrap_or_default();
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.enter_node(line, None).unwrap_or_default();
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_sequence_items() {
        let text = "a:\n  b: 1\nroutes:\n  - name: x\n    split:\n      - { cluster: p, weight: 1 }\n      - cluster: q\n        weight: 2\n";
        let idx = LineIndex::new(text);
        assert_eq!(idx.line_of("a.b"), Some(2));
        assert_eq!(idx.line_of("routes[0].name"), Some(4));
        assert_eq!(idx.line_of("routes[0].split[0].cluster"), Some(6));
        assert_eq!(idx.line_of("routes[0].split[1].weight"), Some(8));
        // Missing leaf falls back to the nearest ancestor.
        assert_eq!(idx.line_of("routes[0].split[1].sticky"), Some(7));
        assert_eq!(idx.line_of("nothing.here"), None);
    }
}
