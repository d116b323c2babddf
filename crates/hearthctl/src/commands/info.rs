//! Runtime-wide commands: version, info.

use anyhow::Result;
use k8s_cri::v1 as cri;
use serde::Serialize;

use crate::client::Cri;
use crate::output::{info_to_json, print_structured, write_out, Output, Table};

/// The CRI API version this client speaks.
const CRI_VERSION: &str = "v1";

pub async fn version(cri: &Cri, output: Output) -> Result<()> {
    let request = cri::VersionRequest {
        version: CRI_VERSION.to_string(),
    };
    let v = cri
        .call("Version", cri.runtime().version(cri.request(request)))
        .await?;
    if output != Output::Table {
        return print_structured(&v, output);
    }
    write_out(&version_text(&v))?;
    Ok(())
}

/// `version` as crictl prints it.
pub fn version_text(v: &cri::VersionResponse) -> String {
    format!(
        "Version:  {}\nRuntimeName:  {}\nRuntimeVersion:  {}\nRuntimeApiVersion:  {}\n",
        v.version, v.runtime_name, v.runtime_version, v.runtime_api_version
    )
}

/// StatusResponse in proto order, its info values expanded.
#[derive(Serialize)]
struct StatusInspect<'a> {
    status: &'a Option<cri::RuntimeStatus>,
    info: serde_json::Value,
    runtime_handlers: &'a [cri::RuntimeHandler],
    features: &'a Option<cri::RuntimeFeatures>,
}

pub async fn info(cri: &Cri, output: Output) -> Result<()> {
    let request = cri::StatusRequest { verbose: true };
    let status = cri
        .call("Status", cri.runtime().status(cri.request(request)))
        .await?;
    if output != Output::Table {
        let inspected = StatusInspect {
            status: &status.status,
            info: info_to_json(&status.info),
            runtime_handlers: &status.runtime_handlers,
            features: &status.features,
        };
        return print_structured(&inspected, output);
    }
    write_out(&info_text(&status)?)?;
    Ok(())
}

/// `info` for people: the conditions, the handlers, then each info value
/// (JSON values pretty-printed).
pub fn info_text(status: &cri::StatusResponse) -> Result<String> {
    let mut table = Table::new(&["CONDITION", "STATUS", "REASON", "MESSAGE"]);
    for c in status.status.iter().flat_map(|s| &s.conditions) {
        table.push(vec![
            c.r#type.clone(),
            c.status.to_string(),
            c.reason.clone(),
            c.message.clone(),
        ]);
    }
    let mut out = table.render();
    if !status.runtime_handlers.is_empty() {
        out.push('\n');
        let mut handlers =
            Table::new(&["RUNTIME HANDLER", "USER NAMESPACES", "RECURSIVE RO MOUNTS"]);
        for h in &status.runtime_handlers {
            let (userns, rro) = h
                .features
                .as_ref()
                .map(|f| (f.user_namespaces, f.recursive_read_only_mounts))
                .unwrap_or_default();
            let name = if h.name.is_empty() {
                "(default)"
            } else {
                &h.name
            };
            handlers.push(vec![name.to_string(), userns.to_string(), rro.to_string()]);
        }
        out.push_str(&handlers.render());
    }
    if let serde_json::Value::Object(info) = info_to_json(&status.info) {
        for (key, value) in info {
            out.push('\n');
            match value {
                serde_json::Value::String(s) => out.push_str(&format!("{key}: {s}\n")),
                v => out.push_str(&format!("{key}:\n{}\n", serde_json::to_string_pretty(&v)?)),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn info_shows_conditions_and_pretty_json() {
        let status = cri::StatusResponse {
            status: Some(cri::RuntimeStatus {
                conditions: vec![
                    cri::RuntimeCondition {
                        r#type: "RuntimeReady".into(),
                        status: true,
                        ..Default::default()
                    },
                    cri::RuntimeCondition {
                        r#type: "NetworkReady".into(),
                        status: false,
                        reason: "NoCNI".into(),
                        message: "no network config".into(),
                    },
                ],
            }),
            info: HashMap::from([
                ("config".to_string(), r#"{"vcpus":1}"#.to_string()),
                ("backend".to_string(), "firecracker".to_string()),
            ]),
            runtime_handlers: vec![],
            features: None,
        };
        let text = info_text(&status).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("CONDITION"));
        assert_eq!(lines[1], "RuntimeReady        true");
        assert!(lines[2].starts_with("NetworkReady        false               NoCNI"));
        assert!(text.contains("backend: firecracker\n"));
        assert!(text.contains("config:\n{\n  \"vcpus\": 1\n}\n"));
    }

    #[test]
    fn version_reads_like_crictl() {
        let v = cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "hearth".into(),
            runtime_version: "0.1.0".into(),
            runtime_api_version: "v1".into(),
        };
        assert_eq!(
            version_text(&v),
            "Version:  0.1.0\nRuntimeName:  hearth\nRuntimeVersion:  0.1.0\nRuntimeApiVersion:  v1\n"
        );
    }
}
