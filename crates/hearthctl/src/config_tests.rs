use std::path::PathBuf;

use super::*;

fn pod(text: &str, format: Format) -> Result<cri::PodSandboxConfig> {
    parse::<PodConfig>(text, format)?.into_cri()
}

fn container(text: &str, format: Format) -> Result<cri::ContainerConfig> {
    parse::<ContainerConfig>(text, format)?.into_cri()
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

/// crictl's documented pod-config.json (cri-tools docs/crictl.md).
const CRICTL_POD_JSON: &str = r#"{
    "metadata": {
        "name": "nginx-sandbox",
        "namespace": "default",
        "attempt": 1,
        "uid": "hdishd83djaidwnduwk28bcsb"
    },
    "log_directory": "/tmp",
    "linux": {
    }
}"#;

#[test]
fn crictl_pod_json_parses() {
    let c = pod(CRICTL_POD_JSON, Format::Json).unwrap();
    let m = c.metadata.unwrap();
    assert_eq!(m.name, "nginx-sandbox");
    assert_eq!(m.namespace, "default");
    assert_eq!(m.attempt, 1);
    assert_eq!(m.uid, "hdishd83djaidwnduwk28bcsb");
    assert_eq!(c.log_directory, "/tmp");
    // An empty `linux: {}` is kept as present-but-empty, as crictl sends it.
    assert_eq!(c.linux, Some(cri::LinuxPodSandboxConfig::default()));
    assert_eq!(c.dns_config, None);
}

#[test]
fn yaml_and_json_give_the_same_config() {
    let yaml = "
metadata:
  name: nginx-sandbox
  namespace: default
  attempt: 1
  uid: hdishd83djaidwnduwk28bcsb
log_directory: /tmp
linux: {}
";
    assert_eq!(
        pod(yaml, Format::Yaml).unwrap(),
        pod(CRICTL_POD_JSON, Format::Json).unwrap()
    );
    // YAML is a superset of JSON: a .yaml parser reads the JSON file too.
    assert_eq!(
        pod(CRICTL_POD_JSON, Format::Yaml).unwrap(),
        pod(CRICTL_POD_JSON, Format::Json).unwrap()
    );
}

/// Every field of the sandbox config shape crictl (and the kubelet) sends.
#[test]
fn full_sandbox_config_converts_every_field() {
    let json = r#"{
        "metadata": {"name": "web", "uid": "u-1", "namespace": "prod", "attempt": 2},
        "hostname": "web-0",
        "log_directory": "/var/log/pods/prod_web_u-1",
        "dns_config": {"servers": ["10.96.0.10"], "searches": ["prod.svc.cluster.local"], "options": ["ndots:5"]},
        "port_mappings": [
            {"protocol": "UDP", "container_port": 53, "host_port": 5353, "host_ip": "127.0.0.1"},
            {"protocol": 2, "container_port": 80},
            {"container_port": 443}
        ],
        "labels": {"app": "web"},
        "annotations": {"note": "x"},
        "linux": {
            "cgroup_parent": "/kubepods/burstable/podu-1",
            "sysctls": {"net.ipv4.ip_forward": "1"},
            "security_context": {
                "namespace_options": {"network": "NODE", "pid": "container", "ipc": 0, "target_id": "t"},
                "run_as_user": {"value": 1000},
                "run_as_group": 2000,
                "supplemental_groups": [3000],
                "privileged": true,
                "readonly_rootfs": true,
                "seccomp": {"profile_type": "Localhost", "localhost_ref": "prof.json"},
                "selinux_options": {"user": "u", "role": "r", "type": "t", "level": "s0"}
            },
            "resources": {"cpu_period": 100000, "cpu_quota": 50000, "cpu_shares": 512, "memory_limit_in_bytes": 134217728},
            "overhead": {"memory_limit_in_bytes": 1048576, "hugepage_limits": [{"page_size": "2MB", "limit": 4}]}
        }
    }"#;
    let c = pod(json, Format::Json).unwrap();
    assert_eq!(c.hostname, "web-0");
    let dns = c.dns_config.unwrap();
    assert_eq!(dns.servers, ["10.96.0.10"]);
    assert_eq!(dns.options, ["ndots:5"]);
    assert_eq!(c.port_mappings.len(), 3);
    assert_eq!(c.port_mappings[0].protocol, cri::Protocol::Udp as i32);
    assert_eq!(c.port_mappings[0].host_ip, "127.0.0.1");
    assert_eq!(c.port_mappings[1].protocol, cri::Protocol::Sctp as i32);
    assert_eq!(c.port_mappings[2].protocol, cri::Protocol::Tcp as i32);
    assert_eq!(c.labels["app"], "web");
    let linux = c.linux.unwrap();
    assert_eq!(linux.cgroup_parent, "/kubepods/burstable/podu-1");
    assert_eq!(linux.sysctls["net.ipv4.ip_forward"], "1");
    let sc = linux.security_context.unwrap();
    let ns = sc.namespace_options.unwrap();
    assert_eq!(ns.network, cri::NamespaceMode::Node as i32);
    assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
    assert_eq!(ns.ipc, cri::NamespaceMode::Pod as i32);
    assert_eq!(ns.target_id, "t");
    assert_eq!(sc.run_as_user, Some(cri::Int64Value { value: 1000 }));
    assert_eq!(sc.run_as_group, Some(cri::Int64Value { value: 2000 }));
    assert_eq!(sc.supplemental_groups, [3000]);
    assert!(sc.privileged && sc.readonly_rootfs);
    let seccomp = sc.seccomp.unwrap();
    assert_eq!(
        seccomp.profile_type,
        cri::security_profile::ProfileType::Localhost as i32
    );
    assert_eq!(seccomp.localhost_ref, "prof.json");
    assert_eq!(sc.selinux_options.unwrap().r#type, "t");
    let r = linux.resources.unwrap();
    assert_eq!(
        (
            r.cpu_period,
            r.cpu_quota,
            r.cpu_shares,
            r.memory_limit_in_bytes
        ),
        (100_000, 50_000, 512, 134_217_728)
    );
    let o = linux.overhead.unwrap();
    assert_eq!(o.memory_limit_in_bytes, 1_048_576);
    assert_eq!(o.hugepage_limits[0].page_size, "2MB");
}

#[test]
fn unknown_keys_are_rejected_with_their_name_and_place() {
    let err = pod(
        r#"{"metadata": {"name": "a", "namespce": "default"}}"#,
        Format::Json,
    )
    .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("metadata"), "{text}");
    assert!(text.contains("unknown field `namespce`"), "{text}");

    let yaml = "metadata: {name: a}\nlinux:\n  security_context:\n    namespace_options:\n      net: NODE\n";
    let text = format!("{:#}", pod(yaml, Format::Yaml).unwrap_err());
    assert!(
        text.contains("linux.security_context.namespace_options"),
        "{text}"
    );
    assert!(text.contains("unknown field `net`"), "{text}");

    let text = format!(
        "{:#}",
        pod("metadata: {name: a}\nwindows: {}\n", Format::Yaml).unwrap_err()
    );
    assert!(text.contains("unknown field `windows`"), "{text}");
}

#[test]
fn namespace_modes_accept_names_and_numbers() {
    let mode = |v: &str| -> Result<i32> {
        let yaml = format!(
            "metadata: {{name: a}}\nlinux: {{security_context: {{namespace_options: {{network: {v}}}}}}}\n"
        );
        let c = pod(&yaml, Format::Yaml)?;
        Ok(c.linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap()
            .network)
    };
    assert_eq!(mode("POD").unwrap(), cri::NamespaceMode::Pod as i32);
    assert_eq!(
        mode("CONTAINER").unwrap(),
        cri::NamespaceMode::Container as i32
    );
    assert_eq!(mode("NODE").unwrap(), cri::NamespaceMode::Node as i32);
    assert_eq!(mode("TARGET").unwrap(), cri::NamespaceMode::Target as i32);
    assert_eq!(mode("node").unwrap(), cri::NamespaceMode::Node as i32);
    assert_eq!(mode("2").unwrap(), cri::NamespaceMode::Node as i32);
    assert_eq!(mode("3").unwrap(), cri::NamespaceMode::Target as i32);

    let text = format!("{:#}", mode("HOST").unwrap_err());
    assert!(text.contains("invalid namespace mode \"HOST\""), "{text}");
    assert!(text.contains("POD, CONTAINER, NODE, TARGET"), "{text}");
    let text = format!("{:#}", mode("7").unwrap_err());
    assert!(text.contains("invalid namespace mode 7"), "{text}");
}

#[test]
fn pod_without_a_name_is_refused() {
    let err = pod(r#"{"metadata": {"namespace": "default"}}"#, Format::Json).unwrap_err();
    assert!(
        err.to_string().contains("metadata.name is required"),
        "{err}"
    );
}

#[test]
fn type_errors_name_the_field() {
    let text = format!(
        "{:#}",
        pod(
            "metadata: {name: a}\nlinux: {resources: {cpu_quota: lots}}\n",
            Format::Yaml
        )
        .unwrap_err()
    );
    assert!(text.contains("linux.resources.cpu_quota"), "{text}");
}

/// crictl's documented container-config.json.
#[test]
fn crictl_container_json_parses() {
    let json = r#"{
      "metadata": {"name": "busybox"},
      "image": {"image": "busybox"},
      "command": ["top"],
      "log_path": "busybox.log",
      "linux": {}
    }"#;
    let c = container(json, Format::Json).unwrap();
    assert_eq!(c.metadata.unwrap().name, "busybox");
    assert_eq!(c.image.unwrap().image, "busybox");
    assert_eq!(c.command, ["top"]);
    assert_eq!(c.log_path, "busybox.log");
    assert_eq!(c.linux, Some(cri::LinuxContainerConfig::default()));
}

#[test]
fn container_config_converts_mounts_envs_and_security() {
    let yaml = r#"
metadata: {name: app, attempt: 3}
image: {image: "docker.io/library/nginx:1.27"}
args: ["-g", "daemon off;"]
working_dir: /srv
envs:
  - {key: MODE, value: demo}
mounts:
  - container_path: /data
    host_path: /var/lib/data
    readonly: true
    selinux_relabel: true
    propagation: PROPAGATION_HOST_TO_CONTAINER
  - {container_path: /b, host_path: /b, propagation: bidirectional, uidMappings: [{host_id: 1000, container_id: 0, length: 1}]}
devices: [{container_path: /dev/fuse, host_path: /dev/fuse, permissions: rwm}]
CDI_devices: [{name: "vendor.com/gpu=0"}]
stdin: true
tty: true
linux:
  resources: {memory_limit_in_bytes: 67108864}
  security_context:
    capabilities: {add_capabilities: [NET_ADMIN], drop_capabilities: [ALL]}
    run_as_user: {value: 0}
    no_new_privs: true
    namespace_options: {pid: POD}
"#;
    let c = container(yaml, Format::Yaml).unwrap();
    assert_eq!(c.metadata.unwrap().attempt, 3);
    assert_eq!(c.args, ["-g", "daemon off;"]);
    assert_eq!(c.working_dir, "/srv");
    assert_eq!(c.envs[0].key, "MODE");
    assert_eq!(c.envs[0].value, "demo");
    assert_eq!(c.mounts.len(), 2);
    assert!(c.mounts[0].readonly && c.mounts[0].selinux_relabel);
    assert_eq!(
        c.mounts[0].propagation,
        cri::MountPropagation::PropagationHostToContainer as i32
    );
    assert_eq!(
        c.mounts[1].propagation,
        cri::MountPropagation::PropagationBidirectional as i32
    );
    assert_eq!(c.mounts[1].uid_mappings[0].host_id, 1000);
    assert_eq!(c.devices[0].permissions, "rwm");
    assert_eq!(c.cdi_devices[0].name, "vendor.com/gpu=0");
    assert!(c.stdin && c.tty && !c.stdin_once);
    let linux = c.linux.unwrap();
    assert_eq!(linux.resources.unwrap().memory_limit_in_bytes, 67_108_864);
    let sc = linux.security_context.unwrap();
    assert_eq!(sc.capabilities.unwrap().drop_capabilities, ["ALL"]);
    assert_eq!(sc.run_as_user, Some(cri::Int64Value { value: 0 }));
    assert!(sc.no_new_privs);
}

#[test]
fn container_needs_name_and_image() {
    let err = container("metadata: {name: a}\n", Format::Yaml).unwrap_err();
    assert!(err.to_string().contains("image.image is required"), "{err}");
    let err = container("image: {image: busybox}\n", Format::Yaml).unwrap_err();
    assert!(
        err.to_string().contains("metadata.name is required"),
        "{err}"
    );
    let text = format!(
        "{:#}",
        container(
            "metadata: {name: a}\nimage: {image: b}\nmounts: [{container_path: /x, propagation: sideways}]\n",
            Format::Yaml
        )
        .unwrap_err()
    );
    assert!(text.contains("mounts[0].propagation"), "{text}");
    assert!(text.contains("PROPAGATION_PRIVATE"), "{text}");
}

#[test]
fn json_files_are_parsed_as_json() {
    assert_eq!(Format::of(Path::new("pod.json")), Format::Json);
    assert_eq!(Format::of(Path::new("pod.JSON")), Format::Json);
    assert_eq!(Format::of(Path::new("pod.yaml")), Format::Yaml);
    assert_eq!(Format::of(Path::new("pod.yml")), Format::Yaml);
    assert_eq!(Format::of(Path::new("-")), Format::Yaml);
    // Trailing garbage after the JSON document is an error, not ignored.
    assert!(pod(r#"{"metadata": {"name": "a"}} x"#, Format::Json).is_err());
}

#[test]
fn example_pod_yaml_is_the_demo_pod() {
    let c = load_pod_config(&examples().join("pod.yaml")).unwrap();
    let m = c.metadata.unwrap();
    assert_eq!(m.name, "demo");
    assert_eq!(m.namespace, "default");
    assert!(!m.uid.is_empty());
    let r = c.linux.unwrap().resources.unwrap();
    assert_eq!(r.cpu_quota, 100_000);
    assert_eq!(r.cpu_period, 100_000);
    assert_eq!(r.memory_limit_in_bytes, 268_435_456);
}

#[test]
fn example_container_yaml_parses() {
    let c = load_container_config(&examples().join("container.yaml")).unwrap();
    assert!(!c.metadata.unwrap().name.is_empty());
    assert!(!c.image.unwrap().image.is_empty());
}
