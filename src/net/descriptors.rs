//! The descriptor limit (RLIMIT_NOFILE): what the configured limits need, and raising the
//! soft limit toward it at start-up, as far as the hard limit allows. Shells commonly set
//! a soft limit of 1,024, which a server with 1,024 workers outgrows at half load.
#![allow(unsafe_code)] // getrlimit and setrlimit have no safe wrapper in std or socket2

/// The soft limit before and after raising it, and the hard limit that bounds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raised {
    pub before: u64,
    pub now: u64,
    pub hard: u64,
}

/// Raises the soft limit to `wanted`, or to the hard limit if that is lower; never lowers it.
#[cfg(unix)]
pub(crate) fn raise_soft_limit(wanted: u64) -> std::io::Result<Raised> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux and macOS, i64 on FreeBSD
    let (before, hard) = (limit.rlim_cur as u64, limit.rlim_max as u64);
    let target = wanted.min(hard);
    if target <= before {
        return Ok(Raised { before, now: before, hard });
    }
    limit.rlim_cur = target as libc::rlim_t;
    // SAFETY: `limit` is a valid rlimit; setrlimit only reads it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Raised { before, now: target, hard })
}

/// The soft limit in force now.
#[cfg(unix)]
pub(crate) fn soft_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux and macOS, i64 on FreeBSD
    Some(limit.rlim_cur as u64)
}

/// Descriptors this process holds now, where the system lists them (/proc on Linux).
pub(crate) fn open_count() -> Option<u64> {
    let listing = std::fs::read_dir("/proc/self/fd").ok()?;
    // Reading the directory holds one descriptor of its own, which is not counted.
    Some(listing.count().saturating_sub(1) as u64)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn never_lowers_the_limit_and_never_passes_the_hard_one() {
        let first = raise_soft_limit(0).unwrap();
        assert_eq!(first.now, first.before, "asking for less changes nothing");
        let raised = raise_soft_limit(u64::MAX).unwrap();
        assert_eq!(raised.now, raised.hard.max(first.before));
    }
}
