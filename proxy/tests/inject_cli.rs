//! The `coremesh inject` / `uninject` commands of the real binary, on the meshed example
//! in `deploy/kubernetes/meshed/`: its `app.injected.yaml` is exactly what `inject`
//! writes today, `uninject` gives back `app.yaml`, standard input works as a file does,
//! and bad input fails with a message instead of output.
//!
//! After a change to what `inject` adds, regenerate the example:
//! `cd deploy/kubernetes/meshed && coremesh inject --config mesh.toml app.yaml > app.injected.yaml`.

use k8s_openapi::api::apps::v1::Deployment;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn meshed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/meshed")
}

fn read(name: &str) -> String {
    let path = meshed().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `coremesh ARGS` in the example's folder, `stdin` on its standard input.
fn coremesh(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coremesh"))
        .args(args)
        .current_dir(meshed())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn coremesh");
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("coremesh output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

/// Every document of `yaml`, as plain values.
fn values(yaml: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple(yaml).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_meshed_example_is_what_inject_writes() {
    let out = coremesh(&["inject", "--config", "mesh.toml", "app.yaml"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "deployment/web: injected\n");
    assert_eq!(
        text(&out.stdout),
        read("app.injected.yaml"),
        "deploy/kubernetes/meshed/app.injected.yaml is stale; regenerate it (see this file's header)"
    );

    // The configuration travels in the proxy's environment, as written in mesh.toml.
    let documents = values(&read("app.injected.yaml"));
    let deployment: Deployment =
        serde_json::from_value(documents[0].clone()).expect("a Deployment");
    let pod = deployment.spec.template.spec.expect("pod spec");
    let proxy = pod
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "coremesh-proxy")
        .expect("the proxy");
    let env = proxy.env.as_deref().expect("env");
    assert_eq!(env[0].name, "COREMESH_CONFIG");
    assert_eq!(env[0].value.as_deref(), Some(read("mesh.toml").as_str()));
    assert_eq!(pod.service_account_name.as_deref(), Some("web"));
}

#[test]
fn uninject_gives_back_the_app_and_standard_input_works_as_a_file() {
    let out = coremesh(&["uninject", "-"], &read("app.injected.yaml"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "deployment/web: uninjected\n");
    assert_eq!(values(&text(&out.stdout)), values(&read("app.yaml")));

    let from_stdin = coremesh(&["inject", "--config", "mesh.toml", "-"], &read("app.yaml"));
    assert!(from_stdin.status.success());
    assert_eq!(text(&from_stdin.stdout), read("app.injected.yaml"));

    // Injecting the injected example again changes nothing.
    let again = coremesh(
        &["inject", "--config", "mesh.toml", "-"],
        &read("app.injected.yaml"),
    );
    assert_eq!(text(&again.stdout), read("app.injected.yaml"));
}

/// A folder of the test's own, removed on drop (even when the test fails).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn bad_input_is_an_error_and_writes_nothing() {
    let temp =
        TempDir(std::env::temp_dir().join(format!("coremesh-inject-cli-{}", std::process::id())));
    let dir = &temp.0;
    std::fs::create_dir_all(dir).expect("temp dir");
    let other_inbound = dir.join("inbound.toml");
    std::fs::write(
        &other_inbound,
        read("mesh.toml").replace(
            "[inbound]\n",
            "[inbound]\nlisten = [\"0.0.0.0:4143\", \"[::]:5143\"]\n",
        ),
    )
    .expect("write");
    let no_outbound = dir.join("outbound.toml");
    std::fs::write(&no_outbound, read("mesh.toml").replace("[outbound]\n", "")).expect("write");
    let other_inbound = other_inbound.to_string_lossy().into_owned();
    let no_outbound = no_outbound.to_string_lossy().into_owned();
    let port_cases: [(&[&str], &str, String); 5] = [
        (
            &["inject", "--config", &other_inbound, "app.yaml"],
            "",
            format!(
                "{other_inbound}: [inbound] listen is on port 5143, but the init container \
                 redirects to --inbound-port 4143: make them the same (change the file or pass \
                 --inbound-port 5143)"
            ),
        ),
        (
            &["inject", "--config", &no_outbound, "app.yaml"],
            "",
            format!(
                "{no_outbound}: has no [outbound] section, but the init container redirects \
                 to --outbound-port 4140"
            ),
        ),
        (
            &["inject", "--cpu-request", "2", "app.yaml"],
            "",
            "--cpu-request 2 is more than --cpu-limit 1: Kubernetes refuses a container whose \
             request exceeds its limit"
                .to_owned(),
        ),
        (
            &[
                "inject",
                "--memory-limit",
                "0.1Gi",
                "--memory-request",
                "128Mi",
                "app.yaml",
            ],
            "",
            "--memory-request 128Mi is more than --memory-limit 0.1Gi".to_owned(),
        ),
        (
            &["inject", "--startup-probe-period", "0", "app.yaml"],
            "",
            "--startup-probe-period must be at least 1".to_owned(),
        ),
    ];
    for (args, stdin, message) in port_cases {
        let out = coremesh(args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(&message), "{args:?}: {stderr}");
    }
    drop(temp);
    // Requests equal to the limits, in other units, are fine.
    let out = coremesh(
        &[
            "inject",
            "--cpu-request",
            "1000m",
            "--memory-request",
            "0.125Gi",
            "app.yaml",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    let cases: [(&[&str], &str, &str); 4] = [
        (&["inject", "-"], "kind: [Pod\n", "invalid YAML"),
        (&["inject", "--proxy-uid", "0", "app.yaml"], "", "--proxy-uid must not be 0"),
        (&["inject", "no-such-file.yaml"], "", "cannot read no-such-file.yaml"),
        (
            &["inject", "-"],
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    coremesh.io/inject: off\nspec:\n  containers: []\n",
            "pod/p: pod template: annotation coremesh.io/inject must be",
        ),
    ];
    for (args, stdin, message) in cases {
        let out = coremesh(args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn the_meshed_rbac_lets_the_pods_account_read_services_endpoint_slices_and_pods() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    let documents = values(&read("rbac.yaml"));
    assert_eq!(documents.len(), 3);
    let account: ServiceAccount = serde_json::from_value(documents[0].clone()).expect("account");
    let role: Role = serde_json::from_value(documents[1].clone()).expect("role");
    let binding: RoleBinding = serde_json::from_value(documents[2].clone()).expect("binding");
    assert_eq!(account.metadata.name.as_deref(), Some("web"));
    let mut grants: Vec<(String, String, Vec<String>)> = role
        .rules
        .iter()
        .flatten()
        .flat_map(|rule| {
            let groups = rule.api_groups.clone().unwrap_or_default();
            let resources = rule.resources.clone().unwrap_or_default();
            groups.into_iter().flat_map(move |group| {
                let verbs = rule.verbs.clone();
                resources
                    .clone()
                    .into_iter()
                    .map(move |resource| (group.clone(), resource, verbs.clone()))
            })
        })
        .collect();
    grants.sort();
    let read = vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()];
    let watch = vec!["list".to_owned(), "watch".to_owned()];
    assert_eq!(
        grants,
        [
            (String::new(), "pods".to_owned(), watch),
            (String::new(), "services".to_owned(), read.clone()),
            (
                "discovery.k8s.io".to_owned(),
                "endpointslices".to_owned(),
                read
            ),
        ]
    );
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(binding.role_ref.name), role.metadata.name);
    let subjects = binding.subjects.unwrap_or_default();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), account.metadata.name.as_ref());
}

/// A Deployment whose containers have `tcpSocket` probes: by number, by port name, and on
/// a native sidecar of its own.
const TCP_PROBED: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: db
spec:
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      initContainers:
        - name: exporter
          image: exporter:1
          restartPolicy: Always
          startupProbe:
            tcpSocket: {port: 9187}
      containers:
        - name: db
          image: db:1
          ports:
            - {name: sql, containerPort: 5432}
            - {name: health, containerPort: 8081}
          livenessProbe:
            tcpSocket: {port: sql}
          readinessProbe:
            tcpSocket: {port: 5432}
          startupProbe:
            httpGet: {path: /, port: health}
";

fn deployment(yaml: &str) -> Deployment {
    serde_json::from_value(values(yaml)[0].clone()).expect("a Deployment")
}

fn init_container(deployment: &Deployment, name: &str) -> k8s_openapi::api::core::v1::Container {
    deployment
        .spec
        .template
        .spec
        .as_ref()
        .and_then(|pod| pod.init_containers.as_ref())
        .and_then(|list| list.iter().find(|c| c.name == name))
        .cloned()
        .unwrap_or_else(|| panic!("no init container {name}"))
}

#[test]
fn tcp_probe_ports_are_left_to_the_kubelet_and_uninject_takes_them_out() {
    let out = coremesh(
        &["inject", "--skip-inbound-ports", "22,5432", "-"],
        TCP_PROBED,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let injected = text(&out.stdout);
    let init = init_container(&deployment(&injected), "coremesh-init");
    let args = init.args.expect("args");
    let at = args
        .iter()
        .position(|a| a == "--skip-inbound-ports")
        .expect("--skip-inbound-ports");
    // The flag's ports first, then each probed port not already there; the httpGet
    // probe's port goes through the proxy as before.
    assert_eq!(args[at + 1], "22,5432,9187");
    assert_eq!(
        args.iter().filter(|a| *a == "--skip-inbound-ports").count(),
        1
    );

    // Without the flag, the probed ports alone, where the flag would be.
    let out = coremesh(&["inject", "-"], TCP_PROBED);
    let init = init_container(&deployment(&text(&out.stdout)), "coremesh-init");
    let args = init.args.expect("args");
    assert_eq!(
        args[8..],
        ["--admin-port", "4191", "--skip-inbound-ports", "5432,9187"]
    );

    // Injecting again changes nothing; uninject gives back the original exactly.
    let again = coremesh(
        &["inject", "--skip-inbound-ports", "22,5432", "-"],
        &injected,
    );
    assert_eq!(text(&again.stdout), injected);
    let back = coremesh(&["uninject", "-"], &injected);
    assert!(back.status.success(), "{}", text(&back.stderr));
    assert_eq!(values(&text(&back.stdout)), values(TCP_PROBED));
}

#[test]
fn the_startup_probe_and_the_lock_wait_take_their_flags() {
    let out = coremesh(
        &[
            "inject",
            "--startup-probe-period",
            "2",
            "--startup-probe-failure-threshold",
            "30",
            "--startup-probe-initial-delay",
            "5",
            "--iptables-lock-wait",
            "20",
            "--probe-period",
            "3",
            "-",
        ],
        TCP_PROBED,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let injected = deployment(&text(&out.stdout));
    let proxy = init_container(&injected, "coremesh-proxy");
    let periods = (
        proxy
            .readiness_probe
            .as_ref()
            .and_then(|p| p.period_seconds),
        proxy.liveness_probe.as_ref().and_then(|p| p.period_seconds),
    );
    assert_eq!(
        periods,
        (Some(3), Some(3)),
        "readiness and liveness periods"
    );
    let probe = init_container(&injected, "coremesh-proxy")
        .startup_probe
        .expect("a startup probe");
    assert_eq!(
        (
            probe.period_seconds,
            probe.failure_threshold,
            probe.initial_delay_seconds
        ),
        (Some(2), Some(30), Some(5))
    );
    let args = init_container(&injected, "coremesh-init")
        .args
        .expect("args");
    assert_eq!(args[10..12], ["--lock-wait", "20"]);

    // The defaults: every second, 120 times, at once.
    let out = coremesh(&["inject", "-"], TCP_PROBED);
    let probe = init_container(&deployment(&text(&out.stdout)), "coremesh-proxy")
        .startup_probe
        .expect("a startup probe");
    assert_eq!(
        (
            probe.period_seconds,
            probe.failure_threshold,
            probe.initial_delay_seconds
        ),
        (Some(1), Some(120), None)
    );
}

/// With ports other than the defaults, the built-in configuration still listens on both
/// families everywhere (the rules redirect IPv6 too, and the kubelet may probe over IPv6):
/// each side is the pair of its default addresses on its port and the admin server is
/// `*:PORT`, each IPv6 address skippable on a pod without IPv6.
#[test]
fn other_ports_keep_both_families_on_every_listener() {
    let out = coremesh(
        &[
            "inject",
            "--inbound-port",
            "5143",
            "--outbound-port",
            "5140",
            "--admin-port",
            "5191",
            "app.yaml",
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let documents = values(&text(&out.stdout));
    let deployment: Deployment =
        serde_json::from_value(documents[0].clone()).expect("a Deployment");
    let pod = deployment.spec.template.spec.expect("pod spec");
    let proxy = pod
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "coremesh-proxy")
        .expect("the proxy");
    let env = proxy.env.as_deref().expect("env");
    assert_eq!(env[0].name, "COREMESH_CONFIG");
    let toml = env[0].value.as_deref().expect("the configuration");
    let config = coremesh_discovery::parse_config(toml, "COREMESH_CONFIG")
        .unwrap_or_else(|errors| panic!("{errors}\n{toml}"));
    let pair = |listen: Option<&coremesh_discovery::Listen>| {
        listen.map(|l| {
            l.addrs()
                .iter()
                .map(|a| (a.to_string(), l.may_skip(*a)))
                .collect::<Vec<_>>()
        })
    };
    let both = |v4: &str, v6: &str| Some(vec![(v4.to_owned(), false), (v6.to_owned(), true)]);
    assert_eq!(
        pair(config.proxy.admin.as_ref()),
        both("0.0.0.0:5191", "[::]:5191"),
        "{toml}"
    );
    assert_eq!(
        pair(config.inbound.as_ref().map(|i| &i.side.listen)),
        both("0.0.0.0:5143", "[::]:5143"),
        "{toml}"
    );
    assert_eq!(
        pair(config.outbound.as_ref().map(|o| &o.listen)),
        both("127.0.0.1:5140", "[::1]:5140"),
        "{toml}"
    );
    // The same ports in the init container's rules.
    let init = pod
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == "coremesh-init")
        .expect("the init container");
    let args = init.args.as_deref().unwrap_or_default().join(" ");
    assert!(
        args.contains("--inbound-port 5143 --outbound-port 5140 --admin-port 5191"),
        "{args}"
    );
}
