//! The application's `tcpSocket` probes, whose ports the interception rules must leave
//! alone.
//!
//! The kubelet runs a `tcpSocket` probe by connecting to the pod's address. Once inbound
//! TCP is redirected, that connection is accepted by the proxy, whether or not the
//! application behind it is up: the probe would always pass, and a dead application would
//! stay in its Service. So `inject` adds each such port to the init container's
//! `--skip-inbound-ports`, and the kubelet reaches the application directly there.
//! (`httpGet` and `grpc` probes need nothing: the proxy answers them with the
//! application's own answer, or an error when it is down.)

use super::node::Node;

/// The probes of a container.
const PROBES: [&str; 3] = ["livenessProbe", "readinessProbe", "startupProbe"];

/// Every port a `tcpSocket` probe of `spec`'s containers and init containers checks,
/// ascending and without repeats; a named port is looked up in its container's `ports`.
pub fn tcp_probe_ports(spec: &Node) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get(list).and_then(Node::as_seq) else {
            continue;
        };
        for container in containers {
            for probe in PROBES {
                let Some(port) = container.at(&[probe, "tcpSocket", "port"]) else {
                    continue;
                };
                ports.push(resolve(container, port).map_err(|why| {
                    let name = container.get("name").and_then(Node::as_str).unwrap_or("?");
                    format!("{list} {name:?}: {probe}.tcpSocket.port: {why}")
                })?);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// A probe's port: a number, or the name of one of the container's ports.
fn resolve(container: &Node, port: &Node) -> Result<u16, String> {
    let number = match port {
        Node::Int(n) => Some(*n),
        Node::UInt(n) => i64::try_from(*n).ok(),
        Node::String(name) => match name.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                let found = container
                    .get("ports")
                    .and_then(Node::as_seq)
                    .into_iter()
                    .flatten()
                    .find(|p| p.get("name").and_then(Node::as_str) == Some(name));
                match found.and_then(|p| p.get("containerPort")) {
                    Some(Node::Int(n)) => Some(*n),
                    Some(Node::UInt(n)) => i64::try_from(*n).ok(),
                    _ => return Err(format!("no container port is named {name:?}")),
                }
            }
        },
        _ => None,
    };
    number
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n != 0)
        .ok_or_else(|| "is not a port (1-65535) or a port name".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Node {
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn numbers_and_names_of_every_tcp_probe_are_found_once() {
        let spec = spec(
            "containers:\n\
             - name: app\n  ports: [{name: db, containerPort: 5432}]\n\
             \x20 livenessProbe: {tcpSocket: {port: db}}\n\
             \x20 readinessProbe: {tcpSocket: {port: 9000}}\n\
             \x20 startupProbe: {httpGet: {port: 8080, path: /}}\n\
             - name: other\n  startupProbe: {tcpSocket: {port: \"9000\"}}\n\
             initContainers:\n\
             - name: side\n  restartPolicy: Always\n  readinessProbe: {tcpSocket: {port: 7000}}\n",
        );
        assert_eq!(tcp_probe_ports(&spec), Ok(vec![5432, 7000, 9000]));
        assert_eq!(tcp_probe_ports(&super::Node::Null), Ok(vec![]));
    }

    #[test]
    fn an_unknown_name_or_a_bad_number_is_an_error_naming_the_probe() {
        let err = tcp_probe_ports(&spec(
            "containers:\n- name: app\n  livenessProbe: {tcpSocket: {port: nope}}\n",
        ))
        .unwrap_err();
        assert_eq!(
            err,
            "containers \"app\": livenessProbe.tcpSocket.port: no container port is named \"nope\""
        );
        let err = tcp_probe_ports(&spec(
            "containers:\n- name: app\n  readinessProbe: {tcpSocket: {port: 70000}}\n",
        ))
        .unwrap_err();
        assert!(
            err.ends_with("is not a port (1-65535) or a port name"),
            "{err}"
        );
    }
}
