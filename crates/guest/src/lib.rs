//! Hearth's guest bundle: the uncompressed `vmlinux` and the agent initramfs.
//!
//! One bundle boots under both sandbox backends (Firecracker and QEMU
//! microvm). It is built from Debian's `linux-image-cloud-amd64` package,
//! which is downloaded with `apt-get download` and unpacked with `dpkg -x`
//! into the work directory — never installed on the host.
//!
//! Layout:
//!
//! - [`bzimage`]: bzImage setup-header parsing and payload decompression
//!   (LZ4 legacy frame, gzip, xz, zstd in Rust; bzip2/lzma/lzo detected and
//!   refused) into the ELF `vmlinux` Firecracker loads.
//! - [`cpio`]: a `newc` cpio writer and reader (the initramfs format).
//! - [`modules`]: the kernel-module dependency closure (from `modules.dep`,
//!   or from each module's `.modinfo` when the unpacked package has no
//!   `modules.dep`, which is the case for Debian: `depmod` runs in postinst).
//! - [`kernel`]: resolving, downloading and unpacking the kernel package.
//! - [`bundle`]: [`build`], which ties it together and keeps a JSON
//!   [`Manifest`] so an unchanged input set is not rebuilt.
//!
//! The initramfs holds `/init` (the static `hearth-agent`), the modules the
//! agent loads (decompressed, so a plain `finit_module` works on any kernel)
//! and `/etc/hearth/modules`: one path per line, relative to
//! `/lib/modules/<release>/`, dependencies first.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod bundle;
pub mod bzimage;
pub mod cpio;
mod error;
pub mod kernel;
pub mod modules;

pub use bundle::{build, Bundle, BundleSpec, Manifest, DEFAULT_KERNEL_PACKAGE, GUEST_MODULES};
pub use bzimage::{detect_compression, extract_vmlinux, Compression};
pub use cpio::{CpioEntry, CpioReader, CpioWriter};
pub use error::GuestError;
pub use modules::module_closure;
