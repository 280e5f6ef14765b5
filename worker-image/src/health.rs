//! The worker's own health, sent with every progress report: resident memory, its container's
//! memory limit, CPU time. The operator warns when a worker nears its limit (80% and 95%, the
//! ancestor's thresholds), before the kernel's OOM killer ends it without a word.

/// One look at this process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    pub rss_bytes: u64,
    /// 0 when the container has no memory limit.
    pub memory_limit_bytes: u64,
    pub cpu_seconds: f64,
}

/// The environment variable the operator sets to the container's memory limit, in bytes.
pub const MEMORY_LIMIT_ENV: &str = "TH_MEMORY_LIMIT_BYTES";

/// `/proc`'s clock ticks per second: USER_HZ, 100 on every Linux architecture Kubernetes runs.
const USER_HZ: f64 = 100.0;

/// Samples this process; what cannot be read is 0 (a report without health is still a report).
pub fn sample() -> Sample {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    Sample {
        rss_bytes: rss_of_status(&status).unwrap_or(0),
        memory_limit_bytes: memory_limit(),
        cpu_seconds: cpu_of_stat(&stat).unwrap_or(0.0),
    }
}

/// The container's memory limit: what the operator said (from the pod's spec), else the cgroup
/// v2 limit, else 0.
fn memory_limit() -> u64 {
    if let Some(v) = std::env::var(MEMORY_LIMIT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return v;
    }
    std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// `VmRSS:  123456 kB` of `/proc/self/status`, in bytes.
fn rss_of_status(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime of `/proc/self/stat`, in seconds. The command (field 2) may hold spaces and
/// parentheses, so fields are counted after its closing parenthesis.
fn cpu_of_stat(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_the_status_file() {
        let status = "Name:\tth-worker\nVmPeak:\t  9000 kB\nVmRSS:\t   2048 kB\nThreads:\t4\n";
        assert_eq!(rss_of_status(status), Some(2048 * 1024));
        assert_eq!(rss_of_status("Name: x\n"), None);
    }

    #[test]
    fn cpu_is_counted_after_the_command_whatever_it_holds() {
        let stat = "4242 (th worker (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(cpu_of_stat(stat), Some(3.0));
    }

    #[test]
    fn this_process_is_sampled() {
        let s = sample();
        assert!(s.rss_bytes > 1024 * 1024, "{s:?}");
        assert!(s.cpu_seconds >= 0.0);
    }
}
