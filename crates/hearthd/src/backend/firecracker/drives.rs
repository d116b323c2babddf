//! Drives after boot: pointing a slot at a file (`PATCH /drives/{id}`,
//! the file hard-linked or bind-mounted into the jail first) and back at
//! its placeholder.

use super::*;

impl FirecrackerBackend {
    pub(super) async fn attach(
        &self,
        handle: &mut BackendHandle,
        drive: &Drive,
    ) -> Result<DeviceLocator, BackendError> {
        let mut h = Handle::from(handle)?;
        let fail = |reason: String| BackendError::Drive {
            drive: drive.id.clone(),
            reason,
        };
        if let Some(i) = h
            .slots
            .iter()
            .position(|s| s.attached.as_ref().is_some_and(|(d, _)| *d == drive.id))
        {
            return Ok(DeviceLocator::Path(slot_letter(i)));
        }
        let i = if drive.id == "scratch" {
            h.slots.iter().position(|s| s.id == "scratch")
        } else {
            h.slots.iter().position(|s| {
                s.id != "scratch" && s.read_only == drive.read_only && s.attached.is_none()
            })
        };
        let Some(i) = i else {
            let (kind, knob) = match drive.read_only {
                true => ("read-only", "placeholders_ro"),
                false => ("read-write", "placeholders_rw"),
            };
            return Err(fail(format!(
                "no free {kind} drive slot: raise firecracker.{knob} (or the pod annotation {PLACEHOLDER_ANNOTATION})"
            )));
        };
        let slot_id = h.slots[i].id.clone();
        let api_path = if h.jailed() {
            let jail_path = PathBuf::from(format!("/{slot_id}.drive"));
            let (root, src, jp) = (h.root.clone(), drive.path.clone(), jail_path.clone());
            let (uid, gid, writable) = (h.uid, h.gid, !drive.read_only);
            tokio::task::spawn_blocking(move || {
                host::link_into(&root, &src, &jp, writable, uid, gid)
            })
            .await
            .map_err(blocking_err)?
            .map_err(|e| {
                fail(format!(
                    "linking {} into the jail: {e}",
                    drive.path.display()
                ))
            })?;
            jail_path.display().to_string()
        } else {
            drive.path.display().to_string()
        };
        let patch = PartialDrive {
            drive_id: slot_id.clone(),
            path_on_host: Some(api_path.clone()),
            rate_limiter: None,
        };
        if let Err(e) = h.client().patch_drive(&patch).await {
            if h.jailed() {
                let _ = host::unlink_or_unmount(&h.root.join(format!("{slot_id}.drive")));
            }
            return Err(fail(error_chain(&e)));
        }
        h.slots[i].attached = Some((drive.id.clone(), api_path));
        *handle = h.to_handle();
        Ok(DeviceLocator::Path(slot_letter(i)))
    }

    pub(super) async fn detach(
        &self,
        handle: &mut BackendHandle,
        drive_id: &str,
    ) -> Result<(), BackendError> {
        let mut h = Handle::from(handle)?;
        let Some(i) = h
            .slots
            .iter()
            .position(|s| s.attached.as_ref().is_some_and(|(d, _)| d == drive_id))
        else {
            return Ok(());
        };
        let slot = h.slots[i].clone();
        if h.alive() {
            let patch = PartialDrive {
                drive_id: slot.id.clone(),
                path_on_host: Some(slot.placeholder.clone()),
                rate_limiter: None,
            };
            h.client()
                .patch_drive(&patch)
                .await
                .map_err(|e| BackendError::Drive {
                    drive: drive_id.to_owned(),
                    reason: error_chain(&e),
                })?;
        }
        if h.jailed() {
            let p = h.root.join(format!("{}.drive", slot.id));
            host::unlink_or_unmount(&p).map_err(BackendError::io(&p))?;
        }
        h.slots[i].attached = None;
        *handle = h.to_handle();
        Ok(())
    }
}
