//! Typed Firecracker API client and jailer spawn for Hearth.
#![warn(missing_docs)]
