//! Semantic pattern detection for string values.
//!
//! [`classify`] decides which [`Pattern`]s a single string value matches and
//! [`PatternCounts`] accumulates those decisions over a column in a mergeable
//! way. The matchers are hand-written byte-level state machines: no regex, no
//! allocation per value, and every matcher bails out on the first byte or on
//! the length whenever it can, because the profiler runs them on tens of
//! millions of values.
//!
//! # General rules
//!
//! * The empty string never matches anything.
//! * A value with leading or trailing whitespace never matches anything: the
//!   profiler reports raw values, and `" 42"` is not a clean integer.
//! * Every pattern is pure ASCII, so any non-ASCII byte makes a matcher fail.
//!   Matching works on bytes, never on `char` boundaries, so arbitrary Unicode
//!   input is safe (e.g. `"naïve@例え.jp"` is not an email).
//! * A value can match several patterns, but most are exclusive by
//!   construction. The only overlap that occurs in practice is a signed
//!   integer that is also an E.164 phone number (`"+14155552671"` is both
//!   [`Pattern::Integer`] and [`Pattern::Phone`]).
//!
//! # Per-pattern rules
//!
//! * **Email**: exactly one `@`, at most 254 bytes. The local part is 1..=64
//!   bytes of `[A-Za-z0-9._%+-]`, does not start or end with `.` and has no
//!   `..`. The domain is at most 253 bytes with at least two `.`-separated
//!   labels; each label is 1..=63 bytes of `[A-Za-z0-9-]` and does not start
//!   or end with `-`; the last label (the TLD) is at least two ASCII letters.
//! * **Url**: scheme `http://`, `https://` or `ftp://` (case-insensitive),
//!   then a non-empty host (either `[A-Za-z0-9.-]` starting with a letter or
//!   digit and without `..`, or a bracketed IPv6 literal such as `[::1]`),
//!   an optional `:port` (1..=5 digits, at most 65535), then an optional
//!   path, query or fragment starting with `/`, `?` or `#` made of printable
//!   non-space ASCII. User info (`user@host`) is not accepted.
//! * **Uuid**: `8-4-4-4-12` hex digits with hyphens (36 bytes), either case.
//! * **Ipv4**: four dot-separated decimal octets 0..=255 without leading
//!   zeros (`"0"` is fine, `"01"` is not).
//! * **Ipv6**: 2..=45 bytes of hex digits, `:` and `.` with at least two `:`,
//!   accepted by [`std::net::Ipv6Addr`]'s parser (which only runs after these
//!   cheap checks). Zone ids (`%eth0`) are not accepted.
//! * **Phone**: an optional leading `+`, then digits grouped by the
//!   separators ` `, `-`, `.` and at most one parenthesised group of 1..=5
//!   digits (`"(555) 123-4567"`, `"+44 (0) 20 7946 0958"`). 7..=15 digits in
//!   total; the value must have a leading `+`, a separator or parentheses, so
//!   a bare digit string is an integer and not a phone. It must start (after
//!   the `+`) with a digit or `(` and end with a digit, two of ` -.` may not
//!   follow each other, and every digit group except the first must have at
//!   least two digits. Values that are an Ipv4 address or a Decimal, or are
//!   laid out like a Date (even an impossible one such as `"2023-02-29"`),
//!   are not phones, and neither are a few well-known look-alikes
//!   without `+` or parentheses: thousands-grouped numbers (`"1 234 567"`,
//!   `"12.345.678"`: a first group of 1..=3 digits followed only by groups of
//!   exactly 3, separated uniformly by spaces or by dots), US ZIP+4 codes
//!   (`"12345-6789"`) and year ranges (`"1990-2020"`).
//! * **Date**: `YYYY-MM-DD`, `YYYY/MM/DD` and `YYYY.MM.DD` with two-digit,
//!   zero-padded month and day; `DD/MM/YYYY` or `MM/DD/YYYY` (accepted if
//!   either reading is valid) and the same with `-`; `DD.MM.YYYY`. In the
//!   day-first/month-first forms, day and month may have one or two digits
//!   (`"1/2/2024"`). The year is 0001..=9999, the month 1..=12 and the day
//!   must exist in that month (Gregorian leap years for February 29th).
//!   `YYYYMMDD` is not a date: it is an Integer.
//! * **Datetime**: a `YYYY-MM-DD` date, then `T` or a space, then `HH:MM` or
//!   `HH:MM:SS`, where seconds may carry a fraction of 1..=9 digits, then an
//!   optional `Z`, `±HH:MM` or `±HHMM` offset. Hours are 0..=23, minutes
//!   0..=59 and seconds 0..=60 (60 for a leap second).
//! * **Integer**: an optional `+`/`-` sign, then one or more ASCII digits
//!   (leading zeros allowed: `"007"` is an integer string).
//! * **Decimal**: an optional sign, then digits containing exactly one `.`
//!   and at least one digit before or after it (`"1.5"`, `"1."`, `".5"`), then
//!   an optional exponent `e`/`E`, optional sign and one or more digits;
//!   digits with an exponent and no `.` (`"1e5"`) are a decimal too. Integer
//!   and Decimal are exclusive. No thousands separators, no `NaN`/`inf`.

use std::net::Ipv6Addr;

/// A semantic pattern a string value can match.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// `local@example.com`.
    Email,
    /// `http://`, `https://` or `ftp://` URL.
    Url,
    /// Hyphenated 8-4-4-4-12 hex UUID.
    Uuid,
    /// Dotted-decimal IPv4 address.
    Ipv4,
    /// IPv6 address as accepted by [`std::net::Ipv6Addr`].
    Ipv6,
    /// Phone number with a `+` prefix or separators.
    Phone,
    /// Calendar date (no time of day).
    Date,
    /// ISO 8601 / RFC 3339 style date and time.
    Datetime,
    /// Optionally signed digit string.
    Integer,
    /// Optionally signed decimal or scientific-notation number.
    Decimal,
}

impl Pattern {
    /// Every pattern, in bit order: bit `i` of [`classify`]'s result is
    /// `Pattern::ALL[i]`.
    pub const ALL: [Pattern; 10] = [
        Pattern::Email,
        Pattern::Url,
        Pattern::Uuid,
        Pattern::Ipv4,
        Pattern::Ipv6,
        Pattern::Phone,
        Pattern::Date,
        Pattern::Datetime,
        Pattern::Integer,
        Pattern::Decimal,
    ];

    /// The pattern's name (identical to its serde representation).
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Email => "email",
            Pattern::Url => "url",
            Pattern::Uuid => "uuid",
            Pattern::Ipv4 => "ipv4",
            Pattern::Ipv6 => "ipv6",
            Pattern::Phone => "phone",
            Pattern::Date => "date",
            Pattern::Datetime => "datetime",
            Pattern::Integer => "integer",
            Pattern::Decimal => "decimal",
        }
    }

    /// Position in [`Pattern::ALL`] (and bit position in [`classify`]'s result).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The inferred semantic type a column gets when most of its values match:
    /// `"email"`, `"url"`, `"uuid"`, `"ip_address"` (both IPv4 and IPv6),
    /// `"phone"`, `"date"`, `"datetime"` and `"numeric_string"` (both Integer
    /// and Decimal).
    pub fn semantic_type(self) -> &'static str {
        match self {
            Pattern::Email => "email",
            Pattern::Url => "url",
            Pattern::Uuid => "uuid",
            Pattern::Ipv4 | Pattern::Ipv6 => "ip_address",
            Pattern::Phone => "phone",
            Pattern::Date => "date",
            Pattern::Datetime => "datetime",
            Pattern::Integer | Pattern::Decimal => "numeric_string",
        }
    }
}

const fn mask(p: Pattern) -> u16 {
    1 << (p as u16)
}

const EMAIL: u16 = mask(Pattern::Email);
const URL: u16 = mask(Pattern::Url);
const UUID: u16 = mask(Pattern::Uuid);
const IPV4: u16 = mask(Pattern::Ipv4);
const IPV6: u16 = mask(Pattern::Ipv6);
const PHONE: u16 = mask(Pattern::Phone);
const DATE: u16 = mask(Pattern::Date);
const DATETIME: u16 = mask(Pattern::Datetime);
const INTEGER: u16 = mask(Pattern::Integer);
const DECIMAL: u16 = mask(Pattern::Decimal);

/// Which patterns `value` matches, as a bit set (bit i = `Pattern::ALL[i]`).
///
/// A value can match several patterns (e.g. `"+14155552671"` is Integer and
/// Phone), but most are exclusive: `"20240101"` is Integer only,
/// `"2024-01-01"` is Date only and `"1.5"` is Decimal only. See the module
/// documentation for the exact rules.
pub fn classify(value: &str) -> u16 {
    classify_with(value, true)
}

// Byte classes, for the one-pass gate of `classify`: a matcher runs only when the value holds
// the bytes it cannot match without.
const C_AT: u8 = 1;
const C_COLON: u8 = 1 << 1;
const C_SEP: u8 = 1 << 2; // '-', '/', '.', ' ', '(', ')' (dates, phones, IPv4)
const C_OTHER: u8 = 1 << 3; // anything else but ASCII letters, digits and '+'
const C_LETTER: u8 = 1 << 4; // ASCII letters but 'e'/'E' (the only letter a number may hold)

const fn byte_classes() -> [u8; 256] {
    let mut t = [C_OTHER; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = match b {
            b'0'..=b'9' | b'+' | b'e' | b'E' => 0,
            b'a'..=b'z' | b'A'..=b'Z' => C_LETTER,
            b'@' => C_AT,
            b':' => C_COLON,
            b'-' | b'/' | b'.' | b' ' | b'(' | b')' => C_SEP,
            _ => C_OTHER,
        };
        c += 1;
    }
    t
}

static BYTE_CLASSES: [u8; 256] = byte_classes();

/// `classify`, with the byte-class gate on (`gated`) or off: the gate only skips matchers whose
/// necessary bytes are absent, so both give the same answer (a test holds them to it).
fn classify_with(value: &str, gated: bool) -> u16 {
    let b = value.as_bytes();
    let classes = if gated {
        b.iter().fold(0u8, |acc, &c| acc | BYTE_CLASSES[c as usize])
    } else {
        0xff
    };
    let has = |class: u8| classes & class != 0;
    let (Some(&first), Some(&last)) = (b.first(), b.last()) else {
        return 0;
    };
    if first.is_ascii_whitespace() || last.is_ascii_whitespace() {
        return 0;
    }
    match first {
        b'0'..=b'9' => {
            // Numbers exclude every other pattern (a phone must not be a
            // decimal, and an unsigned integer has no '+' or separator), and
            // anything laid out like a date, valid or not, is not a phone.
            // A letter other than e/E rules out a number (a gate on presence, so off when ungated).
            let num = if gated && has(C_LETTER) {
                0
            } else {
                number_bits(b)
            };
            if num != 0 {
                return num;
            }
            // Dates, times, addresses and phones all need separators; without any, only a
            // UUID-free hex token or the like is left, which matches nothing.
            if !has(C_AT | C_COLON | C_SEP) {
                return 0;
            }
            let date = date_shape(b);
            if date == DateShape::Valid {
                DATE
            } else if has(C_COLON) && is_datetime(b) {
                DATETIME
            } else if is_ipv4(b) {
                IPV4
            } else if is_uuid(b) {
                UUID
            } else if has(C_COLON) && is_ipv6(b) {
                IPV6
            } else if has(C_AT) && is_email(b) {
                EMAIL
            } else if date == DateShape::NotDate && is_phone(b) {
                PHONE
            } else {
                0
            }
        }
        b'+' => {
            let num = number_bits(b);
            if num & DECIMAL == 0 && is_phone(b) {
                num | PHONE
            } else if num != 0 {
                num
            } else if is_email(b) {
                EMAIL
            } else {
                0
            }
        }
        b'-' => {
            let num = number_bits(b);
            if num != 0 {
                num
            } else if is_email(b) {
                EMAIL
            } else {
                0
            }
        }
        b'.' => number_bits(b),
        b'(' if is_phone(b) => PHONE,
        b':' if is_ipv6(b) => IPV6,
        b'a'..=b'z' | b'A'..=b'Z' => {
            if matches!(first | 0x20, b'h' | b'f') && has(C_COLON) && is_url(b) {
                URL
            } else if first.is_ascii_hexdigit() && has(C_SEP) && is_uuid(b) {
                UUID
            } else if first.is_ascii_hexdigit() && has(C_COLON) && is_ipv6(b) {
                IPV6
            } else if has(C_AT) && is_email(b) {
                EMAIL
            } else {
                0
            }
        }
        b'_' | b'%' if is_email(b) => EMAIL,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------

/// Advances `i` past ASCII digits, returning how many were skipped.
#[inline]
fn skip_digits(b: &[u8], i: &mut usize) -> usize {
    let start = *i;
    while b.get(*i).is_some_and(u8::is_ascii_digit) {
        *i += 1;
    }
    *i - start
}

/// `INTEGER`, `DECIMAL` or 0.
fn number_bits(b: &[u8]) -> u16 {
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int_digits = skip_digits(b, &mut i);
    let mut dot = false;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        dot = true;
        i += 1;
        frac_digits = skip_digits(b, &mut i);
    }
    if int_digits + frac_digits == 0 {
        return 0;
    }
    let mut exponent = false;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if skip_digits(b, &mut i) == 0 {
            return 0;
        }
        exponent = true;
    }
    if i != b.len() {
        0
    } else if dot || exponent {
        DECIMAL
    } else {
        INTEGER
    }
}

// ---------------------------------------------------------------------------
// Dates and times
// ---------------------------------------------------------------------------

#[inline]
fn digit_at(b: &[u8], i: usize) -> Option<u32> {
    let c = *b.get(i)?;
    c.is_ascii_digit().then(|| u32::from(c - b'0'))
}

/// Exactly two digits at `i`.
#[inline]
fn two_digits(b: &[u8], i: usize) -> Option<u32> {
    Some(digit_at(b, i)? * 10 + digit_at(b, i + 1)?)
}

/// Exactly four digits at `i`.
#[inline]
fn four_digits(b: &[u8], i: usize) -> Option<u32> {
    Some(two_digits(b, i)? * 100 + two_digits(b, i + 2)?)
}

/// One or two digits at `i`; returns the value and the index after them.
#[inline]
fn one_or_two_digits(b: &[u8], i: usize) -> Option<(u32, usize)> {
    let d = digit_at(b, i)?;
    match digit_at(b, i + 1) {
        Some(d2) => Some((d * 10 + d2, i + 2)),
        None => Some((d, i + 1)),
    }
}

fn is_leap_year(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn valid_ymd(year: u32, month: u32, day: u32) -> bool {
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => return false,
    };
    (1..=9999).contains(&year) && (1..=days).contains(&day)
}

/// `YYYY<sep>MM<sep>DD` (10 bytes) with a separator from `seps`, not yet
/// checked against the calendar.
fn ymd_parts(b: &[u8], seps: &[u8]) -> Option<(u32, u32, u32)> {
    if b.len() != 10 || !seps.contains(&b[4]) || b[7] != b[4] {
        return None;
    }
    Some((four_digits(b, 0)?, two_digits(b, 5)?, two_digits(b, 8)?))
}

/// How a value matches the digit layout of a [`Pattern::Date`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateShape {
    /// Not laid out like a date.
    NotDate,
    /// Laid out like a date but not a real calendar day ("2023-02-29").
    Invalid,
    /// A real calendar day.
    Valid,
}

fn date_shape(b: &[u8]) -> DateShape {
    let n = b.len();
    if !(8..=10).contains(&n) {
        return DateShape::NotDate;
    }
    let valid = |ok: bool| {
        if ok {
            DateShape::Valid
        } else {
            DateShape::Invalid
        }
    };
    if let Some((y, m, d)) = ymd_parts(b, b"-/.") {
        return valid(valid_ymd(y, m, d));
    }
    // D/M/YYYY, M/D/YYYY, D-M-YYYY, M-D-YYYY, D.M.YYYY (1 or 2 digit parts).
    let Some((a, i)) = one_or_two_digits(b, 0) else {
        return DateShape::NotDate;
    };
    let sep = b[i];
    if !matches!(sep, b'/' | b'-' | b'.') {
        return DateShape::NotDate;
    }
    let Some((c, j)) = one_or_two_digits(b, i + 1) else {
        return DateShape::NotDate;
    };
    if b.get(j) != Some(&sep) || n != j + 5 {
        return DateShape::NotDate;
    }
    let Some(year) = four_digits(b, j + 1) else {
        return DateShape::NotDate;
    };
    valid(valid_ymd(year, c, a) || (sep != b'.' && valid_ymd(year, a, c)))
}

fn is_datetime(b: &[u8]) -> bool {
    b.len() >= 16
        && matches!(b[10], b'T' | b' ')
        && ymd_parts(&b[..10], b"-").is_some_and(|(y, m, d)| valid_ymd(y, m, d))
        && is_time(&b[11..]).is_some()
}

/// `HH:MM[:SS[.fraction]][Z|±HH:MM|±HHMM]`, the whole slice.
fn is_time(t: &[u8]) -> Option<()> {
    let hour = two_digits(t, 0)?;
    let minute = two_digits(t, 3)?;
    if t[2] != b':' || hour > 23 || minute > 59 {
        return None;
    }
    let mut i = 5;
    if t.get(i) == Some(&b':') {
        if two_digits(t, i + 1)? > 60 {
            return None;
        }
        i += 3;
        if t.get(i) == Some(&b'.') {
            i += 1;
            if !(1..=9).contains(&skip_digits(t, &mut i)) {
                return None;
            }
        }
    }
    match t.get(i) {
        None => Some(()),
        Some(b'Z') if i + 1 == t.len() => Some(()),
        Some(b'+' | b'-') => {
            let off_hour = two_digits(t, i + 1)?;
            let rest = &t[i + 3..];
            let off_minute = match rest {
                [b':', ..] if rest.len() == 3 => two_digits(rest, 1)?,
                _ if rest.len() == 2 => two_digits(rest, 0)?,
                _ => return None,
            };
            (off_hour <= 23 && off_minute <= 59).then_some(())
        }
        Some(_) => None,
    }
}

// ---------------------------------------------------------------------------
// Identifiers and addresses
// ---------------------------------------------------------------------------

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

fn is_ipv4(b: &[u8]) -> bool {
    if !(7..=15).contains(&b.len()) {
        return false;
    }
    let mut i = 0;
    for octet in 0..4 {
        if octet > 0 {
            if b.get(i) != Some(&b'.') {
                return false;
            }
            i += 1;
        }
        let start = i;
        let len = skip_digits(b, &mut i);
        if len == 0 || len > 3 || (len > 1 && b[start] == b'0') {
            return false;
        }
        let value = b[start..i]
            .iter()
            .fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0'));
        if value > 255 {
            return false;
        }
    }
    i == b.len()
}

fn is_ipv6(b: &[u8]) -> bool {
    if !(2..=45).contains(&b.len()) {
        return false;
    }
    let mut colons = 0;
    for &c in b {
        match c {
            b':' => colons += 1,
            b'.' => {}
            c if c.is_ascii_hexdigit() => {}
            _ => return false,
        }
    }
    // Pure ASCII at this point, so from_utf8 cannot fail.
    colons >= 2 && std::str::from_utf8(b).is_ok_and(|s| s.parse::<Ipv6Addr>().is_ok())
}

#[inline]
fn is_local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_email(b: &[u8]) -> bool {
    if !(6..=254).contains(&b.len()) {
        return false;
    }
    let mut i = 0;
    let mut prev = 0u8;
    loop {
        let Some(&c) = b.get(i) else {
            return false; // no '@'
        };
        if c == b'@' {
            break;
        }
        if !is_local_char(c) || (c == b'.' && prev == b'.') {
            return false;
        }
        prev = c;
        i += 1;
        if i > 64 {
            return false;
        }
    }
    if i == 0 || b[0] == b'.' || prev == b'.' {
        return false;
    }
    is_email_domain(&b[i + 1..])
}

fn is_email_domain(d: &[u8]) -> bool {
    if d.len() > 253 {
        return false;
    }
    let mut labels = 0;
    let mut tld: &[u8] = &[];
    for label in d.split(|&c| c == b'.') {
        let (Some(&first), Some(&last)) = (label.first(), label.last()) else {
            return false;
        };
        if label.len() > 63
            || first == b'-'
            || last == b'-'
            || !label
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'-')
        {
            return false;
        }
        labels += 1;
        tld = label;
    }
    labels >= 2 && tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic)
}

fn strip_prefix_ignore_case<'a>(b: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = b.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &b[prefix.len()..])
}

fn is_url(b: &[u8]) -> bool {
    let Some(rest) = strip_prefix_ignore_case(b, b"http://")
        .or_else(|| strip_prefix_ignore_case(b, b"https://"))
        .or_else(|| strip_prefix_ignore_case(b, b"ftp://"))
    else {
        return false;
    };
    let end = rest
        .iter()
        .position(|&c| matches!(c, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    is_url_authority(authority) && tail.iter().all(u8::is_ascii_graphic)
}

fn is_url_authority(a: &[u8]) -> bool {
    let (host_ok, port) = if let Some(bracketed) = a.strip_prefix(b"[") {
        let Some(close) = bracketed.iter().position(|&c| c == b']') else {
            return false;
        };
        (is_ipv6(&bracketed[..close]), &bracketed[close + 1..])
    } else {
        let colon = a.iter().position(|&c| c == b':').unwrap_or(a.len());
        (is_url_host(&a[..colon]), &a[colon..])
    };
    host_ok && (port.is_empty() || is_url_port(port))
}

fn is_url_host(h: &[u8]) -> bool {
    let Some(&first) = h.first() else {
        return false;
    };
    if h.len() > 253 || !first.is_ascii_alphanumeric() {
        return false;
    }
    let mut prev = 0u8;
    for &c in h {
        if !(c.is_ascii_alphanumeric() || c == b'-' || c == b'.') || (c == b'.' && prev == b'.') {
            return false;
        }
        prev = c;
    }
    true
}

/// `:` followed by 1..=5 digits, at most 65535.
fn is_url_port(p: &[u8]) -> bool {
    let Some(digits) = p.strip_prefix(b":") else {
        return false;
    };
    (1..=5).contains(&digits.len())
        && digits.iter().all(u8::is_ascii_digit)
        && digits
            .iter()
            .fold(0u32, |acc, &c| acc * 10 + u32::from(c - b'0'))
            <= 65535
}

// ---------------------------------------------------------------------------
// Phone numbers
// ---------------------------------------------------------------------------

/// Longest value considered as a phone number (15 digits plus generous room
/// for `+`, separators and parentheses).
const MAX_PHONE_LEN: usize = 32;

const SEP_SPACE: u8 = 1;
const SEP_DASH: u8 = 2;
const SEP_DOT: u8 = 4;

/// The phone shape on its own; [`classify`] additionally rejects values that
/// are an Ipv4 address or a Decimal or are laid out like a Date.
fn is_phone(b: &[u8]) -> bool {
    if !(7..=MAX_PHONE_LEN).contains(&b.len()) {
        return false;
    }
    let plus = b[0] == b'+';
    let body = &b[usize::from(plus)..];
    let (Some(&first), Some(&last)) = (body.first(), body.last()) else {
        return false;
    };
    if !(first.is_ascii_digit() || first == b'(') || !last.is_ascii_digit() {
        return false;
    }

    let mut digits = 0usize;
    let mut group = 0usize; // length of the current digit run
    let mut groups = 0usize; // finished groups, the parenthesised one included
    let mut first_group = 0usize; // length of the first unparenthesised group
    let mut second_group = 0usize;
    let mut later_all_three = true; // every unparenthesised group after the first has 3 digits
    let mut sep_kinds = 0u8;
    let mut prev_sep = false; // previous byte was one of ' ', '-', '.'
    let mut paren = 0u8; // 0: none yet, 1: open, 2: closed

    // Finishes an unparenthesised digit group; false if it is too short.
    let mut finish_group = |group: &mut usize, groups: &mut usize| -> bool {
        if *group == 0 {
            return true;
        }
        if *groups > 0 && *group < 2 {
            return false;
        }
        if first_group == 0 {
            first_group = *group;
        } else {
            if second_group == 0 {
                second_group = *group;
            }
            if *group != 3 {
                later_all_three = false;
            }
        }
        *groups += 1;
        *group = 0;
        true
    };

    for &c in body {
        match c {
            b'0'..=b'9' => {
                digits += 1;
                group += 1;
                prev_sep = false;
            }
            b' ' | b'-' | b'.' => {
                if prev_sep || paren == 1 || !finish_group(&mut group, &mut groups) {
                    return false;
                }
                sep_kinds |= match c {
                    b' ' => SEP_SPACE,
                    b'-' => SEP_DASH,
                    _ => SEP_DOT,
                };
                prev_sep = true;
            }
            b'(' => {
                if paren != 0 || group > 0 {
                    return false;
                }
                paren = 1;
                prev_sep = false;
            }
            b')' => {
                if paren != 1 || !(1..=5).contains(&group) {
                    return false;
                }
                paren = 2;
                groups += 1;
                group = 0;
                prev_sep = false;
            }
            _ => return false,
        }
    }
    if paren == 1 || !finish_group(&mut group, &mut groups) {
        return false;
    }
    if !(7..=15).contains(&digits) || !(plus || sep_kinds != 0 || paren == 2) {
        return false;
    }
    if !plus && paren == 0 {
        // Thousands-grouped numbers: "1 234 567", "12.345.678".
        if (sep_kinds == SEP_SPACE || sep_kinds == SEP_DOT)
            && groups >= 2
            && first_group <= 3
            && later_all_three
        {
            return false;
        }
        // ZIP+4 codes ("12345-6789") and year ranges ("1990-2020").
        if sep_kinds == SEP_DASH && groups == 2 {
            if first_group == 5 && second_group == 4 {
                return false;
            }
            if first_group == 4
                && second_group == 4
                && matches!(body[0], b'1' | b'2')
                && matches!(body[5], b'1' | b'2')
            {
                return false;
            }
        }
    }
    true
}

// ---------------------------------------------------------------------------
// Counting
// ---------------------------------------------------------------------------

/// Counts of matches per pattern; mergeable by addition.
///
/// `matches[i]` counts the values matching `Pattern::ALL[i]`; since a value
/// can match several patterns, the matches can add up to more than `checked`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PatternCounts {
    /// Number of values classified.
    pub checked: u64,
    /// Matches per pattern, indexed by [`Pattern::index`].
    pub matches: [u64; 10],
}

impl PatternCounts {
    /// Classifies `value` once: `checked += 1` and one match per pattern it
    /// matches.
    pub fn observe(&mut self, value: &str) {
        self.observe_n(value, 1);
    }

    /// Same as calling [`observe`](Self::observe) `n` times (classifies once).
    pub fn observe_n(&mut self, value: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.checked += n;
        let mut bits = classify(value);
        while bits != 0 {
            self.matches[bits.trailing_zeros() as usize] += n;
            bits &= bits - 1;
        }
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &PatternCounts) {
        self.checked += other.checked;
        for (mine, theirs) in self.matches.iter_mut().zip(other.matches) {
            *mine += theirs;
        }
    }

    /// (pattern, match_count, match_ratio over `checked`) for patterns with
    /// match_count > 0, sorted by count descending then Pattern order. The
    /// ratio is 0.0 when nothing was checked.
    pub fn detected(&self) -> Vec<(Pattern, u64, f64)> {
        let mut out: Vec<(Pattern, u64, f64)> = Pattern::ALL
            .iter()
            .filter_map(|&p| {
                let count = self.matches[p.index()];
                (count > 0).then(|| {
                    let ratio = if self.checked == 0 {
                        0.0
                    } else {
                        count as f64 / self.checked as f64
                    };
                    (p, count, ratio)
                })
            })
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns `value` matches, in `Pattern::ALL` order.
    fn pats(value: &str) -> Vec<Pattern> {
        let bits = classify(value);
        Pattern::ALL
            .into_iter()
            .filter(|p| bits & (1 << p.index()) != 0)
            .collect()
    }

    #[track_caller]
    fn assert_only(value: &str, expected: &[Pattern]) {
        assert_eq!(pats(value), expected, "classify({value:?})");
    }

    #[track_caller]
    fn assert_is(value: &str, p: Pattern) {
        assert!(
            pats(value).contains(&p),
            "{value:?} should be {p:?}, got {:?}",
            pats(value)
        );
    }

    #[track_caller]
    fn assert_not(value: &str, p: Pattern) {
        assert!(
            !pats(value).contains(&p),
            "{value:?} should not be {p:?}, got {:?}",
            pats(value)
        );
    }

    use Pattern::*;

    #[test]
    fn pattern_metadata() {
        for (i, p) in Pattern::ALL.into_iter().enumerate() {
            assert_eq!(p.index(), i);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.name()));
            let back: Pattern = serde_json::from_str(&json).unwrap();
            assert_eq!(back, p);
        }
        let names: Vec<_> = Pattern::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            [
                "email", "url", "uuid", "ipv4", "ipv6", "phone", "date", "datetime", "integer",
                "decimal"
            ]
        );
        let types: Vec<_> = Pattern::ALL.iter().map(|p| p.semantic_type()).collect();
        assert_eq!(
            types,
            [
                "email",
                "url",
                "uuid",
                "ip_address",
                "ip_address",
                "phone",
                "date",
                "datetime",
                "numeric_string",
                "numeric_string"
            ]
        );
        let mut sorted = Pattern::ALL;
        sorted.sort();
        assert_eq!(sorted, Pattern::ALL);
    }

    #[test]
    fn empty_and_whitespace() {
        for v in [
            "",
            " ",
            "\t",
            "\n",
            " 42",
            "42 ",
            "\t42",
            "42\n",
            " 1.5",
            "a@b.com ",
            " 2024-01-01",
            "2024-01-01\r",
            " +1 555 123 4567",
            "http://x.com ",
            "\u{a0}42",
            "42\u{a0}",
            "\u{3000}1",
        ] {
            assert_only(v, &[]);
        }
    }

    #[test]
    fn integers() {
        for v in [
            "0",
            "7",
            "42",
            "-42",
            "+42",
            "007",
            "20240101",
            "123456789012345678901234567890",
        ] {
            assert_only(v, &[Integer]);
        }
        for v in [
            "+",
            "-",
            "--1",
            "+-1",
            "1-",
            "1+",
            "1,000",
            "1_000",
            "1 000",
            "0x1F",
            "١٢٣",
            "１２３",
            "12a",
            "a12",
        ] {
            assert_not(v, Integer);
        }
    }

    #[test]
    fn decimals() {
        for v in [
            "1.5",
            "-1.5",
            "+1.5",
            "0.0",
            "1.",
            ".5",
            "-.5",
            "1e5",
            "1E5",
            "1e+5",
            "1e-5",
            "-1.5e-10",
            "1.e5",
            ".5E3",
            "3.14159265358979",
        ] {
            assert_only(v, &[Decimal]);
        }
        for v in [
            ".", "-.", "+.", "e5", ".e5", "1e", "1e+", "1.5.5", "1..5", "1,5", "NaN", "nan", "inf",
            "-inf", "Infinity", "1.5f", "1.5 ", "1e5.5", "1,000.5", "1.5e5e5",
        ] {
            assert_not(v, Decimal);
        }
        // Integer and Decimal never overlap.
        assert_only("12", &[Integer]);
        assert_only("12.0", &[Decimal]);
    }

    #[test]
    fn emails() {
        for v in [
            "a@b.co",
            "john.doe@example.com",
            "john+tag@example.co.uk",
            "user_name%x@sub-domain.example.org",
            "-x@example.com",
            "123@example.com",
            "UPPER@EXAMPLE.COM",
            "x@a-b.example.io",
        ] {
            assert_only(v, &[Email]);
        }
        let local64 = "a".repeat(64);
        assert_only(&format!("{local64}@example.com"), &[Email]);
        let local65 = "a".repeat(65);
        assert_only(&format!("{local65}@example.com"), &[]);
        for v in [
            "plainaddress",
            "@example.com",
            "a@",
            "a@b",
            "a@b.c",
            "a@b.c1",
            "a@b.123",
            "a@@b.com",
            "a@b@c.com",
            ".a@b.com",
            "a.@b.com",
            "a..b@c.com",
            "a@-b.com",
            "a@b-.com",
            "a@.b.com",
            "a@b..com",
            "a@b.com.",
            "a b@c.com",
            "a@b c.com",
            "a(b)@c.com",
            "a@b_c.com",
            "naïve@example.com",
            "naive@例え.jp",
            "naïve@例え.jp",
            "a@b.コム",
            "mailto:a@b.com",
        ] {
            assert_only(v, &[]);
        }
    }

    #[test]
    fn urls() {
        for v in [
            "http://example.com",
            "https://example.com/",
            "HTTPS://Example.COM/Path?q=1&r=2#frag",
            "ftp://ftp.example.org/pub/file.tar.gz",
            "http://localhost:8080",
            "http://127.0.0.1/",
            "http://[::1]:8080/x",
            "http://[2001:db8::1]",
            "https://example.com?x=y",
            "https://example.com#top",
            "https://a.b/%20encoded/~user/",
        ] {
            assert_only(v, &[Url]);
        }
        for v in [
            "http://",
            "http:///path",
            "https:/example.com",
            "example.com",
            "www.example.com",
            "mailto:a@b.com",
            "file:///etc/passwd",
            "ws://example.com",
            "http://exa mple.com",
            "http://example.com/a b",
            "http://example.com/\u{e9}",
            "http://ex\u{e9}mple.com",
            "http://-example.com",
            "http://.example.com",
            "http://a..b",
            "http://user@example.com",
            "http://example.com:",
            "http://example.com:65536",
            "http://example.com:123456",
            "http://example.com:80a",
            "http://[::1",
            "http://[not-ipv6]/",
            "http://[::1]x",
            "http://ex_ample.com",
        ] {
            assert_only(v, &[]);
        }
        assert_only("http://example.com:65535", &[Url]);
    }

    #[test]
    fn uuids() {
        for v in [
            "123e4567-e89b-12d3-a456-426614174000",
            "123E4567-E89B-12D3-A456-426614174000",
            "00000000-0000-0000-0000-000000000000",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "abcdef01-2345-6789-abcd-ef0123456789",
        ] {
            assert_only(v, &[Uuid]);
        }
        for v in [
            "123e4567e89b12d3a456426614174000",
            "123e4567-e89b-12d3-a456-42661417400",
            "123e4567-e89b-12d3-a456-4266141740000",
            "123e4567-e89b-12d3-a456_426614174000",
            "g23e4567-e89b-12d3-a456-426614174000",
            "{123e4567-e89b-12d3-a456-426614174000}",
            "123e4567-e89b-12d3-a4567-26614174000",
            "123e4567-e89b-12d3-a456-42661417400é",
        ] {
            assert_only(v, &[]);
        }
    }

    #[test]
    fn ipv4() {
        for v in [
            "0.0.0.0",
            "1.2.3.4",
            "10.0.0.1",
            "192.168.1.1",
            "255.255.255.255",
            "100.64.0.200",
        ] {
            assert_only(v, &[Ipv4]);
        }
        for v in [
            "256.1.1.1",
            "1.256.1.1",
            "1.1.1.256",
            "255.255.255.256",
            "01.1.1.1",
            "1.1.1.01",
            "1.1.00.1",
            "1.1.1",
            "1.1.1.1.1",
            "1.1.1.",
            ".1.1.1",
            "1..1.1",
            "1.1.1.1a",
            "1111.1.1.1",
            "-1.1.1.1",
            "1.1.1.1/24",
            "1.1.1.1:80",
            "１.1.1.1",
        ] {
            assert_not(v, Ipv4);
        }
        assert_only("1.1.1", &[]);
        assert_only("256.1.1.1", &[]);
    }

    #[test]
    fn ipv6() {
        for v in [
            "::",
            "::1",
            "2001:db8::1",
            "2001:0db8:0000:0000:0000:ff00:0042:8329",
            "fe80::1ff:fe23:4567:890a",
            "FE80::1",
            "::ffff:192.0.2.128",
            "1:2:3:4:5:6:7:8",
        ] {
            assert_only(v, &[Ipv6]);
        }
        for v in [
            ":",
            "1:2",
            "12:30",
            "12:30:45",
            "1:2:3:4:5:6:7:8:9",
            "2001:db8::g",
            "2001::db8::1",
            "fe80::1%eth0",
            "[::1]",
            ":::",
            "2001:db8:0000:0000:0000:0000:0000:0000:0000:0000:1",
            "::ffff:256.0.2.128",
        ] {
            assert_not(v, Ipv6);
        }
    }

    #[test]
    fn phones() {
        for v in [
            "+14155552671",
            "+1 415 555 2671",
            "+1-415-555-2671",
            "(415) 555-2671",
            "(415)555-2671",
            "+1 (415) 555-2671",
            "415-555-2671",
            "415.555.2671",
            "415 555 2671",
            "555-1234",
            "+44 20 7946 0958",
            "+44 (0) 20 7946 0958",
            "020 7946 0958",
            "06 12 34 56 78",
            "1-800-555-1234",
            "030 1234567",
            "+123456789012345",
        ] {
            assert_is(v, Phone);
            assert_not(v, Date);
            assert_not(v, Decimal);
        }
        // A '+'-prefixed digit string is both a phone and an integer.
        assert_only("+14155552671", &[Phone, Integer]);
        assert_only("(415) 555-2671", &[Phone]);
        for v in [
            "4155552671",          // bare integer
            "+123456",             // 6 digits
            "555-123",             // 6 digits
            "+1234567890123456",   // 16 digits
            "1234 5678 9012 3456", // 16 digits
            "555--1234",
            "555 -1234",
            "-555-1234",
            "555-1234-",
            "(555 1234567",
            "555) 1234567",
            "((555)) 123-4567",
            "(555) (123) 4567",
            "( 555) 123-4567",
            "()555-1234",
            "(123456) 555-1234",
            "1(555)555-1234",
            "555-1234 ext 5",
            "555-1234x5",
            "+1 555 123 456７",
            "1-2-3-4-5-6-7",
            "12-3-4567890",
            "1 234 567",       // thousands
            "12 345 678",      // thousands
            "1.234.567",       // thousands
            "123.456.789",     // thousands
            "12345-6789",      // ZIP+4
            "1990-2020",       // year range
            "1234567.5",       // decimal
            "+1234567.5",      // decimal
            "192.168.100.100", // ipv4
            "2024-01-01",      // date
            "2024.01.15",      // date
            "01.02.2024",      // date
            "12-31-2024",      // date
            "12/31/2024",      // date
            "+",
            "+ 555 1234",
        ] {
            assert_not(v, Phone);
        }
        assert_only("4155552671", &[Integer]);
        assert_only("+1234567.5", &[Decimal]);
    }

    #[test]
    fn dates() {
        for v in [
            "2024-01-01",
            "2024/01/31",
            "2024.12.31",
            "2024-02-29",
            "2000-02-29",
            "0001-01-01",
            "9999-12-31",
            "31/12/2024",
            "12/31/2024",
            "01/02/2024",
            "1/2/2024",
            "31-12-2024",
            "12-31-2024",
            "31.12.2024",
            "1.2.2024",
            "29.02.2024",
        ] {
            assert_only(v, &[Date]);
        }
        for v in [
            "2023-02-29",
            "1900-02-29",
            "2100-02-29",
            "2024-02-30",
            "2024-04-31",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "2024-01-32",
            "0000-01-01",
            "2024-1-01",
            "2024-01-1",
            "2024-01/01",
            "2024_01_01",
            "24-01-01",
            "13/13/2024",
            "32/01/2024",
            "12.31.2024", // dot form is day-first only
            "29/02/2023",
            "31/04/2024",
            "001/02/2024",
            "1/2/24",
            "1/2/20245",
            "2024-01-01T",
            "2024-01-01x",
            "２０２４-01-01",
            "2024-01-0١",
        ] {
            assert_not(v, Date);
        }
        assert_only("20240101", &[Integer]);
        assert_only("2023-02-29", &[]);
        assert_only("29.02.2023", &[]);
        assert_only("29.02.2024", &[Date]);
        // Impossible dates are not phones either.
        for v in [
            "2024-13-01",
            "2024-04-31",
            "12.31.2024",
            "31-13-2024",
            "00-00-0000",
        ] {
            assert_only(v, &[]);
        }
    }

    #[test]
    fn datetimes() {
        for v in [
            "2024-01-01T00:00",
            "2024-01-01 23:59",
            "2024-01-01T12:30:45",
            "2024-01-01T12:30:45Z",
            "2024-01-01T12:30:45.1Z",
            "2024-01-01T12:30:45.123456789",
            "2024-01-01T12:30:45+02:00",
            "2024-01-01T12:30:45-0530",
            "2024-01-01T12:30+01:00",
            "2024-01-01 12:30Z",
            "2016-12-31T23:59:60Z",
            "2024-02-29T00:00:00",
        ] {
            assert_only(v, &[Datetime]);
        }
        for v in [
            "2024-01-01",
            "2024-01-01T",
            "2024-01-01T12",
            "2024-01-01T12:3",
            "2024-01-01T1:30",
            "2024-01-01T24:00",
            "2024-01-01T12:60",
            "2024-01-01T12:30:61",
            "2024-01-01T12:30:45.",
            "2024-01-01T12:30:45.1234567890",
            "2024-01-01T12:30.5",
            "2024-01-01T12:30:45ZZ",
            "2024-01-01T12:30:45z+",
            "2024-01-01T12:30:45+2:00",
            "2024-01-01T12:30:45+02",
            "2024-01-01T12:30:45+24:00",
            "2024-01-01T12:30:45+02:60",
            "2024-01-01T12:30:45+02:000",
            "2024-01-01T12:30:45 +02:00",
            "2024-01-01t12:30:45",
            "2024-01-01  12:30",
            "2024/01/01T12:30",
            "01/01/2024 12:30",
            "2023-02-29T12:30",
            "2024-01-01T12:30:45Z ",
            "2024-01-01T12:30:45\u{2212}02:00",
        ] {
            assert_not(v, Datetime);
        }
    }

    #[test]
    fn unicode_never_panics_and_never_matches() {
        for v in [
            "é",
            "例え",
            "naïve@例え.jp",
            "日本語テキスト",
            "😀",
            "1😀",
            "+😀",
            "(😀",
            "h😀",
            "http://😀",
            "2024-01-😀",
            "2024-01-01T12:30:😀",
            "a@😀.com",
            "😀@example.com",
            "1.2.3.😀",
            "::😀",
            "123e4567-e89b-12d3-a456-4266141740😀",
            "\u{0}",
            "\u{0}1",
            "1\u{0}",
        ] {
            assert_only(v, &[]);
        }
    }

    #[test]
    fn exclusivity() {
        assert_only("20240101", &[Integer]);
        assert_only("2024-01-01", &[Date]);
        assert_only("1.5", &[Decimal]);
        assert_only("555-123-4567", &[Phone]);
        assert_only("192.168.1.1", &[Ipv4]);
        assert_only("12:30", &[]);
    }

    #[test]
    fn counts_observe_merge_detected() {
        let mut a = PatternCounts::default();
        a.observe("42");
        a.observe("a@b.co");
        a.observe("hello");
        a.observe_n("2024-01-01", 3);
        a.observe_n("+14155552671", 2);
        a.observe_n("1.5", 0); // no-op
        assert_eq!(a.checked, 8);
        assert_eq!(a.matches[Integer.index()], 3);
        assert_eq!(a.matches[Email.index()], 1);
        assert_eq!(a.matches[Date.index()], 3);
        assert_eq!(a.matches[Phone.index()], 2);
        assert_eq!(a.matches[Decimal.index()], 0);

        let mut b = PatternCounts::default();
        b.observe_n("x@y.org", 2);
        b.observe("1.5");
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged.checked, 11);
        assert_eq!(merged.matches[Email.index()], 3);
        assert_eq!(merged.matches[Decimal.index()], 1);

        // merge is commutative and observe_n == n * observe.
        let mut other_way = b.clone();
        other_way.merge(&a);
        assert_eq!(other_way, merged);
        let mut one_by_one = PatternCounts::default();
        for _ in 0..3 {
            one_by_one.observe("2024-01-01");
        }
        let mut at_once = PatternCounts::default();
        at_once.observe_n("2024-01-01", 3);
        assert_eq!(one_by_one, at_once);

        // Ties (Integer 3, Date 3, Email 3) are broken by Pattern order.
        let detected = merged.detected();
        let order: Vec<_> = detected.iter().map(|d| (d.0, d.1)).collect();
        assert_eq!(
            order,
            [
                (Email, 3),
                (Date, 3),
                (Integer, 3),
                (Phone, 2),
                (Decimal, 1)
            ]
        );
        for &(p, count, ratio) in &detected {
            assert_eq!(count, merged.matches[p.index()]);
            assert!((ratio - count as f64 / 11.0).abs() < 1e-12);
        }

        assert!(PatternCounts::default().detected().is_empty());
        // A counts with matches but nothing checked does not divide by zero.
        let weird = PatternCounts {
            checked: 0,
            matches: [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        };
        assert_eq!(weird.detected(), vec![(Email, 1, 0.0)]);

        let json = serde_json::to_string(&merged).unwrap();
        let back: PatternCounts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, merged);
    }

    /// xorshift64*: deterministic, dependency-free pseudo-random numbers.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn fuzz_200k_values_never_panic_and_respect_invariants() {
        const SEEDS: &[&str] = &[
            "a@b.co",
            "john.doe@example.com",
            "https://example.com:8080/a?b=c#d",
            "http://[::1]/",
            "123e4567-e89b-12d3-a456-426614174000",
            "192.168.1.1",
            "255.255.255.255",
            "2001:db8::1",
            "::ffff:1.2.3.4",
            "+1 (415) 555-2671",
            "415-555-2671",
            "2024-02-29",
            "29/02/2024",
            "1.2.2024",
            "2024-01-01T12:30:45.123+02:00",
            "-1.5e-10",
            "+42",
            "20240101",
            "0007ca9896f69f63",
            "deadbeef-0000",
            "user1@example.com",
        ];
        const ALPHABET: &[char] = &[
            '0', '1', '2', '5', '9', '.', ':', '-', '/', '@', '+', '(', ')', ' ', 'T', 'Z', 'e',
            'E', 'a', 'b', 'c', 'd', 'f', 'x', 'h', 't', 'p', 's', '[', ']', '%', '_', '#', '?',
            '\t', 'é', '例', '١', '😀', '\u{a0}', '\u{0}',
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut counts = PatternCounts::default();
        let mut buf: Vec<char> = Vec::with_capacity(64);
        let mut matched_any = 0u64;
        for round in 0..200_000 {
            buf.clear();
            if round % 2 == 0 {
                let len = rng.below(48);
                for _ in 0..len {
                    buf.push(ALPHABET[rng.below(ALPHABET.len())]);
                }
            } else {
                buf.extend(SEEDS[rng.below(SEEDS.len())].chars());
                for _ in 0..rng.below(3) {
                    let c = ALPHABET[rng.below(ALPHABET.len())];
                    let pos = rng.below(buf.len() + 1);
                    match rng.below(3) {
                        0 => buf.insert(pos, c),
                        1 if pos < buf.len() => buf[pos] = c,
                        _ if pos < buf.len() => {
                            buf.remove(pos);
                        }
                        _ => buf.push(c),
                    }
                }
            }
            let s: String = buf.iter().collect();
            let bits = classify(&s);
            // The byte-class gate never changes an answer.
            assert_eq!(bits, classify_with(&s, false), "{s:?}");
            counts.observe(&s);
            if bits != 0 {
                matched_any += 1;
            }

            assert_eq!(bits >> 10, 0, "{s:?}");
            assert_ne!(bits & (INTEGER | DECIMAL), INTEGER | DECIMAL, "{s:?}");
            assert_ne!(bits & (PHONE | DATE), PHONE | DATE, "{s:?}");
            assert_ne!(bits & (PHONE | IPV4), PHONE | IPV4, "{s:?}");
            assert_ne!(bits & (DATE | DATETIME), DATE | DATETIME, "{s:?}");
            if bits != 0 {
                assert!(s.is_ascii(), "{s:?}");
                assert!(!s.starts_with(|c: char| c.is_ascii_whitespace()), "{s:?}");
                assert!(!s.ends_with(|c: char| c.is_ascii_whitespace()), "{s:?}");
            }
            // Cross-check against the standard library where it has an opinion.
            assert_eq!(
                bits & IPV4 != 0,
                s.parse::<std::net::Ipv4Addr>().is_ok(),
                "ipv4 {s:?}"
            );
            if bits & IPV6 != 0 {
                assert!(s.parse::<std::net::Ipv6Addr>().is_ok(), "{s:?}");
            }
            if bits & DECIMAL != 0 {
                assert!(s.parse::<f64>().is_ok(), "{s:?}");
            }
            if bits & INTEGER != 0 {
                let digits = s.strip_prefix(['+', '-']).unwrap_or(&s);
                assert!(
                    !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()),
                    "{s:?}"
                );
            }
            if bits & PHONE != 0 {
                assert_eq!(date_shape(s.as_bytes()), DateShape::NotDate, "{s:?}");
            }
            if bits & DATE != 0 {
                assert_eq!(date_shape(s.as_bytes()), DateShape::Valid, "{s:?}");
            }
            if bits & UUID != 0 {
                assert_eq!(s.len(), 36, "{s:?}");
            }
            if bits & EMAIL != 0 {
                assert_eq!(s.bytes().filter(|&c| c == b'@').count(), 1, "{s:?}");
            }
        }
        assert_eq!(counts.checked, 200_000);
        assert!(
            matched_any > 1_000,
            "generator should produce matches: {matched_any}"
        );
        assert!(
            counts.matches.iter().all(|&m| m > 0),
            "every pattern hit: {:?}",
            counts.matches
        );
    }
}
