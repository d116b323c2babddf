//! Pod sizing: how many vCPUs and how much memory a pod's VM gets, computed
//! before boot from what the kubelet sends (see DESIGN.md, "Size before boot").
//!
//! Sources, in order: `LinuxPodSandboxConfig.resources` (the sum of the
//! containers' requests/limits, kubelet ≥ 1.23) plus `.overhead` (the
//! RuntimeClass overhead); when `resources` is absent, the
//! `io.kubernetes.cri.sandbox-*` annotations if the config allows them;
//! otherwise the configured defaults. The guest's base memory overhead is
//! added only when `.overhead` is absent. Results are clamped to the caps,
//! never rejected for size; malformed input is rejected naming the field.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Annotation: CPU period (µs) of the sandbox, when `resources` is absent.
pub const ANNOTATION_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
/// Annotation: CPU quota (µs) of the sandbox.
pub const ANNOTATION_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
/// Annotation: CPU shares of the sandbox.
pub const ANNOTATION_CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";
/// Annotation: memory limit of the sandbox in bytes.
pub const ANNOTATION_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";

const MIB: i64 = 1024 * 1024;

/// The CPU and memory numbers of a `LinuxContainerResources`, as sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CFS period in µs (0: unset).
    pub cpu_period: i64,
    /// CFS quota in µs (0: no limit).
    pub cpu_quota: i64,
    /// CPU shares (0: unset).
    pub cpu_shares: i64,
    /// Memory limit in bytes (0: no limit).
    pub memory_limit_bytes: i64,
}

/// What the sizing reads from a RunPodSandbox request.
#[derive(Debug, Clone, Default)]
pub struct SizingInput {
    /// `linux.resources`, if sent.
    pub resources: Option<Resources>,
    /// `linux.overhead`, if sent.
    pub overhead: Option<Resources>,
    /// The pod's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Operator settings for sizing (from the config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SizingPolicy {
    /// vCPUs of a pod that states no CPU limit.
    pub default_vcpus: u32,
    /// Memory (MiB) for a pod's workload when it states no memory limit.
    pub default_memory_mib: u64,
    /// Memory (MiB) the guest itself needs (kernel, agent), added when the
    /// RuntimeClass gives no overhead.
    pub guest_overhead_mib: u64,
    /// Most vCPUs one VM gets.
    pub max_vcpus: u32,
    /// Most memory (MiB) one VM gets.
    pub max_memory_mib: u64,
    /// Least memory (MiB) one VM gets (the guest does not boot below it).
    pub min_memory_mib: u64,
    /// Whether the `io.kubernetes.cri.sandbox-*` annotations are honoured
    /// (only when `resources` is absent). They are pod-author input.
    pub allow_annotations: bool,
}

impl Default for SizingPolicy {
    fn default() -> Self {
        SizingPolicy {
            default_vcpus: 1,
            default_memory_mib: 256,
            guest_overhead_mib: 64,
            max_vcpus: 8,
            max_memory_mib: 16 * 1024,
            min_memory_mib: 128,
            allow_annotations: false,
        }
    }
}

/// Errors for malformed sizing input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizingError {
    /// A number that must not be negative is.
    #[error("{field} must not be negative (got {value})")]
    Negative {
        /// The field, e.g. `linux.resources.cpu_quota`.
        field: String,
        /// Its value.
        value: i64,
    },
    /// A CPU quota without a period cannot be turned into vCPUs.
    #[error("{field}.cpu_quota is set but {field}.cpu_period is 0: set both")]
    QuotaWithoutPeriod {
        /// `linux.resources` or `linux.overhead` or the annotations.
        field: String,
    },
    /// An annotation's value is not a number.
    #[error("annotation {key} must be a whole number (got {value:?})")]
    BadAnnotation {
        /// The annotation key.
        key: String,
        /// Its value.
        value: String,
    },
    /// The policy itself is inconsistent.
    #[error("sizing policy: {0}")]
    Policy(&'static str),
}

/// The VM size and where each number came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSize {
    /// vCPUs of the VM.
    pub vcpus: u32,
    /// Memory of the VM in MiB.
    pub memory_mib: u64,
    /// Where the vCPU count came from.
    pub vcpus_source: String,
    /// Where the memory size came from.
    pub memory_source: String,
    /// What was clamped to a cap, if anything.
    pub clamped: Vec<String>,
}

impl SizingPolicy {
    /// Checks the policy's own consistency.
    pub fn validate(&self) -> Result<(), SizingError> {
        if self.default_vcpus == 0 || self.max_vcpus == 0 {
            return Err(SizingError::Policy("vCPU counts must be at least 1"));
        }
        if self.min_memory_mib > self.max_memory_mib {
            return Err(SizingError::Policy(
                "min_memory_mib must not exceed max_memory_mib",
            ));
        }
        Ok(())
    }

    /// Computes the VM size of a pod.
    pub fn size(&self, input: &SizingInput) -> Result<VmSize, SizingError> {
        if let Some(r) = &input.resources {
            check(r, "linux.resources")?;
        }
        if let Some(o) = &input.overhead {
            check(o, "linux.overhead")?;
        }
        let (workload, origin) = match (&input.resources, self.allow_annotations) {
            (Some(r), _) => (*r, "linux.resources".to_owned()),
            (None, true) => match annotations(&input.annotations)? {
                Some(r) => (r, "annotation".to_owned()),
                None => (Resources::default(), String::new()),
            },
            (None, false) => (Resources::default(), String::new()),
        };

        // vCPUs: millicores from the quota (or shares), plus the overhead's.
        let (mut millis, mut vcpus_source) = if workload.cpu_quota > 0 {
            let src = if origin == "annotation" {
                format!("{ANNOTATION_CPU_QUOTA} / {ANNOTATION_CPU_PERIOD}")
            } else {
                format!("{origin}.cpu_quota / cpu_period")
            };
            (quota_millis(&workload), src)
        } else if workload.cpu_shares > 0 {
            let src = if origin == "annotation" {
                ANNOTATION_CPU_SHARES.to_owned()
            } else {
                format!("{origin}.cpu_shares")
            };
            (shares_millis(workload.cpu_shares), src)
        } else {
            (
                i128::from(self.default_vcpus) * 1000,
                "default_vcpus".to_owned(),
            )
        };
        if let Some(o) = input
            .overhead
            .filter(|o| o.cpu_quota > 0 || o.cpu_shares > 0)
        {
            millis += if o.cpu_quota > 0 {
                quota_millis(&o)
            } else {
                shares_millis(o.cpu_shares)
            };
            vcpus_source.push_str(" + linux.overhead");
        }
        let wanted_vcpus = u64::try_from(((millis + 999) / 1000).max(1)).unwrap_or(u64::MAX);

        // Memory: the limit (or default) plus overhead or the guest's own.
        let (mem_bytes, mut memory_source) = if workload.memory_limit_bytes > 0 {
            let src = if origin == "annotation" {
                ANNOTATION_MEMORY.to_owned()
            } else {
                format!("{origin}.memory_limit_in_bytes")
            };
            (i128::from(workload.memory_limit_bytes), src)
        } else {
            (
                i128::from(self.default_memory_mib) * i128::from(MIB),
                "default_memory_mib".to_owned(),
            )
        };
        let mut wanted_mib = mib_ceil(mem_bytes);
        match input.overhead {
            Some(o) => {
                if o.memory_limit_bytes > 0 {
                    wanted_mib = wanted_mib.saturating_add(mib_ceil(o.memory_limit_bytes.into()));
                    memory_source.push_str(" + linux.overhead");
                }
            }
            None => {
                wanted_mib = wanted_mib.saturating_add(self.guest_overhead_mib);
                memory_source.push_str(" + guest_overhead_mib");
            }
        }

        let mut clamped = Vec::new();
        let vcpus = if wanted_vcpus > u64::from(self.max_vcpus) {
            clamped.push(format!(
                "vcpus {wanted_vcpus} clamped to max_vcpus {}",
                self.max_vcpus
            ));
            self.max_vcpus
        } else {
            wanted_vcpus as u32
        };
        let memory_mib = if wanted_mib > self.max_memory_mib {
            clamped.push(format!(
                "memory {wanted_mib} MiB clamped to max_memory_mib {}",
                self.max_memory_mib
            ));
            self.max_memory_mib
        } else if wanted_mib < self.min_memory_mib {
            clamped.push(format!(
                "memory {wanted_mib} MiB raised to min_memory_mib {}",
                self.min_memory_mib
            ));
            self.min_memory_mib
        } else {
            wanted_mib
        };
        Ok(VmSize {
            vcpus,
            memory_mib,
            vcpus_source,
            memory_source,
            clamped,
        })
    }
}

fn check(r: &Resources, field: &str) -> Result<(), SizingError> {
    for (name, value) in [
        ("cpu_period", r.cpu_period),
        ("cpu_quota", r.cpu_quota),
        ("cpu_shares", r.cpu_shares),
        ("memory_limit_in_bytes", r.memory_limit_bytes),
    ] {
        if value < 0 {
            return Err(SizingError::Negative {
                field: format!("{field}.{name}"),
                value,
            });
        }
    }
    if r.cpu_quota > 0 && r.cpu_period == 0 {
        return Err(SizingError::QuotaWithoutPeriod {
            field: field.to_owned(),
        });
    }
    Ok(())
}

fn annotations(a: &BTreeMap<String, String>) -> Result<Option<Resources>, SizingError> {
    let get = |key: &str| -> Result<Option<i64>, SizingError> {
        match a.get(key) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if n >= 0 => Ok(Some(n)),
                _ => Err(SizingError::BadAnnotation {
                    key: key.to_owned(),
                    value: v.clone(),
                }),
            },
        }
    };
    let r = Resources {
        cpu_period: get(ANNOTATION_CPU_PERIOD)?.unwrap_or(0),
        cpu_quota: get(ANNOTATION_CPU_QUOTA)?.unwrap_or(0),
        cpu_shares: get(ANNOTATION_CPU_SHARES)?.unwrap_or(0),
        memory_limit_bytes: get(ANNOTATION_MEMORY)?.unwrap_or(0),
    };
    if r == Resources::default() {
        return Ok(None);
    }
    if r.cpu_quota > 0 && r.cpu_period == 0 {
        return Err(SizingError::QuotaWithoutPeriod {
            field: "annotations".to_owned(),
        });
    }
    Ok(Some(r))
}

fn quota_millis(r: &Resources) -> i128 {
    // ceil(quota * 1000 / period): 150000/100000 → 1500 millicores.
    let q = i128::from(r.cpu_quota) * 1000;
    let p = i128::from(r.cpu_period);
    (q + p - 1) / p
}

fn shares_millis(shares: i64) -> i128 {
    // The kubelet sends shares = millicores * 1024 / 1000.
    (i128::from(shares) * 1000 + 1023) / 1024
}

fn mib_ceil(bytes: i128) -> u64 {
    u64::try_from((bytes + i128::from(MIB) - 1) / i128::from(MIB)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
