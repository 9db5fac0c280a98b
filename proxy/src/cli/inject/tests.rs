//! `inject` / `uninject` on real manifests: the output is read back with `k8s-openapi`'s
//! types (every field the sidecar adds must be one Kubernetes knows), injecting twice
//! equals injecting once, and `uninject` gives back the original document exactly.

use super::node::Node;
use super::sidecar::{SidecarArgs, CONFIG_ENV, INIT_CONTAINER, PROXY_CONTAINER, XTABLES_VOLUME};
use super::template::{CREATED_ANNOTATION, INJECTED_ANNOTATION, MTLS_POD_LABEL};
use super::{inject_text, uninject_text, yaml, Report};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

const DEPLOYMENT: &str = r#"# the app
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      initContainers:
        - name: migrate
          image: web:1.0
          args: ["migrate"]
      containers:
        - name: web
          image: web:1.0
          env:
            - {name: FEATURE, value: "on"}
            - {name: MODE, value: "y"}
            - {name: OCTAL, value: "0755"}
          ports:
            - containerPort: 8080
      volumes:
        - name: cache
          emptyDir: {}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
    - name: http
      port: 80
      targetPort: 8080
"#;

const POD_TEMPLATE: &str = "
    metadata:
      labels: {app: x}
    spec:
      containers:
        - name: app
          image: app:1
";

fn inject(text: &str) -> (String, Vec<Report>) {
    inject_with(text, &SidecarArgs::default())
}

fn inject_with(text: &str, args: &SidecarArgs) -> (String, Vec<Report>) {
    let sidecar = args.build().unwrap_or_else(|e| panic!("{e:#}"));
    inject_text(text, &sidecar).unwrap_or_else(|e| panic!("{e:#}"))
}

fn uninject(text: &str) -> String {
    uninject_text(text).unwrap_or_else(|e| panic!("{e:#}")).0
}

/// The documents of `text` as JSON values, as a Kubernetes client would read them.
fn documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// `document` as a `T`, which must write back the same document: a field the type does
/// not know would be dropped and make them differ.
fn typed<T: DeserializeOwned + Serialize>(document: &Value) -> T {
    let object: T = serde_json::from_value(document.clone())
        .unwrap_or_else(|e| panic!("not a {}: {e}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&object).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        &back,
        document,
        "{} loses fields",
        std::any::type_name::<T>()
    );
    object
}

fn pod_spec(template: &PodTemplateSpec) -> &PodSpec {
    template.spec.as_ref().unwrap_or_else(|| panic!("no spec"))
}

fn init_names(spec: &PodSpec) -> Vec<&str> {
    spec.init_containers
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect()
}

fn container<'a>(spec: &'a PodSpec, name: &str) -> &'a Container {
    spec.init_containers
        .iter()
        .flatten()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no init container {name}"))
}

fn quantity(text: &str) -> Quantity {
    Quantity(text.to_owned())
}

#[test]
fn a_deployment_gets_the_init_container_and_the_native_sidecar() {
    let (output, reports) = inject(DEPLOYMENT);
    assert_eq!(
        reports,
        [Report {
            object: "deployment/web".into(),
            outcome: "injected".into()
        }]
    );
    let docs = documents(&output);
    assert_eq!(docs.len(), 2);
    let deployment: Deployment = typed(&docs[0]);
    let spec = pod_spec(&deployment.spec.template);
    // Ours first, so the application's own init container already runs meshed.
    assert_eq!(
        init_names(spec),
        [INIT_CONTAINER, PROXY_CONTAINER, "migrate"]
    );

    let init = container(spec, INIT_CONTAINER);
    assert_eq!(init.image.as_deref(), Some(super::sidecar::DEFAULT_IMAGE));
    assert_eq!(init.restart_policy, None);
    assert_eq!(
        init.args.as_deref().expect("args")[..4],
        ["iptables", "install", "--proxy-uid", "2102"]
    );
    let security = init.security_context.as_ref().expect("securityContext");
    let capabilities = security.capabilities.as_ref().expect("capabilities");
    assert_eq!(
        capabilities.add.as_deref(),
        Some(&["NET_ADMIN".to_owned(), "NET_RAW".to_owned()][..])
    );
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(security.run_as_user, Some(0));
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let mounts = init.volume_mounts.as_deref().expect("volumeMounts");
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].name, XTABLES_VOLUME);

    let proxy = container(spec, PROXY_CONTAINER);
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        proxy.args.as_deref(),
        Some(
            &[
                "run".to_owned(),
                "--config-env".to_owned(),
                CONFIG_ENV.to_owned()
            ][..]
        )
    );
    let probe = proxy.startup_probe.as_ref().expect("startupProbe");
    let http = probe.http_get.as_ref().expect("httpGet");
    assert_eq!(http.path.as_deref(), Some("/ready"));
    assert_eq!(http.port, IntOrString::String("coremesh-admin".into()));
    let admin_port = proxy
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("coremesh-admin"))
        .expect("admin port");
    assert_eq!(admin_port.container_port, 4191);
    let security = proxy.security_context.as_ref().expect("securityContext");
    assert_eq!(security.run_as_user, Some(2102));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let resources = proxy.resources.as_ref().expect("resources");
    let requests = resources.requests.as_ref().expect("requests");
    let limits = resources.limits.as_ref().expect("limits");
    assert_eq!(requests.get("cpu"), Some(&quantity("100m")));
    assert_eq!(requests.get("memory"), Some(&quantity("32Mi")));
    assert_eq!(limits.get("cpu"), Some(&quantity("1")));
    assert_eq!(limits.get("memory"), Some(&quantity("128Mi")));
    let env = proxy.env.as_deref().expect("env");
    assert_eq!(env[0].name, CONFIG_ENV);
    assert!(env[0]
        .value
        .as_deref()
        .expect("value")
        .contains("admin = \"*:4191\""));

    // The application's container, its strings that look like YAML 1.1 booleans and
    // numbers included, and the other document are as they were.
    let app = &spec.containers[0];
    assert_eq!(app.name, "web");
    let values: Vec<_> = app
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.as_deref())
        .collect();
    assert_eq!(values, ["on", "y", "0755"]);
    let volumes: Vec<_> = spec.volumes.iter().flatten().map(|v| &v.name).collect();
    assert_eq!(volumes, ["cache", XTABLES_VOLUME]);
    let annotations = deployment.spec.template.metadata.as_ref();
    let annotations = annotations
        .and_then(|m| m.annotations.as_ref())
        .expect("annotations");
    assert_eq!(
        annotations.get(INJECTED_ANNOTATION).map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        annotations.get(CREATED_ANNOTATION).map(String::as_str),
        Some("annotations")
    );
    let service: Service = typed(&docs[1]);
    assert_eq!(docs[1], documents(DEPLOYMENT)[1], "{service:?}");
}

#[test]
fn every_workload_kind_is_injected() {
    let text = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: app\n      image: app:1\n\
         ---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: s\nspec:\n  serviceName: s\n  selector:\n    matchLabels: {{app: x}}\n  template:{POD_TEMPLATE}\
         ---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: d\nspec:\n  selector:\n    matchLabels: {{app: x}}\n  template:{POD_TEMPLATE}\
         ---\napiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: r\nspec:\n  selector:\n    matchLabels: {{app: x}}\n  template:{POD_TEMPLATE}\
         ---\napiVersion: batch/v1\nkind: Job\nmetadata:\n  name: j\nspec:\n  template:{POD_TEMPLATE}\
         ---\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: c\nspec:\n  schedule: '*/5 * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers:\n            - name: app\n              image: app:1\n"
    );
    let (output, reports) = inject(&text);
    let objects: Vec<_> = reports
        .iter()
        .map(|r| format!("{} {}", r.object, r.outcome))
        .collect();
    assert_eq!(
        objects,
        [
            "pod/p injected",
            "statefulset/s injected",
            "daemonset/d injected",
            "replicaset/r injected",
            "job/j injected",
            "cronjob/c injected"
        ]
    );
    let docs = documents(&output);
    let expected = [INIT_CONTAINER, PROXY_CONTAINER];
    let pod: Pod = typed(&docs[0]);
    assert_eq!(init_names(pod.spec.as_ref().expect("spec")), expected);
    let s: StatefulSet = typed(&docs[1]);
    assert_eq!(init_names(pod_spec(&s.spec.template)), expected);
    let d: DaemonSet = typed(&docs[2]);
    assert_eq!(init_names(pod_spec(&d.spec.template)), expected);
    let r: ReplicaSet = typed(&docs[3]);
    let r = r.spec.template.expect("template");
    assert_eq!(init_names(pod_spec(&r)), expected);
    let j: Job = typed(&docs[4]);
    assert_eq!(
        init_names(pod_spec(&j.spec.expect("spec").template)),
        expected
    );
    let c: CronJob = typed(&docs[5]);
    let job = c.spec.job_template.spec.expect("job spec");
    let spec = pod_spec(&job.template);
    assert_eq!(init_names(spec), expected);
    // A template without metadata got one, and gives it back.
    assert_eq!(
        job.template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CREATED_ANNOTATION))
            .map(String::as_str),
        Some("initContainers,volumes,metadata,annotations")
    );
    assert_eq!(documents(&uninject(&output)), documents(&text));
}

#[test]
fn injecting_twice_is_injecting_once_and_uninject_restores_the_original() {
    let inputs = [
        DEPLOYMENT.to_owned(),
        // No annotations, init containers or volumes: inject creates them, uninject
        // removes them again.
        format!("apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: j\nspec:\n  template:{POD_TEMPLATE}"),
        // Present but empty, or null: kept as they were.
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {}\nspec:\n  initContainers: []\n  volumes: null\n  containers:\n    - name: app\n      image: app:1\n".to_owned(),
        // Other annotations stay, in their order.
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    z: '1'\n    a: 'true'\nspec:\n  containers:\n    - name: app\n      image: app:1\n".to_owned(),
    ];
    for input in inputs {
        let (once, _) = inject(&input);
        let (twice, reports) = inject(&once);
        assert_eq!(twice, once, "injecting again changed it");
        assert!(
            reports.iter().all(|r| r.outcome == "injected"),
            "{reports:?}"
        );

        let back = uninject(&once);
        let original = yaml::read_documents(&input).expect("input");
        let restored = yaml::read_documents(&back).expect("output");
        assert_eq!(restored, original, "uninject:\n{back}");
        // The same keys in the same order, too (map equality ignores order).
        assert_eq!(back, yaml::write_documents(&original).expect("write"));
        // Uninjecting what is not injected changes nothing.
        assert_eq!(uninject(&back), back);
    }
}

/// A sidecar whose `--config` has `[identity]` (the files are not read by `inject`).
fn sidecar_with_identity() -> super::sidecar::Sidecar {
    let dir = std::env::temp_dir().join(format!("coremesh-inject-mtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("mesh.toml");
    let text = format!(
        "{}\n[identity]\ncert = \"/run/svid.pem\"\nkey = \"/run/svid.key\"\ntrust_anchors = \"/run/bundle.pem\"\n",
        SidecarArgs::default().default_config()
    );
    std::fs::write(&file, text).expect("write");
    let built = SidecarArgs {
        config: Some(file),
        ..SidecarArgs::default()
    }
    .build();
    let _ = std::fs::remove_dir_all(&dir);
    built.unwrap_or_else(|e| panic!("{e:#}"))
}

fn labels_of(template: &PodTemplateSpec) -> Vec<(String, String)> {
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
    labels.unwrap_or_default().into_iter().collect()
}

#[test]
fn a_sidecar_with_an_identity_labels_the_pod_for_mutual_tls_and_uninject_takes_it_out() {
    let mtls = sidecar_with_identity();
    assert!(mtls.mtls);
    let plain = SidecarArgs::default().build().expect("defaults");
    assert!(!plain.mtls);

    let (once, _) = inject_text(DEPLOYMENT, &mtls).expect("inject");
    let deployment: Deployment = typed(&documents(&once)[0]);
    assert_eq!(
        labels_of(&deployment.spec.template),
        [
            ("app".to_owned(), "web".to_owned()),
            (MTLS_POD_LABEL.to_owned(), "true".to_owned())
        ]
    );
    // The Deployment's own selector and labels are the application's.
    assert_eq!(
        documents(&once)[0]["metadata"],
        documents(DEPLOYMENT)[0]["metadata"]
    );
    assert_eq!(
        documents(&once)[0]["spec"]["selector"],
        documents(DEPLOYMENT)[0]["spec"]["selector"]
    );
    let (twice, _) = inject_text(&once, &mtls).expect("inject again");
    assert_eq!(twice, once);
    let original = yaml::read_documents(DEPLOYMENT).expect("input");
    assert_eq!(
        uninject(&once),
        yaml::write_documents(&original).expect("write")
    );
    // Injected again without an identity: the label goes, as if injected so at first.
    assert_eq!(
        inject_text(&once, &plain).expect("inject").0,
        inject(DEPLOYMENT).0
    );

    // A pod without labels gets them created, and gives them back.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: app\n      image: app:1\n";
    let (injected, _) = inject_text(pod, &mtls).expect("inject");
    let typed_pod: Pod = typed(&documents(&injected)[0]);
    let metadata = typed_pod.metadata;
    assert_eq!(
        metadata
            .labels
            .unwrap_or_default()
            .get(MTLS_POD_LABEL)
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(
        metadata
            .annotations
            .unwrap_or_default()
            .get(CREATED_ANNOTATION)
            .map(String::as_str),
        Some("initContainers,volumes,annotations,labels")
    );
    let back = uninject(&injected);
    assert_eq!(documents(&back), documents(pod));
    assert_eq!(
        back,
        yaml::write_documents(&yaml::read_documents(pod).expect("pod")).expect("write")
    );

    // A label set by hand, without the annotation, is not taken for inject's.
    let by_hand = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels:\n    coremesh.io/mtls: 'true'\nspec:\n  containers:\n    - name: app\n      image: app:1\n";
    let (output, reports) = inject_text(by_hand, &mtls).expect("inject");
    assert_eq!(documents(&output), documents(by_hand));
    assert_eq!(
        reports[0].outcome,
        "skipped: already has the label coremesh.io/mtls without the annotation coremesh.io/injected"
    );
}

#[test]
fn injecting_again_with_other_flags_replaces_the_sidecar() {
    let (old, _) = inject(DEPLOYMENT);
    let newer = SidecarArgs {
        image: "coremesh:9.9.9".into(),
        proxy_uid: 3000,
        ..SidecarArgs::default()
    };
    let (again, _) = inject_with(&old, &newer);
    let (fresh, _) = inject_with(DEPLOYMENT, &newer);
    assert_eq!(again, fresh);
    let deployment: Deployment = typed(&documents(&again)[0]);
    let spec = pod_spec(&deployment.spec.template);
    assert_eq!(
        init_names(spec),
        [INIT_CONTAINER, PROXY_CONTAINER, "migrate"]
    );
    let proxy = container(spec, PROXY_CONTAINER);
    assert_eq!(proxy.image.as_deref(), Some("coremesh:9.9.9"));
    let security = proxy.security_context.as_ref().expect("securityContext");
    assert_eq!(security.run_as_user, Some(3000));
}

#[test]
fn opted_out_host_network_and_hand_made_sidecars_are_left_alone() {
    let cases = [
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    coremesh.io/inject: disabled\nspec:\n  containers:\n    - name: app\n      image: app:1\n",
            "skipped: coremesh.io/inject: disabled",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  hostNetwork: true\n  containers:\n    - name: app\n      image: app:1\n",
            "skipped: hostNetwork: true (the interception rules would apply to the node)",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: coremesh-proxy\n      image: mine:1\n",
            "skipped: already has containers entry \"coremesh-proxy\" without the annotation coremesh.io/injected",
        ),
    ];
    for (input, why) in cases {
        let (output, reports) = inject(input);
        assert_eq!(documents(&output), documents(input));
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].outcome, why);
    }
    // A mistyped value is an error, not a silent injection.
    let typo = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    coremesh.io/inject: disable\nspec:\n  containers: []\n";
    let sidecar = SidecarArgs::default().build().expect("defaults");
    let error = format!("{:#}", inject_text(typo, &sidecar).expect_err("typo"));
    assert_eq!(
        error,
        "pod/p: pod template: annotation coremesh.io/inject must be \"enabled\" or \"disabled\", not \"disable\""
    );
}

#[test]
fn other_kinds_pass_through_and_lists_are_looked_into() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  on: 'yes'\n\
                ---\napiVersion: example.com/v1\nkind: Deployment\nmetadata:\n  name: custom\nspec:\n  template: {}\n\
                ---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: no-template\nspec: {}\n\
                ---\napiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Pod\n    metadata:\n      name: in-list\n    spec:\n      containers:\n        - name: app\n          image: app:1\n  - apiVersion: v1\n    kind: Service\n    metadata:\n      name: s\n";
    let (output, reports) = inject(text);
    let lines: Vec<_> = reports
        .iter()
        .map(|r| format!("{} {}", r.object, r.outcome))
        .collect();
    assert_eq!(
        lines,
        [
            "deployment/no-template skipped: no pod template",
            "pod/in-list injected"
        ]
    );
    let before = documents(text);
    let after = documents(&output);
    assert_eq!(after[..3], before[..3]);
    let pod: Pod = typed(&after[3]["items"][0]);
    assert_eq!(
        init_names(pod.spec.as_ref().expect("spec")),
        [INIT_CONTAINER, PROXY_CONTAINER]
    );
    assert_eq!(after[3]["items"][1], before[3]["items"][1]);
    assert_eq!(documents(&uninject(&output)), before);
}

#[test]
fn the_written_yaml_keeps_document_and_key_order() {
    let (output, _) = inject(DEPLOYMENT);
    let keys: Vec<&str> = output
        .lines()
        .filter(|line| {
            // Top-level keys and separators (a blank line is inside the TOML block).
            *line == "---" || !(line.is_empty() || line.starts_with(' ') || line.starts_with('-'))
        })
        .collect();
    assert_eq!(
        keys,
        [
            "apiVersion: apps/v1",
            "kind: Deployment",
            "metadata:",
            "spec:",
            "---",
            "apiVersion: v1",
            "kind: Service",
            "metadata:",
            "spec:"
        ]
    );
    assert!(output.contains("value: \"on\""), "{output}");
}

#[test]
fn invalid_yaml_is_an_error_not_a_panic() {
    let sidecar = SidecarArgs::default().build().expect("defaults");
    for bad in ["a: [1, 2\n", "kind: Pod\nkind: Pod\n", "\t- x: : y\n"] {
        assert!(inject_text(bad, &sidecar).is_err(), "{bad:?}");
    }
    let pod_without_spec = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n";
    let error = format!(
        "{:#}",
        inject_text(pod_without_spec, &sidecar).expect_err("no spec")
    );
    assert_eq!(error, "pod/p: pod template: has no pod spec (`spec`)");
    let spec_is_a_list = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec: []\n";
    assert!(inject_text(spec_is_a_list, &sidecar).is_err());
}

#[test]
fn a_node_reads_every_scalar_kind() {
    let docs =
        yaml::read_documents("a: 1\nb: -2\nc: 1.5\nd: true\ne: null\nf: x\ng: [1]\nh: {i: j}\n")
            .expect("yaml");
    let doc = &docs[0];
    assert_eq!(doc.get("a"), Some(&Node::Int(1)));
    assert_eq!(doc.get("b"), Some(&Node::Int(-2)));
    assert_eq!(doc.get("c"), Some(&Node::Float(1.5)));
    assert_eq!(doc.get("d"), Some(&Node::Bool(true)));
    assert_eq!(doc.get("e"), Some(&Node::Null));
    assert_eq!(doc.get("f"), Some(&Node::str("x")));
    assert_eq!(doc.get("g"), Some(&Node::Seq(vec![Node::Int(1)])));
    assert_eq!(doc.at(&["h", "i"]), Some(&Node::str("j")));
}
