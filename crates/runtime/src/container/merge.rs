//! The process a container runs: the image config merged with the CRI
//! config as Kubernetes defines it. `command` replaces the entrypoint (and
//! then the image's cmd is dropped); `args` replace the cmd; env entries of
//! the CRI override the image's of the same name; `working_dir` defaults to
//! the image's, then `/`.

use super::{ContainerConfig, ImageInfo, UserSpec};
use crate::error::RuntimeError;

/// The merged process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// argv.
    pub args: Vec<String>,
    /// `KEY=value`.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// The user.
    pub user: UserSpec,
}

/// Merges; an empty result is an InvalidArgument naming the fields.
pub fn merge(config: &ContainerConfig, image: &ImageInfo) -> Result<Process, RuntimeError> {
    let args: Vec<String> = if !config.command.is_empty() {
        config.command.iter().chain(&config.args).cloned().collect()
    } else {
        let cmd = if config.args.is_empty() {
            &image.cmd
        } else {
            &config.args
        };
        image.entrypoint.iter().chain(cmd).cloned().collect()
    };
    if args.is_empty() || args[0].is_empty() {
        return Err(RuntimeError::InvalidArgument(format!(
            "container {:?}: no command: neither command/args nor the image's entrypoint/cmd give one",
            config.name
        )));
    }
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_owned();
        match env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            Some(e) => *e = kv,
            None => env.push(kv),
        }
    };
    for e in &image.env {
        if e.contains('=') {
            set(e.clone());
        }
    }
    for (k, v) in &config.envs {
        if k.is_empty() || k.contains('=') {
            return Err(RuntimeError::InvalidArgument(format!(
                "envs: {k:?} is not a valid variable name"
            )));
        }
        set(format!("{k}={v}"));
    }
    let cwd = [config.working_dir.as_str(), image.working_dir.as_str(), "/"]
        .into_iter()
        .find(|d| !d.is_empty())
        .unwrap_or("/")
        .to_owned();
    if !cwd.starts_with('/') {
        return Err(RuntimeError::InvalidArgument(format!(
            "working_dir {cwd:?} must be an absolute path"
        )));
    }
    let user = match &config.user {
        Some(u) => u.clone(),
        None => image_user(&image.user)?,
    };
    Ok(Process {
        args,
        env,
        cwd,
        user,
    })
}

/// The image's `User` (`user[:group]`, names or numbers).
fn image_user(user: &str) -> Result<UserSpec, RuntimeError> {
    let mut parts = user.splitn(2, ':');
    let u = parts.next().unwrap_or("");
    let g = parts.next().unwrap_or("");
    let mut spec = UserSpec::default();
    if !u.is_empty() {
        match u.parse::<u32>() {
            Ok(n) => spec.uid = Some(n),
            Err(_) => spec.username = u.to_owned(),
        }
    }
    if !g.is_empty() {
        spec.gid = Some(g.parse::<u32>().map_err(|_| {
            RuntimeError::Unimplemented(format!(
                "the image's user {user:?} names a group; group names are not resolved yet (use a gid)"
            ))
        })?);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageInfo {
        ImageInfo {
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo hi".into()],
            env: vec!["PATH=/bin".into(), "A=b".into()],
            working_dir: "/work".into(),
            user: "1000".into(),
            ..Default::default()
        }
    }

    #[test]
    fn image_defaults() {
        let p = merge(&ContainerConfig::default(), &image()).unwrap();
        assert_eq!(p.args, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(p.env, ["PATH=/bin", "A=b"]);
        assert_eq!(p.cwd, "/work");
        assert_eq!(p.user.uid, Some(1000));
    }

    #[test]
    fn command_overrides_entrypoint_and_drops_cmd() {
        let c = ContainerConfig {
            command: vec!["/bin/echo".into()],
            ..Default::default()
        };
        assert_eq!(merge(&c, &image()).unwrap().args, ["/bin/echo"]);
        let c = ContainerConfig {
            command: vec!["/bin/echo".into()],
            args: vec!["x".into()],
            ..Default::default()
        };
        assert_eq!(merge(&c, &image()).unwrap().args, ["/bin/echo", "x"]);
    }

    #[test]
    fn args_override_cmd() {
        let c = ContainerConfig {
            args: vec!["echo bye".into()],
            ..Default::default()
        };
        assert_eq!(
            merge(&c, &image()).unwrap().args,
            ["/bin/sh", "-c", "echo bye"]
        );
    }

    #[test]
    fn env_and_workdir_and_user() {
        let c = ContainerConfig {
            envs: vec![("A".into(), "c".into()), ("B".into(), "d=e".into())],
            working_dir: "/tmp".into(),
            user: Some(UserSpec {
                uid: Some(0),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = merge(&c, &image()).unwrap();
        assert_eq!(p.env, ["PATH=/bin", "A=c", "B=d=e"]);
        assert_eq!(p.cwd, "/tmp");
        assert_eq!(p.user.uid, Some(0));
        let bad = ContainerConfig {
            envs: vec![("A=B".into(), "x".into())],
            ..Default::default()
        };
        assert!(matches!(
            merge(&bad, &image()),
            Err(RuntimeError::InvalidArgument(_))
        ));
    }

    #[test]
    fn nothing_to_run() {
        let img = ImageInfo::default();
        let e = merge(&ContainerConfig::default(), &img).unwrap_err();
        assert!(e.to_string().contains("no command"), "{e}");
        assert_eq!(image_user("app:5").unwrap().username, "app");
        assert!(image_user("app:grp").is_err());
    }
}
