//! A small reader of Avro object container files, enough for Iceberg's manifest lists and
//! manifests: the file's own schema decodes its records into generic values (no reader schema,
//! no schema resolution), with the `null`, `deflate` and `snappy` codecs.
//!
//! Why not the `apache-avro` crate: Iceberg metadata needs a few hundred lines of it, and the
//! crate brings its own dependency tree into every binary of the workspace for that.

use std::collections::HashMap;
use std::io::Read;

/// A decoded Avro value. Unions decode to the chosen branch's value; enums to their symbol;
/// `fixed` to bytes; every integer width to `Long`, both float widths to `Double`.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Boolean(bool),
    Long(i64),
    Double(f64),
    Bytes(Vec<u8>),
    String(String),
    Record(Vec<(String, Value)>),
    Array(Vec<Value>),
    Map(Vec<(String, Value)>),
}

impl Value {
    /// A record's field.
    pub fn field(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_long(&self) -> Option<i64> {
        match self {
            Value::Long(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// An Avro schema, as far as decoding needs it.
#[derive(Debug, Clone)]
enum Schema {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Record(Vec<(String, Schema)>),
    Enum(Vec<String>),
    Array(Box<Schema>),
    Map(Box<Schema>),
    Union(Vec<Schema>),
    Fixed(usize),
    /// A reference to a named type defined earlier in the schema.
    Named(String),
}

/// Nesting deeper than this is refused: real manifests nest four or five levels.
const MAX_DEPTH: usize = 64;

fn parse_schema(
    json: &serde_json::Value,
    names: &mut HashMap<String, Schema>,
    depth: usize,
) -> Result<Schema, String> {
    use serde_json::Value as J;
    if depth > MAX_DEPTH {
        return Err("schema nests too deeply".into());
    }
    match json {
        J::String(name) => Ok(match name.as_str() {
            "null" => Schema::Null,
            "boolean" => Schema::Boolean,
            "int" => Schema::Int,
            "long" => Schema::Long,
            "float" => Schema::Float,
            "double" => Schema::Double,
            "bytes" => Schema::Bytes,
            "string" => Schema::String,
            other if names.contains_key(other) => Schema::Named(other.to_string()),
            other => return Err(format!("unknown type `{other}`")),
        }),
        J::Array(branches) => branches
            .iter()
            .map(|b| parse_schema(b, names, depth + 1))
            .collect::<Result<_, _>>()
            .map(Schema::Union),
        J::Object(obj) => {
            let kind = obj
                .get("type")
                .ok_or_else(|| "a schema object without `type`".to_string())?;
            let name = obj.get("name").and_then(J::as_str).map(str::to_string);
            let schema = match kind.as_str() {
                Some("record") | Some("error") => {
                    let fields = obj
                        .get("fields")
                        .and_then(J::as_array)
                        .ok_or_else(|| "a record without `fields`".to_string())?;
                    let mut out = Vec::with_capacity(fields.len());
                    for f in fields {
                        let fname = f
                            .get("name")
                            .and_then(J::as_str)
                            .ok_or_else(|| "a record field without `name`".to_string())?;
                        let ftype = f
                            .get("type")
                            .ok_or_else(|| format!("field `{fname}` without `type`"))?;
                        out.push((fname.to_string(), parse_schema(ftype, names, depth + 1)?));
                    }
                    Schema::Record(out)
                }
                Some("enum") => Schema::Enum(
                    obj.get("symbols")
                        .and_then(J::as_array)
                        .ok_or_else(|| "an enum without `symbols`".to_string())?
                        .iter()
                        .map(|s| s.as_str().unwrap_or_default().to_string())
                        .collect(),
                ),
                Some("array") => Schema::Array(Box::new(parse_schema(
                    obj.get("items")
                        .ok_or_else(|| "an array without `items`".to_string())?,
                    names,
                    depth + 1,
                )?)),
                Some("map") => Schema::Map(Box::new(parse_schema(
                    obj.get("values")
                        .ok_or_else(|| "a map without `values`".to_string())?,
                    names,
                    depth + 1,
                )?)),
                Some("fixed") => Schema::Fixed(
                    obj.get("size")
                        .and_then(J::as_u64)
                        .ok_or_else(|| "a fixed without `size`".to_string())?
                        as usize,
                ),
                // A primitive with attributes (a logical type such as `date` or `decimal`):
                // decoded as its underlying type.
                Some(_) => parse_schema(kind, names, depth + 1)?,
                None => parse_schema(kind, names, depth + 1)?,
            };
            if let Some(name) = name
                && matches!(
                    schema,
                    Schema::Record(_) | Schema::Enum(_) | Schema::Fixed(_)
                )
            {
                names.insert(name, schema.clone());
            }
            Ok(schema)
        }
        other => Err(format!("`{other}` is not a schema")),
    }
}

/// Reads values from a byte slice.
struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    names: &'a HashMap<String, Schema>,
}

impl<'a> Decoder<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or_else(|| "unexpected end of data".to_string())?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("a length of {n} bytes runs past the end of the data"))?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// A zig-zag varint.
    fn long(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("a varint longer than 10 bytes".into())
    }

    fn len(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| format!("a negative length {n}"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }

    /// The item count of the next array or map block (a negative count is followed by the
    /// block's size in bytes, which a reader that decodes every item ignores).
    fn block_count(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
        }
        let count = n.unsigned_abs();
        // Every item takes at least one byte, except items of a zero-byte type, which a
        // hostile count could make endless: that case is bounded by the data left too.
        if count > (self.data.len() - self.pos) as u64 + 1 {
            return Err(format!("a block of {count} items is longer than the data"));
        }
        Ok(count as usize)
    }

    fn value(&mut self, schema: &Schema, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err("data nests too deeply".into());
        }
        Ok(match schema {
            Schema::Null => Value::Null,
            Schema::Boolean => Value::Boolean(self.byte()? != 0),
            Schema::Int | Schema::Long => Value::Long(self.long()?),
            Schema::Float => {
                let b: [u8; 4] = self.take(4)?.try_into().expect("4 bytes");
                Value::Double(f64::from(f32::from_le_bytes(b)))
            }
            Schema::Double => {
                let b: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
                Value::Double(f64::from_le_bytes(b))
            }
            Schema::Bytes => Value::Bytes(self.bytes()?.to_vec()),
            Schema::String => Value::String(self.string()?),
            Schema::Fixed(n) => Value::Bytes(self.take(*n)?.to_vec()),
            Schema::Enum(symbols) => {
                let i = self.len()?;
                Value::String(
                    symbols
                        .get(i)
                        .cloned()
                        .ok_or_else(|| format!("enum index {i} out of range"))?,
                )
            }
            Schema::Record(fields) => {
                let mut out = Vec::with_capacity(fields.len());
                for (name, s) in fields {
                    out.push((name.clone(), self.value(s, depth + 1)?));
                }
                Value::Record(out)
            }
            Schema::Array(items) => {
                let mut out = Vec::new();
                loop {
                    let n = self.block_count()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        out.push(self.value(items, depth + 1)?);
                    }
                }
                Value::Array(out)
            }
            Schema::Map(values) => {
                let mut out = Vec::new();
                loop {
                    let n = self.block_count()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        let k = self.string()?;
                        out.push((k, self.value(values, depth + 1)?));
                    }
                }
                Value::Map(out)
            }
            Schema::Union(branches) => {
                let i = self.len()?;
                let branch = branches
                    .get(i)
                    .ok_or_else(|| format!("union branch {i} out of range"))?;
                self.value(branch, depth + 1)?
            }
            Schema::Named(name) => {
                let names = self.names;
                let s = names
                    .get(name)
                    .ok_or_else(|| format!("unknown type `{name}`"))?;
                self.value(s, depth + 1)?
            }
        })
    }
}

/// A container file's header metadata, by key.
pub type Metadata = HashMap<String, Vec<u8>>;

/// Every record of an Avro object container file, and the file's metadata (`avro.schema`,
/// `avro.codec` and what the writer added, e.g. Iceberg's `format-version`). `max_bytes` caps
/// what a decompressed block may take.
pub fn read_container(data: &[u8], max_bytes: u64) -> Result<(Vec<Value>, Metadata), String> {
    if !data.starts_with(b"Obj\x01") {
        return Err("not an Avro object container file (no `Obj` magic)".into());
    }
    let empty = HashMap::new();
    let mut header = Decoder {
        data,
        pos: 4,
        names: &empty,
    };
    let mut meta = HashMap::new();
    loop {
        let n = header.block_count()?;
        if n == 0 {
            break;
        }
        for _ in 0..n {
            let k = header.string()?;
            let v = header.bytes()?.to_vec();
            meta.insert(k, v);
        }
    }
    let sync: [u8; 16] = header.take(16)?.try_into().expect("16 bytes");
    let schema_json: serde_json::Value = serde_json::from_slice(
        meta.get("avro.schema")
            .ok_or_else(|| "no avro.schema in the header".to_string())?,
    )
    .map_err(|e| format!("avro.schema is not JSON: {e}"))?;
    let mut names = HashMap::new();
    let schema = parse_schema(&schema_json, &mut names, 0)?;
    let codec = meta
        .get("avro.codec")
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_else(|| "null".into());
    let mut pos = header.pos;
    let mut records = Vec::new();
    while pos < data.len() {
        let mut block = Decoder {
            data,
            pos,
            names: &names,
        };
        let count = block.long()?;
        let raw = block.bytes()?;
        let got_sync = block.take(16)?;
        if got_sync != &sync[..] {
            return Err("a block does not end with the file's sync marker".into());
        }
        pos = block.pos;
        let decoded = decompress(&codec, raw, max_bytes)?;
        let mut d = Decoder {
            data: &decoded,
            pos: 0,
            names: &names,
        };
        let count = usize::try_from(count).map_err(|_| format!("a block of {count} records"))?;
        for _ in 0..count {
            records.push(d.value(&schema, 0)?);
        }
    }
    Ok((records, meta))
}

fn decompress(codec: &str, raw: &[u8], max_bytes: u64) -> Result<Vec<u8>, String> {
    let too_large = || format!("a block decompresses to more than {max_bytes} bytes");
    match codec {
        "null" => Ok(raw.to_vec()),
        "deflate" => {
            let mut out = Vec::new();
            flate2::read::DeflateDecoder::new(raw)
                .take(max_bytes + 1)
                .read_to_end(&mut out)
                .map_err(|e| format!("deflate: {e}"))?;
            if out.len() as u64 > max_bytes {
                return Err(too_large());
            }
            Ok(out)
        }
        "snappy" => {
            // Avro's snappy blocks end with the CRC-32 of the uncompressed data.
            let body = raw
                .len()
                .checked_sub(4)
                .map(|n| &raw[..n])
                .ok_or_else(|| "a snappy block shorter than its checksum".to_string())?;
            let len = snap::raw::decompress_len(body).map_err(|e| format!("snappy: {e}"))?;
            if len as u64 > max_bytes {
                return Err(too_large());
            }
            snap::raw::Decoder::new()
                .decompress_vec(body)
                .map_err(|e| format!("snappy: {e}"))
        }
        other => Err(format!(
            "Avro codec `{other}` is not supported (null, deflate and snappy are)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zigzag(n: i64, out: &mut Vec<u8>) {
        let mut v = ((n << 1) ^ (n >> 63)) as u64;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }

    fn string(s: &str, out: &mut Vec<u8>) {
        zigzag(s.len() as i64, out);
        out.extend_from_slice(s.as_bytes());
    }

    /// A container with one block, written by hand from the spec.
    fn container(schema: &str, count: i64, body: &[u8]) -> Vec<u8> {
        let mut out = b"Obj\x01".to_vec();
        zigzag(1, &mut out);
        string("avro.schema", &mut out);
        string(schema, &mut out);
        zigzag(0, &mut out);
        let sync = [7u8; 16];
        out.extend_from_slice(&sync);
        zigzag(count, &mut out);
        zigzag(body.len() as i64, &mut out);
        out.extend_from_slice(body);
        out.extend_from_slice(&sync);
        out
    }

    #[test]
    fn decodes_records_unions_arrays_and_maps() {
        let schema = r#"{"type":"record","name":"r","fields":[
            {"name":"path","type":"string"},
            {"name":"n","type":"long"},
            {"name":"opt","type":["null","int"]},
            {"name":"tags","type":{"type":"array","items":"string"}},
            {"name":"m","type":{"type":"map","values":"long"}},
            {"name":"kind","type":{"type":"enum","name":"k","symbols":["A","B"]}}]}"#;
        let mut body = Vec::new();
        for (path, n) in [("a.parquet", -3i64), ("b.parquet", 300)] {
            string(path, &mut body);
            zigzag(n, &mut body);
            zigzag(1, &mut body); // union branch 1: int
            zigzag(42, &mut body);
            zigzag(2, &mut body); // array block of 2
            string("x", &mut body);
            string("y", &mut body);
            zigzag(0, &mut body);
            zigzag(-1, &mut body); // map block of 1, with its byte size
            zigzag(3, &mut body);
            string("k", &mut body);
            zigzag(9, &mut body);
            zigzag(0, &mut body);
            zigzag(1, &mut body); // enum B
        }
        let file = container(schema, 2, &body);
        let (records, meta) = read_container(&file, 1 << 20).unwrap();
        assert!(meta.contains_key("avro.schema"));
        assert_eq!(records.len(), 2);
        let r = &records[1];
        assert_eq!(r.field("path").and_then(Value::as_str), Some("b.parquet"));
        assert_eq!(r.field("n").and_then(Value::as_long), Some(300));
        assert_eq!(records[0].field("n").and_then(Value::as_long), Some(-3));
        assert_eq!(r.field("opt"), Some(&Value::Long(42)));
        assert_eq!(
            r.field("tags"),
            Some(&Value::Array(vec![
                Value::String("x".into()),
                Value::String("y".into())
            ]))
        );
        assert_eq!(
            r.field("m"),
            Some(&Value::Map(vec![("k".into(), Value::Long(9))]))
        );
        assert_eq!(r.field("kind").and_then(Value::as_str), Some("B"));
    }

    #[test]
    fn refuses_truncated_and_hostile_files() {
        let schema = r#"{"type":"record","name":"r","fields":[{"name":"s","type":"string"}]}"#;
        let mut body = Vec::new();
        zigzag(1 << 40, &mut body); // a string claiming a terabyte
        let file = container(schema, 1, &body);
        assert!(read_container(&file, 1 << 20).is_err());
        assert!(read_container(b"PAR1", 1 << 20).is_err());
        let mut good = Vec::new();
        string("ok", &mut good);
        let file = container(schema, 1, &good);
        assert!(read_container(&file[..file.len() - 3], 1 << 20).is_err());
    }
}
