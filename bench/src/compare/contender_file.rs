//! Contender files: one TOML file describes how to run one proxy in `compare` (its binary,
//! version command, config template, start arguments, readiness check, the scenarios and
//! protocols it supports, and its settings per profile). The built-in ones are
//! `bench/contenders/*.toml`, compiled in; `compare --contender FILE` adds any other.
//! Loading checks every template against the placeholders it may use, so a wrong file
//! fails at once with its path, field and line.

use super::mtls_file::MtlsDef;
use super::template::{self, TemplateError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

/// The contender files compiled into the bench (name of the file, its text).
pub const BUILT_IN: [(&str, &str); 7] = [
    (
        "bench/contenders/coremesh.toml",
        include_str!("../../contenders/coremesh.toml"),
    ),
    (
        "bench/contenders/nginx.toml",
        include_str!("../../contenders/nginx.toml"),
    ),
    (
        "bench/contenders/haproxy.toml",
        include_str!("../../contenders/haproxy.toml"),
    ),
    (
        "bench/contenders/pingora.toml",
        include_str!("../../contenders/pingora.toml"),
    ),
    (
        "bench/contenders/nginx-h2c.toml",
        include_str!("../../contenders/nginx-h2c.toml"),
    ),
    (
        "bench/contenders/haproxy-h2c.toml",
        include_str!("../../contenders/haproxy-h2c.toml"),
    ),
    (
        "bench/contenders/coremesh-h2c.toml",
        include_str!("../../contenders/coremesh-h2c.toml"),
    ),
];

/// Protocols a contender may list (`compare --protocol`).
pub const PROTOCOLS: [&str; 2] = ["http1", "h2c"];

/// Placeholders the bench sets for every template (a profile's `vars` add more).
pub const BUILT_IN_VARS: [&str; 16] = [
    "listen",
    "listen_host",
    "listen_port",
    "upstreams",
    "cpus",
    "cores",
    "work",
    "config",
    "binary",
    "nofile",
    "max_connections",
    "max_connections_paired",
    "coremesh",
    "coremesh_driver",
    "root",
    "admin",
];

fn default_protocols() -> Vec<String> {
    vec!["http1".to_string()]
}

fn default_extension() -> String {
    "conf".to_string()
}

fn default_ready_path() -> String {
    "/".to_string()
}

fn default_ready_timeout_s() -> f64 {
    10.0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadyCheck {
    /// A GET on a fresh connection is answered with an HTTP status line.
    #[default]
    Http,
    /// The listener accepts a connection.
    Tcp,
}

/// How to tell a started contender is ready.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    #[serde(default)]
    pub check: ReadyCheck,
    #[serde(default = "default_ready_path")]
    pub path: String,
    #[serde(default = "default_ready_timeout_s")]
    pub timeout_s: f64,
}

impl Default for Ready {
    fn default() -> Ready {
        Ready {
            check: ReadyCheck::default(),
            path: default_ready_path(),
            timeout_s: default_ready_timeout_s(),
        }
    }
}

type S<T> = toml::Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    #[serde(default)]
    settings: String,
    #[serde(default)]
    args: Vec<S<String>>,
    #[serde(default)]
    vars: BTreeMap<String, S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfiles {
    plain: Option<RawProfile>,
    resilient: Option<RawProfile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: S<String>,
    #[serde(default)]
    description: String,
    binary: S<String>,
    #[serde(default)]
    version: Vec<S<String>>,
    protocols: Option<S<Vec<String>>>,
    scenarios: Option<S<Vec<String>>>,
    config: Option<S<String>>,
    #[serde(default = "default_extension")]
    config_extension: String,
    start: Vec<S<String>>,
    #[serde(default)]
    logs: Vec<S<String>>,
    #[serde(default)]
    admin_args: Vec<S<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    ready: Ready,
    profiles: Option<RawProfiles>,
    mtls: Option<super::mtls_file::RawMtls>,
}

/// A template with where it sits in its file, for errors.
#[derive(Debug, Clone)]
pub struct Template {
    pub text: String,
    pub field: String,
    /// Line of the file the template's first line is on.
    pub first_line: usize,
}

/// One profile's settings: the report's one-line description, arguments added to the
/// start, and placeholders for the templates.
#[derive(Debug, Clone, Default)]
pub struct ProfileDef {
    pub settings: String,
    pub args: Vec<Template>,
    pub vars: BTreeMap<String, String>,
}

/// A loaded, checked contender file.
#[derive(Debug, Clone)]
pub struct ContenderFile {
    /// Where it came from (a path, or `bench/contenders/NAME.toml` for a built-in one).
    pub origin: String,
    pub name: String,
    pub description: String,
    pub binary: Template,
    pub version: Vec<Template>,
    pub protocols: Vec<String>,
    /// `None`: every scenario.
    pub scenarios: Option<Vec<String>>,
    pub config: Option<Template>,
    pub config_extension: String,
    pub start: Vec<Template>,
    pub logs: Vec<Template>,
    /// Arguments added when the run found that the binary keeps running only with an admin
    /// server (see `coremesh_preflight`); `{admin}` is a free 127.0.0.1 address.
    pub admin_args: Vec<Template>,
    pub env: BTreeMap<String, String>,
    pub ready: Ready,
    pub plain: ProfileDef,
    pub resilient: ProfileDef,
    /// The two-proxy layout of the `mtls` scenario (`None`: it does not take part).
    pub mtls: Option<MtlsDef>,
}

/// The line (from 1) of byte `at` of `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].matches('\n').count() + 1
}

/// `[table]` of a header line, or `None` for a line that is not one.
fn header(line: &str) -> Option<&str> {
    let t = line.trim();
    let inner = t.strip_prefix('[')?.strip_suffix(']')?.trim();
    let inner = inner.trim_start_matches('[').trim_end_matches(']').trim();
    inner
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .then_some(inner)
}

/// The key a `key = value` line sets, or `None` for another line.
fn key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    .then_some(key)
}

/// The dotted name of the field whose value holds byte `at` of `text`: the nearest
/// `key =` line at or above it, under the nearest `[table]` header above that (for the
/// toml parser's errors, which give a position but no name).
fn field_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let end = text.get(at..)?.find('\n').map_or(text.len(), |n| at + n);
    let mut lines = text[..end].lines().rev();
    let key = lines.by_ref().find_map(|l| {
        if header(l).is_some() {
            Some(None)
        } else {
            key_of(l).map(Some)
        }
    })??;
    match lines.find_map(header) {
        Some(table) if !table.is_empty() => Some(format!("{table}.{key}")),
        _ => Some(key.to_string()),
    }
}

/// The line (from 1) that sets `key` of `table`, as `[table]` then `key = …`, or as
/// `table.key = …` at the top.
fn key_line(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        if let Some(h) = header(line) {
            current = h;
            continue;
        }
        let full = match (current, key_of(line)) {
            (_, None) => continue,
            ("", Some(k)) => k.to_string(),
            (t, Some(k)) => format!("{t}.{k}"),
        };
        if full == format!("{table}.{key}")
            || (current.is_empty() && line.trim_start().starts_with(table) && line.contains(key))
        {
            return Some(i + 1);
        }
    }
    None
}

/// The file line a string value's first line of content is on (a multi-line string that
/// opens with a newline starts on the next line).
fn content_line(text: &str, span: &Range<usize>) -> usize {
    let raw = text.get(span.clone()).unwrap_or("");
    let line = line_of(text, span.start);
    if raw.starts_with("'''\n") || raw.starts_with("\"\"\"\n") {
        line + 1
    } else {
        line
    }
}

pub(super) fn template(text: &str, field: &str, v: &S<String>) -> Template {
    Template {
        text: v.get_ref().clone(),
        field: field.to_string(),
        first_line: content_line(text, &v.span()),
    }
}

impl Template {
    /// Render, with errors giving the file line and field.
    pub fn render(
        &self,
        origin: &str,
        vars: &BTreeMap<String, String>,
        upstreams: &[String],
    ) -> Result<String, String> {
        template::render(&self.text, vars, upstreams).map_err(|TemplateError { line, message }| {
            format!(
                "{origin}:{}: field `{}`: {message}",
                self.first_line + line - 1,
                self.field
            )
        })
    }
}

impl ContenderFile {
    /// Read and check a contender file.
    pub fn load(path: &Path) -> Result<ContenderFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read contender file {}: {e}", path.display()))?;
        ContenderFile::parse(&path.display().to_string(), &text)
    }

    /// The built-in contender files.
    pub fn built_in() -> Result<Vec<ContenderFile>, String> {
        BUILT_IN
            .iter()
            .map(|(origin, text)| ContenderFile::parse(origin, text))
            .collect()
    }

    /// Parse and check `text`, read from `origin`.
    pub fn parse(origin: &str, text: &str) -> Result<ContenderFile, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| format!(":{}", line_of(text, s.start)))
                .unwrap_or_default();
            // Missing and unknown fields are named by the message itself.
            let field = e
                .span()
                .filter(|_| !e.message().contains("field `"))
                .and_then(|s| field_at(text, s.start))
                .map(|f| format!("field `{f}`: "))
                .unwrap_or_default();
            format!("{origin}{line}: {field}{}", e.message().trim_end())
        })?;
        let at = |span: Range<usize>| format!("{origin}:{}", line_of(text, span.start));
        let name = raw.name.get_ref().trim().to_string();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "{}: field `name`: {:?} must be non-empty letters, digits, `-` or `_`",
                at(raw.name.span()),
                raw.name.get_ref()
            ));
        }
        if name == "direct" {
            return Err(format!(
                "{}: field `name`: `direct` is the built-in no-proxy contender",
                at(raw.name.span())
            ));
        }
        if let Some(list) = &raw.protocols {
            for p in list.get_ref() {
                if !PROTOCOLS.contains(&p.as_str()) {
                    return Err(format!(
                        "{}: field `protocols`: unknown protocol {p:?}; known: {}",
                        at(list.span()),
                        PROTOCOLS.join(", ")
                    ));
                }
            }
        }
        if let Some(list) = &raw.scenarios {
            for s in list.get_ref() {
                if !super::scenarios::ALL.contains(&s.as_str()) {
                    return Err(format!(
                        "{}: field `scenarios`: unknown scenario {s:?}; known: {}",
                        at(list.span()),
                        super::scenarios::ALL.join(", ")
                    ));
                }
            }
        }
        if raw.start.is_empty() && raw.config.is_none() {
            return Err(format!(
                "{}: field `start`: give the arguments that start the proxy (or a `config`)",
                at(raw.binary.span())
            ));
        }
        if !(raw.ready.timeout_s > 0.0 && raw.ready.timeout_s <= 600.0) {
            let line = key_line(text, "ready", "timeout_s")
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            return Err(format!(
                "{origin}{line}: field `ready.timeout_s`: {} is not within (0, 600]",
                raw.ready.timeout_s
            ));
        }
        let profile = |p: Option<RawProfile>, which: &str| -> Result<ProfileDef, String> {
            let p = p.unwrap_or(RawProfile {
                settings: String::new(),
                args: Vec::new(),
                vars: BTreeMap::new(),
            });
            let mut vars = BTreeMap::new();
            for (k, v) in p.vars {
                if BUILT_IN_VARS.contains(&k.as_str()) || k == "upstream" || k == "index" {
                    return Err(format!(
                        "{}: field `profiles.{which}.vars.{k}`: `{k}` is set by the bench",
                        at(v.span())
                    ));
                }
                vars.insert(k, v.into_inner());
            }
            Ok(ProfileDef {
                settings: p.settings,
                args: p
                    .args
                    .iter()
                    .map(|a| template(text, &format!("profiles.{which}.args"), a))
                    .collect(),
                vars,
            })
        };
        let (plain, resilient) = match raw.profiles {
            Some(p) => (
                profile(p.plain, "plain")?,
                profile(p.resilient, "resilient")?,
            ),
            None => (profile(None, "plain")?, profile(None, "resilient")?),
        };
        let mtls = match &raw.mtls {
            Some(m) => Some(MtlsDef::parse(text, m, &at)?),
            None => None,
        };
        let file = ContenderFile {
            origin: origin.to_string(),
            name,
            description: raw.description,
            binary: template(text, "binary", &raw.binary),
            version: raw
                .version
                .iter()
                .map(|v| template(text, "version", v))
                .collect(),
            protocols: raw
                .protocols
                .map(|p| p.into_inner())
                .unwrap_or_else(default_protocols),
            scenarios: raw.scenarios.map(|s| s.into_inner()),
            config: raw.config.as_ref().map(|c| template(text, "config", c)),
            config_extension: raw.config_extension,
            start: raw
                .start
                .iter()
                .map(|s| template(text, "start", s))
                .collect(),
            logs: raw.logs.iter().map(|l| template(text, "logs", l)).collect(),
            admin_args: raw
                .admin_args
                .iter()
                .map(|a| template(text, "admin_args", a))
                .collect(),
            env: raw.env,
            ready: raw.ready,
            plain,
            resilient,
            mtls,
        };
        file.check()?;
        Ok(file)
    }

    /// Render every template with placeholder values of the right shape, once per profile,
    /// so an unknown placeholder or a broken loop is found before any run.
    fn check(&self) -> Result<(), String> {
        let ups = vec!["127.0.0.1:1".to_string(), "127.0.0.1:2".to_string()];
        for profile in [&self.plain, &self.resilient] {
            let mut vars: BTreeMap<String, String> = BUILT_IN_VARS
                .iter()
                .map(|k| (k.to_string(), "x".to_string()))
                .collect();
            vars.extend(profile.vars.clone());
            let templates = std::iter::once(&self.binary)
                .chain(&self.version)
                .chain(&self.config)
                .chain(&self.start)
                .chain(&self.logs)
                .chain(&self.admin_args)
                .chain(&profile.args);
            for t in templates {
                t.render(&self.origin, &vars, &ups)?;
            }
        }
        if let Some(m) = &self.mtls {
            m.check(&self.origin, &self.start)?;
        }
        Ok(())
    }

    /// Whether the contender takes part in `scenario`.
    pub fn supports(&self, scenario: &str) -> bool {
        self.scenarios
            .as_ref()
            .map(|list| list.iter().any(|s| s == scenario))
            .unwrap_or(true)
    }

    pub fn profile(&self, resilient: bool) -> &ProfileDef {
        if resilient {
            &self.resilient
        } else {
            &self.plain
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_files_load() {
        let files = ContenderFile::built_in().expect("built-in contender files are valid");
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "coremesh",
                "nginx",
                "haproxy",
                "pingora",
                "nginx-h2c",
                "haproxy-h2c",
                "coremesh-h2c"
            ]
        );
        for f in &files[4..] {
            assert_eq!(f.protocols, ["h2c"], "{}", f.name);
            // Every scenario of an h2c run, and no other.
            for s in crate::compare::scenarios::ALL {
                assert_eq!(
                    f.supports(s),
                    crate::compare::scenarios::H2C.contains(&s),
                    "{}: {s}",
                    f.name
                );
            }
        }
        // coremesh's admin address is a property of its file, not of its name.
        let vars: BTreeMap<String, String> = BUILT_IN_VARS
            .iter()
            .map(|k| (k.to_string(), format!("<{k}>")))
            .collect();
        let admin: Vec<String> = files[0]
            .admin_args
            .iter()
            .map(|t| t.render("coremesh.toml", &vars, &[]).expect("render"))
            .collect();
        assert_eq!(admin, ["--admin", "<admin>"]);
        assert_eq!(files[6].admin_args.len(), 2);
        // The two-proxy layout of the `mtls` scenario.
        let with_mtls: Vec<&str> = files
            .iter()
            .filter(|f| f.mtls.is_some())
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(with_mtls, ["coremesh", "nginx", "haproxy"]);
        assert!(files[1..6].iter().all(|f| f.admin_args.is_empty()));
    }

    #[test]
    fn errors_name_field_and_line() {
        let good = "name = \"p\"\nbinary = \"p\"\nstart = [\"-c\", \"{config}\"]\nconfig = '''\nlisten {listen};\n'''\n";
        ContenderFile::parse("p.toml", good).expect("good file");
        let typo = good.replace("{listen}", "{lisen}");
        let e = ContenderFile::parse("p.toml", &typo).expect_err("unknown placeholder");
        assert!(e.starts_with("p.toml:5: field `config`"), "{e}");
        assert!(e.contains("`{lisen}`"), "{e}");
        let missing = "name = \"p\"\nstart = []\n";
        let e = ContenderFile::parse("p.toml", missing).expect_err("no binary");
        assert!(e.contains("binary"), "{e}");
        let wrong_type = "name = \"p\"\nbinary = \"p\"\nstart = [\"a\"]\nscenarios = \"cpu\"\n";
        let e = ContenderFile::parse("p.toml", wrong_type).expect_err("scenarios type");
        assert!(e.starts_with("p.toml:4: field `scenarios`: "), "{e}");
        let in_table = format!("{good}\n[ready]\ncheck = \"tcp\"\ntimeout_s = \"5\"\n");
        let e = ContenderFile::parse("p.toml", &in_table).expect_err("timeout type");
        assert!(e.starts_with("p.toml:10: field `ready.timeout_s`: "), "{e}");
        let out_of_range = format!("{good}\n[ready]\ntimeout_s = 0.0\n");
        let e = ContenderFile::parse("p.toml", &out_of_range).expect_err("timeout range");
        assert!(
            e.starts_with("p.toml:9: field `ready.timeout_s`: 0 "),
            "{e}"
        );
        let inline = format!("{good}ready = {{ timeout_s = 900.0 }}\n");
        let e = ContenderFile::parse("p.toml", &inline).expect_err("inline timeout");
        assert!(e.starts_with("p.toml:7: field `ready.timeout_s`: "), "{e}");
        let unknown_field = "name = \"p\"\nbinary = \"p\"\nstart = [\"a\"]\n\nstrat = [\"b\"]\n";
        let e = ContenderFile::parse("p.toml", unknown_field).expect_err("unknown field");
        assert!(e.starts_with("p.toml:5:") && e.contains("strat"), "{e}");
        let bad_scenario =
            "name = \"p\"\nbinary = \"p\"\nstart = [\"a\"]\nscenarios = [\"cpu\", \"fast\"]\n";
        let e = ContenderFile::parse("p.toml", bad_scenario).expect_err("unknown scenario");
        assert!(
            e.starts_with("p.toml:4: field `scenarios`") && e.contains("\"fast\""),
            "{e}"
        );
    }
}
