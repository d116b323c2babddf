//! Command line of `hearth-agent`.
//!
//! ```text
//! hearth-agent                  VM mode (must be PID 1; arguments the
//!                               kernel passes to init are ignored)
//! hearth-agent namespaces --root <dir> --listen-fd <fd>
//!                         [--netns <path>] [--cgroup-procs <file>]...
//! ```
//! Options also take the `--name=value` form.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::PathBuf;

use thiserror::Error;

/// Usage text.
pub const USAGE: &str = "\
usage: hearth-agent                      (VM mode: PID 1 of a guest)
       hearth-agent namespaces --root <dir> --listen-fd <fd>
                               [--netns <path>] [--cgroup-procs <file>]...
";

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run as PID 1 of a VM.
    Vm,
    /// Launch the namespaces backend's agent.
    Namespaces(NamespacesArgs),
    /// Print usage.
    Help,
    /// Print the version.
    Version,
}

/// Arguments of `hearth-agent namespaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacesArgs {
    /// The directory that becomes the agent's root.
    pub root: PathBuf,
    /// An inherited, listening unix socket.
    pub listen_fd: RawFd,
    /// A network namespace to join first (e.g. `/run/netns/<name>`).
    pub netns: Option<PathBuf>,
    /// `cgroup.procs` files to join (one per v1 hierarchy, or one on v2).
    pub cgroup_procs: Vec<PathBuf>,
}

/// A command line that cannot be run.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CliError {
    /// The message says what is wrong.
    #[error("{0}\n{USAGE}")]
    Usage(String),
}

fn usage(msg: impl Into<String>) -> CliError {
    CliError::Usage(msg.into())
}

/// Parses the arguments after the program name. `is_pid1`: whether this
/// process is PID 1 (then anything but `namespaces` means VM mode, as the
/// kernel passes unknown boot parameters to init as arguments).
pub fn parse(args: Vec<OsString>, is_pid1: bool) -> Result<Command, CliError> {
    let first = args.first().and_then(|a| a.to_str());
    match first {
        Some("namespaces") => parse_namespaces(&args[1..]).map(Command::Namespaces),
        _ if is_pid1 => Ok(Command::Vm),
        Some("-h" | "--help" | "help") => Ok(Command::Help),
        Some("-V" | "--version") => Ok(Command::Version),
        None => Err(usage("VM mode runs only as PID 1")),
        Some(other) => Err(usage(format!("unknown command {other:?}"))),
    }
}

fn parse_namespaces(args: &[OsString]) -> Result<NamespacesArgs, CliError> {
    let mut root = None;
    let mut listen_fd = None;
    let mut netns = None;
    let mut cgroup_procs = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let arg = arg
            .to_str()
            .ok_or_else(|| usage(format!("argument {arg:?} is not UTF-8")))?;
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(OsString::from(v))),
            _ => (arg, None),
        };
        let mut value = || -> Result<OsString, CliError> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| usage(format!("{name} needs a value"))),
            }
        };
        match name {
            "--root" => set_once(&mut root, "--root", PathBuf::from(value()?))?,
            "--listen-fd" => {
                let v = value()?;
                let fd = v
                    .to_str()
                    .and_then(|s| s.parse::<RawFd>().ok())
                    .filter(|fd| *fd >= 0)
                    .ok_or_else(|| usage(format!("--listen-fd {v:?} is not an fd number")))?;
                set_once(&mut listen_fd, "--listen-fd", fd)?;
            }
            "--netns" => set_once(&mut netns, "--netns", PathBuf::from(value()?))?,
            "--cgroup-procs" => cgroup_procs.push(PathBuf::from(value()?)),
            other => return Err(usage(format!("unknown option {other:?}"))),
        }
    }
    Ok(NamespacesArgs {
        root: root.ok_or_else(|| usage("--root is required"))?,
        listen_fd: listen_fd.ok_or_else(|| usage("--listen-fd is required"))?,
        netns,
        cgroup_procs,
    })
}

fn set_once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), CliError> {
    if slot.replace(value).is_some() {
        return Err(usage(format!("{name} given twice")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn pid1_without_namespaces_is_vm_mode() {
        assert_eq!(parse(args(&[]), true).unwrap(), Command::Vm);
        assert_eq!(
            parse(args(&["quiet", "splash"]), true).unwrap(),
            Command::Vm
        );
        assert!(parse(args(&[]), false).is_err());
    }

    #[test]
    fn namespaces_arguments() {
        let cmd = parse(
            args(&[
                "namespaces",
                "--root",
                "/r",
                "--listen-fd=3",
                "--netns",
                "/run/netns/x",
                "--cgroup-procs",
                "/a/cgroup.procs",
                "--cgroup-procs=/b/cgroup.procs",
            ]),
            false,
        )
        .unwrap();
        assert_eq!(
            cmd,
            Command::Namespaces(NamespacesArgs {
                root: "/r".into(),
                listen_fd: 3,
                netns: Some("/run/netns/x".into()),
                cgroup_procs: vec!["/a/cgroup.procs".into(), "/b/cgroup.procs".into()],
            })
        );
    }

    #[test]
    fn bad_namespaces_arguments() {
        for bad in [
            &["namespaces"][..],
            &["namespaces", "--root", "/r"],
            &["namespaces", "--listen-fd", "3"],
            &["namespaces", "--root", "/r", "--listen-fd", "x"],
            &["namespaces", "--root", "/r", "--listen-fd", "-1"],
            &["namespaces", "--root", "/r", "--listen-fd"],
            &[
                "namespaces",
                "--root",
                "/r",
                "--root",
                "/s",
                "--listen-fd",
                "3",
            ],
            &["namespaces", "--root", "/r", "--listen-fd", "3", "--bogus"],
            &["bogus"],
        ] {
            assert!(parse(args(bad), false).is_err(), "{bad:?}");
        }
    }
}
