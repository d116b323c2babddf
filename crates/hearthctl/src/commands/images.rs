//! Image commands: pull, images, inspecti, rmi, imagefsinfo.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use k8s_cri::v1 as cri;
use serde::Serialize;

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

/// `images`: list images.
#[derive(Args, Debug)]
pub struct ListArgs {
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
    let mut client = cri.images();
    let call = call_with(
        "PullImage",
        timeout,
        client.pull_image(request_with(request, timeout)),
    );
    // PullImage is one unary call: show that it is alive on a terminal.
    let response = if std::io::stderr().is_terminal() {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tokio::pin!(call);
        let result = loop {
            tokio::select! {
                result = &mut call => break result,
                _ = tick.tick() => {
                    eprint!("\rPulling {} ... {}s", args.image, start.elapsed().as_secs());
                    let _ = std::io::stderr().flush();
                }
            }
        };
        eprint!("\r\x1b[2K");
        result?
    } else {
        call.await?
    };
    match output {
        Output::Table => write_out(&format!("Image is up to date for {}\n", response.image_ref))?,
        _ => print_structured(&response, output)?,
    }
    Ok(())
}

pub async fn list(cri: &Cri, args: ListArgs, output: Output) -> Result<()> {
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

pub async fn inspect(cri: &Cri, args: ImagesArgs, output: Output) -> Result<()> {
    for_each(args.images, |image| async move {
        let request = cri::ImageStatusRequest {
            image: spec(&image),
            verbose: true,
        };
        let response = cri
            .call(
                "ImageStatus",
                cri.images().image_status(cri.request(request)),
            )
            .await?;
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
