//! Positions in the TOML text: which line and column a field path points at, and which
//! field a byte offset falls in, read from `toml_edit`'s spanned document.
//!
//! Semantic errors are found on the typed [`Config`](crate::Config) and named by a
//! [`FieldPath`]; [`position_of`] turns that path into the position of the offending key
//! (or, when the key is missing, of the table that should hold it). Serde errors carry a
//! byte span; [`path_at`] names the field that span falls in.

use crate::field_path::{FieldPath, Segment};
use std::ops::Range;
use toml_edit::{Item, Key, Table, Value};

/// A place in the document tree: an item (in a table), a value (in an inline array) or a
/// table of an array of tables.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(item) => item.span(),
            Node::Value(value) => value.span(),
            Node::Table(table) => table.span(),
        }
    }

    /// Tables written with a `[header]` / `[[header]]`: their spans run from the header to
    /// their last value and do not contain the spans of their sub-tables.
    fn is_header_table(self) -> bool {
        matches!(
            self,
            Node::Table(_) | Node::Item(Item::Table(_)) | Node::Item(Item::ArrayOfTables(_))
        )
    }

    fn child_key(self, key: &str) -> Option<(&'a Key, Node<'a>)> {
        let (key, item) = match self {
            Node::Table(table) | Node::Item(Item::Table(table)) => table.get_key_value(key)?,
            Node::Item(Item::Value(Value::InlineTable(table)))
            | Node::Value(Value::InlineTable(table)) => table.get_key_value(key)?,
            _ => return None,
        };
        Some((key, Node::Item(item)))
    }

    fn child_index(self, index: usize) -> Option<Node<'a>> {
        match self {
            Node::Item(Item::ArrayOfTables(tables)) => tables.get(index).map(Node::Table),
            Node::Item(Item::Value(Value::Array(array))) | Node::Value(Value::Array(array)) => {
                array.get(index).map(Node::Value)
            }
            _ => None,
        }
    }

    /// Every direct child with its path segment and, for keyed children, the key's span.
    fn children(self) -> Vec<(Segment, Option<Range<usize>>, Node<'a>)> {
        let keys: Vec<&str> = match self {
            Node::Table(table) | Node::Item(Item::Table(table)) => {
                table.iter().map(|(key, _)| key).collect()
            }
            Node::Item(Item::Value(Value::InlineTable(table)))
            | Node::Value(Value::InlineTable(table)) => table.iter().map(|(key, _)| key).collect(),
            Node::Item(Item::ArrayOfTables(tables)) => {
                return tables
                    .iter()
                    .enumerate()
                    .map(|(index, table)| (Segment::Index(index), None, Node::Table(table)))
                    .collect();
            }
            Node::Item(Item::Value(Value::Array(array))) | Node::Value(Value::Array(array)) => {
                return array
                    .iter()
                    .enumerate()
                    .map(|(index, value)| (Segment::Index(index), None, Node::Value(value)))
                    .collect();
            }
            _ => return Vec::new(),
        };
        keys.into_iter()
            .filter_map(|name| {
                let (key, child) = self.child_key(name)?;
                Some((Segment::Key(name.to_owned()), key.span(), child))
            })
            .collect()
    }
}

/// Byte offset in the text of the key (or array element) `path` names; when the path ends
/// in something absent, the offset of the deepest part that exists (a route's `[[routes]]`
/// header when its `service` key is missing); 0 when nothing of it exists.
pub(crate) fn position_of(root: &Table, path: &FieldPath) -> usize {
    let mut node = Node::Table(root);
    let mut offset = 0;
    for segment in path.segments() {
        let next = match segment {
            Segment::Key(name) => node
                .child_key(name)
                .map(|(key, child)| (key.span().or_else(|| child.span()), child)),
            Segment::Index(index) => node.child_index(*index).map(|child| (child.span(), child)),
        };
        let Some((span, child)) = next else { break };
        if let Some(span) = span {
            offset = span.start;
        }
        node = child;
    }
    offset
}

/// The deepest field whose key or value contains byte `offset` (root when none does).
pub(crate) fn path_at(root: &Table, offset: usize) -> FieldPath {
    let mut best = FieldPath::root();
    search(Node::Table(root), &FieldPath::root(), offset, &mut best);
    best
}

fn search(node: Node<'_>, path: &FieldPath, offset: usize, best: &mut FieldPath) {
    for (segment, key_span, child) in node.children() {
        let child_path = match &segment {
            Segment::Key(name) => path.key(name),
            Segment::Index(index) => path.index(*index),
        };
        let range = match (child.is_header_table(), key_span, child.span()) {
            (true, _, span) => span,
            (false, Some(key), Some(value)) => {
                Some(key.start.min(value.start)..key.end.max(value.end))
            }
            (false, key, value) => key.or(value),
        };
        let contains = range.is_some_and(|range| range.start <= offset && offset < range.end);
        if contains && child_path.segments().len() > best.segments().len() {
            *best = child_path.clone();
        }
        search(child, &child_path, offset, best);
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Best-effort field for a syntax error on `line`, where no document exists to walk: the
/// last `[table]` / `[[array]]` header above it (with the element index) and the key that
/// starts the line, e.g. `routes[1].path_prefix`.
pub(crate) fn field_near_line(text: &str, line: usize) -> FieldPath {
    let mut array_counts: Vec<(String, usize)> = Vec::new();
    let mut header = String::new();
    let mut key = String::new();
    for (number, raw) in text.lines().enumerate().take(line) {
        let trimmed = raw.trim();
        if let Some(rest) = trimmed.strip_prefix("[[") {
            header = squeeze(rest.split("]]").next().unwrap_or(rest));
            let nested = format!("{header}.");
            array_counts.retain(|(name, _)| !name.starts_with(&nested));
            match array_counts.iter_mut().find(|(name, _)| *name == header) {
                Some((_, count)) => *count += 1,
                None => array_counts.push((header.clone(), 1)),
            }
        } else if let Some(rest) = trimmed.strip_prefix('[') {
            header = squeeze(rest.split(']').next().unwrap_or(rest));
        } else if number + 1 == line {
            if let Some((name, _)) = trimmed.split_once('=') {
                let name = squeeze(name);
                if name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                {
                    key = name;
                }
            }
        }
    }
    let mut path = FieldPath::root();
    let mut prefix = String::new();
    for part in header.split('.').filter(|part| !part.is_empty()) {
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(part);
        path = path.key(part);
        if let Some((_, count)) = array_counts.iter().find(|(name, _)| *name == prefix) {
            path = path.index(count - 1);
        }
    }
    for part in key.split('.').filter(|part| !part.is_empty()) {
        path = path.key(part);
    }
    path
}

fn squeeze(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use toml_edit::ImDocument;

    const TEXT: &str = r#"[proxy]
listen = "127.0.0.1:4140"

[[services]]
name = "a"
endpoints = ["10.0.0.1:80", "10.0.0.2:80"]

[[routes]]
service = "a"
split = [{ service = "a", weight = 1 }, { service = "b", weight = 2 }]

[[routes.headers]]
name = "x-env"
"#;

    fn document() -> ImDocument<String> {
        match ImDocument::parse(TEXT.to_owned()) {
            Ok(document) => document,
            Err(error) => panic!("test document must parse: {error}"),
        }
    }

    fn line_of(path: FieldPath) -> usize {
        let document = document();
        line_col(TEXT, position_of(document.as_table(), &path)).0
    }

    #[test]
    fn paths_resolve_to_the_line_of_their_key() {
        let routes = FieldPath::root().key("routes").index(0);
        assert_eq!(line_of(FieldPath::root().key("proxy").key("listen")), 2);
        assert_eq!(line_of(FieldPath::root().key("services").index(0)), 4);
        assert_eq!(
            line_of(
                FieldPath::root()
                    .key("services")
                    .index(0)
                    .key("endpoints")
                    .index(1)
            ),
            6
        );
        assert_eq!(line_of(routes.key("split").index(1).key("weight")), 10);
        assert_eq!(line_of(routes.key("headers").index(0).key("name")), 13);
        // A missing key points at its table's header.
        assert_eq!(line_of(routes.key("timeout_ms")), 8);
    }

    #[test]
    fn offsets_resolve_to_the_deepest_field() {
        let document = document();
        let offset = |needle: &str| match TEXT.find(needle) {
            Some(offset) => offset,
            None => panic!("{needle} is in the text"),
        };
        let at = |needle: &str| path_at(document.as_table(), offset(needle)).to_string();
        assert_eq!(at("\"10.0.0.2:80\""), "services[0].endpoints[1]");
        assert_eq!(at("weight = 2"), "routes[0].split[1].weight");
        assert_eq!(at("\"x-env\""), "routes[0].headers[0].name");
        assert_eq!(at("listen"), "proxy.listen");
    }

    #[test]
    fn syntax_error_lines_get_a_best_effort_field() {
        assert_eq!(field_near_line(TEXT, 10).to_string(), "routes[0].split");
        assert_eq!(
            field_near_line(TEXT, 13).to_string(),
            "routes[0].headers[0].name"
        );
        assert_eq!(field_near_line(TEXT, 2).to_string(), "proxy.listen");
        assert_eq!(field_near_line(TEXT, 4).to_string(), "services[0]");
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("ab\ncdé f", 0), (1, 1));
        assert_eq!(line_col("ab\ncdé f", 3), (2, 1));
        assert_eq!(line_col("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_col("ab", 99), (1, 3));
    }
}
