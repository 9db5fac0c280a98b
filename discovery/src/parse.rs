//! Reading a configuration: TOML text to a validated [`Config`], or every error in it,
//! each with the line, column and field it is about.
//!
//! Three stages, each reporting with positions: TOML syntax (`toml_edit`'s parser), types
//! (serde over the spanned document; on failure every `[[services]]` and `[[routes]]`
//! entry is read on its own so one bad entry does not hide the next), then the semantic
//! rules of [`validate`](crate::validate()).

use crate::error::{ConfigError, ConfigErrors};
use crate::field_path::FieldPath;
use crate::locate::{field_near_line, line_col, path_at, position_of};
use crate::validate::validate;
use crate::{Config, RouteConfig, ServiceConfig};
use serde::de::{DeserializeOwned, IntoDeserializer as _};
use std::path::Path;
use toml_edit::{DocumentMut, ImDocument, Item, Table, Value};

/// Parses and validates a configuration; `origin` (usually the file name) starts each
/// error message.
pub fn parse_config(text: &str, origin: &str) -> Result<Config, ConfigErrors> {
    let report = Report { text, origin };
    let document = match ImDocument::parse(text.to_owned()) {
        Ok(document) => document,
        Err(error) => {
            let offset = error.span().map_or(0, |span| span.start);
            let (line, _) = line_col(text, offset);
            let field = field_near_line(text, line);
            let message = syntax_message(text, offset, error.message());
            return Err(report.errors(vec![report.at(offset, &field, &message)]));
        }
    };
    let root = document.as_table();
    let config: Config = match toml_edit::de::from_document(document.clone()) {
        Ok(config) => config,
        Err(first) => return Err(report.errors(type_errors(&report, root, first))),
    };
    let violations = validate(&config);
    if violations.is_empty() {
        return Ok(config);
    }
    let errors = violations
        .iter()
        .map(|violation| {
            let offset = position_of(root, &violation.path);
            report.at(offset, &violation.path, &violation.message)
        })
        .collect();
    Err(report.errors(errors))
}

/// The parser's message for a syntax error at `offset`; it gives none for some characters
/// (a NUL in a comment, for one), and then the character is named instead.
fn syntax_message(text: &str, offset: usize, message: &str) -> String {
    if !message.trim().is_empty() {
        return message.to_owned();
    }
    match text.get(offset..).and_then(|rest| rest.chars().next()) {
        Some(c) => format!("invalid TOML: unexpected character {c:?}"),
        None => "invalid TOML: unexpected end of file".to_owned(),
    }
}

/// Reads and parses the file at `path`; a read error is reported as a [`ConfigErrors`] too.
pub fn load_config(path: &Path) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse_config(&text, &origin),
        Err(error) => Err(ConfigErrors::single(
            &origin,
            format!("cannot read file: {error}"),
        )),
    }
}

struct Report<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Report<'_> {
    fn at(&self, offset: usize, field: &FieldPath, message: &str) -> ConfigError {
        let (line, column) = line_col(self.text, offset);
        ConfigError {
            origin: self.origin.to_owned(),
            line,
            column,
            field: field.to_string(),
            // toml_edit sometimes explains over several lines; keep one error per line.
            message: message.trim_end().replace('\n', "; "),
        }
    }

    /// `errors` in file order.
    fn errors(&self, mut errors: Vec<ConfigError>) -> ConfigErrors {
        errors.sort_by_key(|error| (error.line, error.column));
        ConfigErrors { errors }
    }

    fn serde_error(&self, root: &Table, error: &toml_edit::de::Error) -> ConfigError {
        let offset = error.span().map_or(0, |span| span.start);
        let mut field = path_at(root, offset);
        let message = error.message();
        // serde names a missing key only in its message; put it in the field as well.
        if let Some(missing) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            field = field.key(missing);
        }
        self.at(offset, &field, message)
    }
}

/// Every type error, not only the first serde stops at: each service and route entry is
/// read on its own, then everything else.
fn type_errors(report: &Report<'_>, root: &Table, first: toml_edit::de::Error) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut rest = root.clone();
    entry_errors::<ServiceConfig>(&mut rest, "services", &mut errors);
    entry_errors::<RouteConfig>(&mut rest, "routes", &mut errors);
    if let Err(error) = toml_edit::de::from_document::<Config>(DocumentMut::from(rest)) {
        errors.push(error);
    }
    if errors.is_empty() {
        errors.push(first);
    }
    errors
        .iter()
        .map(|error| report.serde_error(root, error))
        .collect()
}

/// Reads each entry of the array `key` of `rest` as a `T`, collecting the errors, and takes
/// the array out of `rest`; anything but an array stays for `Config` to complain about.
fn entry_errors<T: DeserializeOwned>(
    rest: &mut Table,
    key: &str,
    errors: &mut Vec<toml_edit::de::Error>,
) {
    match rest.get(key) {
        Some(Item::ArrayOfTables(tables)) => {
            for table in tables.iter() {
                let document = DocumentMut::from(table.clone());
                if let Err(error) = toml_edit::de::from_document::<T>(document) {
                    errors.push(error);
                }
            }
        }
        Some(Item::Value(Value::Array(values))) => {
            for value in values.iter() {
                if let Err(error) = T::deserialize(value.clone().into_deserializer()) {
                    errors.push(error);
                }
            }
        }
        _ => return,
    }
    rest.remove(key);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BalanceKind, Driver, HeaderMatch, Settings, WeightedService};

    const FULL: &str = r#"
[proxy]
listen = "0.0.0.0:4140"
admin = "127.0.0.1:9901"
cores = 4
driver = "legacy"
pin_cores = false
shutdown_grace_ms = 5000

[defaults]
connect_timeout_ms = 250
max_headers = 64
add_via = true
balance = "round-robin"

[[services]]
name = "web"
endpoints = ["10.0.0.1:8080", "10.0.0.2:8080"]
request_timeout_ms = 2000

[[services]]
name = "web-canary"
endpoints = ["10.0.1.1:8080"]

[[routes]]
name = "canary"
host = "*.example.com"
path_prefix = "/api"
headers = [{ name = "x-canary", present = true }]
split = [{ service = "web", weight = 90 }, { service = "web-canary", weight = 10 }]
timeout_ms = 1500

[[routes]]
service = "web"
"#;

    fn messages(result: Result<Config, ConfigErrors>) -> Vec<String> {
        match result {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn parses_a_full_example() {
        let config = match parse_config(FULL, "full.toml") {
            Ok(config) => config,
            Err(errors) => panic!("{errors}"),
        };
        assert_eq!(config.proxy.listen, Some(([0, 0, 0, 0], 4140).into()));
        assert_eq!(
            config.proxy.admin,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9901)).into())
        );
        assert_eq!(config.proxy.cores, 4);
        assert_eq!(config.proxy.driver, Driver::Legacy);
        assert!(!config.proxy.pin_cores);
        assert_eq!(config.proxy.shutdown_grace_ms, 5000);
        let defaults = Settings {
            connect_timeout_ms: 250,
            max_headers: 64,
            add_via: true,
            balance: BalanceKind::RoundRobin,
            ..Settings::default()
        };
        assert_eq!(config.defaults, defaults);
        assert_eq!(config.services.len(), 2);
        assert_eq!(config.services[0].name, "web");
        assert_eq!(config.services[0].endpoints.len(), 2);
        assert_eq!(config.services[0].overrides.request_timeout_ms, Some(2000));
        assert_eq!(config.services[1].overrides, Default::default());
        let canary = &config.routes[0];
        assert_eq!(canary.name.as_deref(), Some("canary"));
        assert_eq!(canary.host.as_deref(), Some("*.example.com"));
        assert_eq!(canary.path_prefix.as_deref(), Some("/api"));
        let header = HeaderMatch {
            name: "x-canary".into(),
            exact: None,
            present: Some(true),
        };
        assert_eq!(canary.headers, vec![header]);
        let split = vec![
            WeightedService {
                service: "web".into(),
                weight: 90,
            },
            WeightedService {
                service: "web-canary".into(),
                weight: 10,
            },
        ];
        assert_eq!(canary.split, split);
        assert_eq!(canary.timeout_ms, Some(1500));
        assert_eq!(config.routes[1].service.as_deref(), Some("web"));
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        assert_eq!(parse_config("", "empty.toml"), Ok(Config::default()));
    }

    #[test]
    fn defaults_are_the_named_constants() {
        use crate::*;
        let config = match parse_config("[proxy]\n[defaults]\n", "d.toml") {
            Ok(config) => config,
            Err(errors) => panic!("{errors}"),
        };
        assert_eq!(config.proxy.listen, None);
        assert_eq!(
            config.explicit_listen().map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_LISTEN)
        );
        assert_eq!(config.proxy.admin, None);
        assert_eq!(config.proxy.cores, 0);
        assert_eq!(config.proxy.driver, Driver::Uring);
        assert!(config.proxy.pin_cores);
        assert_eq!(config.proxy.shutdown_grace_ms, DEFAULT_SHUTDOWN_GRACE_MS);
        let d = &config.defaults;
        assert_eq!(d.header_read_timeout_ms, DEFAULT_HEADER_READ_TIMEOUT_MS);
        assert_eq!(d.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
        assert_eq!(d.max_headers, DEFAULT_MAX_HEADERS);
        assert_eq!(d.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(d.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
        assert_eq!(d.request_timeout_ms, DEFAULT_REQUEST_TIMEOUT_MS);
        assert_eq!(d.client_idle_timeout_ms, DEFAULT_CLIENT_IDLE_TIMEOUT_MS);
        assert_eq!(d.pool_max_idle, DEFAULT_POOL_MAX_IDLE);
        assert_eq!(d.pool_idle_timeout_ms, DEFAULT_POOL_IDLE_TIMEOUT_MS);
        assert_eq!(d.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert!(!d.add_via);
        assert!(!d.add_forwarded_for);
        assert_eq!(d.balance, BalanceKind::LeastLatency);
        assert_eq!(d, &Settings::default());
    }

    #[test]
    fn syntax_errors_carry_line_and_field() {
        let text =
            "[proxy]\nlisten = \"127.0.0.1:1\"\n\n[[routes]]\nservice = \"a\npath_prefix = \"/\"\n";
        let errors = messages(parse_config(text, "bad.toml"));
        assert_eq!(
            errors,
            vec!["bad.toml:5:13: field `routes[0].service`: invalid basic string"]
        );

        let text = "[proxy]\nlisten = \"127.0.0.1:1\"\n[proxy]\n";
        let errors = messages(parse_config(text, "twice.toml"));
        assert_eq!(
            errors,
            vec![
                "twice.toml:3:1: field `proxy`: invalid table header; \
                 duplicate key `proxy` in document root"
            ]
        );
    }

    #[test]
    fn type_errors_carry_line_and_field_for_every_entry() {
        let text = r#"[proxy]
listen = "not an address"

[[services]]
name = "a"
endpoints = ["10.0.0.1:80"]
conect_timeout_ms = 5

[[services]]
name = "b"
endpoints = ["10.0.0.2"]

[[routes]]
service = "a"
timeout_ms = "soon"

[[routes]]
service = "b"
headers = [{ name = "x-env", present = "yes" }]
"#;
        let errors = messages(parse_config(text, "types.toml"));
        let expected = [
            "types.toml:2:10: field `proxy.listen`: invalid socket address syntax",
            "types.toml:7:1: field `services[0].conect_timeout_ms`: unknown field \
             `conect_timeout_ms`, expected one of `name`, `endpoints`, `dns`, `kubernetes`, `addresses`, \
             `tls`, `header_read_timeout_ms`, `max_header_bytes`, `max_headers`, `max_body_bytes`, \
             `connect_timeout_ms`, `request_timeout_ms`, `client_idle_timeout_ms`, \
             `pool_max_idle`, `pool_idle_timeout_ms`, `max_connections`, `add_via`, \
             `add_forwarded_for`, `balance`, `max_attempts`, `retry_budget_ratio`, \
             `retry_budget_min_per_sec`, `retry_budget_window_ms`, `retry_backoff_base_ms`, \
             `retry_backoff_max_ms`, `replay_body_limit`, `eject_consecutive_failures`, \
             `eject_base_ms`, `eject_max_ms`, `eject_max_percent`, `failure_statuses`, `protocol`",
            "types.toml:11:14: field `services[1].endpoints[0]`: \"10.0.0.2\" must be \
             `ip:port` or `host:port`",
            "types.toml:15:14: field `routes[0].timeout_ms`: invalid type: string \"soon\", \
             expected u64",
            "types.toml:19:40: field `routes[1].headers[0].present`: invalid type: string \
             \"yes\", expected a boolean",
        ];
        assert_eq!(errors, expected);
    }

    #[test]
    fn wrong_shapes_of_sections_are_reported_where_they_are() {
        let errors = messages(parse_config("services = 3\nroutes = [1]\n", "s.toml"));
        assert_eq!(
            errors,
            vec![
                "s.toml:1:12: field `services`: invalid type: integer `3`, expected a sequence",
                "s.toml:2:11: field `routes[0]`: invalid type: integer `1`, expected struct \
                 RouteConfig",
            ]
        );
    }

    #[test]
    fn a_missing_required_key_names_it() {
        let text = "[[services]]\nendpoints = [\"10.0.0.1:80\"]\n";
        let errors = messages(parse_config(text, "m.toml"));
        assert_eq!(
            errors,
            vec!["m.toml:1:1: field `services[0].name`: missing field `name`"]
        );
    }

    #[test]
    fn unreadable_file_is_a_config_error() {
        let path = Path::new("/nonexistent/coremesh/mesh.toml");
        let errors = messages(load_config(path));
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("/nonexistent/coremesh/mesh.toml: cannot read file: "),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn loads_a_file() {
        let path = std::env::temp_dir().join(format!("coremesh-load-{}.toml", std::process::id()));
        if let Err(error) = std::fs::write(&path, FULL) {
            panic!("cannot write {}: {error}", path.display());
        }
        let loaded = load_config(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(loaded, parse_config(FULL, "x"));
    }
}
