//! Seccomp filters for containers: the runtime's default allow-list or a
//! profile in the OCI / Docker JSON format, compiled to classic BPF in the
//! helper and loaded just before the exec.
//!
//! Layout: [`syscalls`] (x86_64 name → number), [`default`] (the
//! `RuntimeDefault` rules), [`bpf`] (rules → BPF program); this file reads
//! JSON profiles and loads filters.
//!
//! JSON profiles: `defaultAction`, `defaultErrnoRet`, `architectures`,
//! `flags`, `syscalls[{names, action, errnoRet, args[{index, value,
//! valueTwo, op}], includes, excludes}]`. Rules apply to x86_64 only; calls
//! of any other architecture (i386 through `int 0x80`, x32) kill the process
//! whatever the profile lists (libseccomp's "bad arch" action). Names this
//! architecture lacks are skipped, as libseccomp-based runtimes do; unknown
//! actions, operators and flags are errors. Several conditions on the same
//! argument in one entry are OR'ed (each its own rule, as runc does), other
//! conditions AND'ed. Rules of one syscall are tried in profile order.
//! Docker's `includes` / `excludes` are evaluated for `caps` (against the
//! container's bounding set) and `arches` (`amd64`); `minKernel` is taken as
//! satisfied. `SCMP_ACT_NOTIFY` (a listener) is not supported.

mod bpf;
mod default;
mod syscalls;

use serde::{Deserialize, Serialize};

use bpf::{Cond, Insn, Op, Rule, Ruleset};

/// The filter a container asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompSpec {
    /// The runtime's default allow-list.
    RuntimeDefault,
    /// A profile in the OCI / Docker JSON format.
    Json(String),
}

/// A compiled filter.
#[derive(Debug, Clone)]
pub struct Filter {
    prog: Vec<Insn>,
    flags: libc::c_ulong,
}

impl Filter {
    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.prog.len()
    }

    /// Never true (a filter has at least its architecture check).
    pub fn is_empty(&self) -> bool {
        self.prog.is_empty()
    }
}

/// Compiles `spec` for a container with the default capability set (also
/// called at CreateContainer to refuse a bad profile early).
pub fn compile(spec: &SeccompSpec) -> Result<Filter, String> {
    let caps = super::helper::capability_set(&[], &[])?;
    compile_for(spec, &caps)
}

/// Compiles `spec` for a container whose capability bounding set is `caps`
/// (the default profile and Docker's `includes.caps` depend on it).
pub fn compile_for(spec: &SeccompSpec, caps: &[u32]) -> Result<Filter, String> {
    let (rules, flags) = match spec {
        SeccompSpec::RuntimeDefault => (default::ruleset(caps), 0),
        SeccompSpec::Json(text) => from_json(text, caps)?,
    };
    Ok(Filter {
        prog: bpf::compile(&rules)?,
        flags,
    })
}

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_MODE_FILTER: libc::c_ulong = 2;
const FLAGS: &[(&str, libc::c_ulong)] = &[
    ("SECCOMP_FILTER_FLAG_TSYNC", 1),
    ("SECCOMP_FILTER_FLAG_LOG", 2),
    ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", 4),
];

/// Loads `filter` into the calling thread (it needs no_new_privs or
/// CAP_SYS_ADMIN). Allocates nothing: safe after a fork.
pub fn install(filter: &Filter) -> Result<(), String> {
    let prog = libc::sock_fprog {
        len: filter.prog.len() as libc::c_ushort,
        // `Insn` is `#[repr(C)]` with the fields of `struct sock_filter`.
        filter: filter.prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `len` valid instructions that outlive the
    // call; the kernel copies them.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            filter.flags,
            &prog as *const libc::sock_fprog,
        )
    };
    let err = std::io::Error::last_os_error();
    match r {
        0 => Ok(()),
        r if r > 0 => Err(format!(
            "cannot load the seccomp filter: thread {r} cannot be synchronized"
        )),
        _ if err.raw_os_error() == Some(libc::ENOSYS) && filter.flags == 0 => {
            // SAFETY: as above.
            let r = unsafe {
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                )
            };
            if r == 0 {
                Ok(())
            } else {
                Err(format!(
                    "cannot load the seccomp filter: {}",
                    std::io::Error::last_os_error()
                ))
            }
        }
        _ => Err(format!("cannot load the seccomp filter: {err}")),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: String,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<String>>,
    flags: Option<Vec<String>>,
    listener_path: Option<String>,
    syscalls: Option<Vec<Syscall>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    names: Option<Vec<String>>,
    /// Docker's older single-name form.
    name: Option<String>,
    action: String,
    errno_ret: Option<u32>,
    args: Option<Vec<Arg>>,
    includes: Option<Condition>,
    excludes: Option<Condition>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: u64,
    op: String,
}

/// Docker's conditional blocks.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Condition {
    caps: Option<Vec<String>>,
    arches: Option<Vec<String>>,
}

fn action(name: &str, errno: Option<u32>, what: &str) -> Result<u32, String> {
    let data = match errno {
        None => None,
        Some(e) if e <= 0xffff => Some(e),
        Some(e) => return Err(format!("{what}: errno {e} is out of range")),
    };
    Ok(match name {
        "SCMP_ACT_ALLOW" => bpf::RET_ALLOW,
        "SCMP_ACT_ERRNO" => bpf::RET_ERRNO | data.unwrap_or(libc::EPERM as u32),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => bpf::RET_KILL_THREAD,
        "SCMP_ACT_KILL_PROCESS" => bpf::RET_KILL_PROCESS,
        "SCMP_ACT_TRAP" => bpf::RET_TRAP,
        "SCMP_ACT_TRACE" => bpf::RET_TRACE | data.unwrap_or(0),
        "SCMP_ACT_LOG" => bpf::RET_LOG,
        "SCMP_ACT_NOTIFY" => {
            return Err(format!(
                "{what}: SCMP_ACT_NOTIFY is not supported (no seccomp agent)"
            ))
        }
        other => return Err(format!("{what}: unknown action {other:?}")),
    })
}

fn op(name: &str, what: &str) -> Result<Op, String> {
    Ok(match name {
        "SCMP_CMP_EQ" => Op::Eq,
        "SCMP_CMP_NE" => Op::Ne,
        "SCMP_CMP_LT" => Op::Lt,
        "SCMP_CMP_LE" => Op::Le,
        "SCMP_CMP_GT" => Op::Gt,
        "SCMP_CMP_GE" => Op::Ge,
        "SCMP_CMP_MASKED_EQ" => Op::MaskedEq,
        other => return Err(format!("{what}: unknown operator {other:?}")),
    })
}

/// Whether Docker's `includes` (`want == true`) / `excludes` block keeps
/// the entry.
fn condition_keeps(c: &Option<Condition>, caps: &[u32], want: bool) -> bool {
    let Some(c) = c else {
        return true;
    };
    let has_cap =
        |name: &String| matches!(super::helper::cap_number(name), Ok(Some(n)) if caps.contains(&n));
    let native = |a: &String| a == "amd64" || a == "x86_64" || a == "SCMP_ARCH_X86_64";
    let list = |v: &Option<Vec<String>>| v.as_deref().unwrap_or_default().to_vec();
    let (c_caps, c_arches) = (list(&c.caps), list(&c.arches));
    if want {
        c_caps.iter().all(has_cap) && (c_arches.is_empty() || c_arches.iter().any(native))
    } else {
        !c_caps.iter().any(has_cap) && !c_arches.iter().any(native)
    }
}

fn from_json(text: &str, caps: &[u32]) -> Result<(Ruleset, libc::c_ulong), String> {
    let p: Profile =
        serde_json::from_str(text).map_err(|e| format!("malformed seccomp profile: {e}"))?;
    if p.listener_path.as_deref().is_some_and(|l| !l.is_empty()) {
        return Err("seccomp listenerPath is not supported (no seccomp agent)".into());
    }
    let mut flags = 0;
    for f in p.flags.unwrap_or_default() {
        flags |= FLAGS
            .iter()
            .find(|(n, _)| *n == f)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("unknown seccomp flag {f:?}"))?;
    }
    if let Some(a) = p
        .architectures
        .unwrap_or_default()
        .iter()
        .find(|a| !a.starts_with("SCMP_ARCH_"))
    {
        return Err(format!("unknown architecture {a:?}"));
    }
    let mut rules = Ruleset {
        default: action(&p.default_action, p.default_errno_ret, "defaultAction")?,
        ..Default::default()
    };
    for (i, s) in p.syscalls.unwrap_or_default().into_iter().enumerate() {
        let what = format!("syscalls[{i}]");
        let act = action(&s.action, s.errno_ret, &what)?;
        let mut conds = Vec::new();
        for (j, a) in s.args.unwrap_or_default().iter().enumerate() {
            let what = format!("{what}.args[{j}]");
            let arg = u8::try_from(a.index)
                .ok()
                .filter(|i| *i < 6)
                .ok_or_else(|| format!("{what}: index {} is not 0–5", a.index))?;
            conds.push(Cond {
                arg,
                op: op(&a.op, &what)?,
                value: a.value,
                value_two: a.value_two,
            });
        }
        let names: Vec<String> = s
            .names
            .unwrap_or_default()
            .into_iter()
            .chain(s.name)
            .collect();
        if names.is_empty() {
            return Err(format!("{what}: no syscall names"));
        }
        if !condition_keeps(&s.includes, caps, true) || !condition_keeps(&s.excludes, caps, false) {
            continue;
        }
        // Conditions on one argument twice: each is a rule of its own (OR).
        let repeated = (0..6).any(|i| conds.iter().filter(|c| c.arg == i).count() > 1);
        let alternatives: Vec<Vec<Cond>> = if repeated {
            conds.iter().map(|c| vec![*c]).collect()
        } else {
            vec![conds]
        };
        for name in &names {
            let Some(nr) = syscalls::number(name) else {
                continue;
            };
            for conds in &alternatives {
                rules.add(
                    nr,
                    Rule {
                        conds: conds.clone(),
                        action: act,
                    },
                );
            }
        }
    }
    Ok((rules, flags))
}

#[cfg(test)]
mod tests {
    use super::bpf::{run, AUDIT_ARCH_X86_64, RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS};
    use super::*;

    const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;

    fn call(f: &Filter, name: &str, args: [u64; 6]) -> u32 {
        run(
            &f.prog,
            AUDIT_ARCH_X86_64,
            syscalls::number(name).unwrap(),
            args,
        )
    }

    fn a0(v: u64) -> [u64; 6] {
        [v, 0, 0, 0, 0, 0]
    }

    #[test]
    fn runtime_default_allows_the_usual_and_blocks_the_rest() {
        let f = compile(&SeccompSpec::RuntimeDefault).unwrap();
        assert!(f.len() < bpf::MAX_INSNS, "{}", f.len());
        for ok in [
            "read",
            "write",
            "openat",
            "execve",
            "mmap",
            "exit_group",
            "chroot",
        ] {
            assert_eq!(call(&f, ok, [0; 6]), RET_ALLOW, "{ok}");
        }
        for no in [
            "unshare",
            "mount",
            "setns",
            "reboot",
            "init_module",
            "bpf",
            "kexec_load",
        ] {
            assert_eq!(call(&f, no, [0; 6]), EPERM, "{no}");
        }
        let sigchld = libc::SIGCHLD as u64;
        let newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(call(&f, "clone", a0(sigchld)), RET_ALLOW);
        assert_eq!(call(&f, "clone", a0(sigchld | newuser)), EPERM);
        assert_eq!(call(&f, "clone3", [0; 6]), RET_ERRNO | libc::ENOSYS as u32);
        assert_eq!(call(&f, "personality", a0(0)), RET_ALLOW);
        assert_eq!(call(&f, "personality", a0(0xffff_ffff)), RET_ALLOW);
        // ADDR_NO_RANDOMIZE
        assert_eq!(call(&f, "personality", a0(0x0040000)), EPERM);
        assert_eq!(call(&f, "socket", a0(libc::AF_INET as u64)), RET_ALLOW);
        assert_eq!(call(&f, "socket", a0(libc::AF_VSOCK as u64)), EPERM);
        // The kernel reads the family as an int: high bits do not hide it.
        assert_eq!(
            call(&f, "socket", a0((1u64 << 32) | libc::AF_VSOCK as u64)),
            EPERM
        );
        // i386 through int 0x80, x32.
        assert_eq!(run(&f.prog, 0x4000_0003, 0, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(
            run(&f.prog, AUDIT_ARCH_X86_64, 0x4000_0000, [0; 6]),
            RET_KILL_PROCESS
        );
        // A number beyond the table.
        assert_eq!(run(&f.prog, AUDIT_ARCH_X86_64, 999, [0; 6]), EPERM);
    }

    #[test]
    fn runtime_default_follows_cap_sys_admin_and_cap_sys_chroot() {
        let f = compile_for(&SeccompSpec::RuntimeDefault, &[default::CAP_SYS_ADMIN]).unwrap();
        assert_eq!(call(&f, "unshare", [0; 6]), RET_ALLOW);
        assert_eq!(call(&f, "mount", [0; 6]), RET_ALLOW);
        assert_eq!(call(&f, "clone", a0(libc::CLONE_NEWUSER as u64)), RET_ALLOW);
        assert_eq!(call(&f, "clone3", [0; 6]), RET_ALLOW);
        assert_eq!(call(&f, "chroot", [0; 6]), EPERM);
    }

    fn json(v: serde_json::Value) -> Result<Filter, String> {
        compile(&SeccompSpec::Json(v.to_string()))
    }

    #[test]
    fn json_profiles_compile_as_written() {
        let f = json(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                { "names": ["mkdir", "mkdirat", "no_such_call", "chown32"],
                  "action": "SCMP_ACT_ERRNO" },
                { "names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                  "args": [{ "index": 1, "value": 9, "op": "SCMP_CMP_EQ" }] },
                { "name": "getpid", "action": "SCMP_ACT_KILL_PROCESS", "args": null },
                // Two conditions on arg 0: OR.
                { "names": ["dup"], "action": "SCMP_ACT_TRAP",
                  "args": [{ "index": 0, "value": 3, "op": "SCMP_CMP_EQ" },
                           { "index": 0, "value": 100, "op": "SCMP_CMP_GE" }] },
                // Different arguments: AND.
                { "names": ["dup2"], "action": "SCMP_ACT_LOG",
                  "args": [{ "index": 0, "value": 1, "op": "SCMP_CMP_EQ" },
                           { "index": 1, "value": 0xff, "valueTwo": 2,
                             "op": "SCMP_CMP_MASKED_EQ" }] },
                { "names": ["unshare"], "action": "SCMP_ACT_ERRNO",
                  "includes": { "caps": ["CAP_SYS_ADMIN"] } },
                { "names": ["setns"], "action": "SCMP_ACT_ERRNO",
                  "excludes": { "caps": ["CAP_SYS_ADMIN"] } },
                { "names": ["uname"], "action": "SCMP_ACT_ERRNO",
                  "includes": { "arches": ["arm64"] } },
            ]
        }))
        .unwrap();
        assert_eq!(call(&f, "mkdir", [0; 6]), EPERM);
        assert_eq!(call(&f, "mkdirat", [0; 6]), EPERM);
        assert_eq!(call(&f, "rmdir", [0; 6]), RET_ALLOW);
        assert_eq!(call(&f, "kill", [1, 9, 0, 0, 0, 0]), RET_ERRNO | 13);
        assert_eq!(call(&f, "kill", [1, 15, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(call(&f, "getpid", [0; 6]), RET_KILL_PROCESS);
        assert_eq!(call(&f, "dup", a0(3)), bpf::RET_TRAP);
        assert_eq!(call(&f, "dup", a0(200)), bpf::RET_TRAP);
        assert_eq!(call(&f, "dup", a0(4)), RET_ALLOW);
        assert_eq!(call(&f, "dup2", [1, 0x102, 0, 0, 0, 0]), bpf::RET_LOG);
        assert_eq!(call(&f, "dup2", [1, 0x103, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(call(&f, "dup2", [2, 0x102, 0, 0, 0, 0]), RET_ALLOW);
        // Default caps: no CAP_SYS_ADMIN.
        assert_eq!(call(&f, "unshare", [0; 6]), RET_ALLOW);
        assert_eq!(call(&f, "setns", [0; 6]), EPERM);
        assert_eq!(call(&f, "uname", [0; 6]), RET_ALLOW);
    }

    #[test]
    fn json_default_errno_and_bad_profiles() {
        let f = json(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "syscalls": [{ "names": ["read"], "action": "SCMP_ACT_ALLOW" }]
        }))
        .unwrap();
        assert_eq!(call(&f, "read", [0; 6]), RET_ALLOW);
        assert_eq!(call(&f, "write", [0; 6]), RET_ERRNO | 38);

        let bad = |v: serde_json::Value, want: &str| {
            let e = json(v).unwrap_err();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        };
        let e = compile(&SeccompSpec::Json("{ not json".into())).unwrap_err();
        assert!(e.contains("malformed seccomp profile"), "{e}");
        bad(serde_json::json!({ "syscalls": [] }), "defaultAction");
        bad(
            serde_json::json!({ "defaultAction": "SCMP_ACT_MAYBE" }),
            "SCMP_ACT_MAYBE",
        );
        bad(
            serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                { "names": ["read"], "action": "SCMP_ACT_ERRNO",
                  "args": [{ "index": 0, "value": 1, "op": "SCMP_CMP_ABOUT" }] }] }),
            "syscalls[0].args[0]: unknown operator \"SCMP_CMP_ABOUT\"",
        );
        bad(
            serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                { "names": ["read"], "action": "SCMP_ACT_ERRNO",
                  "args": [{ "index": 6, "value": 1, "op": "SCMP_CMP_EQ" }] }] }),
            "index 6",
        );
        bad(
            serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                { "names": ["read"], "action": "SCMP_ACT_NOTIFY" }] }),
            "SCMP_ACT_NOTIFY",
        );
        bad(
            serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                { "action": "SCMP_ACT_ERRNO" }] }),
            "no syscall names",
        );
        bad(
            serde_json::json!({ "defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_X"] }),
            "SECCOMP_FILTER_FLAG_X",
        );
    }

    /// Loads filters for real in forked children.
    #[test]
    fn installed_filters_block_and_allow() {
        let default = compile(&SeccompSpec::RuntimeDefault).unwrap();
        let no_mkdir = json(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                           "errnoRet": 13 }]
        }))
        .unwrap();
        // (filter, syscall, args, expected errno (0: success))
        let cases: [(&Filter, libc::c_long, [libc::c_long; 3], i32); 4] = [
            (
                &default,
                libc::SYS_unshare,
                [libc::CLONE_NEWUSER as libc::c_long, 0, 0],
                libc::EPERM,
            ),
            (&default, libc::SYS_getppid, [0; 3], 0),
            // mkdirat(-1, "", 0): EACCES from the filter instead of ENOENT.
            (
                &no_mkdir,
                libc::SYS_mkdirat,
                [-1, c"".as_ptr() as libc::c_long, 0],
                libc::EACCES,
            ),
            (&no_mkdir, libc::SYS_getppid, [0; 3], 0),
        ];
        for (i, (filter, nr, args, want)) in cases.into_iter().enumerate() {
            // SAFETY: the child only makes raw syscalls and _exits.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                // SAFETY: raw syscalls with plain arguments; the child
                // allocates nothing.
                unsafe {
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        libc::_exit(100);
                    }
                    if install(filter).is_err() {
                        libc::_exit(101);
                    }
                    let r = libc::syscall(nr, args[0], args[1], args[2]);
                    let errno = *libc::__errno_location();
                    libc::_exit(if r >= 0 { 0 } else { errno.min(99) });
                }
            }
            let mut status = 0;
            // SAFETY: waiting for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(libc::WIFEXITED(status), "case {i}: status {status:#x}");
            assert_eq!(libc::WEXITSTATUS(status), want, "case {i}");
        }
    }
}
