//! Writes the small sample dataset the README profiles, deterministically (a fixed xorshift
//! generator, no external randomness): `cargo run -p truthound-profile --example gen_sample --
//! examples/sample`.
//!
//! It holds the cases a profiler must get right: nulls, NaN and infinities, empty strings,
//! unicode, a unique id, categories, emails/URLs/UUIDs/IPs/phones, dates and timestamps, a
//! constant and an all-null column, and a few duplicate rows.

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::sync::Arc;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        // Box–Muller.
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

const COUNTRIES: [&str; 8] = ["KR", "US", "DE", "JP", "FR", "BR", "IN", "ZA"];
const WEIGHTS: [u64; 8] = [30, 25, 12, 10, 8, 6, 5, 4];
const CITIES: [&str; 6] = ["서울", "München", "São Paulo", "東京", "Zürich", "New York"];

fn batch(rng: &mut Rng, start: i64, rows: usize) -> RecordBatch {
    let mut id = Vec::new();
    let mut email = Vec::new();
    let mut country = Vec::new();
    let mut city = Vec::new();
    let mut amount = Vec::new();
    let mut quantity = Vec::new();
    let mut signup = Vec::new();
    let mut last_seen = Vec::new();
    let mut active = Vec::new();
    let mut website = Vec::new();
    let mut device = Vec::new();
    let mut ip = Vec::new();
    let mut phone = Vec::new();
    let mut plan = Vec::new();
    let mut note: Vec<Option<String>> = Vec::new();
    for i in 0..rows {
        let n = start + i as i64;
        id.push(n);
        let user = rng.below(3000);
        email.push(match rng.below(100) {
            0..=2 => None,
            3 => Some(String::new()),
            _ => Some(format!("user{user}@example.com")),
        });
        let mut w = rng.below(100);
        let mut k = 0;
        while w >= WEIGHTS[k] {
            w -= WEIGHTS[k];
            k += 1;
        }
        country.push(COUNTRIES[k]);
        city.push(CITIES[rng.below(CITIES.len() as u64) as usize]);
        amount.push(match rng.below(1000) {
            0..=49 => None,
            50..=52 => Some(f64::NAN),
            53 => Some(f64::INFINITY),
            _ => Some(((3.0 + rng.normal()).exp() * 100.0).round() / 100.0),
        });
        quantity.push((rng.below(10) != 0).then(|| (rng.below(20) as i32) - 2));
        signup.push(18_262 + rng.below(1_827) as i32); // 2020-01-01 .. 2024-12-31
        last_seen.push(
            (rng.below(50) != 0)
                .then(|| 1_704_067_200_000_000 + (rng.below(366 * 86_400) as i64) * 1_000_000),
        );
        active.push(match rng.below(100) {
            0..=2 => None,
            3..=72 => Some(true),
            _ => Some(false),
        });
        website.push(format!(
            "https://shop{}.example.org/p/{}",
            rng.below(40),
            rng.below(10_000)
        ));
        let (a, b) = (rng.next(), rng.next());
        device.push(format!(
            "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        ));
        ip.push(format!(
            "10.{}.{}.{}",
            rng.below(256),
            rng.below(256),
            1 + rng.below(254)
        ));
        phone.push(format!(
            "+82-10-{:04}-{:04}",
            rng.below(10_000),
            rng.below(10_000)
        ));
        plan.push("standard");
        note.push(None);
        // Every 250th row repeats the row before it: duplicates for the duplicate-row count.
        if n % 250 == 249 && i > 0 {
            macro_rules! repeat_last {
                ($($v:ident),*) => {$( let last = $v[$v.len() - 2].clone(); *$v.last_mut().expect("row") = last; )*};
            }
            repeat_last!(
                id, email, country, city, amount, quantity, signup, last_seen, active, website,
                device, ip, phone
            );
        }
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(id))),
        ("email", Arc::new(StringArray::from(email))),
        ("country", Arc::new(StringArray::from(country))),
        ("city", Arc::new(StringArray::from(city))),
        ("amount", Arc::new(Float64Array::from(amount))),
        ("quantity", Arc::new(Int32Array::from(quantity))),
        ("signup_date", Arc::new(Date32Array::from(signup))),
        (
            "last_seen",
            Arc::new(TimestampMicrosecondArray::from(last_seen).with_timezone("+00:00")),
        ),
        ("is_active", Arc::new(BooleanArray::from(active))),
        ("website", Arc::new(StringArray::from(website))),
        ("device_id", Arc::new(StringArray::from(device))),
        ("ip_address", Arc::new(StringArray::from(ip))),
        ("phone", Arc::new(StringArray::from(phone))),
        ("plan", Arc::new(StringArray::from(plan))),
        ("note", Arc::new(StringArray::from(note))),
    ];
    RecordBatch::try_from_iter(columns).expect("valid batch")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "examples/sample".into());
    let dir = std::path::Path::new(&out);
    std::fs::create_dir_all(dir.join("events"))?;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(500))
        .build();
    let (files, per_file) = (3, 1_000);
    for f in 0..files {
        let b = batch(&mut rng, 1 + (f * per_file) as i64, per_file);
        let file = std::fs::File::create(dir.join(format!("events/part-{f}.parquet")))?;
        let mut w = ArrowWriter::try_new(file, b.schema(), Some(props.clone()))?;
        w.write(&b)?;
        w.close()?;
        if f == 0 {
            let csv = std::fs::File::create(dir.join("events.csv"))?;
            let mut cw = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(csv);
            cw.write(&b)?;
        }
    }
    println!(
        "wrote {} rows in {files} Parquet files and {per_file} rows of CSV to {out}",
        files * per_file
    );
    Ok(())
}
