//! Reading a Prometheus text exposition (format 0.0.4) back into samples, so tests can
//! assert exact values by metric name and labels, and running `promtool check metrics` on
//! one (promtool must be installed unless `COREMESH_TEST_SKIP_PROMTOOL=1`).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A whole exposition: its samples and, per family, its `# TYPE`.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub samples: Vec<MetricSample>,
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// Parse `text`; a line that is not a comment, blank or a well-formed sample is an error
    /// naming it.
    pub fn parse(text: &str) -> Result<Exposition, String> {
        let mut out = Exposition::default();
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            if line.trim().is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                match (parts.next(), parts.next()) {
                    (Some(name), Some(kind)) => {
                        out.types.insert(name.to_string(), kind.to_string());
                    }
                    _ => return Err(format!("line {line_no}: bad TYPE line {line:?}")),
                }
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            out.samples
                .push(parse_sample(line).map_err(|e| format!("line {line_no}: {e}: {line:?}"))?);
        }
        Ok(out)
    }

    /// The value of the sample named `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// Samples named `name` whose labels include every one of `labels`.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&MetricSample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// Sum of [`matching`](Self::matching).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).iter().map(|s| s.value).sum()
    }
}

fn parse_sample(line: &str) -> Result<MetricSample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end = loop {
            // Skip a separating comma, then read `key="value"` or the closing brace.
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' || c == ' ' {
                    chars.next();
                } else {
                    break;
                }
            }
            let Some(&(start, c)) = chars.peek() else {
                return Err("unterminated labels".into());
            };
            if c == '}' {
                break start + 1;
            }
            let mut key_end = start;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    key_end = i;
                    break;
                }
            }
            let key = after[start..key_end].to_string();
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key}: value not quoted"));
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        other => return Err(format!("label {key}: bad escape {other:?}")),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(format!("label {key}: unterminated value"));
            }
            labels.insert(key, value);
        };
        rest = &after[end..];
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    Ok(MetricSample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Set to `1` to let the promtool checks pass when promtool is not installed, for a machine
/// without Debian's `prometheus` package. Without it a missing promtool fails the check.
pub const SKIP_PROMTOOL_ENV: &str = "COREMESH_TEST_SKIP_PROMTOOL";

/// Whether [`SKIP_PROMTOOL_ENV`] is set to `1` in this process's environment.
pub fn promtool_skip_allowed() -> bool {
    std::env::var(SKIP_PROMTOOL_ENV).is_ok_and(|v| v.trim() == "1")
}

/// What `promtool check metrics` said about an exposition.
#[derive(Debug)]
pub enum PromtoolVerdict {
    /// promtool accepted it (exit 0).
    Accepted { output: String },
    /// promtool rejected it (non-zero exit) and why.
    Rejected { output: String },
    /// promtool is not installed (not on `PATH`) and [`SKIP_PROMTOOL_ENV`] allows that.
    NotInstalled,
}

/// Run `promtool check metrics` with `text` on its standard input. A missing promtool is
/// an error unless [`SKIP_PROMTOOL_ENV`] is `1`.
pub fn promtool_check(text: &str) -> Result<PromtoolVerdict, String> {
    promtool_check_with(text, promtool_skip_allowed())
}

/// [`promtool_check`] with the opt-out given: `skip_allowed` turns a missing promtool into
/// [`PromtoolVerdict::NotInstalled`] instead of an error.
pub fn promtool_check_with(text: &str, skip_allowed: bool) -> Result<PromtoolVerdict, String> {
    check_metrics_with("promtool", text, skip_allowed)
}

/// `PROGRAM check metrics` (the program a parameter, so a test can name a missing one).
fn check_metrics_with(
    program: &str,
    text: &str,
    skip_allowed: bool,
) -> Result<PromtoolVerdict, String> {
    let child = Command::new(program)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if skip_allowed {
                Ok(PromtoolVerdict::NotInstalled)
            } else {
                Err(format!(
                    "{program} is not installed: install Debian's `prometheus` package (.ci/run \
                     does), or set {SKIP_PROMTOOL_ENV}=1 to skip the promtool checks"
                ))
            };
        }
        Err(e) => return Err(format!("cannot run promtool: {e}")),
    };
    let mut stdin = child.stdin.take().ok_or("promtool: no stdin pipe")?;
    let input = text.as_bytes().to_vec();
    // Write from another thread: promtool may answer before reading everything.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for promtool: {e}"))?;
    let _ = writer.join();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(if out.status.success() {
        PromtoolVerdict::Accepted { output }
    } else {
        PromtoolVerdict::Rejected { output }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\n\
                    a_total{service=\"s\",class=\"2xx\"} 7\n\
                    b 1.5\n\
                    c{x=\"a\\\"b\\\\c\\nd\",le=\"+Inf\"} +Inf\n";
        let e = Exposition::parse(text).unwrap();
        assert_eq!(e.types.get("a_total").map(String::as_str), Some("counter"));
        assert_eq!(
            e.value("a_total", &[("service", "s"), ("class", "2xx")]),
            Some(7.0)
        );
        assert_eq!(e.value("a_total", &[("service", "s")]), None);
        assert_eq!(e.sum("a_total", &[("service", "s")]), 7.0);
        assert_eq!(e.value("b", &[]), Some(1.5));
        assert_eq!(
            e.value("c", &[("x", "a\"b\\c\nd"), ("le", "+Inf")]),
            Some(f64::INFINITY)
        );
    }

    #[test]
    fn promtool_verdicts() {
        let ok = "# HELP ok_total Ok.\n# TYPE ok_total counter\nok_total 1\n";
        match promtool_check(ok).unwrap_or_else(|e| panic!("{e}")) {
            PromtoolVerdict::NotInstalled => {
                assert!(promtool_skip_allowed());
                eprintln!("skipped: promtool is not installed ({SKIP_PROMTOOL_ENV}=1)");
            }
            v => {
                assert!(matches!(v, PromtoolVerdict::Accepted { .. }), "{v:?}");
                let v = promtool_check("garbage{\n").unwrap_or_else(|e| panic!("{e}"));
                assert!(matches!(v, PromtoolVerdict::Rejected { .. }), "{v:?}");
            }
        }
    }

    #[test]
    fn a_missing_promtool_fails_unless_skipping_is_allowed() {
        let missing = "coremesh-test-no-such-promtool";
        let err = check_metrics_with(missing, "ok_total 1\n", false)
            .expect_err("a missing promtool is an error");
        assert!(err.contains(SKIP_PROMTOOL_ENV), "{err}");
        assert!(matches!(
            check_metrics_with(missing, "ok_total 1\n", true),
            Ok(PromtoolVerdict::NotInstalled)
        ));
    }

    #[test]
    fn a_malformed_line_is_named() {
        let err = Exposition::parse("ok 1\nbad{x=1} 2\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(Exposition::parse("novalue\n").is_err());
        assert!(Exposition::parse("x{a=\"1\" 2\n").is_err());
    }
}
