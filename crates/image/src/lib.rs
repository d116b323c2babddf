//! OCI image pull, content store and erofs build for Hearth.
#![warn(missing_docs)]
