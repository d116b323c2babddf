//! Hearth's guest bundle: vmlinux and the agent initramfs.
#![warn(missing_docs)]
