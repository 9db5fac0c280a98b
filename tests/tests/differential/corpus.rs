//! The differential corpus: one `*.case` file per case in `tests/data/differential/`, read
//! into the requests a client sends, the responses an upstream sends back, and what each
//! proxy is expected to do. The format is described in that folder's `README.md`.

use std::path::{Path, PathBuf};

/// What a case expects of the two proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// After normalisation, coremesh and nginx agree on both sides.
    Agree,
    /// A documented divergence: coremesh must produce the `coremesh upstream` / `coremesh
    /// client` renderings; nginx's renderings, where given, record what nginx does.
    Diverge,
}

/// One response the upstream sends, in the order requests arrive.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub bytes: Vec<u8>,
    /// Close the connection after sending it (a close-delimited body needs this).
    pub close_after: bool,
}

/// One case of the corpus.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub path: PathBuf,
    pub expect: Expect,
    /// Client requests, sent one after another on one connection (the next once the
    /// previous one's final response has arrived).
    pub requests: Vec<Vec<u8>>,
    pub responses: Vec<Scripted>,
    /// Responses produced by the proxy itself (errors): the client side compares the status
    /// line's code only, since the text is each proxy's own.
    pub own_response: bool,
    /// Statuses coremesh may answer instead of agreeing (e.g. 502 where forwarding a
    /// repaired message and refusing it are both correct).
    pub coremesh_may_answer: Vec<u16>,
    /// Expected renderings (text, compared exactly) for divergent cases; several sections
    /// with the same name are alternatives (coremesh must produce one of them).
    pub coremesh_upstream: Vec<String>,
    pub coremesh_client: Vec<String>,
    pub nginx_upstream: Option<String>,
    pub nginx_client: Option<String>,
    /// A bug fix on main this case checks (re-run it after the merge).
    pub tracks: Option<String>,
    /// Normalisation rules this case turns off.
    pub strict: crate::render::Strictness,
}

/// The corpus folder.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/differential")
}

/// Names (file stems) of every case in the corpus, sorted.
pub fn case_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap_or_else(|e| panic!("read {}: {e}", corpus_dir().display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            if path.extension()? != "case" {
                return None;
            }
            Some(path.file_stem()?.to_str()?.to_string())
        })
        .collect();
    names.sort();
    names
}

/// Read the case `name` (file `name.case`).
pub fn load(name: &str) -> Case {
    let path = corpus_dir().join(format!("{name}.case"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse(name, &path, &text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

enum Section {
    Request,
    Response { close_after: bool },
    Text(&'static str),
}

fn parse(name: &str, path: &Path, text: &str) -> Result<Case, String> {
    let mut case = Case {
        name: name.to_string(),
        path: path.to_path_buf(),
        expect: Expect::Agree,
        requests: Vec::new(),
        responses: Vec::new(),
        own_response: false,
        coremesh_may_answer: Vec::new(),
        coremesh_upstream: Vec::new(),
        coremesh_client: Vec::new(),
        nginx_upstream: None,
        nginx_client: None,
        tracks: None,
        strict: crate::render::Strictness::default(),
    };
    let mut section: Option<Section> = None;
    let mut bytes: Vec<u8> = Vec::new();
    let mut lines: Vec<&str> = Vec::new();
    let mut saw_expect = false;
    for (number, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}", number + 1);
        if let Some(header) = line.strip_prefix("--- ") {
            finish(&mut case, section.take(), &mut bytes, &mut lines);
            section = Some(match header.trim() {
                "request" => Section::Request,
                "response" => Section::Response { close_after: false },
                "response then close" => Section::Response { close_after: true },
                "coremesh upstream" => Section::Text("coremesh upstream"),
                "coremesh client" => Section::Text("coremesh client"),
                "nginx upstream" => Section::Text("nginx upstream"),
                "nginx client" => Section::Text("nginx client"),
                other => return Err(at(format!("unknown section {other:?}"))),
            });
            continue;
        }
        match &section {
            Some(Section::Request | Section::Response { .. }) => {
                if line.starts_with('#') {
                    continue;
                }
                bytes.extend(unescape(line).map_err(at)?);
            }
            Some(Section::Text(_)) => lines.push(line),
            None => {
                if line.starts_with('#') || line.trim().is_empty() {
                    continue;
                }
                let (key, value) = line
                    .split_once(':')
                    .ok_or_else(|| at(format!("expected `key: value`, got {line:?}")))?;
                let value = value.trim();
                match key.trim() {
                    "expect" => {
                        saw_expect = true;
                        case.expect = match value {
                            "agree" => Expect::Agree,
                            "diverge" => Expect::Diverge,
                            other => return Err(at(format!("unknown expectation {other:?}"))),
                        }
                    }
                    "own-response" => case.own_response = value == "yes",
                    "coremesh-may-answer" => {
                        for status in value.split_whitespace() {
                            case.coremesh_may_answer.push(
                                status
                                    .parse()
                                    .map_err(|_| at(format!("bad status {status:?}")))?,
                            );
                        }
                    }
                    "tracks" => case.tracks = Some(value.to_string()),
                    "compare" => {
                        for what in value.split_whitespace() {
                            match what {
                                "framing-fields" => case.strict.framing_fields = true,
                                "request-version" => case.strict.request_version = true,
                                other => return Err(at(format!("unknown comparison {other:?}"))),
                            }
                        }
                    }
                    "note" | "rfc" | "nginx" | "coremesh" => {}
                    other => return Err(at(format!("unknown key {other:?}"))),
                }
            }
        }
    }
    finish(&mut case, section, &mut bytes, &mut lines);
    if !saw_expect {
        return Err("no `expect:` line".into());
    }
    if case.requests.is_empty() {
        return Err("no `--- request` section".into());
    }
    if case.expect == Expect::Diverge
        && case.coremesh_upstream.is_empty()
        && case.coremesh_client.is_empty()
    {
        return Err(
            "`expect: diverge` needs a `coremesh upstream` or `coremesh client` section".into(),
        );
    }
    Ok(case)
}

fn finish(case: &mut Case, section: Option<Section>, bytes: &mut Vec<u8>, lines: &mut Vec<&str>) {
    match section {
        None => {}
        Some(Section::Request) => case.requests.push(std::mem::take(bytes)),
        Some(Section::Response { close_after }) => case.responses.push(Scripted {
            bytes: std::mem::take(bytes),
            close_after,
        }),
        Some(Section::Text(which)) => {
            // Trailing blank lines separate sections; they are not part of the rendering.
            while lines.last().is_some_and(|l| l.trim().is_empty()) {
                lines.pop();
            }
            let mut text = lines.join("\n");
            text.push('\n');
            lines.clear();
            match which {
                "coremesh upstream" => case.coremesh_upstream.push(text),
                "coremesh client" => case.coremesh_client.push(text),
                "nginx upstream" => case.nginx_upstream = Some(text),
                _ => case.nginx_client = Some(text),
            }
        }
    }
}

/// The bytes of one corpus line: the text as written (the file's own line end is not part
/// of it) with `\r`, `\n`, `\t`, `\\`, `\xHH` and `\s` (a space, for trailing ones) escapes.
pub fn unescape(line: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(line.len());
    let raw = line.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        let Some(&kind) = raw.get(i + 1) else {
            return Err("a lone backslash ends the line".into());
        };
        i += 2;
        match kind {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b's' => out.push(b' '),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = raw
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad \\x escape in {line:?}"))?;
                out.push(hex);
                i += 2;
            }
            b'*' => {
                // `\*N:C` repeats the character C N times (long header lines).
                let rest = &line[i..];
                let (count, tail) = rest
                    .split_once(':')
                    .ok_or_else(|| format!("bad \\* escape in {line:?}"))?;
                let count: usize = count
                    .parse()
                    .map_err(|_| format!("bad \\* count in {line:?}"))?;
                let c = *tail
                    .as_bytes()
                    .first()
                    .ok_or_else(|| format!("bad \\* escape in {line:?}"))?;
                out.extend(std::iter::repeat_n(c, count));
                i += count.to_string().len() + 2;
            }
            other => return Err(format!("unknown escape \\{}", other as char)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(unescape(r"a\r\n\x00\s\\\t").unwrap(), b"a\r\n\x00 \\\t");
        assert_eq!(unescape(r"x\*3:yz").unwrap(), b"xyyyz");
        assert!(unescape(r"\q").is_err());
    }
}
