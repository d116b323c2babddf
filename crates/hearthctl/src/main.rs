//! `hearthctl`: a CRI client for hearthd, for operators and demos, in the
//! manner of crictl.
//!
//! It talks CRI v1 (RuntimeService and ImageService) to hearthd over its unix
//! socket (`--address`, env `HEARTH_ADDRESS`, default
//! `/run/hearth/hearth.sock`); every call has a deadline (`--timeout`).
//! Errors print as `hearthctl: <rpc>: <code>: <message>` and exit 1.
//!
//! Layout:
//! - `main.rs`: the command line (clap) and dispatch, nothing else.
//! - `client`: the connection, the two CRI clients, deadlines, `RpcError`.
//! - `config`: pod and container config files (crictl's JSON/YAML shape)
//!   parsed into our own serde structs and converted to the CRI types.
//! - `output`: tables, relative times, sizes, ids, json/yaml printing.
//! - `commands/`: `info` (version, info), `pods` (runp, pods, inspectp,
//!   stopp, rmp), `images` (pull with per-layer progress, images, images
//!   prune, inspecti, rmi, imagefsinfo),
//!   `containers` (ps, create, start, stop, rm, inspect, exec), `logs`,
//!   `run` (a Pod manifest through the kubelet's CRI calls), and
//!   `guest` (guest build, doctor: host-side, no hearthd needed);
//!   `commands/mod.rs` holds id-prefix resolution and per-id error reporting.
#![forbid(unsafe_code)]

mod client;
mod commands;
mod config;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};

use commands::{containers, guest, images, info, logs, pods, run, AlreadyReported};
use output::{parse_duration, Output};

/// A CRI client for hearthd.
#[derive(Parser, Debug)]
#[command(name = "hearthctl", version, about, long_about = None)]
struct Cli {
    /// hearthd's CRI socket.
    #[arg(
        long,
        env = "HEARTH_ADDRESS",
        default_value = "/run/hearth/hearth.sock",
        global = true,
        value_name = "SOCKET"
    )]
    address: PathBuf,
    /// Deadline for each call, e.g. 10s, 500ms, 2m (give it before the
    /// command: `stop` and `exec` have a --timeout of their own).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the runtime's name and versions.
    Version,
    /// Show the runtime's conditions and status info.
    Info,
    /// Run a pod sandbox from a config file; prints its id.
    Runp(pods::RunArgs),
    /// List pod sandboxes.
    Pods(pods::ListArgs),
    /// Show pod sandbox status and info (JSON).
    Inspectp(pods::IdsArgs),
    /// Stop pod sandboxes.
    Stopp(pods::IdsArgs),
    /// Remove pod sandboxes.
    Rmp(pods::RemoveArgs),
    /// Pull an image.
    Pull(images::PullArgs),
    /// List images (`images prune`: free content no image uses).
    Images(images::ListArgs),
    /// Show image status and info (JSON).
    Inspecti(images::ImagesArgs),
    /// Remove images.
    Rmi(images::ImagesArgs),
    /// Show the image filesystem usage.
    Imagefsinfo,
    /// List containers.
    Ps(containers::ListArgs),
    /// Create a container in a pod; prints its id.
    Create(containers::CreateArgs),
    /// Start created containers.
    Start(containers::IdsArgs),
    /// Stop running containers.
    Stop(containers::StopArgs),
    /// Remove containers.
    Rm(containers::RemoveArgs),
    /// Show container status and info (JSON).
    Inspect(containers::IdsArgs),
    /// Print a container's logs.
    Logs(logs::LogsArgs),
    /// Run a command in a container; exits with its exit code.
    Exec(containers::ExecArgs),
    /// Run a Kubernetes Pod manifest (with its Secrets, ConfigMaps) as the
    /// kubelet would, print its state and logs.
    Run(run::RunArgs),
    /// Guest bundle (kernel + agent initramfs) for the VM backends.
    Guest(guest::GuestArgs),
    /// Which backends can run on this host, and why not (no hearthd needed).
    Doctor(guest::DoctorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("hearthctl: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) if err.is::<AlreadyReported>() => ExitCode::FAILURE,
        // The reader of our output went away (`| head`): nothing to say.
        Err(err) if output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hearthctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Guest(args) => {
            return guest::guest(args, cli.output)
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        Command::Doctor(args) => {
            return guest::doctor(args, cli.output)
                .await
                .map(|()| ExitCode::SUCCESS)
        }
        _ => {}
    }
    let cri = client::connect(&cli.address, cli.timeout).await?;
    let out = cli.output;
    match cli.command {
        Command::Version => info::version(&cri, out).await?,
        Command::Info => info::info(&cri, out).await?,
        Command::Runp(args) => pods::run(&cri, args, out).await?,
        Command::Pods(args) => pods::list(&cri, args, out).await?,
        Command::Inspectp(args) => pods::inspect(&cri, args, out).await?,
        Command::Stopp(args) => pods::stop(&cri, args).await?,
        Command::Rmp(args) => pods::remove(&cri, args).await?,
        Command::Pull(args) => images::pull(&cri, args, out).await?,
        Command::Images(args) => images::list(&cri, args, out).await?,
        Command::Inspecti(args) => images::inspect(&cri, args, out).await?,
        Command::Rmi(args) => images::remove(&cri, args).await?,
        Command::Imagefsinfo => images::fs_info(&cri, out).await?,
        Command::Ps(args) => containers::list(&cri, args, out).await?,
        Command::Create(args) => containers::create(&cri, args, out).await?,
        Command::Start(args) => containers::start(&cri, args).await?,
        Command::Stop(args) => containers::stop(&cri, args).await?,
        Command::Rm(args) => containers::remove(&cri, args).await?,
        Command::Inspect(args) => containers::inspect(&cri, args, out).await?,
        Command::Logs(args) => logs::logs(&cri, args).await?,
        Command::Exec(args) => return containers::exec(&cri, args, out).await,
        Command::Run(args) => return run::run(&cri, args, out).await,
        Command::Guest(_) | Command::Doctor(_) => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_and_crictl_style_arguments_parse() {
        let cli = Cli::try_parse_from([
            "hearthctl",
            "--address",
            "/tmp/h.sock",
            "--timeout",
            "3s",
            "pods",
            "-o",
            "json",
            "--label",
            "a=b",
            "--label",
            "c=d",
            "--state",
            "ready",
            "-q",
        ])
        .unwrap();
        assert_eq!(cli.address, PathBuf::from("/tmp/h.sock"));
        assert_eq!(cli.timeout, Duration::from_secs(3));
        assert_eq!(cli.output, Output::Json);
        let Command::Pods(args) = cli.command else {
            panic!("not pods")
        };
        assert_eq!(args.labels, ["a=b", "c=d"]);
        assert_eq!(args.state, Some(pods::PodState::Ready));
        assert!(args.quiet);

        let cli = Cli::try_parse_from(["hearthctl", "exec", "abc", "--", "ls", "-l", "/"]).unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(args.id, "abc");
        assert_eq!(args.cmd, ["ls", "-l", "/"]);

        let cli = Cli::try_parse_from(["hearthctl", "stop", "-t", "5", "a", "b"]).unwrap();
        let Command::Stop(args) = cli.command else {
            panic!("not stop")
        };
        assert_eq!((args.timeout, args.ids.len()), (5, 2));

        assert!(Cli::try_parse_from(["hearthctl", "rmp"]).is_err());
        assert!(Cli::try_parse_from(["hearthctl", "rmp", "-a", "x"]).is_err());
        assert!(Cli::try_parse_from(["hearthctl", "rmp", "--all"]).is_ok());
        assert!(Cli::try_parse_from(["hearthctl", "--timeout", "soon", "pods"]).is_err());
    }
}
