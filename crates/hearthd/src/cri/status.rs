//! The one place where errors become gRPC statuses. NotFound,
//! AlreadyExists, InvalidArgument, FailedPrecondition and Unimplemented
//! survive the mapping; the full error chain is the message.

use hearth_runtime::backend::BackendError;
use hearth_runtime::RuntimeError;
use tonic::{Code, Status};

/// Converts a core error to a status.
pub fn to_status(e: RuntimeError) -> Status {
    let code = match &e {
        RuntimeError::NotFound(_) | RuntimeError::ImageNotFound(_) => Code::NotFound,
        RuntimeError::ContainerNameInUse { .. } => Code::AlreadyExists,
        RuntimeError::InvalidArgument(_)
        | RuntimeError::Sizing(_)
        | RuntimeError::Cgroup(hearth_runtime::cgroup::CgroupError::BadParent(_))
        | RuntimeError::UnknownHandler(_) => Code::InvalidArgument,
        RuntimeError::AlreadyExists { .. } => Code::AlreadyExists,
        RuntimeError::FailedPrecondition(_) | RuntimeError::Transition(_) => {
            Code::FailedPrecondition
        }
        RuntimeError::Backend(BackendError::Unavailable { .. }) => Code::FailedPrecondition,
        RuntimeError::Backend(BackendError::Refused { .. }) => Code::InvalidArgument,
        RuntimeError::Unimplemented(_) => Code::Unimplemented,
        RuntimeError::Backend(BackendError::AgentNotReady { .. }) => Code::DeadlineExceeded,
        _ => Code::Internal,
    };
    Status::new(code, chain(&e))
}

/// `outer: inner: cause`, as Go's wrapped errors read.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Converts an image store error to a status.
pub fn image_to_status(e: hearth_image::ImageError) -> Status {
    use hearth_image::ImageError as E;
    let code = match &e {
        E::NotFound(_) => Code::NotFound,
        E::InvalidReference { .. } | E::AmbiguousId(_) | E::Config { .. } => Code::InvalidArgument,
        E::Unauthorized { .. } => Code::Unauthenticated,
        E::Registry { .. } => Code::Unavailable,
        E::DigestMismatch { .. }
        | E::SizeMismatch { .. }
        | E::DiffIdMismatch { .. }
        | E::InvalidManifest { .. }
        | E::Layer { .. } => Code::DataLoss,
        E::ManifestTooLarge { .. } => Code::ResourceExhausted,
        E::UnsupportedMediaType(_)
        | E::UnsupportedDigest(_)
        | E::NoMatchingPlatform { .. }
        | E::UnsafeLayerPath { .. }
        | E::DeviceNodeNotAllowed { .. } => Code::FailedPrecondition,
        _ => Code::Internal,
    };
    Status::new(code, chain(&e))
}

/// UNIMPLEMENTED for an RPC whose issue has not landed.
pub fn unimplemented(rpc: &str, what: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not implemented yet in hearth ({what})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_runtime::id::IdError;

    #[test]
    fn codes_survive() {
        let nf = RuntimeError::NotFound(IdError::NotFound {
            kind: "pod sandbox",
            prefix: "ab".into(),
        });
        assert_eq!(to_status(nf).code(), Code::NotFound);
        let dup = RuntimeError::AlreadyExists {
            name: "a".into(),
            id: "b".into(),
        };
        assert_eq!(to_status(dup).code(), Code::AlreadyExists);
        assert_eq!(
            to_status(RuntimeError::UnknownHandler("x".into())).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            to_status(RuntimeError::Unimplemented("x".into())).code(),
            Code::Unimplemented
        );
    }

    #[test]
    fn chain_includes_sources() {
        let e = RuntimeError::Backend(BackendError::Io {
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
        let s = to_status(e);
        assert!(
            s.message().contains("sandbox backend: /x: No such file"),
            "{}",
            s.message()
        );
    }
}
