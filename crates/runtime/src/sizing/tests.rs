use super::*;

const GIB: i64 = 1024 * MIB;

fn res(period: i64, quota: i64, shares: i64, mem: i64) -> Resources {
    Resources {
        cpu_period: period,
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_bytes: mem,
    }
}

fn policy(allow_annotations: bool) -> SizingPolicy {
    SizingPolicy {
        allow_annotations,
        ..SizingPolicy::default()
    }
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Case {
    name: &'static str,
    input: SizingInput,
    allow_annotations: bool,
    vcpus: u32,
    memory_mib: u64,
    vcpus_source: &'static str,
    memory_source: &'static str,
    clamped: usize,
}

#[test]
fn sizing_table() {
    let cases = vec![
        Case {
            name: "limits: 1.5 cpu rounds up, 512 MiB + guest overhead",
            input: SizingInput {
                resources: Some(res(100_000, 150_000, 1536, 512 * MIB)),
                ..Default::default()
            },
            allow_annotations: false,
            vcpus: 2,
            memory_mib: 512 + 64,
            vcpus_source: "linux.resources.cpu_quota / cpu_period",
            memory_source: "linux.resources.memory_limit_in_bytes + guest_overhead_mib",
            clamped: 0,
        },
        Case {
            name: "requests only: shares give the vCPUs, memory is the default",
            input: SizingInput {
                resources: Some(res(100_000, 0, 2048, 0)),
                ..Default::default()
            },
            allow_annotations: false,
            vcpus: 2,
            memory_mib: 256 + 64,
            vcpus_source: "linux.resources.cpu_shares",
            memory_source: "default_memory_mib + guest_overhead_mib",
            clamped: 0,
        },
        Case {
            name: "overhead replaces the guest overhead and adds its cpu",
            input: SizingInput {
                resources: Some(res(100_000, 100_000, 1024, GIB)),
                overhead: Some(res(100_000, 25_000, 0, 120 * MIB)),
                ..Default::default()
            },
            allow_annotations: false,
            vcpus: 2,
            memory_mib: 1024 + 120,
            vcpus_source: "linux.resources.cpu_quota / cpu_period + linux.overhead",
            memory_source: "linux.resources.memory_limit_in_bytes + linux.overhead",
            clamped: 0,
        },
        Case {
            name: "overhead with memory only: no guest overhead added",
            input: SizingInput {
                resources: Some(res(0, 0, 0, 0)),
                overhead: Some(res(0, 0, 0, 50 * MIB)),
                ..Default::default()
            },
            allow_annotations: false,
            vcpus: 1,
            memory_mib: 256 + 50,
            vcpus_source: "default_vcpus",
            memory_source: "default_memory_mib + linux.overhead",
            clamped: 0,
        },
        Case {
            name: "annotations honoured when allowed and resources absent",
            input: SizingInput {
                annotations: annotations(&[
                    (ANNOTATION_CPU_PERIOD, "100000"),
                    (ANNOTATION_CPU_QUOTA, "300000"),
                    (ANNOTATION_MEMORY, "1073741824"),
                ]),
                ..Default::default()
            },
            allow_annotations: true,
            vcpus: 3,
            memory_mib: 1024 + 64,
            vcpus_source:
                "io.kubernetes.cri.sandbox-cpu-quota / io.kubernetes.cri.sandbox-cpu-period",
            memory_source: "io.kubernetes.cri.sandbox-memory + guest_overhead_mib",
            clamped: 0,
        },
        Case {
            name: "annotations ignored when not allowed",
            input: SizingInput {
                annotations: annotations(&[
                    (ANNOTATION_CPU_PERIOD, "100000"),
                    (ANNOTATION_CPU_QUOTA, "300000"),
                ]),
                ..Default::default()
            },
            allow_annotations: false,
            vcpus: 1,
            memory_mib: 256 + 64,
            vcpus_source: "default_vcpus",
            memory_source: "default_memory_mib + guest_overhead_mib",
            clamped: 0,
        },
        Case {
            name: "annotations ignored when resources are present",
            input: SizingInput {
                resources: Some(res(100_000, 100_000, 0, 0)),
                annotations: annotations(&[
                    (ANNOTATION_CPU_PERIOD, "100000"),
                    (ANNOTATION_CPU_QUOTA, "300000"),
                ]),
                ..Default::default()
            },
            allow_annotations: true,
            vcpus: 1,
            memory_mib: 256 + 64,
            vcpus_source: "linux.resources.cpu_quota / cpu_period",
            memory_source: "default_memory_mib + guest_overhead_mib",
            clamped: 0,
        },
        Case {
            name: "nothing sent: defaults",
            input: SizingInput::default(),
            allow_annotations: true,
            vcpus: 1,
            memory_mib: 256 + 64,
            vcpus_source: "default_vcpus",
            memory_source: "default_memory_mib + guest_overhead_mib",
            clamped: 0,
        },
        Case {
            name: "over the caps: clamped, not rejected",
            input: SizingInput {
                resources: Some(res(100_000, 6_400_000, 0, 64 * GIB)),
                ..Default::default()
            },
            allow_annotations: false,
            vcpus: 8,
            memory_mib: 16 * 1024,
            vcpus_source: "linux.resources.cpu_quota / cpu_period",
            memory_source: "linux.resources.memory_limit_in_bytes + guest_overhead_mib",
            clamped: 2,
        },
        Case {
            name: "tiny memory raised to the minimum",
            input: SizingInput {
                resources: Some(res(0, 0, 0, 10 * MIB)),
                overhead: Some(res(0, 0, 0, 0)),
                ..Default::default()
            },
            allow_annotations: false,
            vcpus: 1,
            memory_mib: 128,
            vcpus_source: "default_vcpus",
            memory_source: "linux.resources.memory_limit_in_bytes",
            clamped: 1,
        },
    ];
    for case in cases {
        let size = policy(case.allow_annotations)
            .size(&case.input)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(size.vcpus, case.vcpus, "{}", case.name);
        assert_eq!(size.memory_mib, case.memory_mib, "{}", case.name);
        assert_eq!(size.vcpus_source, case.vcpus_source, "{}", case.name);
        assert_eq!(size.memory_source, case.memory_source, "{}", case.name);
        assert_eq!(
            size.clamped.len(),
            case.clamped,
            "{}: {:?}",
            case.name,
            size.clamped
        );
    }
}

#[test]
fn malformed_input_names_the_field() {
    let p = policy(true);
    let err = p
        .size(&SizingInput {
            resources: Some(res(100_000, -5, 0, 0)),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "linux.resources.cpu_quota must not be negative (got -5)"
    );

    let err = p
        .size(&SizingInput {
            overhead: Some(res(0, 0, 0, -1)),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("linux.overhead.memory_limit_in_bytes"));

    let err = p
        .size(&SizingInput {
            resources: Some(res(0, 50_000, 0, 0)),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(
        err,
        SizingError::QuotaWithoutPeriod {
            field: "linux.resources".into()
        }
    );

    let err = p
        .size(&SizingInput {
            annotations: annotations(&[(ANNOTATION_MEMORY, "lots")]),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains(ANNOTATION_MEMORY));

    let err = p
        .size(&SizingInput {
            annotations: annotations(&[(ANNOTATION_CPU_QUOTA, "1000")]),
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, SizingError::QuotaWithoutPeriod { .. }));
}

#[test]
fn bad_annotations_are_ignored_when_not_allowed() {
    // Not honoured means not read: a pod author cannot make the pod fail
    // through annotations the operator has switched off.
    let size = policy(false)
        .size(&SizingInput {
            annotations: annotations(&[(ANNOTATION_MEMORY, "lots")]),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        size.memory_source,
        "default_memory_mib + guest_overhead_mib"
    );
}

#[test]
fn policy_validation() {
    assert!(SizingPolicy::default().validate().is_ok());
    let bad = SizingPolicy {
        min_memory_mib: 10,
        max_memory_mib: 5,
        ..SizingPolicy::default()
    };
    assert!(bad.validate().is_err());
}
