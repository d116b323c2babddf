//! The core's error type. hearthd maps it to gRPC codes in one place.

use crate::backend::BackendError;
use crate::cgroup::CgroupError;
use crate::id::IdError;
use crate::network::NetworkError;
use crate::sandbox::IllegalTransition;
use crate::scratch::ScratchError;
use crate::sizing::SizingError;
use crate::store::StoreError;

/// Errors of the sandbox and container managers.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No such object (or prefix).
    #[error(transparent)]
    NotFound(IdError),
    /// The request is malformed; the message names the field.
    #[error("{0}")]
    InvalidArgument(String),
    /// Sizing input is malformed.
    #[error(transparent)]
    Sizing(#[from] SizingError),
    /// The cgroup parent is unusable.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A live sandbox has the same name (name, namespace, uid, attempt).
    #[error("pod sandbox name {name:?} is reserved for {id}")]
    AlreadyExists {
        /// The unique name.
        name: String,
        /// The sandbox that holds it.
        id: String,
    },
    /// A container of the same name and attempt exists in the pod.
    #[error("container name {name:?} is reserved for {id} in pod sandbox {pod}")]
    ContainerNameInUse {
        /// The container name (with its attempt).
        name: String,
        /// The pod sandbox.
        pod: String,
        /// The container that holds it.
        id: String,
    },
    /// The image is not in the node's image store.
    #[error("image {0:?} is not present on this node; pull it first")]
    ImageNotFound(String),
    /// The runtime handler is not configured.
    #[error("no runtime handler {0:?} is configured (see runtime_handlers in the config)")]
    UnknownHandler(String),
    /// The operation is not possible in the object's state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Not built yet; the message says which issue brings it.
    #[error("{0}")]
    Unimplemented(String),
    /// The backend failed.
    #[error("sandbox backend")]
    Backend(#[from] BackendError),
    /// The network failed.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// Persisting state failed.
    #[error("state store")]
    Store(#[from] StoreError),
    /// The scratch disk could not be made.
    #[error("scratch disk")]
    Scratch(#[from] ScratchError),
    /// A state machine bug or a race lost.
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
}

impl From<IdError> for RuntimeError {
    fn from(e: IdError) -> Self {
        match e {
            IdError::NotFound { .. } => RuntimeError::NotFound(e),
            IdError::Ambiguous { .. } | IdError::Invalid(_) => {
                RuntimeError::InvalidArgument(e.to_string())
            }
        }
    }
}
