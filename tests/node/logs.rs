//! Where each container's log is, for the kubelet endpoint: every run of a container appends to
//! one file (`<pod dir>/<container>.log`), so the index keeps, per pod and container, the offset
//! at which each run began and whether the last one still runs. A run's log is the bytes from its
//! start to the next run's; the kubelet's query (`tailLines`, `limitBytes`, `previous`) selects
//! from it.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The logs of every pod this agent ran, by namespace and name (the newest pod of a name wins,
/// as the apiserver knows only that one).
#[derive(Default)]
pub struct LogIndex(Mutex<HashMap<(String, String), PodLogs>>);

struct PodLogs {
    uid: String,
    containers: HashMap<String, ContainerLog>,
}

struct ContainerLog {
    path: PathBuf,
    /// Where each run's output begins in the file, oldest first.
    starts: Vec<u64>,
    /// Whether the last run is still running.
    running: bool,
}

/// One run's part of a log file, as the index saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub path: PathBuf,
    pub start: u64,
    /// The next run's start: the end of this run's output (its end is the file's when `None`).
    pub end: Option<u64>,
    /// Still writing: a follower waits for more.
    pub running: bool,
    /// Which run of the container (0 first), so a follower can look it up again.
    pub number: usize,
}

/// Why a log cannot be served; the messages are the kubelet's.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LookupError {
    #[error("pod {namespace}/{pod} is not known to this node")]
    NoPod { namespace: String, pod: String },
    #[error("container \"{container}\" in pod \"{pod}\" is waiting to start: ContainerCreating")]
    Waiting { pod: String, container: String },
    #[error("previous terminated container \"{container}\" in pod \"{pod}\" not found")]
    NoPrevious { pod: String, container: String },
}

impl LogIndex {
    /// A run of `container` began at `start` of `path`.
    pub fn started(
        &self,
        ns: &str,
        pod: &str,
        uid: &str,
        container: &str,
        path: &Path,
        start: u64,
    ) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map
            .entry((ns.to_string(), pod.to_string()))
            .or_insert_with(|| PodLogs {
                uid: uid.to_string(),
                containers: HashMap::new(),
            });
        if entry.uid != uid {
            // A new pod of the same name: the old one's logs are no longer reachable by name.
            entry.uid = uid.to_string();
            entry.containers.clear();
        }
        let c = entry
            .containers
            .entry(container.to_string())
            .or_insert_with(|| ContainerLog {
                path: path.to_path_buf(),
                starts: Vec::new(),
                running: false,
            });
        c.starts.push(start);
        c.running = true;
    }

    /// The last run of `container` ended.
    pub fn exited(&self, uid: &str, container: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map
            .values_mut()
            .find(|p| p.uid == uid)
            .and_then(|p| p.containers.get_mut(container))
        {
            c.running = false;
        }
    }

    /// Every container of the pod stopped (its task ended, whatever the way).
    pub fn pod_ended(&self, uid: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = map.values_mut().find(|p| p.uid == uid) {
            for c in p.containers.values_mut() {
                c.running = false;
            }
        }
    }

    /// The current run of the container, or with `previous` the one before it.
    pub fn lookup(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<Run, LookupError> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let p = map
            .get(&(ns.to_string(), pod.to_string()))
            .ok_or_else(|| LookupError::NoPod {
                namespace: ns.into(),
                pod: pod.into(),
            })?;
        let c = p
            .containers
            .get(container)
            .filter(|c| !c.starts.is_empty())
            .ok_or_else(|| LookupError::Waiting {
                pod: pod.into(),
                container: container.into(),
            })?;
        let last = c.starts.len() - 1;
        let number = if previous {
            last.checked_sub(1).ok_or_else(|| LookupError::NoPrevious {
                pod: pod.into(),
                container: container.into(),
            })?
        } else {
            last
        };
        Ok(run_of(c, number))
    }

    /// Run `number` of the container again (a follower's view of how it goes on); `None` when
    /// the pod of that name is another one now.
    pub fn again(&self, ns: &str, pod: &str, container: &str, number: usize) -> Option<Run> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let c = map
            .get(&(ns.to_string(), pod.to_string()))?
            .containers
            .get(container)?;
        (number < c.starts.len()).then(|| run_of(c, number))
    }
}

fn run_of(c: &ContainerLog, number: usize) -> Run {
    let last = c.starts.len() - 1;
    Run {
        path: c.path.clone(),
        start: c.starts[number],
        end: c.starts.get(number + 1).copied(),
        running: number == last && c.running,
        number,
    }
}

/// What the apiserver asks for (`PodLogOptions` as the kubelet's query string).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Query {
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<u64>,
    pub limit_bytes: Option<u64>,
}

/// Parses the query; options this node cannot honour are refused by name rather than ignored
/// (its logs carry no timestamps, so `timestamps`, `sinceSeconds` and `sinceTime` cannot be).
pub fn parse_query(raw: &str) -> Result<Query, String> {
    let mut q = Query::default();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let flag = |v: &str| match v {
            "true" | "1" | "" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(format!("{k}={other:?}: expected true or false")),
        };
        let count = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{k}={v:?}: expected a non-negative integer"))
        };
        match k {
            "follow" => q.follow = flag(v)?,
            "previous" => q.previous = flag(v)?,
            "tailLines" => q.tail_lines = Some(count(v)?),
            "limitBytes" => q.limit_bytes = Some(count(v)?),
            "timestamps" if !flag(v)? => {}
            "timestamps" | "sinceSeconds" | "sinceTime" => {
                return Err(format!(
                    "{k}: th-test-node records no timestamps in its logs, so it cannot serve {k}"
                ));
            }
            // What the kubelet also ignores here (`stream` is All by default).
            "stream" if v == "All" => {}
            other => return Err(format!("unknown log option {other:?}")),
        }
    }
    Ok(q)
}

/// The run's output so far, its last `tail_lines` lines when asked; and the file offset where
/// it ends (where a follower goes on).
pub fn read_run(run: &Run, tail_lines: Option<u64>) -> std::io::Result<(Vec<u8>, u64)> {
    let mut f = std::fs::File::open(&run.path)?;
    let len = f.metadata()?.len();
    let end = run.end.unwrap_or(len).min(len);
    f.seek(SeekFrom::Start(run.start))?;
    let mut out = Vec::new();
    f.take(end.saturating_sub(run.start))
        .read_to_end(&mut out)?;
    if let Some(n) = tail_lines {
        out.drain(..tail_start(&out, n));
    }
    Ok((out, end.max(run.start)))
}

/// The offset of the first of the last `n` lines of `text` (an unterminated last line counts).
fn tail_start(text: &[u8], n: u64) -> usize {
    if n == 0 {
        return text.len();
    }
    // The final newline ends the last line; it does not begin an empty one.
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return i + 1;
            }
        }
    }
    0
}

/// Bytes `from..` of the run's output, at most `max`, and whether the run's output ends there
/// for good (the run is over and nothing is left).
pub fn read_more(run: &Run, from: u64, max: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut f = std::fs::File::open(&run.path)?;
    let len = f.metadata()?.len();
    let end = run.end.unwrap_or(len).min(len);
    let over = !run.running || run.end.is_some();
    if from >= end {
        return Ok((Vec::new(), over));
    }
    f.seek(SeekFrom::Start(from))?;
    let mut out = Vec::new();
    f.take((end - from).min(max)).read_to_end(&mut out)?;
    let done = over && from + out.len() as u64 >= end;
    Ok((out, done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_counts_lines_from_the_end() {
        let t = b"a\nb\nc\n";
        assert_eq!(&t[tail_start(t, 2)..], b"b\nc\n");
        assert_eq!(&t[tail_start(t, 1)..], b"c\n");
        assert_eq!(&t[tail_start(t, 9)..], t);
        assert_eq!(&t[tail_start(t, 0)..], b"");
        let u = b"a\nb\nc";
        assert_eq!(&u[tail_start(u, 1)..], b"c");
        assert_eq!(&u[tail_start(u, 2)..], b"b\nc");
    }

    #[test]
    fn runs_split_the_file_and_previous_is_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        std::fs::write(&path, "one\n").unwrap();
        let idx = LogIndex::default();
        assert!(matches!(
            idx.lookup("ns", "p", "c", false),
            Err(LookupError::NoPod { .. })
        ));
        idx.started("ns", "p", "u1", "c", &path, 0);
        assert_eq!(
            idx.lookup("ns", "p", "c", true),
            Err(LookupError::NoPrevious {
                pod: "p".into(),
                container: "c".into()
            })
        );
        assert!(matches!(
            idx.lookup("ns", "p", "other", false),
            Err(LookupError::Waiting { .. })
        ));
        idx.exited("u1", "c");
        idx.started("ns", "p", "u1", "c", &path, 4);
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let now = idx.lookup("ns", "p", "c", false).unwrap();
        assert!(now.running);
        assert_eq!(
            read_run(&now, None).unwrap(),
            (b"two\nthree\n".to_vec(), 14)
        );
        let before = idx.lookup("ns", "p", "c", true).unwrap();
        assert!(!before.running);
        assert_eq!(read_run(&before, None).unwrap(), (b"one\n".to_vec(), 4));
        // Following the old run ends at the new one's start.
        assert_eq!(read_more(&before, 4, 100).unwrap(), (Vec::new(), true));
        assert_eq!(
            read_more(&now, 8, 100).unwrap(),
            (b"three\n".to_vec(), false)
        );
        idx.pod_ended("u1");
        let ended = idx.again("ns", "p", "c", now.number).unwrap();
        assert_eq!(read_more(&ended, 8, 3).unwrap(), (b"thr".to_vec(), false));
        assert_eq!(
            read_more(&ended, 11, 100).unwrap(),
            (b"ee\n".to_vec(), true)
        );
        // A new pod of the same name replaces the old one's logs.
        idx.started("ns", "p", "u2", "c", &path, 14);
        assert_eq!(idx.lookup("ns", "p", "c", false).unwrap().start, 14);
        assert!(idx.lookup("ns", "p", "c", true).is_err());
    }

    #[test]
    fn the_query_is_parsed_and_what_cannot_be_honoured_is_refused() {
        let q = parse_query("follow=true&tailLines=3&limitBytes=10&previous=false").unwrap();
        assert_eq!(
            q,
            Query {
                follow: true,
                previous: false,
                tail_lines: Some(3),
                limit_bytes: Some(10)
            }
        );
        assert_eq!(parse_query("").unwrap(), Query::default());
        assert!(
            parse_query("sinceSeconds=5")
                .unwrap_err()
                .contains("sinceSeconds")
        );
        assert!(
            parse_query("timestamps=true")
                .unwrap_err()
                .contains("timestamps")
        );
        assert!(
            parse_query("tailLines=-1")
                .unwrap_err()
                .contains("tailLines")
        );
        assert!(parse_query("bogus=1").unwrap_err().contains("bogus"));
    }
}
