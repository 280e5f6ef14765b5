//! The operator's own process metrics, read from `/proc/self` at scrape time, under the names
//! every Prometheus client library uses (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
//! `process_max_fds`, `process_threads`, `process_start_time_seconds`), so the usual dashboards
//! and alerts work unchanged.
//!
//! Off Linux, or where `/proc` cannot be read, the collector publishes nothing rather than zeros:
//! a missing series is an honest "unknown", a zero RSS would be a lie.

use std::path::{Path, PathBuf};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Why `/proc` could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Parse { path: PathBuf, what: String },
}

/// What one look at `/proc/<pid>` says.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub threads: u64,
    /// Unix time the process started, seconds.
    pub start_time_seconds: f64,
    pub open_fds: u64,
    /// The soft limit on open files; `None` when unlimited.
    pub max_fds: Option<u64>,
}

/// The fields of `/proc/<pid>/stat` the metrics need, in clock ticks and pages as the kernel
/// gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    pub threads: u64,
    pub start_ticks: u64,
    pub vsize_bytes: u64,
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may itself hold
/// spaces and parentheses, so the fields are counted from the *last* `)`.
pub fn parse_stat(text: &str) -> Result<Stat, String> {
    let close = text
        .rfind(')')
        .ok_or_else(|| "no `)` closing the command name".to_string())?;
    // Field 3 (state) is the first after the name; proc(5) numbers fields from 1.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        let raw = rest
            .get(n - 3)
            .ok_or_else(|| format!("field {n} is missing ({} fields)", rest.len() + 2))?;
        raw.parse()
            .map_err(|e| format!("field {n} ({raw:?}) is not a number: {e}"))
    };
    Ok(Stat {
        utime_ticks: field(14)?,
        stime_ticks: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

/// The boot time (`btime`, Unix seconds) from `/proc/stat`.
pub fn parse_boot_time(text: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .ok_or_else(|| "no `btime` line".to_string())?;
    line.trim()
        .parse()
        .map_err(|e| format!("btime {line:?} is not a number: {e}"))
}

/// The soft "Max open files" limit from `/proc/<pid>/limits`; `Ok(None)` when unlimited.
pub fn parse_max_fds(text: &str) -> Result<Option<u64>, String> {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .ok_or_else(|| "no `Max open files` line".to_string())?;
    let soft = line
        .split_whitespace()
        .next()
        .ok_or_else(|| "`Max open files` has no value".to_string())?;
    if soft == "unlimited" {
        return Ok(None);
    }
    soft.parse()
        .map(Some)
        .map_err(|e| format!("Max open files {soft:?} is not a number: {e}"))
}

/// Reads `/proc/<pid>` (`proc` is the process's directory, `/proc/self` in production) and
/// `/proc/stat` (`proc_stat`).
pub fn sample(proc: &Path, proc_stat: &Path) -> Result<ProcessSample, ProcError> {
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).map_err(|source| ProcError::Read { path, source })
    };
    let stat_path = proc.join("stat");
    let stat = parsed(&stat_path, parse_stat(&read(stat_path.clone())?))?;
    let boot = parsed(proc_stat, parse_boot_time(&read(proc_stat.to_path_buf())?))?;
    let limits_path = proc.join("limits");
    let max_fds = parsed(&limits_path, parse_max_fds(&read(limits_path.clone())?))?;
    let fd_dir = proc.join("fd");
    let open_fds = std::fs::read_dir(&fd_dir)
        .map_err(|source| ProcError::Read {
            path: fd_dir.clone(),
            source,
        })?
        .count() as u64;
    let (ticks, page) = (clock_ticks_per_second(), page_size());
    Ok(ProcessSample {
        cpu_seconds: (stat.utime_ticks + stat.stime_ticks) as f64 / ticks,
        resident_bytes: stat.rss_pages.saturating_mul(page),
        virtual_bytes: stat.vsize_bytes,
        threads: stat.threads,
        start_time_seconds: boot as f64 + stat.start_ticks as f64 / ticks,
        open_fds,
        max_fds,
    })
}

/// A parser's verdict on the file at `path`.
fn parsed<T>(path: &Path, r: Result<T, String>) -> Result<T, ProcError> {
    r.map_err(|what| ProcError::Parse {
        path: path.to_path_buf(),
        what,
    })
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the times in `/proc/<pid>/stat`.
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// `sysconf(_SC_PAGESIZE)`: the unit of the RSS in `/proc/<pid>/stat`.
fn page_size() -> u64 {
    // SAFETY: as above.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// Publishes [`sample`] of `/proc/self` on every scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = match sample(Path::new("/proc/self"), Path::new("/proc/stat")) {
            Ok(s) => s,
            Err(err) => {
                tracing::debug!(%err, "no process metrics");
                return Ok(());
            }
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent, seconds",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, Option<Unit>, f64); 4] = [
            (
                "process_resident_memory",
                "Resident memory size, bytes",
                Some(Unit::Bytes),
                s.resident_bytes as f64,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size, bytes",
                Some(Unit::Bytes),
                s.virtual_bytes as f64,
            ),
            (
                "process_start_time",
                "Start time of the process since the Unix epoch, seconds",
                Some(Unit::Seconds),
                s.start_time_seconds,
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                None,
                s.open_fds as f64,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?)?;
        }
        let threads = ConstGauge::new(s.threads as i64);
        threads.encode(encoder.encode_descriptor(
            "process_threads",
            "OS threads of the process",
            None,
            threads.metric_type(),
        )?)?;
        if let Some(max) = s.max_fds {
            let g = ConstGauge::new(max as i64);
            g.encode(encoder.encode_descriptor(
                "process_max_fds",
                "The soft limit on open file descriptors",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A real /proc/<pid>/stat line of a process whose name holds a space and a `)`.
    const STAT: &str = "4242 (th oper)ator) S 1 4242 4242 0 -1 4194560 2310 0 0 0 \
        150 75 0 0 20 0 9 0 123456 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 4096 \
        17922 0 0 0 17 1 0 0 0 0 0";

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        assert_eq!(
            parse_stat(STAT),
            Ok(Stat {
                utime_ticks: 150,
                stime_ticks: 75,
                threads: 9,
                start_ticks: 123456,
                vsize_bytes: 104_857_600,
                rss_pages: 2560,
            })
        );
    }

    #[test]
    fn malformed_stat_lines_say_what_is_wrong() {
        assert_eq!(
            parse_stat("4242 th-operator S 1"),
            Err("no `)` closing the command name".into())
        );
        let err = parse_stat("4242 (th) S 1 2 3").unwrap_err();
        assert!(err.contains("field 14 is missing"), "{err}");
        let bad = STAT.replacen(" 150 ", " x ", 1);
        let err = parse_stat(&bad).unwrap_err();
        assert!(err.contains("field 14 (\"x\")"), "{err}");
    }

    #[test]
    fn boot_time_and_limits() {
        let stat = "cpu  1 2 3\nintr 5\nbtime 1764672000\nprocesses 9\n";
        assert_eq!(parse_boot_time(stat), Ok(1_764_672_000));
        assert!(parse_boot_time("cpu 1\n").is_err());
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max cpu time              unlimited            unlimited            seconds\n\
                      Max open files            1024                 1048576              files\n";
        assert_eq!(parse_max_fds(limits), Ok(Some(1024)));
        let unlimited = limits.replace("1024       ", "unlimited  ");
        assert_eq!(parse_max_fds(&unlimited), Ok(None));
        assert!(parse_max_fds("Limit Soft\n").is_err());
    }

    /// This test process, read through the real /proc: the figures move as the process does.
    #[test]
    fn the_live_process_is_read_from_proc() {
        let me = Path::new("/proc/self");
        let before = sample(me, Path::new("/proc/stat")).expect("read /proc/self");
        assert!(before.resident_bytes > 1 << 20, "{before:?}");
        assert!(before.virtual_bytes >= before.resident_bytes, "{before:?}");
        assert!(before.threads >= 1, "{before:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        // Started before now, and not before this test binary could have been built (a day).
        assert!(
            before.start_time_seconds <= now + 1.0 && before.start_time_seconds > now - 86_400.0,
            "start {} now {now}",
            before.start_time_seconds
        );
        // 64 more open files are about 64 more descriptors (other test threads of this binary
        // may open or close a few meanwhile).
        let files: Vec<std::fs::File> = (0..64)
            .map(|_| std::fs::File::open("/proc/self/stat").expect("open"))
            .collect();
        // Busy until the process has used 0.1 s more CPU: on a loaded machine a fixed wall-clock
        // spin gets only a share of a core (CI once saw 0.06 s of CPU in 0.3 s). The bound only
        // stops a broken reading from spinning forever.
        let busy = std::time::Instant::now();
        let mut x = 0u64;
        let mut after = sample(me, Path::new("/proc/stat")).expect("read /proc/self");
        while after.cpu_seconds < before.cpu_seconds + 0.1
            && busy.elapsed() < std::time::Duration::from_secs(60)
        {
            for _ in 0..1_000_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            std::hint::black_box(x);
            after = sample(me, Path::new("/proc/stat")).expect("read /proc/self");
        }
        assert!(
            after.open_fds >= before.open_fds + 50,
            "{before:?} {after:?}"
        );
        assert!(
            after.cpu_seconds >= before.cpu_seconds + 0.1,
            "{before:?} {after:?}"
        );
        assert_eq!(after.start_time_seconds, before.start_time_seconds);
        drop(files);
    }

    #[test]
    fn an_unreadable_proc_is_an_error_naming_the_file() {
        let err = sample(Path::new("/nonexistent/proc/self"), Path::new("/proc/stat"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/proc/self/stat"), "{err}");
    }
}
