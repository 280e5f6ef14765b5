//! CSV dialects: what a user may say about a CSV file (delimiter, quote, escape, comment lines,
//! header, null tokens, encoding), the sniffer that decides what they did not say from a sample,
//! and the dialect as the plan records it, so that every task reads every file alike.
//!
//! The sniffer follows DuckDB's (`csv_scanner/sniffer/dialect_detection.cpp`): every candidate
//! dialect cuts the sample into records; the one whose records most consistently have the same
//! number of fields, and more fields, wins; ties go to the most usual candidate (`,` before `;`,
//! `"` before `'` before no quote, no escape, no comment). The header is then found as DuckDB's
//! `header_detection.cpp` does: a first row whose values do not have the types of the column's
//! other values is a header; a first row typed like the rest is data.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The text encoding of a CSV file. Files are transcoded to UTF-8 as they stream in; UTF-8 files
/// are read as they are (a byte-order mark at the start is skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    /// ISO-8859-1: every byte is the code point of the same value.
    #[serde(rename = "latin1")]
    Latin1,
    #[serde(rename = "windows-1252")]
    Windows1252,
    /// UTF-16, little endian (a byte-order mark decides, when there is one).
    #[serde(rename = "utf-16le")]
    Utf16Le,
    #[serde(rename = "utf-16be")]
    Utf16Be,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Latin1 => "latin1",
            Encoding::Windows1252 => "windows-1252",
            Encoding::Utf16Le => "utf-16le",
            Encoding::Utf16Be => "utf-16be",
        }
    }

    /// The encoding a byte-order mark at the start of `bytes` says, and the mark's length.
    pub fn from_bom(bytes: &[u8]) -> Option<(Encoding, usize)> {
        match bytes {
            [0xEF, 0xBB, 0xBF, ..] => Some((Encoding::Utf8, 3)),
            [0xFF, 0xFE, ..] => Some((Encoding::Utf16Le, 2)),
            [0xFE, 0xFF, ..] => Some((Encoding::Utf16Be, 2)),
            _ => None,
        }
    }

    /// Whether a byte-order mark of `self` starts `bytes`: its length.
    pub fn bom_len(self, bytes: &[u8]) -> usize {
        match Encoding::from_bom(bytes) {
            Some((e, len)) if e == self => len,
            _ => 0,
        }
    }

    fn is_utf16(self) -> bool {
        matches!(self, Encoding::Utf16Le | Encoding::Utf16Be)
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Encoding {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "utf-8" | "utf8" => Ok(Encoding::Utf8),
            "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1" => Ok(Encoding::Latin1),
            "windows-1252" | "cp1252" | "win1252" | "windows1252" => Ok(Encoding::Windows1252),
            // The byte-order mark, which UTF-16 files usually start with, picks the byte order.
            "utf-16" | "utf16" | "utf-16le" | "utf16le" => Ok(Encoding::Utf16Le),
            "utf-16be" | "utf16be" => Ok(Encoding::Utf16Be),
            other => Err(Error::invalid(
                "encoding",
                format!(
                    "`{other}` (expected utf-8, latin1, windows-1252, utf-16, utf-16le or utf-16be)"
                ),
            )),
        }
    }
}

/// What the user says about a CSV dataset; what is `None` is sniffed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsvOptions {
    pub delimiter: Option<u8>,
    /// `Some(None)`: fields are never quoted.
    pub quote: Option<Option<u8>>,
    /// `Some(None)`: no escape character (a quote inside a quoted field is doubled).
    pub escape: Option<Option<u8>>,
    /// `Some(None)`: no comment lines.
    pub comment: Option<Option<u8>>,
    pub header: Option<bool>,
    /// Field values read as null (default: only the empty field).
    pub null_tokens: Option<Vec<String>>,
    pub encoding: Option<Encoding>,
}

/// Parses a one-character dialect setting as users write it: `;`, `tab` or `\t`, `none` or the
/// empty string (no such character). Only ASCII characters can be delimiters, quotes, escapes or
/// comment markers.
pub fn parse_char(what: &'static str, s: &str) -> Result<Option<u8>> {
    let c = match s {
        "" => return Ok(None),
        s if s.eq_ignore_ascii_case("none") => return Ok(None),
        "\\t" => '\t',
        s if s.eq_ignore_ascii_case("tab") => '\t',
        s if s.eq_ignore_ascii_case("space") => ' ',
        s => {
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => c,
                _ => {
                    return Err(Error::invalid(
                        what,
                        format!("`{s}` is not one character (e.g. `;`, `tab`, `none`)"),
                    ));
                }
            }
        }
    };
    if !c.is_ascii() || c == '\n' || c == '\r' {
        return Err(Error::invalid(
            what,
            format!(
                "`{}` must be an ASCII character other than a line break",
                c.escape_default()
            ),
        ));
    }
    Ok(Some(c as u8))
}

/// The dialect every task reads a CSV dataset with, as the plan records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvDialect {
    pub delimiter: char,
    /// `None`: fields are never quoted.
    pub quote: Option<char>,
    pub escape: Option<char>,
    /// Lines starting with this character are skipped.
    pub comment: Option<char>,
    pub header: bool,
    /// Field values read as null; empty: the empty field only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub null_tokens: Vec<String>,
    #[serde(default)]
    pub encoding: Encoding,
}

impl Default for CsvDialect {
    fn default() -> Self {
        CsvDialect {
            delimiter: ',',
            quote: Some('"'),
            escape: None,
            comment: None,
            header: true,
            null_tokens: Vec::new(),
            encoding: Encoding::Utf8,
        }
    }
}

/// A byte that never starts a quote: arrow's reader always has a quote character, so "no quote"
/// is a NUL, which text files do not hold.
const NO_QUOTE: u8 = 0;

impl CsvDialect {
    /// Checks a dialect read from a plan: its characters are ASCII and distinct.
    pub fn validate(&self) -> Result<()> {
        let chars = [
            ("delimiter", Some(self.delimiter)),
            ("quote", self.quote),
            ("escape", self.escape),
            ("comment", self.comment),
        ];
        for (what, c) in chars {
            if let Some(c) = c
                && (!c.is_ascii() || c == '\n' || c == '\r')
            {
                return Err(Error::invalid(
                    "CSV dialect",
                    format!(
                        "{what} `{}` must be an ASCII character other than a line break",
                        c.escape_default()
                    ),
                ));
            }
        }
        if Some(self.delimiter) == self.quote || Some(self.delimiter) == self.comment {
            return Err(Error::invalid(
                "CSV dialect",
                format!(
                    "the delimiter `{}` is also the quote or comment character",
                    self.delimiter.escape_default()
                ),
            ));
        }
        Ok(())
    }

    /// Arrow's reader format for this dialect.
    pub fn arrow_format(&self) -> Result<arrow::csv::reader::Format> {
        let mut f = arrow::csv::reader::Format::default()
            .with_header(self.header)
            .with_delimiter(self.delimiter as u8)
            .with_quote(self.quote.map_or(NO_QUOTE, |q| q as u8));
        if let Some(e) = self.escape {
            f = f.with_escape(e as u8);
        }
        if let Some(c) = self.comment {
            f = f.with_comment(c as u8);
        }
        if !self.null_tokens.is_empty() {
            let alternatives: Vec<String> =
                self.null_tokens.iter().map(|t| regex::escape(t)).collect();
            let re = regex::Regex::new(&format!("^(?:{})$", alternatives.join("|")))
                .map_err(|e| Error::invalid("null tokens", e.to_string()))?;
            f = f.with_null_regex(re);
        }
        Ok(f)
    }
}

/// The head of a file as text: its bytes decoded (a byte-order mark dropped), cut after the last
/// whole line when the head is not the whole file. `asked`: the encoding the user gave.
pub fn decode_head(
    bytes: &[u8],
    whole_file: bool,
    asked: Option<Encoding>,
    uri: &str,
) -> Result<(String, Encoding)> {
    let bom = Encoding::from_bom(bytes);
    let encoding = match (asked, bom) {
        (None, Some((e, _))) => e,
        // A byte-order mark tells UTF-16's byte order better than a guess.
        (Some(a), Some((e, _))) if a.is_utf16() && e.is_utf16() => e,
        (Some(a), _) => a,
        (None, None) => Encoding::Utf8,
    };
    let body = &bytes[encoding.bom_len(bytes)..];
    let mut text = String::with_capacity(body.len());
    let mut decoder = Transcoder::new(encoding);
    decoder
        .push(body, whole_file, &mut text)
        .map_err(|at| undecodable(uri, encoding, &text, at))?;
    if !whole_file && let Some(end) = text.rfind('\n') {
        text.truncate(end + 1);
    }
    Ok((text, encoding))
}

/// A byte that `encoding` cannot decode, after `text` was decoded: its line and column.
pub(crate) fn undecodable(uri: &str, encoding: Encoding, text: &str, byte: u8) -> Error {
    let mut at = TextPosition::default();
    at.advance(text);
    at.undecodable(uri, encoding, byte)
}

/// Where decoding is in a text: 1-based line and column (in characters).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextPosition {
    line: usize,
    column: usize,
}

impl Default for TextPosition {
    fn default() -> Self {
        TextPosition { line: 1, column: 1 }
    }
}

impl TextPosition {
    pub(crate) fn advance(&mut self, text: &str) {
        match text.rfind('\n') {
            Some(last) => {
                self.line += text.bytes().filter(|&b| b == b'\n').count();
                self.column = text[last + 1..].chars().count() + 1;
            }
            None => self.column += text.chars().count(),
        }
    }

    pub(crate) fn undecodable(&self, uri: &str, encoding: Encoding, byte: u8) -> Error {
        Error::BadRecord {
            file: uri.to_string(),
            detail: format!(
                "line {}, column {}: byte 0x{byte:02X} is not valid {encoding}; {ENCODING_HINT}",
                self.line, self.column
            ),
        }
    }
}

/// What to do about text in another encoding.
pub(crate) const ENCODING_HINT: &str = "if the file is in another encoding, give it with \
     --encoding (latin1, windows-1252, utf-16) or spec.dataset.csv.encoding";

/// Streaming transcoding into UTF-8. UTF-8 input is only validated here (the sniffer's sample);
/// the read path passes UTF-8 through untouched.
pub(crate) struct Transcoder {
    encoding: Encoding,
    decoder: Option<encoding_rs::Decoder>,
    /// Bytes of an incomplete UTF-8 sequence at the end of the last chunk.
    pending: Vec<u8>,
}

impl Transcoder {
    pub(crate) fn new(encoding: Encoding) -> Transcoder {
        let decoder = match encoding {
            Encoding::Windows1252 => {
                Some(encoding_rs::WINDOWS_1252.new_decoder_without_bom_handling())
            }
            Encoding::Utf16Le => Some(encoding_rs::UTF_16LE.new_decoder_without_bom_handling()),
            Encoding::Utf16Be => Some(encoding_rs::UTF_16BE.new_decoder_without_bom_handling()),
            Encoding::Utf8 | Encoding::Latin1 => None,
        };
        Transcoder {
            encoding,
            decoder,
            pending: Vec::new(),
        }
    }

    /// Decodes `input` onto `out`; `last`: no input follows. `Err(byte)`: a byte that cannot be
    /// decoded (the text before it is in `out`).
    pub(crate) fn push(
        &mut self,
        input: &[u8],
        last: bool,
        out: &mut String,
    ) -> std::result::Result<(), u8> {
        match self.encoding {
            Encoding::Latin1 => {
                out.extend(input.iter().map(|&b| b as char));
                Ok(())
            }
            Encoding::Utf8 => {
                let mut buf = std::mem::take(&mut self.pending);
                buf.extend_from_slice(input);
                match std::str::from_utf8(&buf) {
                    Ok(s) => {
                        out.push_str(s);
                        Ok(())
                    }
                    Err(e) => {
                        let (good, rest) = buf.split_at(e.valid_up_to());
                        out.push_str(std::str::from_utf8(good).expect("valid prefix"));
                        // An incomplete sequence at the end of a chunk may end in the next one.
                        if e.error_len().is_none() && !last {
                            self.pending = rest.to_vec();
                            Ok(())
                        } else {
                            Err(rest[0])
                        }
                    }
                }
            }
            _ => {
                let decoder = self
                    .decoder
                    .as_mut()
                    .expect("decoder of a multi-byte encoding");
                let mut src = input;
                loop {
                    out.reserve(
                        decoder
                            .max_utf8_buffer_length_without_replacement(src.len())
                            .unwrap_or(src.len() * 3),
                    );
                    let (result, read) =
                        decoder.decode_to_string_without_replacement(src, out, last);
                    src = &src[read..];
                    match result {
                        encoding_rs::DecoderResult::InputEmpty => return Ok(()),
                        encoding_rs::DecoderResult::OutputFull => continue,
                        encoding_rs::DecoderResult::Malformed(bad, after) => {
                            // The malformed bytes end `after` bytes before what was read.
                            let at = input.len() - src.len();
                            let first = at.saturating_sub(after as usize + bad as usize);
                            return Err(input.get(first).copied().unwrap_or(0));
                        }
                    }
                }
            }
        }
    }
}

/// Records cut by a dialect, with their fields (unquoted), for the sniffer.
#[derive(Debug, Clone, Copy)]
struct Cutter {
    delimiter: u8,
    quote: Option<u8>,
    escape: Option<u8>,
    comment: Option<u8>,
}

/// What cutting a sample gave: the records' fields, and whether it ended inside a quote.
struct Cut {
    records: Vec<Vec<String>>,
    open_quote: bool,
    /// Fields that were quoted.
    quoted: usize,
}

impl Cutter {
    /// Up to `max` records of `text`, skipping blank and comment lines.
    fn cut(&self, text: &str, max: usize) -> Cut {
        let bytes = text.as_bytes();
        let mut records = Vec::new();
        let mut fields: Vec<String> = Vec::new();
        let mut field: Vec<u8> = Vec::new();
        let mut i = 0;
        let mut in_quotes = false;
        let mut at_line_start = true;
        let mut quoted = 0;
        while i < bytes.len() && records.len() < max {
            let b = bytes[i];
            if at_line_start && !in_quotes {
                if Some(b) == self.comment || b == b'\n' || b == b'\r' {
                    // A comment or blank line: skip to its end.
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                    i += 1;
                    continue;
                }
                at_line_start = false;
            }
            if in_quotes {
                if Some(b) == self.escape && Some(b) != self.quote && i + 1 < bytes.len() {
                    field.push(bytes[i + 1]);
                    i += 2;
                    continue;
                }
                if Some(b) == self.quote {
                    if bytes.get(i + 1).copied() == self.quote {
                        field.push(b);
                        i += 2;
                        continue;
                    }
                    in_quotes = false;
                } else {
                    field.push(b);
                }
                i += 1;
                continue;
            }
            if b == self.delimiter {
                fields.push(String::from_utf8_lossy(&field).into_owned());
                field.clear();
            } else if b == b'\n' || b == b'\r' {
                fields.push(String::from_utf8_lossy(&field).into_owned());
                field.clear();
                records.push(std::mem::take(&mut fields));
                at_line_start = true;
            } else if Some(b) == self.quote && field.is_empty() {
                in_quotes = true;
                quoted += 1;
            } else {
                field.push(b);
            }
            i += 1;
        }
        if !at_line_start && !in_quotes && records.len() < max {
            fields.push(String::from_utf8_lossy(&field).into_owned());
            records.push(fields);
        }
        Cut {
            records,
            open_quote: in_quotes,
            quoted,
        }
    }
}

/// Records the sniffer looks at (DuckDB's default sample is 20,480 rows; dialects differ in the
/// first few hundred).
const SNIFF_RECORDS: usize = 1000;

/// Decides every setting `asked` leaves open, from `text` (the decoded head of the first file;
/// `whole_file`: it is the whole file).
pub fn sniff(text: &str, whole_file: bool, encoding: Encoding, asked: &CsvOptions) -> CsvDialect {
    let delimiters: Vec<u8> = asked
        .delimiter
        .map_or_else(|| vec![b',', b';', b'\t', b'|'], |d| vec![d]);
    let quotes: Vec<Option<u8>> = asked
        .quote
        .map_or_else(|| vec![Some(b'"'), Some(b'\''), None], |q| vec![q]);
    let comments: Vec<Option<u8>> = asked
        .comment
        .map_or_else(|| vec![None, Some(b'#')], |c| vec![c]);
    // Every record alike first, then more fields, then a quote that is used (a quote left
    // unused cuts quoted line breaks into more records, all alike), then more such records.
    type Key = (
        bool,
        usize,
        usize,
        usize,
        std::cmp::Reverse<usize>,
        std::cmp::Reverse<usize>,
    );
    let mut best: Option<(Key, Cutter, Cut)> = None;
    let mut rank = 0usize;
    for &delimiter in &delimiters {
        for &quote in &quotes {
            let escapes: Vec<Option<u8>> = match (asked.escape, quote) {
                (Some(e), _) => vec![e],
                (None, None) => vec![None],
                (None, Some(_)) => vec![None, Some(b'\\')],
            };
            for &escape in &escapes {
                for &comment in &comments {
                    rank += 1;
                    if Some(delimiter) == quote
                        || Some(delimiter) == comment
                        || (quote.is_some() && quote == comment)
                    {
                        continue;
                    }
                    let cutter = Cutter {
                        delimiter,
                        quote,
                        escape,
                        comment,
                    };
                    let cut = cutter.cut(text, SNIFF_RECORDS);
                    // A quote left open at the end of the whole file: not this quote.
                    if cut.open_quote && whole_file && quotes.len() > 1 {
                        continue;
                    }
                    let (consistent, inconsistent, fields) = consistency(&cut.records);
                    let key = (
                        consistent > 0 && inconsistent == 0,
                        fields,
                        cut.quoted,
                        consistent,
                        std::cmp::Reverse(inconsistent),
                        std::cmp::Reverse(rank),
                    );
                    if best.as_ref().is_none_or(|(k, _, _)| key > *k) {
                        best = Some((key, cutter, cut));
                    }
                }
            }
        }
    }
    let (mut cutter, mut records) = match best {
        Some((_, c, cut)) => (c, cut.records),
        None => (
            Cutter {
                delimiter: delimiters[0],
                quote: quotes[0],
                escape: None,
                comment: comments[0],
            },
            Vec::new(),
        ),
    };
    // `#` lines that cut like the other records win no consistency: they are comments when
    // they do not look like the data (another field count, or text in a numeric column).
    if asked.comment.is_none() && cutter.comment.is_none() {
        let with_comments = Cutter {
            comment: Some(b'#'),
            ..cutter
        };
        let kept = with_comments.cut(text, SNIFF_RECORDS).records;
        if hash_lines_are_comments(text, cutter, &kept) {
            cutter = with_comments;
            records = kept;
        }
    }
    let header = asked.header.unwrap_or_else(|| looks_like_header(&records));
    CsvDialect {
        delimiter: cutter.delimiter as char,
        quote: cutter.quote.map(char::from),
        escape: cutter.escape.map(char::from),
        comment: cutter.comment.map(char::from),
        header,
        null_tokens: asked.null_tokens.clone().unwrap_or_default(),
        encoding,
    }
}

/// Whether the lines of `text` starting with `#` are comments rather than records: one of them
/// has another field count than the other records (`kept`), or a value of another kind than
/// a typed column's.
fn hash_lines_are_comments(text: &str, cutter: Cutter, kept: &[Vec<String>]) -> bool {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('#'))
        .take(SNIFF_RECORDS)
        .collect();
    if lines.is_empty() || kept.is_empty() {
        return false;
    }
    let (_, _, fields) = consistency(kept);
    let body = if kept.len() > 1 { &kept[1..] } else { kept };
    let kinds: Vec<Option<Kind>> = (0..fields).map(|j| column_kind(body, j)).collect();
    lines.iter().any(|line| {
        let Some(record) = cutter.cut(line, 1).records.into_iter().next() else {
            return false;
        };
        record.len() != fields
            || record.iter().zip(&kinds).any(|(v, k)| {
                matches!(k, Some(k) if *k != Kind::Text && kind(v).is_some_and(|vk| vk != *k))
            })
    })
}

/// The kind every non-empty value of column `j` has, if they share one.
fn column_kind(records: &[Vec<String>], j: usize) -> Option<Kind> {
    let mut column: Option<Kind> = None;
    for k in records
        .iter()
        .filter_map(|r| r.get(j))
        .filter_map(|v| kind(v))
    {
        match column {
            None => column = Some(k),
            Some(c) if c == k => {}
            Some(_) => return Some(Kind::Text),
        }
    }
    column
}

/// (records having the most common field count, the other records, that count), the most common
/// count being one of more than one field when such a count exists: a delimiter that never
/// occurs gives one field per record, consistently, and must lose to one that cuts every record
/// alike. Records of one field do not count as consistent.
fn consistency(records: &[Vec<String>]) -> (usize, usize, usize) {
    let mut counts: std::collections::BTreeMap<usize, usize> = std::collections::BTreeMap::new();
    for r in records {
        *counts.entry(r.len()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(fields, n)| (n, fields))
        .max_by_key(|&(n, fields)| (fields > 1, n, fields))
        .map_or((0, 0, 0), |(n, fields)| {
            let consistent = (fields > 1) as usize * n;
            (consistent, records.len() - consistent, fields)
        })
}

/// The kind of value a field holds, for header detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Bool,
    Date,
    Text,
}

fn kind(v: &str) -> Option<Kind> {
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    if v.parse::<f64>().is_ok() {
        return Some(Kind::Number);
    }
    if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false") {
        return Some(Kind::Bool);
    }
    let b = v.as_bytes();
    if b.len() >= 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b[..4]
            .iter()
            .chain(&b[5..7])
            .chain(&b[8..10])
            .all(u8::is_ascii_digit)
    {
        return Some(Kind::Date);
    }
    Some(Kind::Text)
}

/// Whether the first record is a header: some column's first value is not of the type all its
/// other values share (`id` over numbers); a first record whose typed columns all match the rest
/// is data. When every column is text, a header is assumed unless the first record has an empty
/// or repeated value, which names do not.
fn looks_like_header(records: &[Vec<String>]) -> bool {
    let Some((first, body)) = records.split_first() else {
        return true;
    };
    if body.is_empty() {
        return true;
    }
    let mut typed_match = false;
    for (j, value) in first.iter().enumerate() {
        let mut column: Option<Kind> = None;
        let mut mixed = false;
        for k in body.iter().filter_map(|r| r.get(j)).filter_map(|v| kind(v)) {
            match column {
                None => column = Some(k),
                Some(c) if c == k => {}
                Some(_) => mixed = true,
            }
        }
        match (column, mixed) {
            (Some(c), false) if c != Kind::Text => {
                if kind(value) == Some(c) {
                    typed_match = true;
                } else if kind(value).is_some() {
                    return true;
                }
            }
            _ => {}
        }
    }
    if typed_match {
        return false;
    }
    let mut names: Vec<&str> = first.iter().map(|s| s.trim()).collect();
    if names.iter().any(|n| n.is_empty()) {
        return false;
    }
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    names.len() == before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniffed(text: &str) -> CsvDialect {
        sniff(text, true, Encoding::Utf8, &CsvOptions::default())
    }

    #[test]
    fn finds_the_delimiter() {
        assert_eq!(sniffed("a,b,c\n1,2,3\n4,5,6\n").delimiter, ',');
        assert_eq!(sniffed("a;b;c\n1,5;2;x\n4;5,5;y\n").delimiter, ';');
        assert_eq!(sniffed("a\tb\n1\t2\n").delimiter, '\t');
        assert_eq!(sniffed("a|b|c\n1|2|3\n").delimiter, '|');
        // One column: nothing cuts it; the usual delimiter is kept.
        assert_eq!(sniffed("a\n1\n2\n").delimiter, ',');
    }

    #[test]
    fn finds_quotes_escapes_and_comments() {
        let d = sniffed("name,note\n\"Smith, J\",\"said \"\"hi\"\"\nthen left\"\nDoe,plain\n");
        assert_eq!((d.delimiter, d.quote, d.escape), (',', Some('"'), None));
        // Every record holds a quoted line break: an unused quote would cut each in two
        // records, as alike as the right ones.
        let d = sniffed("id,note\n1,\"a\nb, c\"\n2,\"d\ne\"\n");
        assert_eq!(d.quote, Some('"'));
        let d = sniffed("a,b\n'x, y',1\n'z, w',2\n");
        assert_eq!(d.quote, Some('\''));
        let d = sniffed("a,b\n\"x \\\", y\",1\n\"p\",2\n");
        assert_eq!(d.escape, Some('\\'));
        let d = sniffed("# exported 2024\n# by tool, v2\na,b,c\n1,2,3\n4,5,6\n");
        assert_eq!(d.comment, Some('#'));
        assert!(d.header);
        // A value starting with # is data, not a comment.
        assert_eq!(sniffed("tag,n\n#x,1\n#y,2\nz,3\n").comment, None);
    }

    #[test]
    fn finds_the_header() {
        assert!(sniffed("id,name\n1,a\n2,b\n").header);
        assert!(!sniffed("1,a\n2,b\n3,c\n").header);
        assert!(!sniffed("2024-01-01,5\n2024-01-02,6\n").header);
        assert!(sniffed("date,n\n2024-01-01,5\n2024-01-02,6\n").header);
        // All text: a header unless a value is empty or repeated.
        assert!(sniffed("first,last\nann,lee\nbob,ray\n").header);
        assert!(!sniffed("ann,ann\nbob,ray\n").header);
        // Said by the user: not sniffed.
        let asked = CsvOptions {
            header: Some(false),
            ..CsvOptions::default()
        };
        assert!(!sniff("id,name\n1,a\n", true, Encoding::Utf8, &asked).header);
    }

    #[test]
    fn decodes_heads() {
        let (t, e) = decode_head(b"\xEF\xBB\xBFa,b\n1,2\n", true, None, "f").unwrap();
        assert_eq!((t.as_str(), e), ("a,b\n1,2\n", Encoding::Utf8));
        let utf16: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain("é,b\n".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let (t, e) = decode_head(&utf16, true, None, "f").unwrap();
        assert_eq!((t.as_str(), e), ("é,b\n", Encoding::Utf16Le));
        let (t, _) = decode_head(b"caf\xE9\n\x80", true, Some(Encoding::Windows1252), "f").unwrap();
        assert_eq!(t, "café\n€");
        let (t, _) = decode_head(b"caf\xE9\n\x80", true, Some(Encoding::Latin1), "f").unwrap();
        assert_eq!(t, "café\n\u{80}");
        let err = decode_head(b"a,b\nx,caf\xE9\n", true, None, "data.csv")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data.csv: line 2, column 6: byte 0xE9 is not valid utf-8"),
            "{err}"
        );
        assert!(err.contains("--encoding"), "{err}");
        // A head cut inside a character is not an error; the cut line is dropped.
        let (t, _) = decode_head("a\nbé".as_bytes().split_at(4).0, false, None, "f").unwrap();
        assert_eq!(t, "a\n");
    }

    #[test]
    fn parses_settings() {
        assert_eq!(parse_char("delimiter", ";").unwrap(), Some(b';'));
        assert_eq!(parse_char("delimiter", "tab").unwrap(), Some(b'\t'));
        assert_eq!(parse_char("delimiter", "\\t").unwrap(), Some(b'\t'));
        assert_eq!(parse_char("quote", "none").unwrap(), None);
        assert!(parse_char("delimiter", ";;").is_err());
        assert!(parse_char("delimiter", "é").is_err());
        assert_eq!("UTF-16".parse::<Encoding>().unwrap(), Encoding::Utf16Le);
        assert_eq!("cp1252".parse::<Encoding>().unwrap(), Encoding::Windows1252);
        assert!("ebcdic".parse::<Encoding>().is_err());
    }
}
