//! Compressed text files (`.gz`, `.zst`, `.bz2`): which compression a file has, and its bytes
//! decompressed as they stream, so a compressed CSV or NDJSON file is read like a plain one
//! without ever being held whole in memory.
//!
//! A compressed stream cannot be entered in the middle, so a compressed file is always one task
//! (the planner cuts no byte ranges in it); the plan records each file's compression so that
//! every task and backend reads it alike. Parquet and Arrow IPC compress their own pages and
//! buffers: an outer compression of those is refused when the dataset is listed.
//!
//! Decompression is push-based (`flate2`, `zstd` and `bzip2`'s `write` decoders, fed chunk by
//! chunk into a buffer that is drained after every chunk), which fits the chunked object-store
//! body the text reader already consumes. Concatenated streams (several gzip members, as `bgzip`
//! and `cat a.gz b.gz` make, several zstd frames, several bzip2 streams) are read to the end.

use std::fmt;
use std::io::Write;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How a text file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    Gzip,
    Zstd,
    Bzip2,
}

impl Compression {
    pub const ALL: [Compression; 3] = [Compression::Gzip, Compression::Zstd, Compression::Bzip2];

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
        }
    }

    fn extensions(self) -> &'static [&'static str] {
        match self {
            Compression::Gzip => &["gz", "gzip"],
            Compression::Zstd => &["zst", "zstd"],
            Compression::Bzip2 => &["bz2"],
        }
    }

    /// The bytes every stream of this compression starts with.
    fn magic(self) -> &'static [u8] {
        match self {
            Compression::Gzip => &[0x1f, 0x8b],
            Compression::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            Compression::Bzip2 => b"BZh",
        }
    }

    /// The compression a file name's last extension says (`data.csv.gz`: gzip), if any.
    pub fn from_path(path: &str) -> Option<Compression> {
        let name = path.rsplit('/').next().unwrap_or(path);
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Compression::ALL
            .into_iter()
            .find(|c| c.extensions().contains(&ext.as_str()))
    }

    /// `path` without its compression extension (`data.csv.gz` → `data.csv`).
    pub fn strip(path: &str) -> &str {
        match Compression::from_path(path) {
            Some(_) => path.rsplit_once('.').map_or(path, |(stem, _)| stem),
            None => path,
        }
    }

    /// The compression whose magic bytes `head` starts with, if any: a compressed file whose
    /// name does not say so is still recognised when its head is read.
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        Compression::ALL
            .into_iter()
            .find(|c| head.starts_with(c.magic()))
    }

    fn decoder(self) -> Decoder {
        match self {
            Compression::Gzip => {
                Decoder::Gzip(Box::new(flate2::write::MultiGzDecoder::new(Vec::new())))
            }
            Compression::Zstd => match zstd::stream::write::Decoder::new(Vec::new()) {
                Ok(d) => Decoder::Zstd(Box::new(d)),
                // Only an allocation failure of zstd's context: reported on the first chunk.
                Err(e) => Decoder::Failed(e.to_string()),
            },
            Compression::Bzip2 => Decoder::Bzip2(Bz2::default()),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A push decoder: compressed bytes in, decompressed bytes accumulated in its `Vec`.
enum Decoder {
    Gzip(Box<flate2::write::MultiGzDecoder<Vec<u8>>>),
    Zstd(Box<zstd::stream::write::Decoder<'static, Vec<u8>>>),
    Bzip2(Bz2),
    Failed(String),
}

impl Decoder {
    fn write_all(&mut self, input: &[u8]) -> std::io::Result<()> {
        match self {
            Decoder::Gzip(d) => d.write_all(input),
            Decoder::Zstd(d) => d.write_all(input),
            Decoder::Bzip2(d) => d.write_all(input),
            Decoder::Failed(e) => Err(std::io::Error::other(e.clone())),
        }
    }

    /// Ends the input: what is still buffered is decoded, and a stream cut short is an error.
    fn finish(&mut self) -> std::io::Result<()> {
        match self {
            Decoder::Gzip(d) => d.try_finish(),
            // An error (UnexpectedEof) when the input does not end on a whole frame.
            Decoder::Zstd(d) => d.do_finish(),
            Decoder::Bzip2(d) => d.finish(),
            Decoder::Failed(e) => Err(std::io::Error::other(e.clone())),
        }
    }

    /// The bytes decoded so far, taken out.
    fn take(&mut self) -> Vec<u8> {
        let out = match self {
            Decoder::Gzip(d) => d.get_mut(),
            Decoder::Zstd(d) => d.get_mut(),
            Decoder::Bzip2(d) => &mut d.out,
            Decoder::Failed(_) => return Vec::new(),
        };
        std::mem::take(out)
    }
}

/// bzip2, over the raw decompressor: `bzip2`'s `write` decoder stops at the end of the first
/// stream, and `pbzip2` and `cat a.bz2 b.bz2` write several.
struct Bz2 {
    d: bzip2::Decompress,
    out: Vec<u8>,
    /// Whether a stream has begun and not ended (input ending then is a truncated file).
    in_stream: bool,
}

impl Default for Bz2 {
    fn default() -> Self {
        Bz2 {
            d: bzip2::Decompress::new(false),
            out: Vec::new(),
            in_stream: false,
        }
    }
}

impl Bz2 {
    fn write_all(&mut self, mut input: &[u8]) -> std::io::Result<()> {
        while !input.is_empty() {
            let (in_before, out_before) = (self.d.total_in(), self.out.len());
            self.out.reserve(64 << 10);
            let status = self
                .d
                .decompress_vec(input, &mut self.out)
                .map_err(std::io::Error::other)?;
            let used = usize::try_from(self.d.total_in() - in_before).unwrap_or(input.len());
            input = &input[used.min(input.len())..];
            self.in_stream = true;
            if status == bzip2::Status::StreamEnd {
                self.d = bzip2::Decompress::new(false);
                self.in_stream = false;
            } else if used == 0 && self.out.len() == out_before {
                return Err(std::io::Error::other("the decompressor made no progress"));
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        // Output the decompressor still holds for lack of room.
        while self.in_stream {
            let out_before = self.out.len();
            self.out.reserve(64 << 10);
            let status = self
                .d
                .decompress_vec(&[], &mut self.out)
                .map_err(std::io::Error::other)?;
            if status == bzip2::Status::StreamEnd {
                self.in_stream = false;
            } else if self.out.len() == out_before {
                return Err(truncated());
            }
        }
        Ok(())
    }
}

fn truncated() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the compressed stream ends before its end (the file is truncated)",
    )
}

fn bad_stream(uri: &str, compression: Compression, e: std::io::Error) -> Error {
    Error::BadRecord {
        file: uri.to_string(),
        detail: format!("{compression}: {e} (is the file really {compression}-compressed?)"),
    }
}

/// Compressed bytes are fed to the decoder at most this many at a time, and what they decoded
/// to is passed on before the next piece: a small piece of a highly compressed file (a
/// "decompression bomb") then expands to a bounded buffer (deflate's ratio is at most 1032:1).
const PIECE: usize = 4 << 10;

/// `body` decompressed as it streams. Errors name the file and the compression.
pub fn decompress(
    body: BoxStream<'static, Result<Bytes>>,
    compression: Compression,
    uri: String,
) -> BoxStream<'static, Result<Bytes>> {
    let state = (body, Some(compression.decoder()), Bytes::new(), uri);
    futures::stream::try_unfold(
        state,
        move |(mut body, mut decoder, mut pending, uri)| async move {
            loop {
                let Some(d) = decoder.as_mut() else {
                    return Ok(None);
                };
                if pending.is_empty() {
                    match body.next().await {
                        Some(chunk) => pending = chunk?,
                        None => {
                            d.finish().map_err(|e| bad_stream(&uri, compression, e))?;
                            let out = d.take();
                            decoder = None;
                            if out.is_empty() {
                                return Ok(None);
                            }
                            return Ok(Some((Bytes::from(out), (body, decoder, pending, uri))));
                        }
                    }
                }
                let piece = pending.split_to(pending.len().min(PIECE));
                d.write_all(&piece)
                    .map_err(|e| bad_stream(&uri, compression, e))?;
                let out = d.take();
                if !out.is_empty() {
                    return Ok(Some((Bytes::from(out), (body, decoder, pending, uri))));
                }
            }
        },
    )
    .boxed()
}

/// Decompresses `bytes` (the head of a file) up to `limit` decompressed bytes; returns them and
/// whether the stream ended within them (the head is then the whole file).
pub fn decompress_head(
    bytes: &[u8],
    compressed_whole: bool,
    compression: Compression,
    limit: usize,
    uri: &str,
) -> Result<(Vec<u8>, bool)> {
    let mut d = compression.decoder();
    let mut out = Vec::new();
    // Fed in pieces so that a highly compressible head is not decoded far past the limit.
    for piece in bytes.chunks(PIECE) {
        d.write_all(piece)
            .map_err(|e| bad_stream(uri, compression, e))?;
        out.extend(d.take());
        if out.len() >= limit {
            out.truncate(limit);
            return Ok((out, false));
        }
    }
    if compressed_whole {
        d.finish().map_err(|e| bad_stream(uri, compression, e))?;
        out.extend(d.take());
        let whole = out.len() <= limit;
        out.truncate(limit);
        return Ok((out, whole));
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::encode_all(data, 3).unwrap()
    }

    fn bzip2(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
        match c {
            Compression::Gzip => gzip(data),
            Compression::Zstd => zstd(data),
            Compression::Bzip2 => bzip2(data),
        }
    }

    async fn stream_all(bytes: Vec<u8>, c: Compression, chunk: usize) -> Result<Vec<u8>> {
        let chunks: Vec<Result<Bytes>> = bytes
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = futures::stream::iter(chunks).boxed();
        let mut out = Vec::new();
        let mut s = decompress(body, c, "mem://x".into());
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b?);
        }
        Ok(out)
    }

    fn text() -> Vec<u8> {
        (0..20_000)
            .map(|i| format!("{i},name-{},{}\n", i % 97, i as f64 / 7.0))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn names_and_magic() {
        assert_eq!(
            Compression::from_path("s3://b/x/a.csv.gz"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            Compression::from_path("a.NDJSON.ZST"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_path("a.csv.bz2"),
            Some(Compression::Bzip2)
        );
        assert_eq!(Compression::from_path("a.csv"), None);
        assert_eq!(Compression::strip("dir/a.csv.gz"), "dir/a.csv");
        assert_eq!(Compression::strip("dir/a.csv"), "dir/a.csv");
        for c in Compression::ALL {
            assert_eq!(Compression::sniff(&compress(c, b"a,b\n1,2\n")), Some(c));
        }
        assert_eq!(Compression::sniff(b"a,b\n"), None);
    }

    #[tokio::test]
    async fn every_compression_streams_back_the_bytes_at_any_chunk_size() {
        let data = text();
        for c in Compression::ALL {
            let packed = compress(c, &data);
            for chunk in [1, 7, 4096, 1 << 20] {
                let out = stream_all(packed.clone(), c, chunk).await.unwrap();
                assert!(out == data, "{c} at chunks of {chunk}");
            }
        }
    }

    #[tokio::test]
    async fn concatenated_streams_are_read_to_the_end() {
        let (a, b) = (b"x\n1\n".to_vec(), b"2\n3\n".to_vec());
        for c in Compression::ALL {
            let mut packed = compress(c, &a);
            packed.extend(compress(c, &b));
            let out = stream_all(packed, c, 3).await.unwrap();
            assert_eq!(out, b"x\n1\n2\n3\n", "{c}");
        }
    }

    #[tokio::test]
    async fn a_truncated_or_foreign_stream_is_an_error_naming_the_file() {
        let data = text();
        for c in Compression::ALL {
            let mut packed = compress(c, &data);
            packed.truncate(packed.len() / 2);
            let e = stream_all(packed, c, 4096).await.unwrap_err().to_string();
            assert!(e.contains("mem://x") && e.contains(c.name()), "{c}: {e}");
            let e = stream_all(data.clone(), c, 4096)
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("mem://x") && e.contains(c.name()), "{c}: {e}");
        }
    }

    #[test]
    fn a_head_stops_at_its_limit_and_says_whether_it_is_whole() {
        let data = text();
        for c in Compression::ALL {
            let packed = compress(c, &data);
            let (head, whole) = decompress_head(&packed, true, c, 1000, "x").unwrap();
            assert_eq!((head.as_slice(), whole), (&data[..1000], false), "{c}");
            let (head, whole) = decompress_head(&packed, true, c, 10 << 20, "x").unwrap();
            assert!(head == data && whole, "{c}");
            let half = &packed[..packed.len() / 2];
            let (head, whole) = decompress_head(half, false, c, 10 << 20, "x").unwrap();
            assert!(!whole && data.starts_with(&head), "{c}");
        }
    }
}
