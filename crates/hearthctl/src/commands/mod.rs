//! One module per group of commands; helpers they share live here.

pub mod containers;
pub mod guest;
pub mod images;
pub mod info;
pub mod logs;
pub mod pods;
pub mod run;

use std::future::Future;

use anyhow::{bail, Result};

use crate::output::is_broken_pipe;

/// An error whose lines were already printed; main only sets the exit code.
#[derive(Debug)]
pub struct AlreadyReported;

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("some operations failed")
    }
}

impl std::error::Error for AlreadyReported {}

/// Runs `op` on every id, printing each failure as `hearthctl: <error>` and
/// going on; fails (already reported) if any did.
pub async fn for_each<F, Fut>(ids: Vec<String>, mut op: F) -> Result<()>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut failed = false;
    for id in ids {
        if let Err(err) = op(id).await {
            if is_broken_pipe(&err) {
                return Err(err);
            }
            eprintln!("hearthctl: {err:#}");
            failed = true;
        }
    }
    if failed {
        Err(AlreadyReported.into())
    } else {
        Ok(())
    }
}

/// Length of a full pod or container id.
const FULL_ID: usize = 64;

/// Whether any of `given` could be a truncated id worth resolving.
pub fn needs_resolving(given: &[String]) -> bool {
    given.iter().any(|id| id.len() < FULL_ID)
}

/// Expands id prefixes (as the tables show them) to full ids. An exact match
/// wins; a prefix of exactly one known id becomes that id; a prefix of several
/// is an error; an id that matches nothing is passed on as given, so that the
/// server answers NotFound for it.
pub fn resolve_ids(kind: &str, given: &[String], known: &[&str]) -> Result<Vec<String>> {
    given
        .iter()
        .map(|id| {
            if id.is_empty() {
                bail!("empty {kind} id");
            }
            if known.contains(&id.as_str()) {
                return Ok(id.clone());
            }
            let matches: Vec<&str> = known
                .iter()
                .copied()
                .filter(|k| k.starts_with(id.as_str()))
                .collect();
            match matches.as_slice() {
                [] => Ok(id.clone()),
                [one] => Ok(one.to_string()),
                many => bail!(
                    "{kind} id prefix {id:?} is ambiguous: it matches {}",
                    many.join(", ")
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_resolve_to_full_ids() {
        let known = ["abcdef0123", "abc999", "ffff"];
        let given = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            resolve_ids("pod", &given(&["abcd", "ff", "zzz"]), &known).unwrap(),
            ["abcdef0123", "ffff", "zzz"]
        );
        // An exact id wins even when it prefixes another.
        assert_eq!(
            resolve_ids("pod", &given(&["abc999"]), &known).unwrap(),
            ["abc999"]
        );
        let err = resolve_ids("pod", &given(&["abc"]), &known).unwrap_err();
        assert!(err.to_string().contains("ambiguous"), "{err}");
        assert!(resolve_ids("pod", &given(&[""]), &known).is_err());
    }

    #[tokio::test]
    async fn for_each_goes_on_after_a_failure() {
        let mut seen = Vec::new();
        let result = for_each(vec!["a".into(), "b".into(), "c".into()], |id| {
            seen.push(id.clone());
            async move {
                if id == "b" {
                    bail!("b failed")
                }
                Ok(())
            }
        })
        .await;
        assert_eq!(seen, ["a", "b", "c"]);
        assert!(result.unwrap_err().is::<AlreadyReported>());
    }
}
