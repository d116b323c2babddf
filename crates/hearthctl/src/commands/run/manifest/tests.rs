use super::*;

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  runtimeClassName: namespaces
  securityContext: {runAsUser: 1000, fsGroup: 2000}
  initContainers:
  - name: init
    image: busybox:1
    resources: {limits: {cpu: "2", memory: 64Mi}}
  containers:
  - name: a
    image: busybox
    command: [sh, -c]
    args: ["echo $(GREETING) $$(GREETING) $(NOPE)"]
    env:
    - {name: WHO, value: world}
    - {name: GREETING, value: "hello $(WHO)"}
    workingDir: /work
    resources:
      requests: {cpu: 250m}
      limits: {cpu: 500m, memory: 128Mi}
    securityContext:
      runAsGroup: 3000
      readOnlyRootFilesystem: true
      capabilities: {add: [NET_ADMIN], drop: [ALL]}
    ports: [{containerPort: 80, hostPort: 8080}]
  - name: b
    image: 127.0.0.1:5000/x/busybox:demo
    resources: {limits: {cpu: 1, memory: "1G"}}
---
apiVersion: v1
kind: Secret
metadata: {name: s}
data: {k: aGk=}
stringData: {p: plain}
"#;

fn manifest() -> Manifest {
    let mut m = Manifest::default();
    m.add_documents(POD).unwrap();
    m
}

#[test]
fn quantities_parse_like_kubernetes() {
    assert_eq!(quantity("250m", 1000).unwrap(), 250);
    assert_eq!(quantity("1", 1000).unwrap(), 1000);
    assert_eq!(quantity("1.5", 1000).unwrap(), 1500);
    assert_eq!(quantity("0.1m", 1000).unwrap(), 1);
    assert_eq!(quantity("64Mi", 1).unwrap(), 64 << 20);
    assert_eq!(quantity("1G", 1).unwrap(), 1_000_000_000);
    assert_eq!(quantity("1.5Gi", 1).unwrap(), 3 << 29);
    assert_eq!(quantity("1e3", 1).unwrap(), 1000);
    assert_eq!(quantity("129e6", 1).unwrap(), 129_000_000);
    assert_eq!(quantity("100k", 1).unwrap(), 100_000);
    for bad in ["", "abc", "1x", "-1", "1.2.3", "Mi", "1e", "99999E"] {
        assert!(quantity(bad, 1).is_err(), "{bad}");
    }
}

#[test]
fn resources_are_computed_the_kubelets_way() {
    let r = linux_resources(Some(250), Some(500), Some(128 << 20));
    assert_eq!(
        (
            r.cpu_shares,
            r.cpu_quota,
            r.cpu_period,
            r.memory_limit_in_bytes
        ),
        (256, 50_000, 100_000, 128 << 20)
    );
    // No request: shares from the limit; nothing: the minimum.
    assert_eq!(linux_resources(None, Some(1000), None).cpu_shares, 1024);
    let none = linux_resources(None, None, None);
    assert_eq!((none.cpu_shares, none.cpu_quota), (2, 0));
    // Tiny limits get the minimum quota.
    assert_eq!(linux_resources(None, Some(1), None).cpu_quota, 1000);
}

#[test]
fn the_manifest_becomes_cri_configs() {
    let m = manifest();
    let pod = m.pod.as_ref().unwrap();
    assert_eq!(m.secrets["s"].data.as_ref().unwrap()["k"].0, b"hi");
    let sandbox = sandbox_config(
        pod,
        "u-1",
        Path::new("/logs"),
        "nameserver 9.9.9.9\nsearch a b\n",
    )
    .unwrap();
    let meta = sandbox.metadata.as_ref().unwrap();
    assert_eq!(
        (
            meta.name.as_str(),
            meta.namespace.as_str(),
            meta.uid.as_str()
        ),
        ("web", "default", "u-1")
    );
    assert_eq!(sandbox.hostname, "web");
    assert_eq!(sandbox.labels["app"], "web");
    assert_eq!(sandbox.labels["io.kubernetes.pod.uid"], "u-1");
    assert_eq!(sandbox.dns_config.as_ref().unwrap().servers, ["9.9.9.9"]);
    assert_eq!(sandbox.port_mappings[0].host_port, 8080);
    let linux = sandbox.linux.as_ref().unwrap();
    let res = linux.resources.as_ref().unwrap();
    // cpu limits: the containers' 500m + 1000m, less than the init
    // container's 2000m, which wins.
    assert_eq!(res.cpu_quota, 200_000);
    assert_eq!(res.memory_limit_in_bytes, (128 << 20) + 1_000_000_000);
    // Requests: 250m + 1000m (defaulted from b's limit) vs init 2000m.
    assert_eq!(res.cpu_shares, 2048);
    let sc = linux.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user.as_ref().unwrap().value, 1000);
    assert_eq!(sc.supplemental_groups, [2000]);

    let spec = spec(pod).unwrap();
    let a = container_config(pod, &spec.containers[0], "u-1").unwrap();
    assert_eq!(a.command, ["sh", "-c"]);
    assert_eq!(a.args, ["echo hello world $(GREETING) $(NOPE)"]);
    assert_eq!(a.envs[1].value, "hello world");
    assert_eq!(a.working_dir, "/work");
    assert_eq!(a.log_path, "a/0.log");
    let linux = a.linux.unwrap();
    let r = linux.resources.unwrap();
    assert_eq!((r.cpu_shares, r.cpu_quota), (256, 50_000));
    let sc = linux.security_context.unwrap();
    assert_eq!(sc.run_as_user.unwrap().value, 1000);
    assert_eq!(sc.run_as_group.unwrap().value, 3000);
    assert!(sc.readonly_rootfs);
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.add_capabilities, ["CAP_NET_ADMIN"]);
    assert_eq!(caps.drop_capabilities, ["ALL"]);
    assert_eq!(
        pull_policy(&spec.containers[0]).unwrap(),
        PullPolicy::Always
    );
    assert_eq!(
        pull_policy(&spec.containers[1]).unwrap(),
        PullPolicy::IfNotPresent
    );
}

#[test]
fn unsupported_input_is_refused_by_name() {
    let mut m = manifest();
    let pod = m.pod.as_mut().unwrap();
    let spec = pod.spec.as_mut().unwrap();
    spec.containers[0].env.as_mut().unwrap()[0].value_from = Some(Default::default());
    let pod = m.pod.as_ref().unwrap();
    let err = container_config(pod, &pod.spec.as_ref().unwrap().containers[0], "u")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("env WHO") && err.contains("valueFrom"),
        "{err}"
    );

    let mut m = Manifest::default();
    let err = m
        .add_documents("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")
        .unwrap_err();
    assert!(err.to_string().contains("Deployment"), "{err}");
    let err = m
        .add_documents("apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: 3}\n")
        .unwrap_err();
    assert!(format!("{err:#}").contains("spec.containers"), "{err:#}");
}
