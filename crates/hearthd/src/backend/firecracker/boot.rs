//! Booting one VM: placeholder files, the spawn (jailer or direct), the
//! API configuration up to InstanceStart, and the undo of all of it when
//! a step fails.

use super::*;

impl FirecrackerBackend {
    /// Spawns Firecracker (jailed or direct) with the files it needs.
    async fn spawn(
        &self,
        spec: &BootSpec,
        r: &Resolved,
        uid: u32,
        slots: &[Slot],
        placeholders: &Path,
    ) -> Result<VmmProcess, FirecrackerError> {
        let vm_id = spec.id.short().to_owned();
        let Some(jailer) = &r.jailer else {
            let mut s = VmmSpawn::new(&r.firecracker, vm_id, spec.run_dir.join("firecracker.sock"));
            if !self.cfg.seccomp_filter.as_os_str().is_empty() {
                s = s.seccomp_filter(&self.cfg.seccomp_filter);
            }
            if let Some(ns) = &spec.netns {
                s = s.netns(ns);
            }
            return s.spawn().await;
        };
        let mut s = JailerSpawn::new(
            jailer,
            &r.firecracker,
            vm_id,
            uid,
            uid,
            &self.chroot_base,
            &self.cfg.seccomp_filter,
        )
        .file(&self.kernel, "/vmlinux", false)
        .file(&self.initramfs, "/initramfs.cpio", false);
        for slot in slots {
            s = s.file(
                placeholders.join(format!("{}.img", slot.id)),
                &slot.placeholder,
                !slot.read_only,
            );
        }
        if let (Some(scratch), Some((_, jail_path))) = (&spec.scratch, &slots[0].attached) {
            s = s.file(scratch, jail_path, true);
        }
        if let Some(ns) = &spec.netns {
            s = s.netns(ns);
        }
        let parent = spec.cgroup.parent.trim_matches('/');
        if !parent.is_empty() {
            let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
            s = s.cgroup(if v2 { 2 } else { 1 }, Some(parent.to_owned()));
            if !v2 {
                // On v1 the jailer only places the VMM when given a property.
                let shares = 1024 * u64::from(spec.size.vcpus.max(1));
                s = s.cgroup_property("cpu.shares", shares.to_string());
            }
        }
        s.spawn().await
    }

    /// Everything after the spawn up to InstanceStart.
    async fn configure(
        &self,
        vm: &mut VmmProcess,
        spec: &BootSpec,
        h: &Handle,
        timing: &mut Timing,
    ) -> Result<(), (&'static str, FirecrackerError)> {
        let deadline = Duration::from_millis(self.cfg.boot_timeout_ms);
        let t = Instant::now();
        vm.wait_ready(deadline).await.map_err(|e| ("api", e))?;
        timing.ready = t.elapsed();
        let t = Instant::now();
        let c = vm.client();
        let log = vm.fifo("log.fifo", FifoKind::Log).map_err(|e| ("log", e))?;
        let metrics = vm
            .fifo("metrics.fifo", FifoKind::Metrics)
            .map_err(|e| ("metrics", e))?;
        c.put_logger(&Logger {
            log_path: Some(log.display().to_string()),
            level: Some(LogLevel::Warning),
            ..Default::default()
        })
        .await
        .map_err(|e| ("logger", e))?;
        c.put_metrics(&Metrics {
            metrics_path: metrics.display().to_string(),
        })
        .await
        .map_err(|e| ("metrics", e))?;
        c.put_machine_config(&MachineConfig {
            vcpu_count: u8::try_from(spec.size.vcpus).unwrap_or(u8::MAX),
            mem_size_mib: spec.size.memory_mib,
            ..Default::default()
        })
        .await
        .map_err(|e| ("machine config", e))?;
        let api = |p: &Path| p.display().to_string();
        let (kernel, initrd) = match h.jailed() {
            true => (PathBuf::from("/vmlinux"), PathBuf::from("/initramfs.cpio")),
            false => (self.kernel.clone(), self.initramfs.clone()),
        };
        let mut cmdline = BASE_CMDLINE.to_owned();
        if !self.cfg.kernel_cmdline_extra.trim().is_empty() {
            cmdline.push(' ');
            cmdline.push_str(self.cfg.kernel_cmdline_extra.trim());
        }
        c.put_boot_source(&BootSource {
            kernel_image_path: api(&kernel),
            boot_args: Some(cmdline),
            initrd_path: Some(api(&initrd)),
        })
        .await
        .map_err(|e| ("boot source", e))?;
        for slot in &h.slots {
            c.put_drive(&FcDrive {
                drive_id: slot.id.clone(),
                is_root_device: false,
                is_read_only: Some(slot.read_only),
                path_on_host: Some(
                    slot.attached
                        .as_ref()
                        .map_or(&slot.placeholder, |(_, path)| path)
                        .clone(),
                ),
                ..Default::default()
            })
            .await
            .map_err(|e| ("drives", e))?;
        }
        let uds_path = match h.jailed() {
            true => "/run/vsock.sock".to_owned(),
            false => {
                vm.remove_on_kill(&h.vsock);
                h.vsock.display().to_string()
            }
        };
        c.put_vsock(&Vsock {
            guest_cid: 3,
            uds_path,
            vsock_id: None,
        })
        .await
        .map_err(|e| ("vsock", e))?;
        c.put_entropy(&EntropyDevice::default())
            .await
            .map_err(|e| ("entropy", e))?;
        if let Some(nic) = &h.nic {
            c.put_network_interface(&NetworkInterface {
                iface_id: "eth0".to_owned(),
                host_dev_name: nic.tap.tap_name.clone(),
                guest_mac: Some(nic.mac.clone()),
                ..Default::default()
            })
            .await
            .map_err(|e| ("network interface", e))?;
        }
        timing.config = t.elapsed();
        let t = Instant::now();
        c.instance_start()
            .await
            .map_err(|e| ("instance start", e))?;
        timing.start = t.elapsed();
        Ok(())
    }
    pub(super) async fn boot_inner(&self, spec: &BootSpec) -> Result<BackendHandle, BackendError> {
        let t0 = Instant::now();
        let r = self
            .check_reason()
            .map_err(|reason| BackendError::Unavailable {
                backend: KIND,
                reason,
            })?;
        let vm_id = spec.id.short().to_owned();
        let jailed = r.jailer.is_some();
        let placeholders = spec.run_dir.join("placeholders");
        let defaults = (self.cfg.placeholders_ro, self.cfg.placeholders_rw);
        let (ro, rw) = placeholder_pools(&spec.annotations, defaults).map_err(|reason| {
            BackendError::Refused {
                what: "the pod's annotations".into(),
                reason,
            }
        })?;
        let mut slots = vec![("scratch".to_owned(), false)];
        slots.extend((0..rw).map(|i| (format!("ph_rw_{i}"), false)));
        slots.extend((0..ro).map(|i| (format!("ph_ro_{i}"), true)));
        let slots: Vec<Slot> = slots
            .into_iter()
            .map(|(id, read_only)| Slot {
                placeholder: match jailed {
                    true => format!("/{id}.img"),
                    false => placeholders.join(format!("{id}.img")).display().to_string(),
                },
                id,
                read_only,
                attached: None,
            })
            .collect();
        // The pod's scratch disk goes in its slot at boot: PATCH is refused
        // before InstanceStart, and a PATCH after boot would race the
        // agent's mount against the guest noticing the new size.
        let mut slots = slots;
        if let Some(scratch) = &spec.scratch {
            let api_path = match jailed {
                true => "/scratch.drive".to_owned(),
                false => scratch.display().to_string(),
            };
            slots[0].attached = Some(("scratch".to_owned(), api_path));
        }
        let files: Vec<PathBuf> = slots
            .iter()
            .map(|s| placeholders.join(format!("{}.img", s.id)))
            .collect();
        let dir = placeholders.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(BackendError::io(&dir))?;
            for f in &files {
                let file = std::fs::File::create(f).map_err(BackendError::io(f))?;
                file.set_len(PLACEHOLDER_BYTES)
                    .map_err(BackendError::io(f))?;
            }
            Ok::<_, BackendError>(())
        })
        .await
        .map_err(blocking_err)??;

        let uid = match jailed {
            true => self.reserve_uid()?,
            false => {
                // SAFETY: geteuid has no preconditions.
                unsafe { libc::geteuid() }
            }
        };
        // The tap, owned by the VM's uid: the jailed Firecracker opens it
        // by name in the pod's netns without CAP_NET_ADMIN.
        let nic = match &spec.netns {
            Some(netns) => {
                let owner = TapOwner {
                    uid,
                    gid: Some(uid),
                };
                match GuestNic::create(&spec.id, netns, Some(owner)).await {
                    Ok(nic) => nic,
                    Err(e) => {
                        self.release_uid(uid);
                        let _ = std::fs::remove_dir_all(&placeholders);
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let remove_nic = |nic: Option<GuestNic>| async move {
            if let Some(nic) = nic {
                if let Err(e) = nic.remove().await {
                    tracing::warn!(error = %e, "removing the tap of a failed boot");
                }
            }
        };
        let mut timing = Timing {
            prep: t0.elapsed(),
            ..Timing::default()
        };
        let t = Instant::now();
        let mut vm = match self.spawn(spec, &r, uid, &slots, &placeholders).await {
            Ok(vm) => vm,
            Err(e) => {
                remove_nic(nic).await;
                self.release_uid(uid);
                let _ = std::fs::remove_dir_all(&placeholders);
                return Err(boot_error(&vm_id, "spawn", &e));
            }
        };
        timing.spawn = t.elapsed();
        let pid = vm.pid().unwrap_or(0);
        let started = process::start_time(pid).unwrap_or(0);
        let root = vm
            .jail_root()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| "/".into());
        let cgroup_parent = spec.cgroup.parent.trim_matches('/');
        let h = Handle {
            vm_id: vm_id.clone(),
            pid,
            started,
            uid,
            gid: uid,
            instance_dir: vm.jail_root().and_then(Path::parent).map(Path::to_path_buf),
            api_socket: vm.socket_path().to_path_buf(),
            vsock: match jailed {
                true => root.join("run/vsock.sock"),
                false => spec.run_dir.join("vsock.sock"),
            },
            root,
            cgroup: (jailed && !cgroup_parent.is_empty())
                .then(|| (cgroup_parent.to_owned(), vm_id.clone())),
            placeholders: placeholders.clone(),
            slots,
            nic,
        };
        if let Err((step, e)) = self.configure(&mut vm, spec, &h, &mut timing).await {
            let exited = matches!(vm.try_exit(), Ok(Some(_)));
            let output = vm.last_output();
            let _ = vm.kill().await;
            let h2 = h.clone();
            let _ = tokio::task::spawn_blocking(move || {
                if let Some(d) = &h2.instance_dir {
                    let _ = host::remove_tree(d);
                }
                if let Some((p, id)) = &h2.cgroup {
                    host::remove_vm_cgroups(p, id);
                }
                let _ = host::remove_tree(&h2.placeholders);
            })
            .await;
            remove_nic(h.nic.clone()).await;
            self.release_uid(uid);
            let mut err = boot_error(&vm_id, step, &e);
            if let BackendError::Spawn { source, .. } = &mut err {
                if exited && !matches!(e, FirecrackerError::Exited(_)) {
                    *source = std::io::Error::new(
                        source.kind(),
                        format!("{source}; firecracker said: {output}"),
                    );
                }
            }
            return Err(err);
        }
        tracing::info!(
            pid,
            uid,
            jailed,
            prep_us = timing.prep.as_micros() as u64,
            spawn_us = timing.spawn.as_micros() as u64,
            ready_us = timing.ready.as_micros() as u64,
            config_us = timing.config.as_micros() as u64,
            start_us = timing.start.as_micros() as u64,
            total_us = t0.elapsed().as_micros() as u64,
            "firecracker vm started"
        );
        self.vms.lock().expect("vms lock").insert(vm_id, vm);
        Ok(h.to_handle())
    }
}

/// Where a boot's time went (logged with "firecracker vm started").
#[derive(Debug, Default)]
pub(super) struct Timing {
    /// Host work before the spawn: check, placeholder files, uid.
    prep: Duration,
    /// The spawn: jail links, fork/exec of the jailer, its chroot set-up.
    spawn: Duration,
    /// Until the API answers `GET /`.
    ready: Duration,
    /// FIFOs and the API calls before InstanceStart.
    config: Duration,
    /// InstanceStart (Firecracker loads the kernel and initramfs).
    start: Duration,
}

fn boot_error(vm_id: &str, step: &str, e: &FirecrackerError) -> BackendError {
    let what = format!("firecracker vm {vm_id} ({step})");
    if e.is_bad_request() {
        // Firecracker's 400: the pod's configuration, not the host.
        return BackendError::Refused {
            what,
            reason: error_chain(e),
        };
    }
    BackendError::Spawn {
        what,
        source: std::io::Error::other(error_chain(e)),
    }
}
