//! The pod's image drives: attached and mounted once per image per pod,
//! unmounted and detached when the pod's last container of that image goes.

use hearth_agent_proto::v1 as proto;

use super::{agent_err, ContainerManager, IMAGE_MOUNT_DIR};
use crate::agent::AgentClient;
use crate::backend::Drive;
use crate::container::ContainerRecord;
use crate::error::RuntimeError;
use crate::manager::locator_proto;

fn image_key(image_id: &str) -> String {
    let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
    hex.chars().take(12).collect()
}

pub(super) fn image_mountpoint(image_id: &str) -> String {
    format!("{IMAGE_MOUNT_DIR}/{}", image_key(image_id))
}

pub(super) fn image_drive(image_id: &str) -> String {
    format!("image-{}", image_key(image_id))
}

impl ContainerManager {
    /// Attaches and mounts the record's image in its pod's guest unless it
    /// is there already.
    pub(super) async fn attach_image(
        &self,
        agent: &AgentClient,
        record: &ContainerRecord,
    ) -> Result<(), RuntimeError> {
        let images = self.pod_images(&record.sandbox_id);
        let mut mounted = images.lock().await;
        if !mounted.contains(&record.image.id) {
            let locator = self
                .sandboxes
                .attach_drive(
                    &record.sandbox_id,
                    &Drive {
                        id: image_drive(&record.image.id),
                        path: record.image.erofs_path.clone(),
                        read_only: true,
                    },
                )
                .await?;
            let mount = agent
                .mount_drive(proto::MountDriveRequest {
                    device: Some(locator_proto(&locator)),
                    mountpoint: image_mountpoint(&record.image.id),
                    fstype: "erofs".into(),
                    read_only: true,
                    options: String::new(),
                })
                .await;
            match mount {
                Ok(_) => {}
                Err(e) if e.status().map(|s| s.code()) == Some(tonic::Code::AlreadyExists) => {}
                Err(e) => {
                    let drive = image_drive(&record.image.id);
                    if let Err(undo) = self
                        .sandboxes
                        .detach_drive(&record.sandbox_id, &drive)
                        .await
                    {
                        tracing::warn!(error = %undo, "image drive not detached");
                    }
                    return Err(agent_err(e));
                }
            }
            mounted.insert(record.image.id.clone());
        }
        Ok(())
    }

    pub(super) fn image_used_by_others(&self, record: &ContainerRecord) -> bool {
        self.list().iter().any(|r| {
            r.id != record.id && r.sandbox_id == record.sandbox_id && r.image.id == record.image.id
        })
    }

    /// Unmounts and detaches the record's image unless another container of
    /// the pod uses it. Nothing to do when the pod is not ready (its drives
    /// go with it).
    pub(super) async fn release_image(&self, record: &ContainerRecord) -> Result<(), RuntimeError> {
        let images = self.pod_images(&record.sandbox_id);
        let mut mounted = images.lock().await;
        if !mounted.contains(&record.image.id) || self.image_used_by_others(record) {
            return Ok(());
        }
        let Ok(agent) = self.sandboxes.agent(&record.sandbox_id).await else {
            // The pod is not running: its drives go with it.
            mounted.remove(&record.image.id);
            return Ok(());
        };
        match agent
            .unmount_drive(proto::UnmountDriveRequest {
                mountpoint: image_mountpoint(&record.image.id),
            })
            .await
        {
            Ok(_) => {}
            Err(e) if e.status().map(|s| s.code()) == Some(tonic::Code::NotFound) => {}
            Err(e) => return Err(agent_err(e)),
        }
        mounted.remove(&record.image.id);
        self.sandboxes
            .detach_drive(&record.sandbox_id, &image_drive(&record.image.id))
            .await
    }
}
