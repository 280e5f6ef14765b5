//! Record boundaries inside CSV files whose fields may be quoted: a quoted field may hold line
//! breaks, so a `\n` in the middle of a file is a record boundary only if it is outside quotes,
//! which only a sequential scan from the file's start can tell. The planner therefore reads such
//! a file once, while planning, and records a record start about every `step` bytes; each task
//! then reads from one to the next. This costs a read of the file at planning time (not
//! metadata-only), against the alternative of DuckDB's speculative starts, which need a
//! verification pass between neighbouring tasks that independent workers do not have.

use super::csv::CsvDialect;
use super::listing::Dataset;
use crate::{Error, Result};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside quotes; whether a field starts here, whether a line does.
    Unquoted {
        field_start: bool,
        line_start: bool,
    },
    Quoted,
    /// Just after a quote inside a quoted field: a doubled quote, or the field's end.
    QuoteInQuoted,
    Escaped,
    Comment,
}

/// The quote state machine of the CSV reader (csv_core's): a quote opens a quoted field only at
/// a field's start; inside one, a doubled quote is a quote and the escape character escapes.
struct Scanner {
    delimiter: u8,
    quote: u8,
    escape: Option<u8>,
    comment: Option<u8>,
    state: State,
}

impl Scanner {
    fn new(d: &CsvDialect, quote: u8) -> Scanner {
        Scanner {
            delimiter: d.delimiter as u8,
            quote,
            escape: d.escape.map(|e| e as u8).filter(|&e| e != quote),
            comment: d.comment.map(|c| c as u8),
            state: State::Unquoted {
                field_start: true,
                line_start: true,
            },
        }
    }

    /// Feeds one byte; true when it is a `\n` that ends a record.
    #[inline]
    fn step(&mut self, b: u8) -> bool {
        match self.state {
            State::Quoted => {
                if Some(b) == self.escape {
                    self.state = State::Escaped;
                } else if b == self.quote {
                    self.state = State::QuoteInQuoted;
                }
                false
            }
            State::Escaped => {
                self.state = State::Quoted;
                false
            }
            State::QuoteInQuoted if b == self.quote => {
                self.state = State::Quoted;
                false
            }
            State::QuoteInQuoted => {
                self.state = State::Unquoted {
                    field_start: false,
                    line_start: false,
                };
                self.step(b)
            }
            State::Comment => {
                if b == b'\n' {
                    self.state = State::Unquoted {
                        field_start: true,
                        line_start: true,
                    };
                    return true;
                }
                false
            }
            State::Unquoted {
                field_start,
                line_start,
            } => {
                self.state = if b == b'\n' {
                    State::Unquoted {
                        field_start: true,
                        line_start: true,
                    }
                } else if line_start && Some(b) == self.comment {
                    State::Comment
                } else if b == self.delimiter {
                    State::Unquoted {
                        field_start: true,
                        line_start: false,
                    }
                } else if b == self.quote && field_start {
                    State::Quoted
                } else {
                    State::Unquoted {
                        field_start: b == b'\r' && field_start,
                        line_start: false,
                    }
                };
                b == b'\n'
            }
        }
    }
}

/// Where the records after the header start, in `head` (the first bytes of a file): past a
/// byte-order mark, blank and comment lines, and the header record. `None`: not in the head.
/// No byte range may start before it, since only the range at the file's start reads a header.
pub fn data_start(head: &[u8], dialect: &CsvDialect) -> Option<u64> {
    let quote = dialect.quote.map_or(0, |q| q as u8);
    let mut scanner = Scanner::new(dialect, quote);
    if dialect.quote.is_none() {
        scanner.quote = 0;
    }
    let mut line_has_data = false;
    for (i, &b) in head.iter().enumerate() {
        let in_comment = scanner.state == State::Comment;
        if scanner.step(b) {
            if line_has_data {
                return Some(i as u64 + 1);
            }
        } else if !in_comment && scanner.state != State::Comment && b != b'\r' && !is_bom(head, i) {
            line_has_data = true;
        }
    }
    None
}

fn is_bom(head: &[u8], i: usize) -> bool {
    i < 3 && head.starts_with(&[0xEF, 0xBB, 0xBF])
}

/// The positions of record starts in `bytes` (a whole file), the first at or after each
/// multiple of `step`.
pub fn record_starts(bytes: &[u8], dialect: &CsvDialect, step: u64) -> Vec<u64> {
    let mut finder = StartFinder::new(dialect, step);
    finder.feed(bytes);
    finder.finish(bytes.len() as u64)
}

struct StartFinder {
    scanner: Option<Scanner>,
    step: u64,
    next: u64,
    pos: u64,
    starts: Vec<u64>,
}

impl StartFinder {
    fn new(dialect: &CsvDialect, step: u64) -> StartFinder {
        StartFinder {
            scanner: dialect.quote.map(|q| Scanner::new(dialect, q as u8)),
            step: step.max(1),
            next: step.max(1),
            pos: 0,
            starts: Vec::new(),
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        for &b in chunk {
            self.pos += 1;
            let boundary = match &mut self.scanner {
                Some(s) => s.step(b),
                None => b == b'\n',
            };
            if boundary && self.pos >= self.next {
                self.starts.push(self.pos);
                while self.next <= self.pos {
                    self.next += self.step;
                }
            }
        }
    }

    /// The starts found, less one at the very end of the file (no record starts there).
    fn finish(mut self, size: u64) -> Vec<u64> {
        self.starts.retain(|&s| s < size);
        self.starts
    }
}

/// Fills in the record starts of every CSV file of `dataset` larger than `step`, by reading it
/// once (see the module's docs).
pub async fn scan_record_starts(dataset: &mut Dataset, step: u64) -> Result<()> {
    let Some(dialect) = dataset.csv.clone() else {
        return Ok(());
    };
    for file in &mut dataset.files {
        // A compressed file is read whole, by one task: nothing to find.
        if file.size <= step || file.compression.is_some() {
            continue;
        }
        let mut body = dataset
            .store
            .get(&Path::from(file.path.as_str()))
            .await
            .map_err(|e| Error::from_store(&file.uri, e))?
            .into_stream();
        let mut finder = StartFinder::new(&dialect, step);
        while let Some(chunk) = body.next().await {
            finder.feed(&chunk.map_err(|e| Error::from_store(&file.uri, e))?);
        }
        file.record_starts = finder.finish(file.size);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_skip_quoted_line_breaks_and_comments() {
        let d = CsvDialect::default();
        let text = b"a,b\n\"x\ny\",1\n\"q \"\"\n\"\"\",2\nz\"\n,3\n";
        // Every record start: after the header, after each record (the third record holds a
        // literal quote mid-field, which opens nothing).
        assert_eq!(record_starts(text, &d, 1), vec![4, 12, 24, 27]);
        let c = CsvDialect {
            comment: Some('#'),
            ..CsvDialect::default()
        };
        assert_eq!(record_starts(b"# it's \"\na,b\n1,2\n", &c, 1), vec![9, 13]);
        let e = CsvDialect {
            escape: Some('\\'),
            ..CsvDialect::default()
        };
        assert_eq!(record_starts(b"a\n\"\\\"\n\"\nb\n", &e, 1), vec![2, 8]);
        assert_eq!(data_start(b"# x\n\na,b\n1,2\n", &c), Some(9));
        assert_eq!(data_start(b"\"a\nb\",c\r\n1,2\n", &d), Some(9));
        assert_eq!(data_start(b"a,b", &d), None);
        // CRLF, and one start per step.
        assert_eq!(record_starts(b"a\r\nb\r\nc\r\nd\r\n", &d, 4), vec![6, 9]);
    }
}
