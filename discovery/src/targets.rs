//! What a service's `dns` and `kubernetes` entries name: [`DnsTarget`] (`host:port`) and
//! [`KubernetesTarget`] (`name.namespace[.svc.CLUSTER-DOMAIN]:port`), parsed once for
//! validation and again by the sources that resolve them; and [`EndpointEntry`], an
//! `endpoints` entry (or a `--to` value), which is an address or a name to resolve.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Longest DNS name.
const MAX_DNS_NAME_LEN: usize = 253;
/// Longest DNS label, and longest Kubernetes Service or namespace name.
const MAX_LABEL_LEN: usize = 63;
/// Longest Kubernetes port name (an IANA service name).
const MAX_PORT_NAME_LEN: usize = 15;

/// A `dns` entry: a host name resolved to A and AAAA records, and the port to use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsTarget {
    /// As written (lower-cased), with its trailing dot if it had one.
    pub host: String,
    pub port: u16,
}

impl DnsTarget {
    /// Parses `host:port`; the error says what is wrong.
    pub fn parse(entry: &str) -> Result<DnsTarget, String> {
        let (host, port) = split_port(entry)?;
        let port = parse_port_number(port)?;
        if host.parse::<IpAddr>().is_ok() {
            return Err("is an IP address, not a name; list it in `endpoints`".to_owned());
        }
        check_dns_name(host)?;
        Ok(DnsTarget {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for DnsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// An `endpoints` entry or a `coremesh proxy --to` value, as people write them: an
/// address (`10.0.0.5:8080`, `[::1]:8080`) is an endpoint; a name (`localhost:8080`,
/// `api.internal:80`) is resolved as a `dns` entry of the same service would be (A and
/// AAAA, the hosts file first, again as the TTL says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointEntry {
    Address(SocketAddr),
    Name(DnsTarget),
}

impl EndpointEntry {
    /// Parses `ip:port` or `host:port`; the error quotes the entry and says what is wrong.
    pub fn parse(entry: &str) -> Result<EndpointEntry, String> {
        if let Ok(address) = entry.parse::<SocketAddr>() {
            return Ok(EndpointEntry::Address(address));
        }
        let Ok((host, _)) = split_port(entry) else {
            return Err(format!("{entry:?} must be `ip:port` or `host:port`"));
        };
        if host.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "{entry:?} must be `ip:port`, with an IPv6 address in brackets (`[::1]:8080`)"
            ));
        }
        match DnsTarget::parse(entry) {
            Ok(target) => Ok(EndpointEntry::Name(target)),
            Err(problem) => Err(format!("{entry:?} {problem}")),
        }
    }
}

impl std::str::FromStr for EndpointEntry {
    type Err = String;
    fn from_str(entry: &str) -> Result<EndpointEntry, String> {
        EndpointEntry::parse(entry)
    }
}

/// Parsed inside the deserializer's call, so a bad entry's error carries its own position.
impl<'de> serde::Deserialize<'de> for EndpointEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl serde::de::Visitor<'_> for EntryVisitor {
            type Value = EndpointEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`ip:port` or `host:port`")
            }
            fn visit_str<E: serde::de::Error>(self, entry: &str) -> Result<EndpointEntry, E> {
                EndpointEntry::parse(entry).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(EntryVisitor)
    }
}

/// The port of a Kubernetes Service: by number (`port` in the Service spec) or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServicePort {
    Number(u16),
    Name(String),
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServicePort::Number(number) => write!(f, "{number}"),
            ServicePort::Name(name) => f.write_str(name),
        }
    }
}

/// A `kubernetes` entry: a Service in a namespace, and which of its ports to send to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KubernetesTarget {
    pub namespace: String,
    pub service: String,
    pub port: ServicePort,
}

impl KubernetesTarget {
    /// Parses `name.namespace:port`, `name.namespace.svc:port` or
    /// `name.namespace.svc.cluster.local:port` (any cluster domain); the port is a number or
    /// a port name. The error says what is wrong.
    pub fn parse(entry: &str) -> Result<KubernetesTarget, String> {
        let (host, port) = split_port(entry)?;
        let host = host.strip_suffix('.').unwrap_or(host);
        let labels: Vec<&str> = host.split('.').collect();
        let [service, namespace, rest @ ..] = labels.as_slice() else {
            return Err("must name the Service and its namespace, as `name.namespace:port`".into());
        };
        if let Some(third) = rest.first() {
            if *third != "svc" {
                return Err(format!(
                    "must be `name.namespace:port` or `name.namespace.svc[.cluster-domain]:port`, \
                     not have {third:?} after the namespace"
                ));
            }
            for label in &rest[1..] {
                check_dns_label(label)?;
            }
        }
        check_kubernetes_name("Service", service)?;
        check_kubernetes_name("namespace", namespace)?;
        let port = if port.bytes().all(|b| b.is_ascii_digit()) {
            ServicePort::Number(parse_port_number(port)?)
        } else {
            check_port_name(port)?;
            ServicePort::Name(port.to_owned())
        };
        Ok(KubernetesTarget {
            namespace: (*namespace).to_owned(),
            service: (*service).to_owned(),
            port,
        })
    }
}

impl fmt::Display for KubernetesTarget {
    /// `name.namespace:port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}:{}", self.service, self.namespace, self.port)
    }
}

/// `host` and `port` of `host:port`.
fn split_port(entry: &str) -> Result<(&str, &str), String> {
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.is_empty() => Ok((host, port)),
        _ => Err("must be `host:port`".to_owned()),
    }
}

fn parse_port_number(port: &str) -> Result<u16, String> {
    match port.parse::<u16>() {
        Ok(0) => Err("has port 0".to_owned()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("has an invalid port {port:?} (1 to 65535)")),
    }
}

/// A host name: labels of letters, digits, '-' and '_' (for names like `_http._tcp`), an
/// optional trailing dot.
fn check_dns_name(host: &str) -> Result<(), String> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() || name.len() > MAX_DNS_NAME_LEN {
        return Err(format!(
            "must have a host name of 1 to {MAX_DNS_NAME_LEN} characters"
        ));
    }
    name.split('.').try_for_each(check_dns_label)
}

fn check_dns_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "has a name label {label:?} that is not 1 to {MAX_LABEL_LEN} characters long"
        ));
    }
    let valid = label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid || label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "has an invalid name label {label:?} (letters, digits, inner '-')"
        ));
    }
    Ok(())
}

/// A Service or namespace name: a DNS-1123 label (lower-case letters, digits, inner '-').
fn check_kubernetes_name(what: &str, name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_LABEL_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "has an invalid {what} name {name:?} (1 to {MAX_LABEL_LEN} lower-case letters, \
             digits and inner '-')"
        ))
    }
}

/// A port name: 1 to 15 lower-case letters, digits and inner '-', at least one letter.
fn check_port_name(name: &str) -> Result<(), String> {
    let valid = name.len() <= MAX_PORT_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "has an invalid port {name:?} (a number 1 to 65535, or a port name of 1 to \
             {MAX_PORT_NAME_LEN} lower-case letters, digits and inner '-')"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_targets() {
        let target = DnsTarget::parse("Web.Example.com:8080");
        assert_eq!(
            target,
            Ok(DnsTarget {
                host: "web.example.com".into(),
                port: 8080
            })
        );
        assert_eq!(
            DnsTarget::parse("web.example.com.:80").map(|t| t.to_string()),
            Ok("web.example.com.:80".to_owned())
        );
        assert!(DnsTarget::parse("_http._tcp.example.com:80").is_ok());
        assert!(DnsTarget::parse("localhost:1").is_ok());
        let error = |entry: &str| DnsTarget::parse(entry).err().unwrap_or_default();
        assert_eq!(error("web.example.com"), "must be `host:port`");
        assert_eq!(error(":80"), "must be `host:port`");
        assert_eq!(error("web:0"), "has port 0");
        assert_eq!(
            error("web:http"),
            "has an invalid port \"http\" (1 to 65535)"
        );
        assert_eq!(
            error("web:70000"),
            "has an invalid port \"70000\" (1 to 65535)"
        );
        assert_eq!(
            error("10.0.0.1:80"),
            "is an IP address, not a name; list it in `endpoints`"
        );
        assert_eq!(
            error("a..b:80"),
            "has a name label \"\" that is not 1 to 63 characters long"
        );
        assert_eq!(
            error("we b:80"),
            "has an invalid name label \"we b\" (letters, digits, inner '-')"
        );
        assert_eq!(
            error("-web:80"),
            "has an invalid name label \"-web\" (letters, digits, inner '-')"
        );
    }

    #[test]
    fn endpoint_entries_are_addresses_or_names() {
        let parse = |entry: &str| EndpointEntry::parse(entry);
        assert_eq!(
            parse("10.0.0.5:8080"),
            Ok(EndpointEntry::Address(([10, 0, 0, 5], 8080).into()))
        );
        assert_eq!(
            parse("[::1]:80"),
            Ok(EndpointEntry::Address("[::1]:80".parse().expect("literal")))
        );
        assert_eq!(
            parse("LocalHost:8080"),
            Ok(EndpointEntry::Name(DnsTarget {
                host: "localhost".into(),
                port: 8080
            }))
        );
        let error = |entry: &str| parse(entry).err().unwrap_or_default();
        assert_eq!(
            error("10.0.0.2"),
            "\"10.0.0.2\" must be `ip:port` or `host:port`"
        );
        assert_eq!(
            error("::1:80"),
            "\"::1:80\" must be `ip:port`, with an IPv6 address in brackets (`[::1]:8080`)"
        );
        assert_eq!(error("web:0"), "\"web:0\" has port 0");
        assert_eq!(
            error("we b:80"),
            "\"we b:80\" has an invalid name label \"we b\" (letters, digits, inner '-')"
        );
    }

    #[test]
    fn endpoint_names_become_dns_entries_of_their_service() {
        let text = "[[services]]\nname = \"a\"\n\
                    endpoints = [\"10.0.0.1:80\", \"LocalHost:8080\", \"api.internal:80\"]\n\
                    dns = [\"api.internal:80\"]\n\n[[routes]]\nservice = \"a\"\n";
        let config = match crate::parse_config(text, "t.toml") {
            Ok(config) => config,
            Err(errors) => panic!("{errors}"),
        };
        let service = &config.services[0];
        assert_eq!(service.endpoints, [SocketAddr::from(([10, 0, 0, 1], 80))]);
        assert_eq!(service.dns, ["api.internal:80", "localhost:8080"]);
        let only_a_name = "[[services]]\nname = \"a\"\nendpoints = [\"localhost:8080\"]\n";
        assert!(crate::parse_config(only_a_name, "t.toml").is_ok());
    }

    #[test]
    fn kubernetes_targets() {
        let expected = KubernetesTarget {
            namespace: "prod".into(),
            service: "web".into(),
            port: ServicePort::Number(8080),
        };
        for entry in [
            "web.prod:8080",
            "web.prod.svc:8080",
            "web.prod.svc.cluster.local:8080",
            "web.prod.svc.cluster.local.:8080",
            "web.prod.svc.corp.example:8080",
        ] {
            assert_eq!(
                KubernetesTarget::parse(entry).as_ref(),
                Ok(&expected),
                "{entry}"
            );
        }
        let named = KubernetesTarget::parse("web.prod:http-alt");
        assert_eq!(
            named.map(|target| (target.port.clone(), target.to_string())),
            Ok((
                ServicePort::Name("http-alt".into()),
                "web.prod:http-alt".to_owned()
            ))
        );
        let error = |entry: &str| KubernetesTarget::parse(entry).err().unwrap_or_default();
        assert_eq!(
            error("web:80"),
            "must name the Service and its namespace, as `name.namespace:port`"
        );
        assert_eq!(error("web.prod"), "must be `host:port`");
        assert_eq!(
            error("web.prod.cluster.local:80"),
            "must be `name.namespace:port` or `name.namespace.svc[.cluster-domain]:port`, \
             not have \"cluster\" after the namespace"
        );
        assert_eq!(
            error("Web.prod:80"),
            "has an invalid Service name \"Web\" (1 to 63 lower-case letters, digits and inner '-')"
        );
        assert_eq!(
            error("web.pr_od:80"),
            "has an invalid namespace name \"pr_od\" (1 to 63 lower-case letters, digits and \
             inner '-')"
        );
        assert_eq!(error("web.prod:0"), "has port 0");
        assert_eq!(
            error("web.prod:HTTP"),
            "has an invalid port \"HTTP\" (a number 1 to 65535, or a port name of 1 to 15 \
             lower-case letters, digits and inner '-')"
        );
    }
}
