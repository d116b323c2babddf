//! RunPodSandbox's steps after the record exists: cgroups, the network
//! and the scratch disk (side by side), the boot, the agent, the guest's
//! NIC, the scratch mount and the pod-wide settings.

use super::*;

impl SandboxManager {
    /// The steps of RunPodSandbox after its record exists; each done step
    /// is persisted before the next, so `release()` can undo them.
    pub(super) async fn run_steps(
        &self,
        entry: &Entry,
        record: &mut SandboxRecord,
        backend: &dyn SandboxBackend,
    ) -> Result<AgentClient, RuntimeError> {
        let run_dir = self.run_dir(&record.id);
        record.scratch = Some(self.store.sandbox_dir(&record.id).join("scratch.img"));
        self.persist(entry, record)?;

        let parent = if record.config.cgroup_parent.is_empty() {
            format!("{}/{}", self.cfg.default_cgroup_parent, record.id.short())
        } else {
            record.config.cgroup_parent.clone()
        };
        let cgroup = match &self.cgroups {
            Some(fs) => {
                let (spec, mut created) = fs.prepare(&parent)?;
                // Directories an earlier, still live sandbox created that
                // this one lives in too (a new attempt of the same pod):
                // whichever sandbox goes last removes them.
                for other in self.list_records() {
                    for d in other.cgroups_created {
                        let used = spec.procs_files.iter().any(|f| f.starts_with(&d));
                        if used && !created.contains(&d) {
                            created.push(d);
                        }
                    }
                }
                record.cgroups_created = created;
                self.persist(entry, record)?;
                spec
            }
            None => Default::default(),
        };
        // The scratch disk is copied while the network is set up: neither
        // needs the other, and both are on the path to the boot.
        let scratch = record.scratch.clone().expect("set above");
        let template = self.scratch.clone();
        let dir = run_dir.clone();
        let scratch_copy = blocking(move || {
            std::fs::create_dir_all(&dir).map_err(crate::backend::BackendError::io(&dir))?;
            template.instantiate(&scratch)?;
            Ok::<_, RuntimeError>(())
        });
        let network = async {
            if !record.config.host_network() {
                let netns = self.network.create_netns(&record.id).await?;
                record.netns = Some(netns.clone());
                self.persist(entry, record)?;
                let state = self
                    .network
                    .setup(&record.id, &record.config, &netns)
                    .await?;
                tracing::info!(ips = ?state.ips, "pod network attached");
                record.network = Some(state);
                self.persist(entry, record)?;
            }
            Ok::<_, RuntimeError>(())
        };
        // Both finish before either error is returned: release() then
        // finds no copy still running.
        let (network, scratch_copy) = tokio::join!(network, scratch_copy);
        network?;
        scratch_copy?;

        let spec = BootSpec {
            id: record.id.clone(),
            size: record.size.clone(),
            netns: record.netns.clone(),
            cgroup,
            run_dir,
            scratch: record.scratch.clone(),
            annotations: record.config.annotations.clone(),
        };
        let handle = backend.boot(&spec).await?;
        record.backend_handle = Some(handle);
        self.persist(entry, record)?;

        let handle = record.backend_handle.as_mut().expect("set above");
        let agent = backend.connect_agent(handle, self.cfg.boot_timeout).await?;
        // The guest's NIC (VM backends): before anything in the guest runs.
        backend.configure_guest(handle, &agent).await?;
        let locator = backend
            .attach_drive(
                handle,
                &Drive {
                    id: "scratch".to_owned(),
                    path: record.scratch.clone().expect("set above"),
                    read_only: false,
                },
            )
            .await?;
        self.persist(entry, record)?;
        agent
            .mount_drive(proto::MountDriveRequest {
                device: Some(locator_to_proto(&locator)),
                mountpoint: SCRATCH_MOUNTPOINT.to_owned(),
                fstype: "ext4".to_owned(),
                read_only: false,
                options: String::new(),
            })
            .await
            .map_err(crate::backend::BackendError::from)?;
        let resolv_conf = match &record.config.dns {
            Some(dns) => dns.resolv_conf().into_bytes(),
            None => std::fs::read(&self.cfg.host_resolv_conf).unwrap_or_default(),
        };
        agent
            .setup_sandbox(proto::SetupSandboxRequest {
                hostname: record.config.hostname.clone(),
                hosts: DEFAULT_HOSTS.as_bytes().to_vec(),
                resolv_conf,
                sysctls: record.config.sysctls.clone().into_iter().collect(),
            })
            .await
            .map_err(crate::backend::BackendError::from)?;
        record.state = record.state.transition(SandboxState::Ready)?;
        self.persist(entry, record)?;
        tracing::info!("sandbox ready");
        Ok(agent)
    }
}
