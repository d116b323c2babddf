//! QMP client, QEMU and vhost-device-vsock supervision for the qemu backend.
#![warn(missing_docs)]
