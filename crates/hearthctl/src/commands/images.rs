//! Image commands: pull (with progress from hearthd's admin service),
//! images, images prune, inspecti, rmi, imagefsinfo.

mod progress;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use hearthd::admin::proto as admin;
use k8s_cri::v1 as cri;
use serde::Serialize;
use tonic::Streaming;

use super::for_each;
use crate::client::{call_with, request_with, Cri};
use crate::config::load_pod_config;
use crate::output::{
    human_size, info_to_json, parse_duration, print_structured, short_id, write_out, Output, Table,
};

/// `pull`: pull an image.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// The image reference, e.g. docker.io/library/busybox:1.36.
    pub image: String,
    /// Registry credentials as USERNAME:PASSWORD.
    #[arg(long, conflicts_with = "auth")]
    pub creds: Option<String>,
    /// Registry credentials as base64 of USERNAME:PASSWORD.
    #[arg(long)]
    pub auth: Option<String>,
    /// The config of the pod the image is for (.json, .yaml).
    #[arg(short = 'p', long)]
    pub pod_config: Option<PathBuf>,
    /// Deadline for the pull, which may take much longer than --timeout.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub pull_timeout: Duration,
}

/// `images`: list images (or `images prune`).
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ListArgs {
    #[command(subcommand)]
    pub action: Option<ImagesAction>,
    /// Only images of this repository (or reference).
    pub repo: Option<String>,
    /// Print only image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show full ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Show a DIGEST column.
    #[arg(long)]
    pub digests: bool,
}

/// What `images` does besides listing.
#[derive(Subcommand, Debug)]
pub enum ImagesAction {
    /// Free content (blobs, erofs images) that no image uses.
    Prune,
}

/// `inspecti`, `rmi`: images by reference or id.
#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Image references or ids.
    #[arg(required = true)]
    pub images: Vec<String>,
}

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

/// The AuthConfig for `--creds` / `--auth`.
pub fn auth_config(creds: Option<&str>, auth: Option<&str>) -> Result<Option<cri::AuthConfig>> {
    Ok(match (creds, auth) {
        (Some(creds), _) => match creds.split_once(':') {
            Some((user, pass)) if !user.is_empty() => Some(cri::AuthConfig {
                username: user.to_string(),
                password: pass.to_string(),
                ..Default::default()
            }),
            _ => bail!("invalid --creds: expected USERNAME:PASSWORD"),
        },
        (None, Some(auth)) => Some(cri::AuthConfig {
            auth: auth.to_string(),
            ..Default::default()
        }),
        (None, None) => None,
    })
}

pub async fn pull(cri: &Cri, args: PullArgs, output: Output) -> Result<()> {
    let request = cri::PullImageRequest {
        image: spec(&args.image),
        auth: auth_config(args.creds.as_deref(), args.auth.as_deref())?,
        sandbox_config: args
            .pod_config
            .as_deref()
            .map(load_pod_config)
            .transpose()?,
    };
    let timeout = args.pull_timeout.max(cri.timeout());
    let start = Instant::now();
    // Taken before the pull starts: progress of an older pull is not ours.
    let since_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut client = cri.images();
    let call = call_with(
        "PullImage",
        timeout,
        client.pull_image(request_with(request, timeout)),
    );
    if output != Output::Table {
        return print_structured(&call.await?, output);
    }
    let mut admin = cri.admin();
    let subscribe = admin.pull_progress(request_with(
        admin::PullProgressRequest {
            reference: args.image.clone(),
            since_unix_ms,
        },
        timeout,
    ));
    let tty = std::io::stdout().is_terminal();
    let mut view = progress::PullView::default();
    let mut screen = progress::InPlace::default();
    let mut stream: Option<Streaming<admin::PullProgressEvent>> = None;
    let mut subscribed = false;
    let mut redraw = tokio::time::interval(Duration::from_millis(100));
    tokio::pin!(call, subscribe);
    let result = loop {
        tokio::select! {
            result = &mut call => break result,
            s = &mut subscribe, if !subscribed => {
                subscribed = true;
                // An older hearthd has no admin service: no bars then.
                stream = s.ok().map(|r| r.into_inner());
            }
            event = next_event(&mut stream) => match event {
                Some(e) => view.apply(e),
                None => stream = None,
            },
            _ = redraw.tick(), if tty => write_out(&screen.frame(&view.lines()))?,
        }
    };
    // The subscription and the last events may trail the answer (a present
    // image answers in milliseconds): wait a little for the end.
    if result.is_ok() && !view.ended() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            if !subscribed {
                stream = (&mut subscribe).await.ok().map(|r| r.into_inner());
            }
            while let Some(s) = stream.as_mut() {
                match s.message().await {
                    Ok(Some(e)) => view.apply(e),
                    _ => break,
                }
                if view.ended() {
                    break;
                }
            }
        })
        .await;
    }
    if tty {
        write_out(&screen.frame(&view.lines()))?;
    } else if result.is_ok() {
        let mut text = String::new();
        for line in view.lines() {
            text.push_str(&line);
            text.push('\n');
        }
        write_out(&text)?;
    }
    let response = result?;
    write_out(&format!(
        "{}\n",
        view.summary(&args.image, &response.image_ref, start.elapsed())
    ))?;
    Ok(())
}

/// The next progress event; `None` when there is no stream or it ended
/// (or broke: progress is a nicety, the pull's own answer decides).
async fn next_event(
    stream: &mut Option<Streaming<admin::PullProgressEvent>>,
) -> Option<admin::PullProgressEvent> {
    match stream {
        Some(s) => s.message().await.ok().flatten(),
        None => std::future::pending().await,
    }
}

pub async fn list(cri: &Cri, args: ListArgs, output: Output) -> Result<()> {
    if let Some(ImagesAction::Prune) = args.action {
        return prune(cri, output).await;
    }
    let request = cri::ListImagesRequest {
        filter: args
            .repo
            .as_deref()
            .map(|r| cri::ImageFilter { image: spec(r) }),
    };
    let response = cri
        .call("ListImages", cri.images().list_images(cri.request(request)))
        .await?;
    if args.quiet {
        for image in &response.images {
            write_out(&format!("{}\n", image.id))?;
        }
        return Ok(());
    }
    if output != Output::Table {
        return print_structured(&response, output);
    }
    write_out(&images_table(&response.images, args.no_trunc, args.digests))?;
    Ok(())
}

/// What `images prune` freed, for `-o json|yaml`.
#[derive(Serialize, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Pruned {
    pub blobs_removed: u64,
    pub erofs_removed: u64,
    pub bytes_freed: u64,
}

impl Pruned {
    /// One line for people.
    pub fn line(&self) -> String {
        format!(
            "Removed {} blob{} and {} erofs image{}, freed {}\n",
            self.blobs_removed,
            if self.blobs_removed == 1 { "" } else { "s" },
            self.erofs_removed,
            if self.erofs_removed == 1 { "" } else { "s" },
            human_size(self.bytes_freed)
        )
    }
}

pub async fn prune(cri: &Cri, output: Output) -> Result<()> {
    // Prune waits for pulls in flight: give it the pull's patience.
    let timeout = cri.timeout().max(Duration::from_secs(60));
    let r = call_with(
        "PruneImages",
        timeout,
        cri.admin()
            .prune_images(request_with(admin::PruneImagesRequest {}, timeout)),
    )
    .await?;
    let pruned = Pruned {
        blobs_removed: r.blobs_removed,
        erofs_removed: r.erofs_removed,
        bytes_freed: r.bytes_freed,
    };
    match output {
        Output::Table => write_out(&pruned.line())?,
        _ => print_structured(&pruned, output)?,
    }
    Ok(())
}

/// Splits `repo:tag` (the tag is after the last colon that follows the last
/// slash, so `host:5000/app` has no tag).
pub fn split_tag(reference: &str) -> (&str, &str) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            &reference[..name_start + i],
            &reference[name_start + i + 1..],
        ),
        None => (reference, "<none>"),
    }
}

/// The `images` table: one row per tag, or per digest for untagged images.
pub fn images_table(images: &[cri::Image], no_trunc: bool, digests: bool) -> String {
    let mut headers = vec!["IMAGE", "TAG"];
    if digests {
        headers.push("DIGEST");
    }
    headers.extend(["IMAGE ID", "SIZE"]);
    let mut rows = Vec::new();
    for image in images {
        let digest = image
            .repo_digests
            .first()
            .and_then(|d| d.split_once('@'))
            .map_or_else(|| "<none>".to_string(), |(_, d)| short_id(d, no_trunc));
        let mut names: Vec<(String, String)> = image
            .repo_tags
            .iter()
            .map(|t| {
                let (repo, tag) = split_tag(t);
                (repo.to_string(), tag.to_string())
            })
            .collect();
        if names.is_empty() {
            let repo = image.repo_digests.first().map_or("<none>", |d| {
                d.split_once('@').map_or(d.as_str(), |(r, _)| r)
            });
            names.push((repo.to_string(), "<none>".to_string()));
        }
        for (repo, tag) in names {
            let mut row = vec![repo, tag];
            if digests {
                row.push(digest.clone());
            }
            row.push(short_id(&image.id, no_trunc));
            row.push(human_size(image.size));
            rows.push(row);
        }
    }
    rows.sort();
    let mut table = Table::new(&headers);
    for row in rows {
        table.push(row);
    }
    table.render()
}

/// ImageStatusResponse with its info values expanded; the image is under
/// `status`, as crictl inspecti prints it.
#[derive(Serialize)]
struct ImageInspect<'a> {
    status: &'a Option<cri::Image>,
    info: serde_json::Value,
}

/// ImageStatus of one image reference or id.
pub async fn status(cri: &Cri, image: &str, verbose: bool) -> Result<cri::ImageStatusResponse> {
    let request = cri::ImageStatusRequest {
        image: spec(image),
        verbose,
    };
    Ok(cri
        .call(
            "ImageStatus",
            cri.images().image_status(cri.request(request)),
        )
        .await?)
}

pub async fn inspect(cri: &Cri, args: ImagesArgs, output: Output) -> Result<()> {
    for_each(args.images, |image| async move {
        let response = status(cri, &image, true).await?;
        if response.image.is_none() {
            bail!("no such image: {image}");
        }
        let inspected = ImageInspect {
            status: &response.image,
            info: info_to_json(&response.info),
        };
        print_structured(&inspected, output)
    })
    .await
}

pub async fn remove(cri: &Cri, args: ImagesArgs) -> Result<()> {
    for_each(args.images, |image| async move {
        let request = cri::RemoveImageRequest {
            image: spec(&image),
        };
        cri.call(
            "RemoveImage",
            cri.images().remove_image(cri.request(request)),
        )
        .await?;
        write_out(&format!("Deleted: {image}\n"))?;
        Ok(())
    })
    .await
}

pub async fn fs_info(cri: &Cri, output: Output) -> Result<()> {
    let response = cri
        .call(
            "ImageFsInfo",
            cri.images()
                .image_fs_info(cri.request(cri::ImageFsInfoRequest {})),
        )
        .await?;
    if output != Output::Table {
        return print_structured(&response, output);
    }
    write_out(&fs_table(&response))?;
    Ok(())
}

/// The `imagefsinfo` table.
pub fn fs_table(info: &cri::ImageFsInfoResponse) -> String {
    let mut table = Table::new(&["FILESYSTEM", "MOUNTPOINT", "USED", "INODES USED"]);
    let all = info.image_filesystems.iter().map(|fs| ("image", fs)).chain(
        info.container_filesystems
            .iter()
            .map(|fs| ("container", fs)),
    );
    for (kind, fs) in all {
        table.push(vec![
            kind.to_string(),
            fs.fs_id
                .as_ref()
                .map(|f| f.mountpoint.clone())
                .unwrap_or_default(),
            fs.used_bytes
                .as_ref()
                .map_or("-".to_string(), |u| human_size(u.value)),
            fs.inodes_used
                .as_ref()
                .map_or("-".to_string(), |u| u.value.to_string()),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_after_the_last_slash() {
        assert_eq!(
            split_tag("docker.io/library/busybox:1.36"),
            ("docker.io/library/busybox", "1.36")
        );
        assert_eq!(
            split_tag("localhost:5000/app"),
            ("localhost:5000/app", "<none>")
        );
        assert_eq!(
            split_tag("localhost:5000/app:v2"),
            ("localhost:5000/app", "v2")
        );
        assert_eq!(split_tag("busybox"), ("busybox", "<none>"));
    }

    #[test]
    fn images_table_lists_each_tag() {
        let images = vec![
            cri::Image {
                id: "sha256:beae173ccac6ad749f76713cf4440fe3d21d1043fe616dfbe30775815d1d0f6a".into(),
                repo_tags: vec![
                    "docker.io/library/busybox:1.36".into(),
                    "docker.io/library/busybox:latest".into(),
                ],
                repo_digests: vec!["docker.io/library/busybox@sha256:5acba83a746c7608ed544dc1533b87c737a0b0fb730301639a0179f9344b1678".into()],
                size: 2_155_000,
                ..Default::default()
            },
            cri::Image {
                id: "sha256:0123456789abcdef".into(),
                repo_tags: vec![],
                repo_digests: vec!["quay.io/x/y@sha256:feedfacefeedface".into()],
                size: 512,
                ..Default::default()
            },
        ];
        let text = images_table(&images, false, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        // IMAGE is as wide as its longest cell (25) plus 3; the rest 20.
        assert_eq!(
            lines[0],
            format!("{:<28}{:<20}{:<20}SIZE", "IMAGE", "TAG", "IMAGE ID")
        );
        assert_eq!(
            lines[1],
            format!(
                "{:<28}{:<20}{:<20}2.15MB",
                "docker.io/library/busybox", "1.36", "beae173ccac6a"
            )
        );
        assert!(lines[2].starts_with(&format!("{:<28}latest", "docker.io/library/busybox")));
        assert_eq!(
            lines[3],
            format!(
                "{:<28}{:<20}{:<20}512B",
                "quay.io/x/y", "<none>", "0123456789abc"
            )
        );
        let with_digests = images_table(&images, false, true);
        assert!(with_digests.lines().next().unwrap().contains("DIGEST"));
        assert!(with_digests.contains("5acba83a746c7"));
    }

    #[test]
    fn images_prune_is_a_subcommand_and_a_repo_still_filters() {
        use clap::Parser;
        #[derive(Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            images: ListArgs,
        }
        let cli = Cli::try_parse_from(["images", "prune"]).unwrap();
        assert!(matches!(cli.images.action, Some(ImagesAction::Prune)));
        let cli = Cli::try_parse_from(["images", "-q", "busybox"]).unwrap();
        assert!(cli.images.action.is_none() && cli.images.quiet);
        assert_eq!(cli.images.repo.as_deref(), Some("busybox"));
    }

    #[test]
    fn prune_line_says_what_was_freed() {
        let p = Pruned {
            blobs_removed: 3,
            erofs_removed: 1,
            bytes_freed: 12_300_000,
        };
        assert_eq!(
            p.line(),
            "Removed 3 blobs and 1 erofs image, freed 12.3MB\n"
        );
    }

    #[test]
    fn credentials_become_auth_config() {
        let a = auth_config(Some("me:s3:cret"), None).unwrap().unwrap();
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("me", "s3:cret")
        );
        let a = auth_config(None, Some("bWU6cHc=")).unwrap().unwrap();
        assert_eq!(a.auth, "bWU6cHc=");
        assert!(auth_config(None, None).unwrap().is_none());
        assert!(auth_config(Some("nopassword"), None).is_err());
    }

    #[test]
    fn fs_table_lists_image_and_container_filesystems() {
        let fs = |m: &str, used: u64| cri::FilesystemUsage {
            timestamp: 1,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: m.into(),
            }),
            used_bytes: Some(cri::UInt64Value { value: used }),
            inodes_used: None,
        };
        let info = cri::ImageFsInfoResponse {
            image_filesystems: vec![fs("/var/lib/hearth/images", 1_500_000)],
            container_filesystems: vec![fs("/var/lib/hearth/containers", 10)],
        };
        let text = fs_table(&info);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            format!(
                "{:<20}{:<29}{:<20}-",
                "image", "/var/lib/hearth/images", "1.5MB"
            )
        );
        assert_eq!(
            lines[2],
            format!(
                "{:<20}{:<29}{:<20}-",
                "container", "/var/lib/hearth/containers", "10B"
            )
        );
    }
}
