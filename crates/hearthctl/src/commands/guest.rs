//! Host-side commands that need no hearthd: `guest build` (the guest
//! bundle: vmlinux + agent initramfs) and `doctor` (which backends can run
//! on this host, and why not).
//!
//! `doctor` builds the daemon's own backends from the daemon's config and
//! asks each one's `check()`, so its answers are the ones RunPodSandbox
//! would give; the facts around them (binary versions, /dev/kvm, PVM, QEMU)
//! say where each answer comes from.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hearthd::config::Config;
use serde::Serialize;

use crate::output::{print_structured, Output};

/// `hearthctl guest ...`.
#[derive(Args, Debug, Clone)]
pub struct GuestArgs {
    #[command(subcommand)]
    pub command: GuestCommand,
}

/// Guest bundle commands.
#[derive(Subcommand, Debug, Clone)]
pub enum GuestCommand {
    /// Build (or reuse) the guest bundle: Debian's cloud kernel as an
    /// uncompressed vmlinux, and an initramfs with hearth-agent as /init.
    Build(BuildArgs),
}

/// `hearthctl guest build`.
#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// Where downloads and outputs go; hearthd's firecracker.guest_dir
    /// (default <root>/guest) is where it looks.
    #[arg(long, default_value = "/var/lib/hearth/guest", value_name = "DIR")]
    pub work_dir: PathBuf,
    /// The static hearth-agent binary (scripts/build-agent.sh prints it).
    /// Default: hearth-agent beside hearthctl.
    #[arg(long, env = "HEARTH_AGENT_BIN", value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// Kernel package to resolve with apt (default linux-image-cloud-amd64).
    #[arg(long, value_name = "PACKAGE")]
    pub kernel_package: Option<String>,
    /// A kernel .deb to use instead of downloading one.
    #[arg(long, value_name = "DEB")]
    pub kernel_deb: Option<PathBuf>,
}

/// `hearthctl doctor`.
#[derive(Args, Debug, Clone)]
pub struct DoctorArgs {
    /// hearthd's config file (defaults are used when it does not exist).
    #[arg(long, default_value = "/etc/hearth/config.toml", value_name = "FILE")]
    pub config: PathBuf,
}

/// Runs `hearthctl guest ...`.
pub async fn guest(args: &GuestArgs, out: Output) -> Result<()> {
    match &args.command {
        GuestCommand::Build(b) => build(b, out).await,
    }
}

#[derive(Serialize)]
struct BuildSummary {
    work_dir: PathBuf,
    vmlinux: PathBuf,
    vmlinux_bytes: u64,
    initramfs: PathBuf,
    initramfs_bytes: u64,
    kernel_release: String,
    kernel_package: String,
    kernel_version: String,
    kernel_compression: String,
    modules: Vec<String>,
    builtin_modules: Vec<String>,
    rebuilt: bool,
}

async fn build(args: &BuildArgs, out: Output) -> Result<()> {
    let agent = match &args.agent {
        Some(a) => a.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("hearth-agent")))
            .filter(|p| p.is_file())
            .context("no hearth-agent beside hearthctl: pass --agent (scripts/build-agent.sh prints its path)")?,
    };
    let mut spec = hearth_guest::BundleSpec::new(&args.work_dir, &agent);
    spec.kernel_package = args.kernel_package.clone();
    spec.kernel_deb = args.kernel_deb.clone();
    eprintln!(
        "building the guest bundle in {} (the first build downloads the kernel package with apt-get)...",
        args.work_dir.display()
    );
    let started = std::time::Instant::now();
    let bundle = tokio::task::spawn_blocking(move || hearth_guest::build(&spec))
        .await
        .context("guest build task")?
        .context("building the guest bundle")?;
    let m = &bundle.manifest;
    let summary = BuildSummary {
        work_dir: args.work_dir.clone(),
        vmlinux: bundle.vmlinux.clone(),
        vmlinux_bytes: m.vmlinux.size,
        initramfs: bundle.initramfs.clone(),
        initramfs_bytes: m.initramfs.size,
        kernel_release: bundle.kernel_release.clone(),
        kernel_package: m.inputs.kernel_package.clone(),
        kernel_version: m.inputs.kernel_version.clone(),
        kernel_compression: m.kernel_compression.clone(),
        modules: m.module_load_order.clone(),
        builtin_modules: m.builtin_modules.clone(),
        rebuilt: bundle.rebuilt,
    };
    if out != Output::Table {
        return print_structured(&summary, out);
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "guest bundle {} in {:.1?}",
        if summary.rebuilt {
            "built"
        } else {
            "up to date"
        },
        started.elapsed()
    );
    println!(
        "  kernel     {} {} ({}, {})",
        summary.kernel_package,
        summary.kernel_version,
        summary.kernel_release,
        summary.kernel_compression
    );
    println!(
        "  vmlinux    {} ({:.1} MiB)",
        summary.vmlinux.display(),
        mib(summary.vmlinux_bytes)
    );
    println!(
        "  initramfs  {} ({:.1} MiB)",
        summary.initramfs.display(),
        mib(summary.initramfs_bytes)
    );
    println!("  modules    {} loaded by the agent", summary.modules.len());
    if !summary.builtin_modules.is_empty() {
        println!("  built in   {}", summary.builtin_modules.join(", "));
    }
    Ok(())
}

/// One line of the doctor's report.
#[derive(Serialize)]
struct Fact {
    what: String,
    ok: bool,
    detail: String,
}

#[derive(Serialize)]
struct Report {
    config: String,
    backends: Vec<Fact>,
    facts: Vec<Fact>,
}

fn fact(what: &str, ok: bool, detail: impl Into<String>) -> Fact {
    Fact {
        what: what.into(),
        ok,
        detail: detail.into(),
    }
}

fn on_path(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_owned());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

async fn first_line(program: &Path, arg: &str) -> Option<String> {
    let run = tokio::process::Command::new(program)
        .arg(arg)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(5), run)
        .await
        .ok()?
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
}

/// Runs `hearthctl doctor`.
pub async fn doctor(args: &DoctorArgs, out: Output) -> Result<()> {
    let (config, source) = if args.config.exists() {
        let c = Config::load(&args.config)?;
        (c, args.config.display().to_string())
    } else {
        (
            Config::default(),
            format!("defaults ({} does not exist)", args.config.display()),
        )
    };
    let mut backends = Vec::new();
    let mut all: Vec<std::sync::Arc<dyn hearth_runtime::backend::SandboxBackend>> =
        vec![std::sync::Arc::new(
            hearthd::backend::namespaces::NamespacesBackend::new(
                config.agent_binary(),
                config.namespaces.allow_privileged,
            ),
        )];
    all.extend(hearthd::backend::firecracker::backends(&config));
    all.extend(hearthd::backend::qemu::backends(&config));
    for kind in hearthd::config::BACKENDS {
        let detail = match all.iter().find(|b| b.kind() == *kind) {
            Some(b) => b
                .check()
                .map(|()| "can run here".to_owned())
                .map_err(|e| match e {
                    hearth_runtime::backend::BackendError::Unavailable { reason, .. } => reason,
                    other => other.to_string(),
                }),
            None => Err("not built into this hearthd yet".to_owned()),
        };
        backends.push(match detail {
            Ok(d) => fact(kind, true, d),
            Err(d) => fact(kind, false, d),
        });
    }

    let mut facts = Vec::new();
    let fc = &config.firecracker;
    match on_path(&fc.binary) {
        Some(bin) => {
            match hearth_firecracker::check_binary(&bin).await {
                Ok(v) => facts.push(fact(
                    "firecracker",
                    true,
                    format!("{} (v{v})", bin.display()),
                )),
                Err(e) => facts.push(fact(
                    "firecracker",
                    false,
                    format!("{}: {e}", bin.display()),
                )),
            }
            match hearth_firecracker::binary::has_interpreter(&bin) {
                Ok(false) => facts.push(fact(
                    "firecracker static",
                    true,
                    "statically linked (the jailer can copy it)",
                )),
                Ok(true) => facts.push(fact(
                    "firecracker static",
                    false,
                    "dynamically linked: the jailer needs a static build",
                )),
                Err(e) => facts.push(fact("firecracker static", false, e.to_string())),
            }
        }
        None => facts.push(fact(
            "firecracker",
            false,
            format!("{:?} not found (firecracker.binary)", fc.binary),
        )),
    }
    if fc.use_jailer {
        match on_path(&fc.jailer) {
            Some(j) => facts.push(fact("jailer", true, j.display().to_string())),
            None => facts.push(fact(
                "jailer",
                false,
                format!("{:?} not found (firecracker.jailer)", fc.jailer),
            )),
        }
        let ok = fc.seccomp_filter.is_file();
        facts.push(fact(
            "seccomp filter",
            ok,
            match (fc.seccomp_filter.as_os_str().is_empty(), ok) {
                (true, _) => "firecracker.seccomp_filter is not set".to_owned(),
                (false, true) => fc.seccomp_filter.display().to_string(),
                (false, false) => format!("{} not found", fc.seccomp_filter.display()),
            },
        ));
    }
    let (vmlinux, initramfs) = hearthd::backend::firecracker::guest_files(&config);
    for (what, p) in [("guest kernel", vmlinux), ("guest initramfs", initramfs)] {
        let ok = p.is_file();
        let detail = match ok {
            true => p.display().to_string(),
            false => format!("{} missing: run `hearthctl guest build`", p.display()),
        };
        facts.push(fact(what, ok, detail));
    }
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm");
    facts.push(match kvm {
        Ok(_) => fact("/dev/kvm", true, "present, read-write"),
        Err(e) => fact("/dev/kvm", false, e.to_string()),
    });
    facts.push(match hearthd::backend::firecracker::pvm_evidence() {
        Some(ev) => fact(
            "PVM",
            false,
            format!(
                "paravirtual KVM ({ev}): a stock guest kernel cannot boot under Firecracker here"
            ),
        ),
        None => fact("PVM", true, "not detected"),
    });
    let qemu = ["qemu-system-x86_64"]
        .iter()
        .find_map(|q| on_path(Path::new(q)));
    facts.push(match qemu {
        Some(q) => {
            let v = first_line(&q, "--version").await.unwrap_or_default();
            fact("qemu", true, format!("{} ({v})", q.display()))
        }
        None => fact("qemu", false, "qemu-system-x86_64 not on PATH"),
    });

    let report = Report {
        config: source,
        backends,
        facts,
    };
    if out != Output::Table {
        return print_structured(&report, out);
    }
    println!("config: {}", report.config);
    println!("\nBACKEND      USABLE  WHY");
    for b in &report.backends {
        println!(
            "{:<12} {:<7} {}",
            b.what,
            if b.ok { "yes" } else { "no" },
            b.detail
        );
    }
    println!("\nCHECK                OK   DETAIL");
    for f in &report.facts {
        println!(
            "{:<20} {:<4} {}",
            f.what,
            if f.ok { "yes" } else { "no" },
            f.detail
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    #[test]
    fn guest_build_and_doctor_parse() {
        let cli = Cli::try_parse_from([
            "hearthctl",
            "guest",
            "build",
            "--work-dir",
            "/tmp/g",
            "--agent",
            "/a/hearth-agent",
        ])
        .unwrap();
        let Command::Guest(GuestArgs {
            command: GuestCommand::Build(b),
        }) = cli.command
        else {
            panic!("not guest build")
        };
        assert_eq!(b.work_dir, PathBuf::from("/tmp/g"));
        assert_eq!(b.agent, Some(PathBuf::from("/a/hearth-agent")));
        let cli = Cli::try_parse_from(["hearthctl", "doctor"]).unwrap();
        let Command::Doctor(d) = cli.command else {
            panic!("not doctor")
        };
        assert_eq!(d.config, PathBuf::from("/etc/hearth/config.toml"));
        assert!(Cli::try_parse_from(["hearthctl", "guest"]).is_err());
    }

    #[tokio::test]
    async fn doctor_answers_for_every_backend() {
        let dir = tempfile::tempdir().unwrap();
        let args = DoctorArgs {
            config: dir.path().join("missing.toml"),
        };
        // Defaults: prints a table; never fails for an unusable backend.
        doctor(&args, Output::Table).await.unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[firecracker]\nbinary_path = \"x\"\n").unwrap();
        let e = doctor(&DoctorArgs { config: bad }, Output::Json)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("binary_path"), "{e:#}");
    }
}
