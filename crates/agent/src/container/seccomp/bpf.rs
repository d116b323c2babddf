//! Classic BPF for seccomp: a rule set (per syscall number, rules tried in
//! order, each an AND of 64-bit argument comparisons) becomes one program:
//!
//! ```text
//! ld arch;  jeq AUDIT_ARCH_X86_64 ? go : ret KILL_PROCESS
//! ld nr;    jge X32_SYSCALL_BIT ? ret KILL_PROCESS : go
//! binary search on nr (jge + ja trampolines), leaves compare nr with jeq:
//!   unconditional syscall  → ret action
//!   conditional syscall    → ja its body: rule 1 checks, ret; rule 2 …; ret default
//! ret default
//! ```
//!
//! Argument comparisons load the two 32-bit halves of `seccomp_data.args[i]`
//! (little endian: low half first) and compare the high half first.

use std::collections::BTreeMap;

/// `AUDIT_ARCH_X86_64` (EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE).
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Syscall numbers of the x32 ABI have this bit set.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `SECCOMP_RET_KILL_PROCESS`.
pub const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// `SECCOMP_RET_KILL_THREAD`.
pub const RET_KILL_THREAD: u32 = 0;
/// `SECCOMP_RET_TRAP`.
pub const RET_TRAP: u32 = 0x0003_0000;
/// `SECCOMP_RET_ERRNO` (the errno in the low 16 bits).
pub const RET_ERRNO: u32 = 0x0005_0000;
/// `SECCOMP_RET_TRACE` (the tracer's data in the low 16 bits).
pub const RET_TRACE: u32 = 0x7ff0_0000;
/// `SECCOMP_RET_LOG`.
pub const RET_LOG: u32 = 0x7ffc_0000;
/// `SECCOMP_RET_ALLOW`.
pub const RET_ALLOW: u32 = 0x7fff_0000;

/// `BPF_MAXINSNS`: the kernel refuses longer programs.
pub const MAX_INSNS: usize = 4096;

// Offsets in `struct seccomp_data`.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;

// BPF opcodes (linux/bpf_common.h): class | size | mode, class | op | src.
/// BPF_LD | BPF_W | BPF_ABS.
const LD_W_ABS: u16 = 0x20;
/// BPF_ALU | BPF_AND | BPF_K.
const ALU_AND_K: u16 = 0x54;
/// BPF_JMP | BPF_JA.
const JMP_JA: u16 = 0x05;
/// BPF_JMP | BPF_JEQ | BPF_K.
const JMP_JEQ_K: u16 = 0x15;
/// BPF_JMP | BPF_JGT | BPF_K.
const JMP_JGT_K: u16 = 0x25;
/// BPF_JMP | BPF_JGE | BPF_K.
const JMP_JGE_K: u16 = 0x35;
/// BPF_RET | BPF_K.
const RET_K: u16 = 0x06;

/// A comparison of one syscall argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `arg == value`.
    Eq,
    /// `arg != value`.
    Ne,
    /// `arg < value`.
    Lt,
    /// `arg <= value`.
    Le,
    /// `arg > value`.
    Gt,
    /// `arg >= value`.
    Ge,
    /// `arg & value == value_two`.
    MaskedEq,
}

/// One argument condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    /// Argument index (0..6).
    pub arg: u8,
    /// The comparison.
    pub op: Op,
    /// The value (the mask for `MaskedEq`).
    pub value: u64,
    /// The value `MaskedEq` compares with.
    pub value_two: u64,
}

impl Cond {
    /// Whether `arg` satisfies the condition (the reference semantics).
    #[cfg(test)]
    pub fn holds(&self, arg: u64) -> bool {
        match self.op {
            Op::Eq => arg == self.value,
            Op::Ne => arg != self.value,
            Op::Lt => arg < self.value,
            Op::Le => arg <= self.value,
            Op::Gt => arg > self.value,
            Op::Ge => arg >= self.value,
            Op::MaskedEq => arg & self.value == self.value_two,
        }
    }
}

/// A rule: when every condition holds, return `action`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Conditions (AND).
    pub conds: Vec<Cond>,
    /// The `SECCOMP_RET_*` value.
    pub action: u32,
}

/// What a filter does: rules per syscall number, the default for the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// The `SECCOMP_RET_*` value for syscalls no rule matches.
    pub default: u32,
    /// Rules per syscall number, tried in order.
    pub syscalls: BTreeMap<u32, Vec<Rule>>,
}

impl Ruleset {
    /// Adds a rule for `nr` (after the ones it has; a rule after an
    /// unconditional one could never match and is dropped).
    pub fn add(&mut self, nr: u32, rule: Rule) {
        let rules = self.syscalls.entry(nr).or_default();
        if !rules.iter().any(|r| r.conds.is_empty()) {
            rules.push(rule);
        }
    }
}

/// One instruction, laid out as `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset when true.
    pub jt: u8,
    /// Jump offset when false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

#[derive(Debug, Clone, Copy)]
enum Target {
    /// Relative: skip this many instructions.
    Skip(u8),
    Label(usize),
}

#[derive(Debug, Clone, Copy)]
enum Item {
    Stmt {
        code: u16,
        k: u32,
    },
    Jump {
        code: u16,
        k: u32,
        jt: Target,
        jf: Target,
    },
    Ja(usize),
    Label(usize),
}

#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn place(&mut self, l: usize) {
        self.items.push(Item::Label(l));
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.items.push(Item::Stmt { code, k });
    }
    fn ret(&mut self, k: u32) {
        self.stmt(RET_K, k);
    }
    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.items.push(Item::Jump { code, k, jt, jf });
    }
    fn ja(&mut self, l: usize) {
        self.items.push(Item::Ja(l));
    }

    fn finish(self) -> Result<Vec<Insn>, String> {
        let mut pos = vec![0usize; self.labels];
        let mut n = 0;
        for it in &self.items {
            match it {
                Item::Label(l) => pos[*l] = n,
                _ => n += 1,
            }
        }
        if n > MAX_INSNS {
            return Err(format!(
                "the profile compiles to {n} BPF instructions, more than the kernel's {MAX_INSNS}"
            ));
        }
        let mut out = Vec::with_capacity(n);
        for it in &self.items {
            let at = out.len();
            let rel = |t: Target| -> Result<u8, String> {
                match t {
                    Target::Skip(s) => Ok(s),
                    Target::Label(l) => u8::try_from(pos[l] - at - 1)
                        .map_err(|_| "a seccomp rule is too long for one BPF jump".to_owned()),
                }
            };
            match *it {
                Item::Label(_) => continue,
                Item::Stmt { code, k } => out.push(Insn {
                    code,
                    jt: 0,
                    jf: 0,
                    k,
                }),
                Item::Jump { code, k, jt, jf } => out.push(Insn {
                    code,
                    jt: rel(jt)?,
                    jf: rel(jf)?,
                    k,
                }),
                Item::Ja(l) => out.push(Insn {
                    code: JMP_JA,
                    jt: 0,
                    jf: 0,
                    k: (pos[l] - at - 1) as u32,
                }),
            }
        }
        Ok(out)
    }
}

const NEXT: Target = Target::Skip(0);

/// Syscalls per binary-search leaf.
const LEAF: usize = 8;

/// Compiles `rules` for x86_64 (other architectures and the x32 ABI are
/// killed).
pub fn compile(rules: &Ruleset) -> Result<Vec<Insn>, String> {
    let mut a = Asm::default();
    a.stmt(LD_W_ABS, OFF_ARCH);
    a.jump(JMP_JEQ_K, AUDIT_ARCH_X86_64, Target::Skip(1), NEXT);
    a.ret(RET_KILL_PROCESS);
    a.stmt(LD_W_ABS, OFF_NR);
    a.jump(JMP_JGE_K, X32_SYSCALL_BIT, NEXT, Target::Skip(1));
    a.ret(RET_KILL_PROCESS);
    // Syscalls whose only rule is unconditional with the default action
    // need no code.
    let groups: Vec<(u32, &Vec<Rule>)> = rules
        .syscalls
        .iter()
        .filter(|(_, r)| !(r.len() == 1 && r[0].conds.is_empty() && r[0].action == rules.default))
        .filter(|(_, r)| !r.is_empty())
        .map(|(nr, r)| (*nr, r))
        .collect();
    let mut bodies = Vec::new();
    tree(&mut a, &groups, rules.default, &mut bodies);
    for (label, rs) in bodies {
        a.place(label);
        for r in rs {
            let fail = a.label();
            for c in &r.conds {
                cond(&mut a, c, fail);
            }
            a.ret(r.action);
            a.place(fail);
        }
        a.ret(rules.default);
    }
    a.finish()
}

/// The search over `groups` (sorted by number), with the syscall number in A.
fn tree<'r>(
    a: &mut Asm,
    groups: &[(u32, &'r Vec<Rule>)],
    default: u32,
    bodies: &mut Vec<(usize, &'r Vec<Rule>)>,
) {
    if groups.len() <= LEAF {
        for (nr, rs) in groups {
            if rs.len() == 1 && rs[0].conds.is_empty() {
                a.jump(JMP_JEQ_K, *nr, NEXT, Target::Skip(1));
                a.ret(rs[0].action);
            } else {
                let body = a.label();
                a.jump(JMP_JEQ_K, *nr, NEXT, Target::Skip(1));
                a.ja(body);
                bodies.push((body, *rs));
            }
        }
        a.ret(default);
        return;
    }
    let mid = groups.len() / 2;
    let right = a.label();
    a.jump(JMP_JGE_K, groups[mid].0, NEXT, Target::Skip(1));
    a.ja(right);
    tree(a, &groups[..mid], default, bodies);
    a.place(right);
    tree(a, &groups[mid..], default, bodies);
}

/// Falls through when `c` holds, jumps to `fail` otherwise.
fn cond(a: &mut Asm, c: &Cond, fail: usize) {
    let f = Target::Label(fail);
    let lo_off = OFF_ARGS + 8 * u32::from(c.arg);
    let hi_off = lo_off + 4;
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    match c.op {
        Op::Eq => {
            a.stmt(LD_W_ABS, hi_off);
            a.jump(JMP_JEQ_K, hi, NEXT, f);
            a.stmt(LD_W_ABS, lo_off);
            a.jump(JMP_JEQ_K, lo, NEXT, f);
        }
        Op::MaskedEq => {
            let (mhi, mlo) = (hi, lo);
            let (vhi, vlo) = ((c.value_two >> 32) as u32, c.value_two as u32);
            a.stmt(LD_W_ABS, hi_off);
            a.stmt(ALU_AND_K, mhi);
            a.jump(JMP_JEQ_K, vhi, NEXT, f);
            a.stmt(LD_W_ABS, lo_off);
            a.stmt(ALU_AND_K, mlo);
            a.jump(JMP_JEQ_K, vlo, NEXT, f);
        }
        Op::Ne => {
            a.stmt(LD_W_ABS, hi_off);
            a.jump(JMP_JEQ_K, hi, NEXT, Target::Skip(2));
            a.stmt(LD_W_ABS, lo_off);
            a.jump(JMP_JEQ_K, lo, f, NEXT);
        }
        Op::Gt | Op::Ge => {
            // hi > vhi: pass; hi < vhi: fail; equal: compare the low halves.
            a.stmt(LD_W_ABS, hi_off);
            a.jump(JMP_JGT_K, hi, Target::Skip(3), NEXT);
            a.jump(JMP_JEQ_K, hi, NEXT, f);
            a.stmt(LD_W_ABS, lo_off);
            let code = if c.op == Op::Gt { JMP_JGT_K } else { JMP_JGE_K };
            a.jump(code, lo, NEXT, f);
        }
        Op::Lt | Op::Le => {
            // hi < vhi: pass; hi > vhi: fail; equal: compare the low halves.
            a.stmt(LD_W_ABS, hi_off);
            a.jump(JMP_JGE_K, hi, NEXT, Target::Skip(3));
            a.jump(JMP_JEQ_K, hi, NEXT, f);
            a.stmt(LD_W_ABS, lo_off);
            let code = if c.op == Op::Lt { JMP_JGE_K } else { JMP_JGT_K };
            a.jump(code, lo, f, NEXT);
        }
    }
}

/// Runs `prog` on a syscall the way the kernel does (the subset the
/// compiler emits).
#[cfg(test)]
pub fn run(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let word = |off: u32| -> u32 {
        match off {
            OFF_NR => nr,
            OFF_ARCH => arch,
            o if (OFF_ARGS..OFF_ARGS + 48).contains(&o) && o.is_multiple_of(4) => {
                let v = args[((o - OFF_ARGS) / 8) as usize];
                if (o - OFF_ARGS).is_multiple_of(8) {
                    v as u32
                } else {
                    (v >> 32) as u32
                }
            }
            o => panic!("load at offset {o}"),
        }
    };
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = prog[pc];
        pc += 1;
        let jump = |cond: bool| usize::from(if cond { i.jt } else { i.jf });
        match i.code {
            LD_W_ABS => acc = word(i.k),
            ALU_AND_K => acc &= i.k,
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K => pc += jump(acc == i.k),
            JMP_JGT_K => pc += jump(acc > i.k),
            JMP_JGE_K => pc += jump(acc >= i.k),
            RET_K => return i.k,
            c => panic!("opcode {c:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NR: u32 = 7;

    fn one(conds: Vec<Cond>) -> Vec<Insn> {
        let mut rs = Ruleset {
            default: RET_ERRNO | 1,
            ..Default::default()
        };
        rs.add(
            NR,
            Rule {
                conds,
                action: RET_ALLOW,
            },
        );
        compile(&rs).unwrap()
    }

    #[test]
    fn comparisons_match_their_64_bit_meaning() {
        let vals = [
            0u64,
            1,
            2,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0001,
            0x2_0000_0000,
            0x7fff_ffff_ffff_ffff,
            u64::MAX - 1,
            u64::MAX,
        ];
        let ops = [Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge, Op::MaskedEq];
        for op in ops {
            for &value in &vals {
                for arg in 0..6u8 {
                    let c = Cond {
                        arg,
                        op,
                        value,
                        value_two: value & 0x1_0000_0001,
                    };
                    let prog = one(vec![c]);
                    for &x in &vals {
                        let mut args = [0x5555_5555_5555_5555u64; 6];
                        args[arg as usize] = x;
                        let want = if c.holds(x) { RET_ALLOW } else { RET_ERRNO | 1 };
                        assert_eq!(
                            run(&prog, AUDIT_ARCH_X86_64, NR, args),
                            want,
                            "{c:?} on {x:#x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn conditions_and_rules_combine() {
        let c = |arg, op, value| Cond {
            arg,
            op,
            value,
            value_two: 0,
        };
        let mut rs = Ruleset {
            default: RET_KILL_THREAD,
            ..Default::default()
        };
        // 1 <= a0 <= 3 and a1 == 9 → allow; a0 == 5 → errno 2.
        rs.add(
            NR,
            Rule {
                conds: vec![c(0, Op::Ge, 1), c(0, Op::Le, 3), c(1, Op::Eq, 9)],
                action: RET_ALLOW,
            },
        );
        rs.add(
            NR,
            Rule {
                conds: vec![c(0, Op::Eq, 5)],
                action: RET_ERRNO | 2,
            },
        );
        let prog = compile(&rs).unwrap();
        let r = |a0, a1| run(&prog, AUDIT_ARCH_X86_64, NR, [a0, a1, 0, 0, 0, 0]);
        assert_eq!(r(2, 9), RET_ALLOW);
        assert_eq!(r(2, 8), RET_KILL_THREAD);
        assert_eq!(r(4, 9), RET_KILL_THREAD);
        assert_eq!(r(5, 9), RET_ERRNO | 2);
        assert_eq!(
            run(&prog, AUDIT_ARCH_X86_64, NR + 1, [0; 6]),
            RET_KILL_THREAD
        );
    }

    #[test]
    fn many_syscalls_are_found_and_foreign_calls_killed() {
        let mut rs = Ruleset {
            default: RET_ERRNO | 1,
            ..Default::default()
        };
        for nr in (0..450).step_by(3) {
            rs.add(
                nr,
                Rule {
                    conds: if nr % 2 == 0 {
                        vec![]
                    } else {
                        vec![Cond {
                            arg: 0,
                            op: Op::Eq,
                            value: u64::from(nr),
                            value_two: 0,
                        }]
                    },
                    action: RET_ERRNO | (nr + 100),
                },
            );
        }
        let prog = compile(&rs).unwrap();
        for nr in 0..460 {
            let want = if nr % 3 == 0 && nr < 450 {
                RET_ERRNO | (nr + 100)
            } else {
                RET_ERRNO | 1
            };
            assert_eq!(
                run(&prog, AUDIT_ARCH_X86_64, nr, [u64::from(nr), 0, 0, 0, 0, 0]),
                want,
                "{nr}"
            );
        }
        assert_eq!(
            run(&prog, AUDIT_ARCH_X86_64, 3, [4, 0, 0, 0, 0, 0]),
            RET_ERRNO | 1
        );
        assert_eq!(run(&prog, 0x4000_0003, 0, [0; 6]), RET_KILL_PROCESS);
        assert_eq!(
            run(&prog, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, [0; 6]),
            RET_KILL_PROCESS
        );
    }
}
