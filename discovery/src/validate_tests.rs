//! Tests of [`validate`](super::validate) through [`parse_config`]: each rule's exact
//! message, field and line.

use crate::{
    parse_config, validate, Config, ProxySettings, Settings, DEFAULT_ADMIN_MAX_CONNECTIONS,
    DEFAULT_ADMIN_REQUEST_TIMEOUT_MS, DEFAULT_ADMIN_WRITE_TIMEOUT_MS,
    DEFAULT_TUNNEL_IDLE_TIMEOUT_MS,
};

/// The errors `text` gets, formatted as the proxy prints them.
fn errors(text: &str) -> Vec<String> {
    match parse_config(text, "v.toml") {
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

const SERVICES: &str = r#"
[[services]]
name = "web"
endpoints = ["10.0.0.1:80"]

[[services]]
name = "api"
endpoints = ["10.0.0.2:80"]
"#;

/// `SERVICES` (lines 1-9) followed by `routes`, which therefore starts at line 10.
fn with_routes(routes: &str) -> Vec<String> {
    errors(&format!("{SERVICES}\n{routes}"))
}

#[test]
fn a_valid_config_has_no_violations() {
    assert_eq!(validate(&Config::default()), vec![]);
    let text = format!("{SERVICES}\n[[routes]]\nservice = \"web\"\n");
    assert!(parse_config(&text, "ok.toml").is_ok());
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let text = r#"[[services]]
name = "web"
endpoints = []

[[services]]
name = "web"
endpoints = ["10.0.0.1:80", "10.0.0.1:80", "10.0.0.2:0"]

[[routes]]
service = "nope"
"#;
    assert_eq!(
        errors(text),
        vec![
            "v.toml:3:1: field `services[0].endpoints`: service \"web\" has no endpoints, dns or kubernetes entries",
            "v.toml:6:1: field `services[1].name`: duplicate service name \"web\" (first defined at services[0])",
            "v.toml:7:29: field `services[1].endpoints[1]`: duplicate endpoint 10.0.0.1:80",
            "v.toml:7:44: field `services[1].endpoints[2]`: endpoint 10.0.0.2:0 has port 0",
            "v.toml:10:1: field `routes[0].service`: unknown service \"nope\"",
        ]
    );
}

#[test]
fn a_service_without_endpoints_key_points_at_its_header() {
    let text = "[[services]]\nname = \"a.b_c-d\"\n\n[[services]]\nname = \"bad name\"\nendpoints = [\"0.0.0.0:80\"]\n";
    assert_eq!(
        errors(text),
        vec![
            "v.toml:1:1: field `services[0].endpoints`: service \"a.b_c-d\" has no endpoints, dns or kubernetes entries",
            "v.toml:5:1: field `services[1].name`: service name \"bad name\" may only contain letters, digits, '.', '_' and '-'",
            "v.toml:6:14: field `services[1].endpoints[0]`: endpoint 0.0.0.0:80 has an unspecified address",
        ]
    );
}

#[test]
fn route_destination_rules() {
    let routes = r#"[[routes]]
name = "none"

[[routes]]
service = "web"
split = [{ service = "api", weight = 1 }]

[[routes]]
split = [{ service = "web", weight = 0 }, { service = "ghost", weight = 0 }]

[[routes]]
service = "web"
split = []
"#;
    assert_eq!(
        with_routes(routes),
        vec![
            "v.toml:10:1: field `routes[0]`: route has no destination: set `service` or `split`",
            "v.toml:15:1: field `routes[1].split`: set exactly one of `service` and `split`",
            "v.toml:18:1: field `routes[2].split`: split weights add up to 0; at least one must be above 0",
            "v.toml:18:45: field `routes[2].split[1].service`: unknown service \"ghost\"",
        ]
    );
}

#[test]
fn split_of_zero_and_positive_weights_is_valid() {
    let text = format!(
        "{SERVICES}\n[[routes]]\nsplit = [{{ service = \"web\", weight = 0 }}, {{ service = \"api\", weight = 3 }}]\n"
    );
    assert!(parse_config(&text, "ok.toml").is_ok());
}

#[test]
fn path_rules() {
    let routes = r#"[[routes]]
service = "web"
path_prefix = "/api"
path_exact = "/api/v1"

[[routes]]
service = "web"
path_prefix = "api"

[[routes]]
service = "web"
path_exact = "/search?q=1"
"#;
    assert_eq!(
        with_routes(routes),
        vec![
            "v.toml:13:1: field `routes[0].path_exact`: set at most one of `path_prefix` and `path_exact`",
            "v.toml:17:1: field `routes[1].path_prefix`: path \"api\" must start with '/'",
            "v.toml:21:1: field `routes[2].path_exact`: path \"/search?q=1\" must not contain '?' or '#' (the query is ignored when matching)",
        ]
    );
}

#[test]
fn header_rules() {
    let routes = r#"[[routes]]
service = "web"

[[routes.headers]]
name = "x env"
exact = "a"

[[routes.headers]]
name = "x-a"

[[routes.headers]]
name = "x-b"
exact = "b"
present = true

[[routes.headers]]
name = "x-c"
present = false

[[routes.headers]]
name = "x-d"
exact = "line\nbreak"
"#;
    assert_eq!(
        with_routes(routes),
        vec![
            "v.toml:14:1: field `routes[0].headers[0].name`: \"x env\" is not a valid header name",
            "v.toml:17:1: field `routes[0].headers[1]`: set `exact = \"...\"` or `present = true`",
            "v.toml:23:1: field `routes[0].headers[2].present`: set only one of `exact` and `present = true`",
            "v.toml:27:1: field `routes[0].headers[3].present`: `present = false` is not supported; use `present = true` or leave it out",
            "v.toml:31:1: field `routes[0].headers[4].exact`: must not contain CR, LF or NUL",
        ]
    );
}

#[test]
fn host_rules() {
    let routes = r#"[[routes]]
service = "web"
host = "*.example.com:8443"

[[routes]]
service = "web"
host = "foo.*.com"

[[routes]]
service = "web"
host = "example.com:99999"
"#;
    assert_eq!(
        with_routes(routes),
        vec![
            "v.toml:16:1: field `routes[1].host`: host pattern \"foo.*.com\" may only use `*` as the whole first label, as in `*.example.com`",
            "v.toml:20:1: field `routes[2].host`: host pattern \"example.com:99999\" has an invalid port \"99999\" (expected 1 to 65535)",
        ]
    );
}

#[test]
fn timeout_and_limit_rules() {
    let text = r#"[proxy]
listen = "127.0.0.1:4140"
admin = "127.0.0.1:4140"
cores = 5000

[defaults]
connect_timeout_ms = 0
max_header_bytes = 512
max_headers = 4
max_connections = 0

[[services]]
name = "web"
endpoints = ["10.0.0.1:80"]
request_timeout_ms = 86400001
pool_max_idle = 20000

[[routes]]
service = "web"
timeout_ms = 0
"#;
    assert_eq!(
        errors(text),
        vec![
            "v.toml:3:1: field `proxy.admin`: is the same address as `proxy.listen`",
            "v.toml:4:1: field `proxy.cores`: 5000 is more than 1024 (0 means one per CPU)",
            "v.toml:7:1: field `defaults.connect_timeout_ms`: must be greater than 0",
            "v.toml:8:1: field `defaults.max_header_bytes`: 512 is outside 1024 to 1048576",
            "v.toml:9:1: field `defaults.max_headers`: 4 is outside 8 to 1024",
            "v.toml:10:1: field `defaults.max_connections`: 0 is outside 1 to 1000000",
            "v.toml:15:1: field `services[0].request_timeout_ms`: 86400001 ms is more than one day (86400000 ms)",
            "v.toml:16:1: field `services[0].pool_max_idle`: 20000 is outside 0 to 10000",
            "v.toml:20:1: field `routes[0].timeout_ms`: must be greater than 0",
        ]
    );
}

#[test]
fn limits_at_their_bounds_are_valid() {
    let config = Config {
        defaults: Settings {
            max_header_bytes: 1024,
            max_headers: 8,
            pool_max_idle: 0,
            max_connections: 1,
            request_timeout_ms: 86_400_000,
            ..Settings::default()
        },
        ..Config::default()
    };
    assert_eq!(validate(&config), vec![]);
}

#[test]
fn errors_in_inline_tables_point_at_their_key() {
    let text = r#"services = [
  { name = "web", endpoints = ["10.0.0.1:80"], connect_timeout_ms = 0 },
]
routes = [{ service = "web", headers = [{ name = "", exact = "x" }] }]
"#;
    assert_eq!(
        errors(text),
        vec![
            "v.toml:2:48: field `services[0].connect_timeout_ms`: must be greater than 0",
            "v.toml:4:43: field `routes[0].headers[0].name`: \"\" is not a valid header name",
        ]
    );
}

#[test]
fn errors_in_dotted_keys_point_at_the_last_key() {
    let text = "proxy.cores = 2000\ndefaults.connect_timeout_ms = 0\n";
    assert_eq!(
        errors(text),
        vec![
            "v.toml:1:7: field `proxy.cores`: 2000 is more than 1024 (0 means one per CPU)",
            "v.toml:2:10: field `defaults.connect_timeout_ms`: must be greater than 0",
        ]
    );
}

#[test]
fn telemetry_section_is_validated_with_its_line() {
    let text = "[telemetry]\ntrace_sample_ratio = 2.5\n\n[[services]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n\n[[routes]]\nservice = \"a\"\n";
    let errors = crate::parse_config(text, "t.toml").unwrap_err();
    let e = errors.iter().next().unwrap();
    assert_eq!(e.field, "telemetry.trace_sample_ratio");
    assert_eq!(e.line, 2);
}

#[test]
fn admin_and_tunnel_limits() {
    let text = r#"[proxy]
admin = "127.0.0.1:4191"
admin_request_timeout_ms = 0
admin_write_timeout_ms = 86400001
admin_max_connections = 0
tunnel_idle_timeout_ms = 0
tunnel_buffer_bytes = 100
"#;
    assert_eq!(
        errors(text),
        vec![
            "v.toml:3:1: field `proxy.admin_request_timeout_ms`: must be greater than 0",
            "v.toml:4:1: field `proxy.admin_write_timeout_ms`: 86400001 ms is more than one day (86400000 ms)",
            "v.toml:5:1: field `proxy.admin_max_connections`: 0 is outside 1 to 10000",
            "v.toml:6:1: field `proxy.tunnel_idle_timeout_ms`: must be greater than 0",
            "v.toml:7:1: field `proxy.tunnel_buffer_bytes`: 100 is outside 512 to 16777216",
        ]
    );
    let at_bounds = Config {
        proxy: ProxySettings {
            admin_request_timeout_ms: 1,
            admin_write_timeout_ms: 86_400_000,
            admin_max_connections: 10_000,
            tunnel_idle_timeout_ms: 1,
            ..ProxySettings::default()
        },
        ..Config::default()
    };
    assert_eq!(validate(&at_bounds), vec![]);
    let over = Config {
        proxy: ProxySettings {
            admin_max_connections: 10_001,
            ..ProxySettings::default()
        },
        ..Config::default()
    };
    assert_eq!(validate(&over).len(), 1);
    let defaults = ProxySettings::default();
    assert_eq!(
        (
            defaults.admin_request_timeout_ms,
            defaults.admin_write_timeout_ms,
            defaults.admin_max_connections,
            defaults.tunnel_idle_timeout_ms,
        ),
        (
            DEFAULT_ADMIN_REQUEST_TIMEOUT_MS,
            DEFAULT_ADMIN_WRITE_TIMEOUT_MS,
            DEFAULT_ADMIN_MAX_CONNECTIONS,
            DEFAULT_TUNNEL_IDLE_TIMEOUT_MS,
        )
    );
}

/// The `[proxy]` example of `docs/configuration.md` parses, and shows the admin limits and
/// the tunnel idle timeout at their defaults.
#[test]
fn the_documented_proxy_example_shows_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let block = text
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .find(|block| block.starts_with("[proxy]\n"))
        .unwrap_or_else(|| panic!("{path} has no [proxy] example"));
    let config = parse_config(block, "configuration.md")
        .unwrap_or_else(|e| panic!("the [proxy] example: {e}"));
    let p = config.proxy;
    assert_eq!(
        (
            p.admin_request_timeout_ms,
            p.admin_write_timeout_ms,
            p.admin_max_connections,
            p.tunnel_idle_timeout_ms,
        ),
        (
            DEFAULT_ADMIN_REQUEST_TIMEOUT_MS,
            DEFAULT_ADMIN_WRITE_TIMEOUT_MS,
            DEFAULT_ADMIN_MAX_CONNECTIONS,
            DEFAULT_TUNNEL_IDLE_TIMEOUT_MS,
        )
    );
}

#[test]
fn sides_take_their_defaults() {
    let text = "[proxy]\nlisten = \"127.0.0.1:4180\"\n\n[outbound]\n\n[inbound]\napp_port = 8080\n";
    let config = match parse_config(text, "sides.toml") {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    assert_eq!(config.outbound, Some(crate::SideSettings::default()));
    let inbound = crate::InboundSettings {
        app_port: Some(8080),
        ..crate::InboundSettings::default()
    };
    assert_eq!(config.inbound, Some(inbound));
    let outbound = config.outbound.unwrap_or_default();
    let addrs = |pair: [&str; 2]| pair.map(|a| a.parse::<std::net::SocketAddr>().ok());
    let listen = |l: &crate::Listen| l.addrs().iter().map(|a| Some(*a)).collect::<Vec<_>>();
    assert_eq!(
        listen(&outbound.listen),
        addrs([
            crate::DEFAULT_OUTBOUND_LISTEN,
            crate::DEFAULT_OUTBOUND_LISTEN_V6
        ])
    );
    assert!(!outbound.listen.is_explicit());
    assert_eq!(outbound.detect_max_bytes, crate::DEFAULT_DETECT_MAX_BYTES);
    assert_eq!(outbound.opaque_ports, crate::DEFAULT_OPAQUE_PORTS);
    let inbound = config.inbound.unwrap_or_default();
    assert_eq!(
        listen(&inbound.side.listen),
        addrs([
            crate::DEFAULT_INBOUND_LISTEN,
            crate::DEFAULT_INBOUND_LISTEN_V6
        ])
    );
    assert_eq!(inbound.app_address, crate::DEFAULT_APP_ADDRESS);
    assert_eq!(
        inbound.side.detect_timeout_ms,
        crate::DEFAULT_DETECT_TIMEOUT_MS
    );
}

#[test]
fn side_settings_rules() {
    let text = r#"[outbound]
listen = "127.0.0.1:0"
detect_timeout_ms = 0
opaque_ports = [25, 0]
tcp_buffer_bytes = 100

[inbound]
tcp_idle_timeout_ms = 86400001
app_address = "0.0.0.0"
app_port = 0
bogus = 1
"#;
    assert_eq!(errors(text), vec!["v.toml:11:1: field `inbound.bogus`: unknown field `bogus`, expected one of `listen`, `detect_timeout_ms`, `detect_max_bytes`, `opaque_ports`, `tcp_idle_timeout_ms`, `tcp_buffer_bytes`, `app_address`, `app_port`, `require_mtls`, `authorize`, `routes`"]);
    let text = text.replace("bogus = 1\n", "");
    assert_eq!(
        errors(&text),
        vec![
            "v.toml:3:1: field `outbound.detect_timeout_ms`: must be greater than 0",
            "v.toml:4:21: field `outbound.opaque_ports[1]`: port 0 is not a port",
            "v.toml:5:1: field `outbound.tcp_buffer_bytes`: 100 is outside 512 to 16777216",
            "v.toml:8:1: field `inbound.tcp_idle_timeout_ms`: 86400001 ms is more than one day (86400000 ms)",
            "v.toml:9:1: field `inbound.app_address`: 0.0.0.0 is unspecified; name the application's address (usually 127.0.0.1)",
            "v.toml:10:1: field `inbound.app_port`: port 0 is not a port",
        ]
    );
    let text =
        "[outbound]\nlisten = []\ndetect_max_bytes = 63\n\n[inbound]\ndetect_max_bytes = 1048577\n";
    assert_eq!(
        errors(text),
        vec![
            "v.toml:2:1: field `outbound.listen`: needs at least one address",
            "v.toml:3:1: field `outbound.detect_max_bytes`: 63 is outside 64 to 1048576",
            "v.toml:6:1: field `inbound.detect_max_bytes`: 1048577 is outside 64 to 1048576",
        ]
    );
}

#[test]
fn a_sidecar_needs_no_explicit_listener() {
    for text in [
        "[outbound]\n",
        "[inbound]\n",
        "[outbound]\n[inbound]\n",
        "[proxy]\nadmin = \"127.0.0.1:4191\"\n[outbound]\n[inbound]\n",
    ] {
        let config = match parse_config(text, "sides.toml") {
            Ok(config) => config,
            Err(errors) => panic!("{text}: {errors}"),
        };
        assert_eq!(config.explicit_listen(), None, "{text}");
    }
    // Set explicitly, it is bound alongside the sides.
    let text = "[proxy]\nlisten = \"127.0.0.1:4180\"\n[outbound]\n";
    let config = match parse_config(text, "sides.toml") {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    assert_eq!(
        config.explicit_listen(),
        Some(([127, 0, 0, 1], 4180).into())
    );
}

#[test]
fn the_application_is_not_one_of_the_proxys_listeners() {
    let text = "[proxy]\nadmin = \"0.0.0.0:4191\"\n\n[outbound]\n\n[inbound]\napp_port = 4140\n";
    assert_eq!(
        errors(text),
        vec!["v.toml:7:1: field `inbound.app_port`: the application 127.0.0.1:4140 (app_address:app_port) is the proxy's own `outbound.listen` listener (127.0.0.1:4140): inbound connections would loop"]
    );
    let text = "[proxy]\nadmin = \"0.0.0.0:4191\"\n\n[inbound]\napp_port = 4191\n";
    assert_eq!(
        errors(text),
        vec!["v.toml:5:1: field `inbound.app_port`: the application 127.0.0.1:4191 (app_address:app_port) is the proxy's own `proxy.admin` listener (0.0.0.0:4191): inbound connections would loop"]
    );
    let text = "[inbound]\napp_address = \"::1\"\napp_port = 4143\n";
    assert_eq!(
        errors(text),
        vec!["v.toml:3:1: field `inbound.app_port`: the application [::1]:4143 (app_address:app_port) is the proxy's own `inbound.listen` listener ([::]:4143): inbound connections would loop"]
    );
    // Another port, or the same port on an address the proxy does not listen on, is fine.
    for ok in [
        "[outbound]\n[inbound]\napp_port = 8080\n",
        "[outbound]\n[inbound]\napp_address = \"127.0.0.2\"\napp_port = 4140\n",
    ] {
        assert!(parse_config(ok, "ok.toml").is_ok(), "{ok}");
    }
}

#[test]
fn listeners_must_be_distinct() {
    // An explicit listener set to the outbound side's default.
    let text = "[proxy]\nlisten = \"127.0.0.1:4140\"\nadmin = \"0.0.0.0:4191\"\n\n[outbound]\n\n[inbound]\nlisten = \"127.0.0.1:4191\"\n";
    assert_eq!(
        errors(text),
        vec![
            "v.toml:5:2: field `outbound.listen[0]`: 127.0.0.1:4140 is the same listener as `proxy.listen` (127.0.0.1:4140); a sidecar sets `proxy.listen` to a port of its own (or the side to another)",
            "v.toml:8:1: field `inbound.listen`: 127.0.0.1:4191 is the same listener as `proxy.admin` (0.0.0.0:4191)",
        ]
    );
    // IPv6: the unspecified address takes the port on every IPv6 address, an IPv4-mapped
    // address is its IPv4 address.
    let text = "[proxy]\nlisten = \"127.0.0.1:4180\"\n\n[outbound]\nlisten = [\"[::1]:4143\", \"[::ffff:127.0.0.1]:4180\"]\n\n[inbound]\n";
    assert_eq!(
        errors(text),
        vec![
            "v.toml:5:25: field `outbound.listen[1]`: [::ffff:127.0.0.1]:4180 is the same listener as `proxy.listen` (127.0.0.1:4180); a sidecar sets `proxy.listen` to a port of its own (or the side to another)",
            "v.toml:7:2: field `inbound.listen[1]`: [::]:4143 is the same listener as `outbound.listen` ([::1]:4143)",
        ]
    );
    // A pair form is both its addresses: `*:P` takes the port on every address of both
    // families, and an entry of a list is named by its place in the list.
    let text = "[proxy]\nadmin = \"*:4191\"\n\n[outbound]\nlisten = [\"10.0.0.1:80\", \"localhost:4191\"]\n\n[inbound]\nlisten = \"*:4191\"\n";
    assert_eq!(
        errors(text),
        vec![
            "v.toml:5:26: field `outbound.listen[1]`: 127.0.0.1:4191 is the same listener as `proxy.admin` (0.0.0.0:4191)",
            "v.toml:8:1: field `inbound.listen`: 0.0.0.0:4191 is the same listener as `proxy.admin` (0.0.0.0:4191)",
        ]
    );
    let ok = "[proxy]\nadmin = \"*:4191\"\n\n[outbound]\nlisten = \"localhost:5140\"\n\n[inbound]\nlisten = \"*:5143\"\n";
    assert!(parse_config(ok, "ok.toml").is_ok());
    let ok = "[proxy]\nlisten = \"127.0.0.1:4180\"\nadmin = \"127.0.0.1:4191\"\n\n[outbound]\n\n[inbound]\n";
    assert!(parse_config(ok, "ok.toml").is_ok());
    // The same port on another address of the family, or on the other family, is fine.
    let ok =
        "[proxy]\nlisten = \"127.0.0.2:4140\"\n\n[outbound]\nlisten = \"127.0.0.1:4140\"\n\n[inbound]\nlisten = \"[::]:4140\"\n";
    assert!(parse_config(ok, "ok.toml").is_ok());
}

#[test]
fn service_addresses_rules() {
    let text = r#"[proxy]
listen = "127.0.0.1:4180"

[outbound]

[[services]]
name = "web"
endpoints = ["10.0.0.1:80"]
addresses = ["10.96.0.10:80", "10.96.0.11:0", "0.0.0.0:80", "127.0.0.1:4140"]

[[services]]
name = "api"
endpoints = ["10.0.0.2:80"]
addresses = ["10.96.0.12:80", "10.96.0.10:80"]
"#;
    assert_eq!(
        errors(text),
        vec![
            "v.toml:9:31: field `services[0].addresses[1]`: address 10.96.0.11:0 has port 0",
            "v.toml:9:47: field `services[0].addresses[2]`: address 0.0.0.0:80 is unspecified",
            "v.toml:9:61: field `services[0].addresses[3]`: address 127.0.0.1:4140 is the outbound listener (it would loop)",
            "v.toml:14:31: field `services[1].addresses[1]`: address 10.96.0.10:80 is already claimed by services[0] (\"web\")",
        ]
    );
}

#[test]
fn overlaps_keeps_the_two_families_apart_as_they_are_bound() {
    use crate::validate::{overlaps, serves};
    let a = |text: &str| {
        text.parse::<std::net::SocketAddr>()
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    };
    // Each family's unspecified address takes the port on every address of that family.
    assert!(overlaps(a("0.0.0.0:4143"), a("10.0.0.7:4143")));
    assert!(overlaps(a("[::]:4143"), a("[fd00::7]:4143")));
    assert!(overlaps(a("[::1]:4140"), a("[::]:4140")));
    assert!(overlaps(a("[::]:4140"), a("[::]:4140")));
    // IPV6_V6ONLY: the IPv6 wildcard leaves IPv4 free, and the other way round.
    assert!(!overlaps(a("[::]:4143"), a("0.0.0.0:4143")));
    assert!(!overlaps(a("0.0.0.0:4143"), a("[::1]:4143")));
    // An IPv4-mapped address is its IPv4 address.
    assert!(overlaps(a("[::ffff:127.0.0.1]:4140"), a("127.0.0.1:4140")));
    assert!(overlaps(a("[::ffff:0.0.0.0]:4140"), a("127.0.0.1:4140")));
    // Another port, or port 0 (each gets its own), never collides.
    assert!(!overlaps(a("[::]:4143"), a("[::]:4140")));
    assert!(!overlaps(a("127.0.0.1:0"), a("127.0.0.1:0")));
    // Where a connection goes: a listener on the wildcard of its family serves it.
    assert!(serves(a("0.0.0.0:4143"), a("127.0.0.1:4143")));
    assert!(serves(a("[::]:4143"), a("[::1]:4143")));
    assert!(!serves(a("[::]:4143"), a("127.0.0.1:4143")));
    assert!(!serves(a("127.0.0.1:4143"), a("0.0.0.0:4143")));
    assert!(serves(a("127.0.0.1:4140"), a("[::ffff:127.0.0.1]:4140")));
}

#[test]
fn keepalive_linger_is_bounded_and_only_in_defaults() {
    let text = "[defaults]\nclient_keepalive_linger_ms = 1001\n";
    assert_eq!(
        errors(text),
        vec!["v.toml:2:1: field `defaults.client_keepalive_linger_ms`: 1001 is outside 0 to 1000"]
    );
    for ms in [0, 1000] {
        let config = Config {
            defaults: Settings {
                client_keepalive_linger_ms: ms,
                ..Settings::default()
            },
            ..Config::default()
        };
        assert_eq!(validate(&config), vec![], "{ms}");
    }
    assert_eq!(Settings::default().client_keepalive_linger_ms, 5);
    // A connection's setting: a service cannot override it.
    let per_service = format!("{SERVICES}client_keepalive_linger_ms = 1\n");
    let got = errors(&per_service);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("client_keepalive_linger_ms"), "{got:?}");
}
