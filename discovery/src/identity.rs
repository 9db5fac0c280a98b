//! Mutual TLS settings: the proxy's own identity (`[identity]`), the identity a service's
//! endpoints must prove (`tls = { identity = "spiffe://…" }` on a service), and who may call
//! the application through the inbound side (`require_mtls`, `authorize` in `[inbound]`,
//! overridden per path in `[[inbound.routes]]`, compiled once into a
//! [`CompiledInboundPolicy`]), with the rules that check them.
//!
//! Defaults: `identity.reload_interval_ms` = [`DEFAULT_IDENTITY_RELOAD_INTERVAL_MS`],
//! `identity.handshake_timeout_ms` = [`DEFAULT_HANDSHAKE_TIMEOUT_MS`];
//! `inbound.require_mtls` = false, `inbound.authorize` = [] (anyone). `cert`, `key` and
//! `trust_anchors` have no default: an `[identity]` section names all three.

use crate::field_path::FieldPath;
use crate::spiffe_id::{IdPattern, SpiffeId};
use crate::validate::{Violation, MAX_TIMEOUT_MS};
use crate::Config;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How often the certificate, key and trust anchor files are checked for a change (their
/// modification times): a renewed certificate is in use within this long. Five seconds is
/// far inside any renewal margin (issuers renew hours before expiry) and costs three
/// `stat` calls.
pub const DEFAULT_IDENTITY_RELOAD_INTERVAL_MS: u64 = 5_000;
/// Smallest `reload_interval_ms`: polling faster only burns system calls.
pub const MIN_IDENTITY_RELOAD_INTERVAL_MS: u64 = 100;
/// How long a mutual TLS handshake may take, inbound (from the ClientHello) and outbound
/// (from the connect): two round trips and a few signatures take far less on any network a
/// mesh runs on, while a stalled or truncated handshake holds its socket no longer.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// `[identity]`: the workload's X.509-SVID, its private key and the CA certificates peers'
/// certificates must chain to, all PEM files. See the module documentation for defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    /// The certificate chain, leaf first (intermediates may follow).
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The trust anchors (one or more CA certificates).
    pub trust_anchors: PathBuf,
    /// How often the three files are checked for a change.
    #[serde(default = "d_reload_interval_ms")]
    pub reload_interval_ms: u64,
    /// How long a TLS handshake may take, on either side.
    #[serde(default = "d_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            trust_anchors: PathBuf::new(),
            reload_interval_ms: d_reload_interval_ms(),
            handshake_timeout_ms: d_handshake_timeout_ms(),
        }
    }
}

/// `tls = { identity = "spiffe://…" }` on a service: its endpoints are reached over mutual
/// TLS and must present this identity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceTls {
    pub identity: String,
}

/// Who may call the application through the inbound side: `require_mtls` refuses a caller
/// without a verified client certificate; a non-empty `authorize` allows only the listed
/// identities (exact, or a prefix ending in `/*`). Both belong to `[inbound]`, and each
/// `[[inbound.routes]]` entry may override them for the requests whose path it matches.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InboundPolicy {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_mtls: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorize: Vec<String>,
    /// Per-path overrides, the first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<InboundRoute>,
}

/// A `[[inbound.routes]]` entry: requests whose path matches take its `require_mtls` and
/// `authorize` where set, `[inbound]`'s otherwise.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct InboundRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_mtls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize: Option<Vec<String>>,
}

impl InboundRoute {
    fn matches(&self, path: &str) -> bool {
        match (&self.path_exact, &self.path_prefix) {
            (Some(exact), _) => path == exact,
            (None, Some(prefix)) => path.starts_with(prefix.as_str()),
            (None, None) => false,
        }
    }
}

/// What a request must prove: an [`InboundPolicy`]'s values for one path, patterns read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectivePolicy {
    pub require_mtls: bool,
    /// Empty: any caller (any verified identity when `require_mtls`).
    pub authorize: Vec<IdPattern>,
}

/// An [`InboundPolicy`] compiled once (per configuration), so that finding a request's
/// policy reads no pattern and allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledInboundPolicy {
    base: EffectivePolicy,
    /// `[[inbound.routes]]` in order, each with its overrides applied over `base`.
    routes: Vec<(InboundRoute, EffectivePolicy)>,
}

impl CompiledInboundPolicy {
    /// The policy for a request on `path`: the first matching route's, else `[inbound]`'s.
    pub fn for_path(&self, path: &str) -> &EffectivePolicy {
        self.routes
            .iter()
            .find(|(route, _)| route.matches(path))
            .map_or(&self.base, |(_, policy)| policy)
    }

    /// The policy for a connection that carries no requests (opaque TCP): `[inbound]`'s
    /// own, since no path can pick a route's.
    pub fn connection(&self) -> &EffectivePolicy {
        &self.base
    }
}

/// Patterns that do not parse are skipped: validation refused them before a configuration
/// is compiled.
fn read_patterns(list: &[String]) -> Vec<IdPattern> {
    list.iter()
        .filter_map(|p| IdPattern::parse(p).ok())
        .collect()
}

impl InboundPolicy {
    pub fn compile(&self) -> CompiledInboundPolicy {
        let base = EffectivePolicy {
            require_mtls: self.require_mtls,
            authorize: read_patterns(&self.authorize),
        };
        let routes = self
            .routes
            .iter()
            .map(|route| {
                let policy = EffectivePolicy {
                    require_mtls: route.require_mtls.unwrap_or(self.require_mtls),
                    authorize: read_patterns(route.authorize.as_ref().unwrap_or(&self.authorize)),
                };
                (route.clone(), policy)
            })
            .collect();
        CompiledInboundPolicy { base, routes }
    }

    /// Whether anything here asks for a verified client certificate.
    pub fn needs_identity(&self) -> bool {
        self.require_mtls
            || !self.authorize.is_empty()
            || self
                .routes
                .iter()
                .any(|r| r.require_mtls == Some(true) || r.authorize.is_some())
    }
}

/// Every identity rule `config` breaks, each naming its field.
pub fn violations(config: &Config) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut push = |path: FieldPath, message: String| out.push(Violation { path, message });
    let root = FieldPath::root();
    let has_identity = config.identity.is_some();
    const NEEDS_IDENTITY: &str =
        "needs an [identity] section (the proxy's own certificate, key and trust anchors)";
    if let Some(identity) = &config.identity {
        let path = root.key("identity");
        for (field, value) in [
            ("cert", &identity.cert),
            ("key", &identity.key),
            ("trust_anchors", &identity.trust_anchors),
        ] {
            if value.as_os_str().is_empty() {
                push(path.key(field), "must name a PEM file".to_owned());
            }
        }
        let interval = identity.reload_interval_ms;
        if !(MIN_IDENTITY_RELOAD_INTERVAL_MS..=MAX_TIMEOUT_MS).contains(&interval) {
            push(
                path.key("reload_interval_ms"),
                format!(
                    "{interval} ms is not within {MIN_IDENTITY_RELOAD_INTERVAL_MS} ms to one day"
                ),
            );
        }
        let handshake = identity.handshake_timeout_ms;
        if !(1..=MAX_TIMEOUT_MS).contains(&handshake) {
            push(
                path.key("handshake_timeout_ms"),
                format!("{handshake} ms is not within 1 ms to one day"),
            );
        }
    }
    for (index, service) in config.services.iter().enumerate() {
        let Some(tls) = &service.tls else { continue };
        let path = root.key("services").index(index).key("tls").key("identity");
        if let Err(e) = SpiffeId::parse(&tls.identity) {
            push(path.clone(), format!("not a SPIFFE ID: {e}"));
        }
        if !has_identity {
            push(path, NEEDS_IDENTITY.to_owned());
        }
    }
    if let Some(inbound) = &config.inbound {
        let policy = &inbound.policy;
        let path = root.key("inbound");
        patterns(&path.key("authorize"), &policy.authorize, &mut push);
        if !has_identity && policy.needs_identity() {
            let field = if policy.require_mtls {
                "require_mtls"
            } else {
                "authorize"
            };
            push(path.key(field), NEEDS_IDENTITY.to_owned());
        }
        for (index, route) in policy.routes.iter().enumerate() {
            let path = path.key("routes").index(index);
            match (&route.path_prefix, &route.path_exact) {
                (Some(_), Some(_)) => push(
                    path.key("path_exact"),
                    "set one of `path_prefix` and `path_exact`, not both".to_owned(),
                ),
                (None, None) => push(
                    path.key("path_prefix"),
                    "set one of `path_prefix` and `path_exact`".to_owned(),
                ),
                _ => {}
            }
            for (field, value) in [
                ("path_prefix", &route.path_prefix),
                ("path_exact", &route.path_exact),
            ] {
                if value.as_ref().is_some_and(|p| !p.starts_with('/')) {
                    push(path.key(field), "must start with '/'".to_owned());
                }
            }
            if let Some(list) = &route.authorize {
                patterns(&path.key("authorize"), list, &mut push);
            }
        }
    }
    out
}

fn patterns(path: &FieldPath, list: &[String], push: &mut impl FnMut(FieldPath, String)) {
    for (index, text) in list.iter().enumerate() {
        if let Err(e) = IdPattern::parse(text) {
            push(
                path.index(index),
                format!("not a SPIFFE ID or a SPIFFE ID followed by /*: {e}"),
            );
        }
    }
}

fn d_reload_interval_ms() -> u64 {
    DEFAULT_IDENTITY_RELOAD_INTERVAL_MS
}

fn d_handshake_timeout_ms() -> u64 {
    DEFAULT_HANDSHAKE_TIMEOUT_MS
}

#[cfg(test)]
mod tests {
    use crate::parse_config;
    use crate::spiffe_id::{IdPattern, SpiffeId};

    const GOOD: &str = r#"
[identity]
cert = "/etc/coremesh/svid.pem"
key = "/etc/coremesh/svid.key"
trust_anchors = "/etc/coremesh/bundle.pem"

[inbound]
require_mtls = true
authorize = ["spiffe://td/ns/prod/sa/web", "spiffe://td/ns/ops/*"]

[[inbound.routes]]
path_prefix = "/healthz"
require_mtls = false
authorize = []

[[inbound.routes]]
path_exact = "/admin"
authorize = ["spiffe://td/ns/ops/*"]

[[services]]
name = "api"
endpoints = ["127.0.0.1:8080"]
tls = { identity = "spiffe://td/ns/prod/sa/api" }

[[services]]
name = "plain"
endpoints = ["127.0.0.1:8081"]
"#;

    #[test]
    fn identity_service_tls_and_inbound_policy_are_read() {
        let config = match parse_config(GOOD, "identity.toml") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let identity = config.identity.clone().unwrap_or_default();
        assert_eq!(identity.key.to_str(), Some("/etc/coremesh/svid.key"));
        assert_eq!(
            identity.reload_interval_ms,
            super::DEFAULT_IDENTITY_RELOAD_INTERVAL_MS
        );
        let tls: Vec<_> = config.services.iter().map(|s| s.tls.clone()).collect();
        assert_eq!(
            tls,
            vec![
                Some(super::ServiceTls {
                    identity: "spiffe://td/ns/prod/sa/api".into()
                }),
                None
            ]
        );
        let policy = config.inbound.unwrap_or_default().policy.compile();
        let id = |t: &str| SpiffeId::parse(t).map_err(|e| e.to_string());
        let app = policy.for_path("/orders");
        assert!(app.require_mtls);
        assert_eq!(
            app.authorize,
            vec![
                IdPattern::Exact(
                    id("spiffe://td/ns/prod/sa/web").unwrap_or_else(|e| panic!("{e}"))
                ),
                IdPattern::Prefix("spiffe://td/ns/ops/".into())
            ]
        );
        assert_eq!(
            policy.for_path("/healthz/live"),
            &super::EffectivePolicy::default()
        );
        let admin = policy.for_path("/admin");
        assert!(admin.require_mtls, "inherited from [inbound]");
        assert_eq!(
            admin.authorize,
            vec![IdPattern::Prefix("spiffe://td/ns/ops/".into())]
        );
        assert_eq!(policy.for_path("/admin/x"), app, "path_exact only");
    }

    /// The `[identity]` example of `docs/configuration.md` parses and means what it says.
    #[test]
    fn the_documented_example_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let blocks: Vec<&str> = text
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .filter(|block| block.contains("[identity]"))
            .collect();
        assert_eq!(blocks.len(), 1, "{blocks:?}");
        let config = parse_config(blocks[0], "configuration.md").unwrap_or_else(|e| panic!("{e}"));
        assert!(config.identity.is_some());
        let policy = config.inbound.unwrap_or_default().policy.compile();
        assert!(policy.for_path("/api").require_mtls);
        assert!(!policy.for_path("/healthz").require_mtls);
        assert!(config.services[0].tls.is_some());
    }

    #[test]
    fn a_config_without_identity_serializes_as_before() {
        let text = "[inbound]\napp_port = 8080\n";
        let config = match parse_config(text, "plain.toml") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let written = toml::to_string(&config).unwrap_or_default();
        assert!(!written.contains("require_mtls"), "{written}");
        assert!(!written.contains("identity"), "{written}");
        assert!(!written.contains("tls"), "{written}");
    }

    #[test]
    fn bad_identity_settings_name_their_field() {
        let with_identity = |rest: &str| {
            format!(
                "[identity]\ncert = \"c.pem\"\nkey = \"k.pem\"\ntrust_anchors = \"ca.pem\"\n{rest}"
            )
        };
        let service = |tls: &str| {
            format!("[[services]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\ntls = {tls}\n")
        };
        let bad = [
            (
                "[identity]\ncert = \"\"\nkey = \"k\"\ntrust_anchors = \"t\"\n".to_owned(),
                "identity.cert",
            ),
            (
                "[identity]\ncert = \"c\"\nkey = \"k\"\n".to_owned(),
                "trust_anchors",
            ),
            (
                with_identity("reload_interval_ms = 5\n"),
                "identity.reload_interval_ms",
            ),
            (
                with_identity("colour = 1\n"),
                "colour",
            ),
            (
                with_identity(&service("{ identity = \"http://td/x\" }")),
                "services[0].tls.identity",
            ),
            (
                service("{ identity = \"spiffe://td/x\" }"),
                "services[0].tls.identity",
            ),
            (
                with_identity(&service("{ id = \"spiffe://td/x\" }")),
                "id",
            ),
            ("[inbound]\nrequire_mtls = true\n".to_owned(), "inbound.require_mtls"),
            (
                with_identity("[inbound]\nauthorize = [\"spiffe://td/ns/*/sa\"]\n"),
                "inbound.authorize[0]",
            ),
            (
                with_identity("[inbound]\n[[inbound.routes]]\nrequire_mtls = false\n"),
                "inbound.routes[0].path_prefix",
            ),
            (
                with_identity("[inbound]\n[[inbound.routes]]\npath_prefix = \"x\"\n"),
                "inbound.routes[0].path_prefix",
            ),
            (
                with_identity(
                    "[inbound]\n[[inbound.routes]]\npath_exact = \"/x\"\nauthorize = [\"spiffe://TD/a\"]\n",
                ),
                "inbound.routes[0].authorize[0]",
            ),
        ];
        for (text, field) in bad {
            match parse_config(&text, "bad.toml") {
                Ok(_) => panic!("accepted: {text}"),
                Err(e) => assert!(e.to_string().contains(field), "{text}: {e}"),
            }
        }
    }
}
