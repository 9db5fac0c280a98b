//! Writing the Prometheus text format (version 0.0.4): family headers, samples with
//! escaped label values, and exact decimal numbers.

use std::fmt::Write;

/// Writes `# HELP` and `# TYPE` for family `name` (`kind`: counter, gauge, histogram).
pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    out.push_str(name);
    out.push(' ');
    out.push_str(kind);
    out.push('\n');
}

/// A label: name and value; a `None` value leaves the label out.
pub(crate) type Label<'a> = (&'a str, Option<&'a str>);

/// Writes one sample: `name{labels} value`.
pub(crate) fn sample(out: &mut String, name: &str, labels: &[Label<'_>], value: Value) {
    out.push_str(name);
    let mut first = true;
    for (label, text) in labels {
        let Some(text) = text else { continue };
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(label);
        out.push_str("=\"");
        escape_label_value(out, text);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    value.write(out);
    out.push('\n');
}

/// A sample value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    Int(u64),
    /// Nanoseconds, written as exact decimal seconds.
    Nanos(u64),
    Float(f64),
}

impl Value {
    fn write(self, out: &mut String) {
        match self {
            Value::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Nanos(n) => {
                let (secs, frac) = (n / 1_000_000_000, n % 1_000_000_000);
                let _ = write!(out, "{secs}");
                if frac != 0 {
                    let mut digits = format!("{frac:09}");
                    while digits.ends_with('0') {
                        digits.pop();
                    }
                    out.push('.');
                    out.push_str(&digits);
                }
            }
            Value::Float(f) if f.is_nan() => out.push_str("NaN"),
            Value::Float(f) if f == f64::INFINITY => out.push_str("+Inf"),
            Value::Float(f) if f == f64::NEG_INFINITY => out.push_str("-Inf"),
            Value::Float(f) => {
                let _ = write!(out, "{f}");
            }
        }
    }
}

/// Escapes a label value: backslash, double quote and line feed.
pub(crate) fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_escaped_labels() {
        let mut out = String::new();
        sample(
            &mut out,
            "m_total",
            &[("a", Some("x\"y\\z\nw")), ("b", None), ("c", Some(""))],
            Value::Int(7),
        );
        sample(&mut out, "m_total", &[("b", None)], Value::Int(0));
        assert_eq!(out, "m_total{a=\"x\\\"y\\\\z\\nw\",c=\"\"} 7\nm_total 0\n");
    }

    #[test]
    fn headers_escape_help() {
        let mut out = String::new();
        family(&mut out, "m", "gauge", "a \\ b\nc");
        assert_eq!(out, "# HELP m a \\\\ b\\nc\n# TYPE m gauge\n");
    }

    #[test]
    fn numbers_are_exact() {
        let text = |v: Value| {
            let mut out = String::new();
            v.write(&mut out);
            out
        };
        assert_eq!(text(Value::Nanos(0)), "0");
        assert_eq!(text(Value::Nanos(1)), "0.000000001");
        assert_eq!(text(Value::Nanos(309_000_000)), "0.309");
        assert_eq!(text(Value::Nanos(20_309_000_000)), "20.309");
        assert_eq!(text(Value::Float(1.5)), "1.5");
        assert_eq!(text(Value::Float(f64::INFINITY)), "+Inf");
        assert_eq!(text(Value::Float(f64::NAN)), "NaN");
        assert_eq!(text(Value::Int(u64::MAX)), "18446744073709551615");
    }
}
