//! Which kernel modules go into the initramfs, and in what order.
//!
//! The source of truth is `modules.dep` (`path: dep-path dep-path ...`,
//! paths relative to `/lib/modules/<release>/`). Debian's kernel package
//! does not ship one (`depmod` runs in its postinst, and kmod is not needed
//! on the host), so [`generate_modules_dep`] writes the same format from the
//! `depends=` field of each module's `.modinfo` ELF section, reading only the
//! modules reachable from the wanted set. [`module_closure`] then orders the
//! closure dependencies first. Modules listed in `modules.builtin` are part
//! of the kernel and are skipped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{GuestError, Result};

/// Largest module file accepted, compressed or not.
pub const MAX_MODULE: usize = 64 << 20;

/// The module name of a path: basename without `.ko[.xz|.zst|.gz]`, with
/// dashes turned into underscores as the kernel does.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base
        .strip_suffix(".ko.xz")
        .or_else(|| base.strip_suffix(".ko.zst"))
        .or_else(|| base.strip_suffix(".ko.gz"))
        .or_else(|| base.strip_suffix(".ko"))
        .unwrap_or(base);
    stem.replace('-', "_")
}

/// Parses `modules.dep` into `name → (path, dependency paths)`.
pub fn parse_modules_dep(modules_dep: &str) -> Result<BTreeMap<String, (String, Vec<String>)>> {
    let mut map = BTreeMap::new();
    for (n, line) in modules_dep.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (path, deps) = line
            .split_once(':')
            .ok_or_else(|| GuestError::BadModuleDeps(format!("line {} has no ':'", n + 1)))?;
        let path = path.trim().to_string();
        let deps = deps.split_whitespace().map(str::to_string).collect();
        map.insert(module_name(&path), (path, deps));
    }
    Ok(map)
}

/// Returns the paths of `wanted` (module names) and all their dependencies
/// from `modules_dep`, each once, dependencies before their users, in the
/// order `wanted` names them otherwise.
pub fn module_closure(modules_dep: &str, wanted: &[&str]) -> Result<Vec<String>> {
    let map = parse_modules_dep(modules_dep)?;
    let mut state: HashMap<String, bool> = HashMap::new(); // false = visiting
    let mut order = Vec::new();
    for w in wanted {
        visit(&map, &w.replace('-', "_"), &mut state, &mut order, 0)?;
    }
    Ok(order)
}

fn visit(
    map: &BTreeMap<String, (String, Vec<String>)>,
    name: &str,
    state: &mut HashMap<String, bool>,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    match state.get(name) {
        Some(true) => return Ok(()),
        Some(false) => {
            return Err(GuestError::BadModuleDeps(format!(
                "dependency cycle through {name}"
            )))
        }
        None => {}
    }
    if depth > 256 {
        return Err(GuestError::BadModuleDeps(
            "dependency chain too deep".into(),
        ));
    }
    let (path, deps) = map
        .get(name)
        .ok_or_else(|| GuestError::ModuleNotFound(name.to_string()))?;
    state.insert(name.to_string(), false);
    for d in deps {
        let dn = module_name(d);
        if !map.contains_key(&dn) {
            return Err(GuestError::BadModuleDeps(format!(
                "{path} depends on {d}, which has no entry"
            )));
        }
        visit(map, &dn, state, order, depth + 1)?;
    }
    state.insert(name.to_string(), true);
    order.push(path.clone());
    Ok(())
}

/// Module names listed in `modules.builtin`.
pub fn parse_builtin(modules_builtin: &str) -> BTreeSet<String> {
    modules_builtin
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

/// Decompresses a module file by its suffix (`.ko.xz`, `.ko.zst`, `.ko.gz`);
/// returns the bytes and the path with the compression suffix removed.
pub fn decompress_module(path: &str, data: &[u8]) -> Result<(Vec<u8>, String)> {
    let err = |compression: &'static str, d: String| GuestError::Decompress {
        compression,
        detail: format!("{path}: {d}"),
    };
    let bounded = |r: &mut dyn std::io::Read| -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        std::io::Read::take(r, MAX_MODULE as u64 + 1).read_to_end(&mut out)?;
        if out.len() > MAX_MODULE {
            return Err(std::io::Error::other("module larger than the limit"));
        }
        Ok(out)
    };
    if let Some(stem) = path.strip_suffix(".xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut &data[..], &mut out).map_err(|e| err("xz", e.to_string()))?;
        if out.len() > MAX_MODULE {
            return Err(err("xz", "module larger than the limit".into()));
        }
        Ok((out, stem.to_string()))
    } else if let Some(stem) = path.strip_suffix(".zst") {
        let mut dec =
            zstd::stream::read::Decoder::new(data).map_err(|e| err("zstd", e.to_string()))?;
        Ok((
            bounded(&mut dec).map_err(|e| err("zstd", e.to_string()))?,
            stem.to_string(),
        ))
    } else if let Some(stem) = path.strip_suffix(".gz") {
        let mut dec = flate2::read::GzDecoder::new(data);
        Ok((
            bounded(&mut dec).map_err(|e| err("gzip", e.to_string()))?,
            stem.to_string(),
        ))
    } else {
        Ok((data.to_vec(), path.to_string()))
    }
}

/// The `depends=` list of an (uncompressed) module's `.modinfo` section.
pub fn modinfo_depends(ko: &[u8]) -> Result<Vec<String>> {
    let modinfo = elf_section(ko, ".modinfo").ok_or_else(|| {
        GuestError::BadModuleDeps("module has no readable .modinfo section".into())
    })?;
    let mut deps = Vec::new();
    for field in modinfo.split(|b| *b == 0) {
        if let Some(v) = field.strip_prefix(b"depends=") {
            let v = std::str::from_utf8(v)
                .map_err(|_| GuestError::BadModuleDeps("non-UTF-8 depends".into()))?;
            deps.extend(
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.replace('-', "_")),
            );
        }
    }
    Ok(deps)
}

/// The bytes of a named section of a little-endian ELF64 file.
fn elf_section<'a>(elf: &'a [u8], wanted: &str) -> Option<&'a [u8]> {
    let u16_at = |at: usize| {
        Some(u16::from_le_bytes(
            elf.get(at..at.checked_add(2)?)?.try_into().ok()?,
        ))
    };
    let u32_at = |at: usize| {
        Some(u32::from_le_bytes(
            elf.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let u64_at = |at: usize| {
        Some(u64::from_le_bytes(
            elf.get(at..at.checked_add(8)?)?.try_into().ok()?,
        ))
    };
    if !elf.starts_with(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return None;
    }
    let shoff = usize::try_from(u64_at(0x28)?).ok()?;
    let shentsize = usize::from(u16_at(0x3a)?);
    let shnum = usize::from(u16_at(0x3c)?);
    let shstrndx = usize::from(u16_at(0x3e)?);
    let section = |i: usize| -> Option<(u32, &'a [u8])> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name = u32_at(h)?;
        let off = usize::try_from(u64_at(h.checked_add(0x18)?)?).ok()?;
        let size = usize::try_from(u64_at(h.checked_add(0x20)?)?).ok()?;
        Some((name, elf.get(off..off.checked_add(size)?)?))
    };
    let (_, strtab) = section(shstrndx)?;
    (0..shnum).find_map(|i| {
        let (name, data) = section(i)?;
        let rest = strtab.get(name as usize..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        (&rest[..end] == wanted.as_bytes()).then_some(data)
    })
}

/// Indexes the module files under `modules_root/kernel` by module name.
pub fn index_modules(modules_root: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::from("kernel")];
    while let Some(rel) = stack.pop() {
        let dir = modules_root.join(&rel);
        for e in std::fs::read_dir(&dir).map_err(GuestError::io("read dir", &dir))? {
            let e = e.map_err(GuestError::io("read dir", &dir))?;
            let ft = e.file_type().map_err(GuestError::io("stat", e.path()))?;
            let rel = rel.join(e.file_name());
            let Some(s) = rel.to_str() else { continue };
            if ft.is_dir() {
                stack.push(rel);
            } else if s.contains(".ko") {
                out.insert(module_name(s), s.to_string());
            }
        }
    }
    Ok(out)
}

/// Writes `modules.dep` lines for `wanted` and everything they depend on,
/// from each module's `.modinfo` (see the module docs). Builtin names are
/// skipped; unknown names are an error.
pub fn generate_modules_dep(
    modules_root: &Path,
    wanted: &[&str],
    builtin: &BTreeSet<String>,
) -> Result<String> {
    let index = index_modules(modules_root)?;
    let mut queue: Vec<String> = wanted.iter().map(|w| w.replace('-', "_")).collect();
    let mut lines = BTreeMap::new();
    while let Some(name) = queue.pop() {
        if lines.contains_key(&name) || builtin.contains(&name) {
            continue;
        }
        let path = index
            .get(&name)
            .ok_or_else(|| GuestError::ModuleNotFound(name.clone()))?;
        let file = modules_root.join(path);
        let meta = std::fs::metadata(&file).map_err(GuestError::io("stat", &file))?;
        if meta.len() > MAX_MODULE as u64 {
            return Err(GuestError::BadPackage(format!(
                "{path} is larger than the module limit"
            )));
        }
        let raw = std::fs::read(&file).map_err(GuestError::io("read", &file))?;
        let (ko, _) = decompress_module(path, &raw)?;
        let deps =
            modinfo_depends(&ko).map_err(|e| GuestError::BadModuleDeps(format!("{path}: {e}")))?;
        let mut dep_paths = Vec::new();
        for d in deps {
            if builtin.contains(&d) {
                continue;
            }
            let dp = index
                .get(&d)
                .ok_or_else(|| GuestError::ModuleNotFound(d.clone()))?;
            dep_paths.push(dp.clone());
            queue.push(d);
        }
        lines.insert(name, format!("{path}: {}", dep_paths.join(" ")));
    }
    let mut text: String = lines
        .into_values()
        .map(|l| l.trim_end().to_string() + "\n")
        .collect();
    if text.is_empty() {
        text.push('\n');
    }
    Ok(text)
}

/// The resolved module set of one kernel release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleSet {
    /// Wanted modules that are built into the kernel (nothing to load).
    pub builtin: Vec<String>,
    /// Module paths (relative to `/lib/modules/<release>/`, possibly
    /// compressed) in load order, dependencies first.
    pub load_order: Vec<String>,
    /// The `modules.dep` text the order was computed from.
    pub modules_dep: String,
}

/// Resolves `wanted` against an unpacked `/lib/modules/<release>` tree.
pub fn resolve(modules_root: &Path, wanted: &[&str]) -> Result<ModuleSet> {
    let builtin_path = modules_root.join("modules.builtin");
    let builtin_text = match std::fs::read_to_string(&builtin_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(GuestError::Io {
                op: "read",
                path: builtin_path,
                source: e,
            })
        }
    };
    let builtin = parse_builtin(&builtin_text);
    let (is_builtin, loadable): (Vec<&str>, Vec<&str>) = wanted
        .iter()
        .partition(|w| builtin.contains(&w.replace('-', "_")));
    let dep_path = modules_root.join("modules.dep");
    let modules_dep = match std::fs::read_to_string(&dep_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            generate_modules_dep(modules_root, &loadable, &builtin)?
        }
        Err(e) => {
            return Err(GuestError::Io {
                op: "read",
                path: dep_path,
                source: e,
            })
        }
    };
    let load_order = module_closure(&modules_dep, &loadable)?;
    Ok(ModuleSet {
        builtin: is_builtin.iter().map(|s| s.to_string()).collect(),
        load_order,
        modules_dep,
    })
}

#[cfg(test)]
#[path = "modules_tests.rs"]
pub(crate) mod tests;
