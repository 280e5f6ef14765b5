//! Reads of answers from endpoints a ProfileJob's spec chooses (a Ray dashboard), with a bound
//! on the memory they take: whoever runs that endpoint must not be able to grow the operator
//! (shared by every tenant) by answering with an endless or huge body.
//!
//! - [`read_capped`]: at most `limit` bytes of a body; the rest is not read (the connection is
//!   dropped), and the caller is told the body was cut.
//! - [`JsonStringTail`]: the value of one string field of a JSON object, decoded as the body
//!   streams in, of which only the part after a given offset and at most the last `keep` bytes
//!   are kept (a Ray job's log is `{"logs": "<the whole log>"}`, re-sent whole at every poll).

use bytes::{Bytes, BytesMut};

/// A body read by [`read_capped`].
#[derive(Debug)]
pub struct Capped {
    /// At most the limit's bytes.
    pub body: Bytes,
    /// Whether the body was longer than the limit (then `body` is its first `limit` bytes).
    pub truncated: bool,
}

/// Reads at most `limit` bytes of `resp`'s body, chunk by chunk (never the whole body at once).
pub async fn read_capped(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Capped, reqwest::Error> {
    let mut body = BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > limit {
            let take = limit - body.len();
            body.extend_from_slice(&chunk[..take]);
            return Ok(Capped {
                body: body.freeze(),
                truncated: true,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Capped {
        body: body.freeze(),
        truncated: false,
    })
}

/// The body is not a JSON object of the expected shape.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(String);

/// Where the decoder is in the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the opening `{`.
    Start,
    /// Before a key (or the closing `}`).
    Key,
    /// In a key string.
    KeyString { escaped: bool },
    /// After a key, before `:`.
    Colon,
    /// After `:`, before the value.
    Value,
    /// In the wanted string.
    Wanted,
    /// After `\` in the wanted string.
    WantedEscape,
    /// In `\uXXXX` of the wanted string: the hex digits read so far.
    WantedUnicode { digits: u8, code: u32 },
    /// In another value, skipped: its nesting depth, whether in a string, after a `\`.
    Skip {
        depth: u32,
        in_string: bool,
        escaped: bool,
    },
    /// After a value, before `,` or `}`.
    After,
    /// After the closing `}`.
    Done,
}

/// Decodes the string value of the top-level field `field` of a JSON object as its bytes
/// arrive ([`JsonStringTail::feed`]), keeping only what follows the first `skip` bytes of the
/// decoded value, and of that at most about the last `keep` bytes. Memory: at most `2 × keep`
/// bytes, whatever the body's length.
#[derive(Debug)]
pub struct JsonStringTail {
    field: &'static [u8],
    skip: usize,
    keep: usize,
    state: State,
    /// The key being read (only its first bytes: a longer key is not the field).
    key: Vec<u8>,
    key_matches: bool,
    /// Whether the current value is the field's.
    in_field: bool,
    /// A high surrogate waiting for its pair.
    high_surrogate: Option<u32>,
    /// Decoded bytes of the value so far.
    total: usize,
    /// The kept bytes, which start at byte `start` of the value.
    kept: Vec<u8>,
    start: usize,
    found: bool,
}

/// What [`JsonStringTail::finish`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringTail {
    /// The decoded value's length in bytes.
    pub total: usize,
    /// Where in the value `text` starts (`> skip` when more than `keep` bytes followed it:
    /// then `text` starts at a line's beginning).
    pub start: usize,
    /// The kept part of the value.
    pub text: String,
}

impl JsonStringTail {
    pub fn new(field: &'static str, skip: usize, keep: usize) -> JsonStringTail {
        JsonStringTail {
            field: field.as_bytes(),
            skip,
            keep: keep.max(1),
            state: State::Start,
            key: Vec::new(),
            key_matches: false,
            in_field: false,
            high_surrogate: None,
            total: 0,
            kept: Vec::new(),
            start: skip,
            found: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let pos = self.total;
        self.total += bytes.len();
        let bytes = if pos < self.skip {
            &bytes[(self.skip - pos).min(bytes.len())..]
        } else {
            bytes
        };
        if bytes.is_empty() {
            return;
        }
        if self.kept.is_empty() {
            self.start = self.total - bytes.len();
        }
        self.kept.extend_from_slice(bytes);
        if self.kept.len() > 2 * self.keep {
            let cut = self.kept.len() - self.keep;
            self.kept.drain(..cut);
            self.start += cut;
        }
    }

    fn push_char(&mut self, code: u32) {
        let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
        let mut buf = [0u8; 4];
        let s = c.encode_utf8(&mut buf);
        self.push(s.as_bytes());
    }

    fn unexpected(&self, b: u8) -> ShapeError {
        ShapeError(format!(
            "not a JSON object: unexpected `{}` ({:?})",
            char::from(b).escape_default(),
            self.state
        ))
    }

    /// Decodes the next bytes of the body.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), ShapeError> {
        while let Some(&b) = data.first() {
            // The wanted string's plain runs are copied at once, not byte by byte.
            if self.state == State::Wanted {
                let run = data
                    .iter()
                    .position(|&c| c == b'"' || c == b'\\')
                    .unwrap_or(data.len());
                if run > 0 {
                    if let Some(high) = self.high_surrogate.take() {
                        self.push_char(high);
                    }
                    self.push(&data[..run]);
                    data = &data[run..];
                    continue;
                }
            }
            data = &data[1..];
            self.step(b)?;
        }
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<(), ShapeError> {
        let ws = b.is_ascii_whitespace();
        self.state = match self.state {
            State::Start if ws => State::Start,
            State::Start if b == b'{' => State::Key,
            State::Key if ws => State::Key,
            State::Key if b == b'"' => {
                self.key.clear();
                self.key_matches = true;
                State::KeyString { escaped: false }
            }
            State::Key if b == b'}' => State::Done,
            State::KeyString { escaped: true } => {
                // Escapes do not occur in the field's name: a key with one is another key.
                self.key_matches = false;
                State::KeyString { escaped: false }
            }
            State::KeyString { escaped: false } if b == b'\\' => State::KeyString { escaped: true },
            State::KeyString { escaped: false } if b == b'"' => {
                self.in_field = self.key_matches && self.key == self.field;
                State::Colon
            }
            State::KeyString { escaped: false } => {
                if self.key.len() < self.field.len() + 1 {
                    self.key.push(b);
                } else {
                    self.key_matches = false;
                }
                State::KeyString { escaped: false }
            }
            State::Colon if ws => State::Colon,
            State::Colon if b == b':' => State::Value,
            State::Value if ws => State::Value,
            State::Value if self.in_field && b == b'"' && !self.found => {
                self.found = true;
                State::Wanted
            }
            State::Value => self.skip_byte(0, false, false, b),
            State::Skip {
                depth,
                in_string,
                escaped,
            } => self.skip_byte(depth, in_string, escaped, b),
            State::Wanted if b == b'"' => {
                if let Some(high) = self.high_surrogate.take() {
                    self.push_char(high);
                }
                State::After
            }
            State::Wanted if b == b'\\' => State::WantedEscape,
            State::Wanted => State::Wanted, // unreachable: runs are copied in `feed`
            State::WantedEscape => {
                let c = match b {
                    b'"' => b'"',
                    b'\\' => b'\\',
                    b'/' => b'/',
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'u' => {
                        self.state = State::WantedUnicode { digits: 0, code: 0 };
                        return Ok(());
                    }
                    _ => return Err(self.unexpected(b)),
                };
                if let Some(high) = self.high_surrogate.take() {
                    self.push_char(high);
                }
                self.push(&[c]);
                State::Wanted
            }
            State::WantedUnicode { digits, code } => {
                let d = char::from(b)
                    .to_digit(16)
                    .ok_or_else(|| self.unexpected(b))?;
                let code = code * 16 + d;
                if digits < 3 {
                    State::WantedUnicode {
                        digits: digits + 1,
                        code,
                    }
                } else {
                    match (self.high_surrogate.take(), code) {
                        (Some(high), 0xDC00..=0xDFFF) => {
                            self.push_char(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00));
                        }
                        (high, 0xD800..=0xDBFF) => {
                            if let Some(h) = high {
                                self.push_char(h);
                            }
                            self.high_surrogate = Some(code);
                        }
                        (high, _) => {
                            if let Some(h) = high {
                                self.push_char(h);
                            }
                            self.push_char(code);
                        }
                    }
                    State::Wanted
                }
            }
            State::After if ws => State::After,
            State::After if b == b',' => State::Key,
            State::After if b == b'}' => State::Done,
            State::Done if ws => State::Done,
            _ => return Err(self.unexpected(b)),
        };
        Ok(())
    }

    /// One byte of a skipped value (of any type: strings, numbers, nested objects).
    fn skip_byte(&mut self, depth: u32, in_string: bool, escaped: bool, b: u8) -> State {
        let skip = |depth, in_string, escaped| State::Skip {
            depth,
            in_string,
            escaped,
        };
        if in_string {
            return match (escaped, b) {
                (true, _) => skip(depth, true, false),
                (false, b'\\') => skip(depth, true, true),
                (false, b'"') if depth == 0 => State::After,
                (false, b'"') => skip(depth, false, false),
                _ => skip(depth, true, false),
            };
        }
        match b {
            b'"' => skip(depth, true, false),
            b'{' | b'[' => skip(depth + 1, false, false),
            b'}' | b']' if depth > 1 => skip(depth - 1, false, false),
            b'}' | b']' if depth == 1 => State::After,
            // The end of a scalar at the top level: the byte ends the object or the value.
            b'}' => State::Done,
            b',' if depth == 0 => State::Key,
            _ => skip(depth, false, false),
        }
    }

    /// The kept part of the value, from a line's beginning when its head was dropped; an
    /// error when the body ended early or had no such string field.
    pub fn finish(mut self) -> Result<StringTail, ShapeError> {
        if self.state != State::Done {
            return Err(ShapeError(format!(
                "the JSON object ended early ({:?})",
                self.state
            )));
        }
        if !self.found {
            return Err(ShapeError(format!(
                "no string field `{}`",
                String::from_utf8_lossy(self.field)
            )));
        }
        if self.kept.len() > self.keep {
            let cut = self.kept.len() - self.keep;
            self.kept.drain(..cut);
            self.start += cut;
        }
        if self.start > self.skip {
            // The head was dropped: what is left of the line it cut is no line of the log.
            let cut = self
                .kept
                .iter()
                .position(|&b| b == b'\n')
                .map_or(self.kept.len(), |i| i + 1);
            self.kept.drain(..cut);
            self.start += cut;
        }
        let start = if self.kept.is_empty() {
            self.total.max(self.skip)
        } else {
            self.start
        };
        Ok(StringTail {
            total: self.total,
            start,
            text: String::from_utf8_lossy(&self.kept).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &str, skip: usize, keep: usize, chunk: usize) -> StringTail {
        let mut d = JsonStringTail::new("logs", skip, keep);
        for part in body.as_bytes().chunks(chunk) {
            d.feed(part).expect("feed");
        }
        d.finish().expect("finish")
    }

    #[test]
    fn decodes_the_field_like_serde_whatever_the_chunks() {
        let logs = "a\"b\\c\nd\té – 😀 \u{1}\nlast";
        let body = serde_json::json!({"before": {"x": [1, "}\""], "y": null}, "n": 5,
            "logs": logs, "after": "s"})
        .to_string();
        // serde_json writes non-ASCII as is: the escaped forms are tested too.
        let escaped = body.replace('é', "\\u00e9").replace('😀', "\\ud83d\\ude00");
        for b in [&body, &escaped] {
            for chunk in [1, 2, 3, 7, 1000] {
                let t = decode(b, 0, 1 << 20, chunk);
                assert_eq!(t.text, logs, "chunk {chunk} of {b}");
                assert_eq!((t.total, t.start), (logs.len(), 0));
            }
        }
        // after an offset: only the rest
        let t = decode(&body, 2, 1 << 20, 3);
        assert_eq!(t.text, &logs[2..]);
        assert_eq!(t.start, 2);
    }

    #[test]
    fn keeps_the_tail_from_a_lines_start_in_bounded_memory() {
        let mut logs = String::new();
        for i in 0..10_000 {
            logs.push_str(&format!("line {i}\n"));
        }
        let body = serde_json::json!({ "logs": logs }).to_string();
        let mut d = JsonStringTail::new("logs", 0, 100);
        for part in body.as_bytes().chunks(64) {
            d.feed(part).expect("feed");
            assert!(d.kept.len() <= 200 + 64, "{}", d.kept.len());
        }
        let t = d.finish().expect("finish");
        assert!(t.text.len() <= 100);
        assert!(t.text.starts_with("line ") && t.text.ends_with("line 9999\n"));
        assert_eq!(&logs[t.start..], t.text);
        assert_eq!(t.total, logs.len());
    }

    #[test]
    fn refuses_other_shapes() {
        for body in [
            "[1]",
            "{\"logs\": 5}",
            "{\"other\": \"x\"}",
            "{\"logs\": \"unterminated",
        ] {
            let mut d = JsonStringTail::new("logs", 0, 10);
            let r = d
                .feed(body.as_bytes())
                .and_then(|()| d.finish().map(|_| ()));
            assert!(r.is_err(), "{body}");
        }
    }
}
