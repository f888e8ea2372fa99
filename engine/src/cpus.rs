//! CPU lists ("0-3,6") and thread pinning.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// Why a CPU list could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CpuListError {
    /// Not of the form `N`, `N-M`, separated by commas.
    #[error("invalid cpu list {0:?}: expected numbers and ranges like \"0-3,6\"")]
    Syntax(String),
    /// A range whose end is below its start.
    #[error("invalid cpu range {0:?}: the end is below the start")]
    Reversed(String),
    /// A CPU the process may not run on.
    #[error("cpu {0} is not in this process's affinity mask (allowed: {1})")]
    NotAllowed(usize, String),
    /// Empty list.
    #[error("the cpu list is empty")]
    Empty,
}

/// Parses a list like `0-3,6` into sorted, deduplicated CPU numbers.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, CpuListError> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| CpuListError::Syntax(s.to_string()))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if b < a {
                    return Err(CpuListError::Reversed(part.to_string()));
                }
                if b - a > 4096 {
                    return Err(CpuListError::Syntax(s.to_string()));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err(CpuListError::Empty);
    }
    Ok(cpus)
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Checks that every CPU of `cpus` is allowed.
pub fn check_allowed(cpus: &[usize]) -> Result<(), CpuListError> {
    let allowed = allowed_cpus();
    for &c in cpus {
        if !allowed.contains(&c) {
            let list = allowed
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",");
            return Err(CpuListError::NotAllowed(c, list));
        }
    }
    Ok(())
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists() {
        assert_eq!(parse_cpu_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("1").unwrap(), vec![1]);
        assert_eq!(parse_cpu_list("2,1,2").unwrap(), vec![1, 2]);
        assert_eq!(parse_cpu_list(""), Err(CpuListError::Empty));
        assert!(matches!(
            parse_cpu_list("3-1"),
            Err(CpuListError::Reversed(_))
        ));
        assert!(matches!(parse_cpu_list("a"), Err(CpuListError::Syntax(_))));
        assert!(matches!(parse_cpu_list("0-"), Err(CpuListError::Syntax(_))));
    }

    #[test]
    fn allowed_is_not_empty() {
        assert!(!allowed_cpus().is_empty());
        assert!(check_allowed(&allowed_cpus()).is_ok());
        assert!(check_allowed(&[100_000]).is_err());
    }
}
