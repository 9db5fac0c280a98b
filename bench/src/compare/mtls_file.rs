//! The `[mtls]` table of a contender file: the two-proxy layout of the `mtls` scenario.
//! Proxy A (`[mtls.client]`) takes the load and forwards to proxy B (`[mtls.server]`), which
//! forwards to the bench's upstream; the hop between them is TLS 1.3 with client
//! certificates (the `[mtls.tls]` placeholders) or plaintext (`[mtls.plain]`), so each
//! contender runs the same layout both ways in one run. A file without `[mtls]` does not
//! take part in that scenario.
//!
//! Placeholders of these templates: the bench's own (`{listen}`, `{upstreams}`, …), the
//! certificate files and identities of [`MTLS_VARS`], and those of `[mtls.tls]` or
//! `[mtls.plain]`, whose values are templates too (rendered first, with the others).

use super::contender_file::{template, Template, BUILT_IN_VARS};
use serde::Deserialize;
use std::collections::BTreeMap;

type S<T> = toml::Spanned<T>;

/// Placeholders the bench sets for the `[mtls]` templates, besides [`BUILT_IN_VARS`].
pub const MTLS_VARS: [&str; 12] = [
    // The CA that issued both leaves (PEM): what each side trusts.
    "ca",
    // Proxy A's leaf: certificate, key, and both in one file (HAProxy's `crt`).
    "client_cert",
    "client_key",
    "client_pem",
    // Proxy B's leaf.
    "server_cert",
    "server_key",
    "server_pem",
    // The leaves' SPIFFE IDs (their one URI SAN).
    "client_id",
    "server_id",
    // The DNS name in B's leaf, for proxies that check a host name (nginx `proxy_ssl_name`).
    "server_name",
    // The role's one endpoint, split: B's address for A, the upstream's for B.
    "upstream_host",
    "upstream_port",
];

/// The hop between the two proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Hop {
    Plain,
    Tls,
}

impl Hop {
    pub const BOTH: [Hop; 2] = [Hop::Plain, Hop::Tls];

    pub fn name(self) -> &'static str {
        match self {
            Hop::Plain => "plain",
            Hop::Tls => "tls",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEvidence {
    source: S<String>,
    #[serde(default)]
    lines: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRole {
    config: Option<S<String>>,
    #[serde(default)]
    start: Vec<S<String>>,
    evidence: Option<RawEvidence>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMtls {
    #[serde(default)]
    settings: String,
    client: RawRole,
    server: RawRole,
    #[serde(default)]
    tls: BTreeMap<String, S<String>>,
    #[serde(default)]
    plain: BTreeMap<String, S<String>>,
}

/// What shows the hop's transport from a running proxy: an HTTP GET (`http://ADDR/PATH`,
/// e.g. coremesh's `/metrics`) or a file (e.g. nginx's access log), of which the lines
/// containing `lines` (all when empty) are kept with the results.
#[derive(Debug, Clone)]
pub struct Evidence {
    pub source: Template,
    pub lines: String,
}

/// One proxy of the layout.
#[derive(Debug, Clone)]
pub struct Role {
    pub config: Option<Template>,
    /// Empty: the file's `start`.
    pub start: Vec<Template>,
    pub evidence: Option<Evidence>,
}

/// A contender's `[mtls]` table, checked.
#[derive(Debug, Clone)]
pub struct MtlsDef {
    /// One line for the report: what each side is configured with.
    pub settings: String,
    pub client: Role,
    pub server: Role,
    pub tls: BTreeMap<String, Template>,
    pub plain: BTreeMap<String, Template>,
}

fn role(text: &str, which: &str, raw: &RawRole) -> Role {
    Role {
        config: raw
            .config
            .as_ref()
            .map(|c| template(text, &format!("mtls.{which}.config"), c)),
        start: raw
            .start
            .iter()
            .map(|s| template(text, &format!("mtls.{which}.start"), s))
            .collect(),
        evidence: raw.evidence.as_ref().map(|e| Evidence {
            source: template(text, &format!("mtls.{which}.evidence.source"), &e.source),
            lines: e.lines.clone(),
        }),
    }
}

impl MtlsDef {
    /// Build from the raw table; `at` turns a byte offset into `origin:line`.
    pub(super) fn parse(
        text: &str,
        raw: &RawMtls,
        at: &dyn Fn(std::ops::Range<usize>) -> String,
    ) -> Result<MtlsDef, String> {
        let vars = |hop: &str,
                    list: &BTreeMap<String, S<String>>|
         -> Result<BTreeMap<String, Template>, String> {
            let mut out = BTreeMap::new();
            for (k, v) in list {
                if BUILT_IN_VARS.contains(&k.as_str())
                    || MTLS_VARS.contains(&k.as_str())
                    || k == "upstream"
                    || k == "index"
                {
                    return Err(format!(
                        "{}: field `mtls.{hop}.{k}`: `{k}` is set by the bench",
                        at(v.span())
                    ));
                }
                out.insert(k.clone(), template(text, &format!("mtls.{hop}.{k}"), v));
            }
            Ok(out)
        };
        Ok(MtlsDef {
            settings: raw.settings.clone(),
            client: role(text, "client", &raw.client),
            server: role(text, "server", &raw.server),
            tls: vars("tls", &raw.tls)?,
            plain: vars("plain", &raw.plain)?,
        })
    }

    /// The `[mtls.tls]` or `[mtls.plain]` placeholders (templates themselves).
    pub fn hop(&self, hop: Hop) -> &BTreeMap<String, Template> {
        match hop {
            Hop::Plain => &self.plain,
            Hop::Tls => &self.tls,
        }
    }

    /// [`hop`](Self::hop)'s placeholders, each rendered with `base`.
    fn hop_vars(
        &self,
        origin: &str,
        hop: Hop,
        base: &BTreeMap<String, String>,
        upstreams: &[String],
    ) -> Result<BTreeMap<String, String>, String> {
        self.hop(hop)
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.render(origin, base, upstreams)?)))
            .collect()
    }

    /// Render every template of both roles for both hops with placeholder values, so a
    /// wrong placeholder is found when the file is loaded; `start` is the file's own.
    pub(super) fn check(&self, origin: &str, start: &[Template]) -> Result<(), String> {
        let ups = vec!["127.0.0.1:1".to_string()];
        let base: BTreeMap<String, String> = BUILT_IN_VARS
            .iter()
            .chain(&MTLS_VARS)
            .map(|k| (k.to_string(), "x".to_string()))
            .collect();
        for hop in Hop::BOTH {
            let mut vars = base.clone();
            vars.extend(self.hop_vars(origin, hop, &base, &ups)?);
            for role in [&self.client, &self.server] {
                let starts = if role.start.is_empty() {
                    start
                } else {
                    role.start.as_slice()
                };
                let evidence = role.evidence.as_ref().map(|e| &e.source);
                for t in role.config.iter().chain(starts).chain(evidence) {
                    t.render(origin, &vars, &ups)?;
                }
            }
        }
        Ok(())
    }

    pub fn role(&self, server: bool) -> &Role {
        if server {
            &self.server
        } else {
            &self.client
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::contender_file::ContenderFile;

    const GOOD: &str = r#"name = "p"
binary = "p"
start = ["-c", "{config}"]

[mtls.client]
config = '''
listen {listen};
to {upstream_host}:{upstream_port}{client_tls};
'''

[mtls.server]
config = '''
listen {listen}{server_tls};
'''

[mtls.tls]
client_tls = " crt {client_pem}"
server_tls = " crt {server_pem} ca {ca}"

[mtls.plain]
client_tls = ""
server_tls = ""
"#;

    #[test]
    fn an_mtls_table_is_checked_with_its_line_and_field() {
        let f = ContenderFile::parse("p.toml", GOOD).expect("good file");
        let m = f.mtls.expect("an [mtls] table");
        assert_eq!(m.tls.len(), 2);
        assert!(m.client.start.is_empty());
        let typo = GOOD.replace("{server_tls};", "{server_tsl};");
        let e = ContenderFile::parse("p.toml", &typo).expect_err("unknown placeholder");
        assert!(
            e.starts_with("p.toml:13: field `mtls.server.config`"),
            "{e}"
        );
        // A placeholder the TLS layout sets and the plaintext one does not.
        let missing = GOOD.replace("client_tls = \"\"\n", "");
        let e = ContenderFile::parse("p.toml", &missing).expect_err("missing in plain");
        assert!(e.contains("`{client_tls}`"), "{e}");
        let taken = GOOD.replace("[mtls.plain]\n", "[mtls.plain]\nca = \"x\"\n");
        let e = ContenderFile::parse("p.toml", &taken).expect_err("a bench placeholder");
        assert!(
            e.contains("field `mtls.plain.ca`: `ca` is set by the bench"),
            "{e}"
        );
        let no_server = GOOD.replace("[mtls.server]", "[mtls.other]");
        let e = ContenderFile::parse("p.toml", &no_server).expect_err("no server");
        assert!(e.contains("server") || e.contains("other"), "{e}");
    }
}
