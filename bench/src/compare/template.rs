//! The contender files' template language: `{name}` placeholders, `{{` for a literal `{`,
//! and one loop, `{for upstream in upstreams}` … `{end}` (each on a line of its own), whose
//! body is repeated once per upstream with `{upstream}` and `{index}` (from 0) set.
//!
//! A `{` not followed by a name and `}` is plain text, so nginx's and HAProxy's own braces
//! need no escaping. A line holding only a placeholder (and blanks) that renders empty is
//! dropped whole, so an optional setting leaves no blank line. An unknown placeholder is an
//! error naming its line.

use std::collections::BTreeMap;

/// The loop tag (the only one): repeats its body for each upstream.
pub const FOR_UPSTREAMS: &str = "{for upstream in upstreams}";
/// Ends the loop.
pub const END: &str = "{end}";

/// What went wrong, and on which line of the template (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub line: usize,
    pub message: String,
}

enum Piece {
    Text(String),
    Var(String),
}

enum Node {
    Line { pieces: Vec<Piece>, line: usize },
    Loop { body: Vec<Node> },
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn pieces(text: &str, line: usize) -> Result<Vec<Piece>, TemplateError> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('{') {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('{') {
            literal.push('{');
            rest = stripped;
            continue;
        }
        let name = after.find('}').map(|end| &after[..end]);
        match name {
            Some(n) if is_name(n) => {
                if !literal.is_empty() {
                    out.push(Piece::Text(std::mem::take(&mut literal)));
                }
                out.push(Piece::Var(n.to_string()));
                rest = &after[n.len() + 1..];
            }
            Some(n) if n == "end" || n.starts_with("for ") => {
                return Err(TemplateError {
                    line,
                    message: format!("`{{{n}}}` must stand on a line of its own"),
                });
            }
            _ => {
                literal.push('{');
                rest = after;
            }
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        out.push(Piece::Text(literal));
    }
    Ok(out)
}

fn parse(text: &str) -> Result<Vec<Node>, TemplateError> {
    // Stack of open loops: (line of the `for`, nodes so far); the bottom is the template.
    let mut stack: Vec<(usize, Vec<Node>)> = vec![(0, Vec::new())];
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed == FOR_UPSTREAMS {
            stack.push((line, Vec::new()));
            continue;
        }
        if trimmed.starts_with("{for ") && trimmed.ends_with('}') {
            return Err(TemplateError {
                line,
                message: format!("unknown loop `{trimmed}`; the one loop is `{FOR_UPSTREAMS}`"),
            });
        }
        if trimmed == END {
            if stack.len() == 1 {
                return Err(TemplateError {
                    line,
                    message: "`{end}` without a `{for ...}`".into(),
                });
            }
            let (_, body) = stack.pop().ok_or_else(|| TemplateError {
                line,
                message: "`{end}` without a `{for ...}`".into(),
            })?;
            if let Some((_, nodes)) = stack.last_mut() {
                nodes.push(Node::Loop { body });
            }
            continue;
        }
        let node = Node::Line {
            pieces: pieces(raw, line)?,
            line,
        };
        if let Some((_, nodes)) = stack.last_mut() {
            nodes.push(node);
        }
    }
    if stack.len() > 1 {
        let line = stack.last().map(|(l, _)| *l).unwrap_or(0);
        return Err(TemplateError {
            line,
            message: "`{for ...}` without an `{end}`".into(),
        });
    }
    Ok(stack.pop().map(|(_, n)| n).unwrap_or_default())
}

fn render_nodes(
    nodes: &[Node],
    vars: &BTreeMap<String, String>,
    scope: &[(&str, String)],
    upstreams: &[String],
    out: &mut String,
) -> Result<(), TemplateError> {
    for node in nodes {
        match node {
            Node::Line { pieces, line } => {
                let mut text = String::new();
                let mut only_var_and_blanks = true;
                let mut vars_seen = 0;
                for piece in pieces {
                    match piece {
                        Piece::Text(t) => {
                            if !t.trim().is_empty() {
                                only_var_and_blanks = false;
                            }
                            text.push_str(t);
                        }
                        Piece::Var(name) => {
                            vars_seen += 1;
                            let value = scope
                                .iter()
                                .find(|(n, _)| n == name)
                                .map(|(_, v)| v)
                                .or_else(|| vars.get(name))
                                .ok_or_else(|| TemplateError {
                                    line: *line,
                                    message: unknown(name, vars, scope),
                                })?;
                            text.push_str(value);
                        }
                    }
                }
                if only_var_and_blanks && vars_seen == 1 && text.trim().is_empty() {
                    continue;
                }
                out.push_str(&text);
            }
            Node::Loop { body } => {
                for (i, u) in upstreams.iter().enumerate() {
                    let inner = [("upstream", u.clone()), ("index", i.to_string())];
                    render_nodes(body, vars, &inner, upstreams, out)?;
                }
            }
        }
    }
    Ok(())
}

fn unknown(name: &str, vars: &BTreeMap<String, String>, scope: &[(&str, String)]) -> String {
    let mut known: Vec<&str> = vars.keys().map(String::as_str).collect();
    known.extend(scope.iter().map(|(n, _)| *n));
    let hint = if (name == "upstream" || name == "index") && scope.is_empty() {
        format!(" (`{{{name}}}` is set only inside `{FOR_UPSTREAMS}` … `{END}`)")
    } else {
        String::new()
    };
    format!(
        "unknown placeholder `{{{name}}}`{hint}; known here: {}",
        known.join(", ")
    )
}

/// Render `text` with `vars`, repeating loop bodies over `upstreams`.
pub fn render(
    text: &str,
    vars: &BTreeMap<String, String>,
    upstreams: &[String],
) -> Result<String, TemplateError> {
    let nodes = parse(text)?;
    let mut out = String::with_capacity(text.len() * 2);
    render_nodes(&nodes, vars, &[], upstreams, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn placeholders_loops_and_plain_braces() {
        let t = "events {\n    n {cores};\n}\nupstream b {\n    {balance}\n{for upstream in upstreams}\n    server s{index} {upstream}{opts};\n{end}\n}\n{{literal}\n";
        let v = vars(&[("cores", "2"), ("balance", ""), ("opts", " check")]);
        let ups = vec!["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
        let out = render(t, &v, &ups).expect("renders");
        assert_eq!(
            out,
            "events {\n    n 2;\n}\nupstream b {\n    server s0 127.0.0.1:1 check;\n    server s1 127.0.0.1:2 check;\n}\n{literal}\n"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let v = vars(&[("cores", "1")]);
        let e = render("a\nb {corse}\n", &v, &[]).expect_err("unknown");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("`{corse}`"), "{}", e.message);
        assert!(e.message.contains("cores"), "{}", e.message);
        let e = render("x\n{for upstream in upstreams}\ny\n", &v, &[]).expect_err("open");
        assert_eq!(e.line, 2);
        assert_eq!(render("{end}\n", &v, &[]).expect_err("end").line, 1);
        assert_eq!(
            render("a {upstream}\n", &v, &[]).expect_err("outside").line,
            1
        );
        assert_eq!(
            render("{for x in y}\n{end}\n", &v, &[])
                .expect_err("loop")
                .line,
            1
        );
    }
}
