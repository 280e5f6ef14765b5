//! Row sampling: a sample is a function of (seed, file, row position) only, so every
//! partitioning profiles the same rows and merged sampled profiles equal the single-pass sampled
//! profile exactly; the sample's size follows the fraction; bad fractions are refused; plans and
//! options written before sampling still read.

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use truthound_profile::dataset::{Format, StorageOptions, discover};
use truthound_profile::profile::ColumnProfile;
use truthound_profile::run::{no_progress, plan_store, run_task};
use truthound_profile::sample::FileSampler;
use truthound_profile::{
    PartialProfile, Plan, PlanRequest, ProfileOptions, SampleRows, Sampling, Strategy,
    TableProfile, plan,
};

/// Row `i` of the test table: a unique id, a key of 37 values, a float, a string of 50 values
/// (every 11th row null), all exactly representable in CSV.
fn table(first: usize, rows: usize) -> RecordBatch {
    let ids: Vec<i64> = (first..first + rows).map(|i| i as i64).collect();
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("id", Arc::new(Int64Array::from(ids.clone()))),
        (
            "k",
            Arc::new(Int64Array::from(
                ids.iter().map(|i| (i * 7919) % 37).collect::<Vec<_>>(),
            )),
        ),
        (
            "x",
            Arc::new(Float64Array::from(
                ids.iter()
                    .map(|i| ((i * 104_729) % 1000) as f64 / 4.0 - 50.0)
                    .collect::<Vec<_>>(),
            )),
        ),
        (
            "s",
            Arc::new(StringArray::from(
                ids.iter()
                    .map(|i| (i % 11 != 0).then(|| format!("v{}", (i * 31) % 50)))
                    .collect::<Vec<_>>(),
            )),
        ),
    ];
    RecordBatch::try_from_iter(cols).unwrap()
}

/// `sizes.len()` Parquet files of `sizes[f]` rows, in row groups of `row_group` rows; ids run on
/// across files.
fn write_parquet(dir: &Path, sizes: &[usize], row_group: usize) {
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group))
        .build();
    let mut first = 0;
    for (f, &n) in sizes.iter().enumerate() {
        let batch = table(first, n);
        first += n;
        let file = std::fs::File::create(dir.join(format!("part-{f}.parquet"))).unwrap();
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props.clone())).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
}

fn write_csv(path: &Path, batch: &RecordBatch) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = arrow::csv::WriterBuilder::new()
        .with_header(true)
        .build(file);
    w.write(batch).unwrap();
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn make_plan(
    uri: &str,
    format: Option<Format>,
    request: &PlanRequest,
) -> truthound_profile::Result<Plan> {
    rt().block_on(async {
        let ds = discover(uri, format, &StorageOptions::default()).await?;
        plan::plan(&ds, request)
    })
}

/// Runs every task of the plan and merges the partials (in reverse order, for good measure).
fn run(plan: &Plan) -> PartialProfile {
    rt().block_on(async {
        let store = plan_store(plan).unwrap();
        let mut merged: Option<PartialProfile> = None;
        for t in plan.tasks.iter().rev() {
            let p = run_task(plan, t.id, store.clone(), &no_progress())
                .await
                .unwrap();
            match &mut merged {
                None => merged = Some(p),
                Some(m) => m.merge(&p).unwrap(),
            }
        }
        merged.unwrap()
    })
}

fn profile(uri: &str, format: Option<Format>, request: &PlanRequest) -> TableProfile {
    let plan = make_plan(uri, format, request).unwrap();
    TableProfile::from_partial(&run(&plan), 0, false, 20)
}

fn request(strategy: Strategy, partitions: u32, sampling: Option<Sampling>) -> PlanRequest {
    let mut r = PlanRequest::new(strategy, partitions);
    r.options.sampling = sampling;
    r
}

fn col<'a>(p: &'a TableProfile, name: &str) -> &'a ColumnProfile {
    p.columns.iter().find(|c| c.name == name).unwrap()
}

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
        (a, b) => a == b,
    }
}

/// Every exact figure equal (moments to 1e-9 relative: they are merged in another order), and
/// estimates too where both sides happen to be exact.
fn assert_same(a: &TableProfile, b: &TableProfile, what: &str) {
    assert_eq!(a.row_count, b.row_count, "{what}: row_count");
    assert_eq!(a.sampling, b.sampling, "{what}: sampling");
    assert_eq!(
        a.duplicate_row_count, b.duplicate_row_count,
        "{what}: duplicates"
    );
    assert_eq!(a.columns.len(), b.columns.len(), "{what}");
    for (x, y) in a.columns.iter().zip(&b.columns) {
        let n = format!("{what}: {}", x.name);
        let (dx, dy) = (x.distribution.as_ref(), y.distribution.as_ref());
        for (m, p, q) in [
            ("mean", dx.and_then(|d| d.mean), dy.and_then(|d| d.mean)),
            ("std", dx.and_then(|d| d.std), dy.and_then(|d| d.std)),
            (
                "skewness",
                dx.and_then(|d| d.skewness),
                dy.and_then(|d| d.skewness),
            ),
            (
                "kurtosis",
                dx.and_then(|d| d.kurtosis),
                dy.and_then(|d| d.kurtosis),
            ),
            ("avg_length", x.avg_length, y.avg_length),
        ] {
            assert!(close(p, q), "{n}.{m}: {p:?} vs {q:?}");
        }
        let (mut x, mut y) = (x.clone(), y.clone());
        let exact =
            |e: &Option<truthound_profile::profile::Estimate>| e.as_ref().is_none_or(|e| e.exact);
        // Sketches (HLL, KLL, frequent items) are compared only where both sides are exact.
        let values_exact = exact(&x.accuracy.distinct_count) && exact(&y.accuracy.distinct_count);
        let quantiles_exact = exact(&x.accuracy.quantiles) && exact(&y.accuracy.quantiles);
        for c in [&mut x, &mut y] {
            c.distribution = None;
            c.avg_length = None;
            if !values_exact {
                (c.distinct_count, c.unique_ratio, c.is_unique) = (None, None, None);
                (c.top_values, c.bottom_values) = (Vec::new(), None);
                c.accuracy.distinct_count = None;
                c.accuracy.top_values = None;
                c.inferred_type = String::new();
            }
            if !quantiles_exact {
                (c.quantiles, c.histogram) = (None, None);
                (c.accuracy.quantiles, c.accuracy.histogram) = (None, None);
            }
            // Float sums are exact only up to the order of additions.
            if c.physical_type == "Float64" {
                c.sum = c
                    .sum
                    .as_ref()
                    .and_then(Value::as_f64)
                    .map(|s| Value::from(s.round()));
            }
        }
        assert_eq!(x, y, "{n}");
    }
}

#[test]
fn sampled_profiles_are_the_same_for_every_partitioning() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), &[1500, 700, 1300], 100);
    let uri = dir.path().to_str().unwrap();
    let sampling = Some(Sampling::new(0.3, 7));
    let single = profile(uri, None, &request(Strategy::RowBased, 1, sampling));
    let s = single.sampling.as_ref().expect("sampled");
    assert_eq!((s.fraction, s.seed, s.rows_scanned), (0.3, Some(7), 3500));

    // The ground truth: the rows the sampler keeps at their positions in each file.
    let mut kept: Vec<i64> = Vec::new();
    let mut first = 0i64;
    for (f, n) in [1500i64, 700, 1300].into_iter().enumerate() {
        let sampler = FileSampler::new(&Sampling::new(0.3, 7), &format!("part-{f}.parquet"));
        kept.extend(
            (0..n)
                .filter(|&p| sampler.keeps(p as u64))
                .map(|p| first + p),
        );
        first += n;
    }
    assert_eq!(single.row_count, kept.len() as u64);
    let id = col(&single, "id");
    assert_eq!(id.sum, Some(Value::from(kept.iter().sum::<i64>())));
    assert_eq!(id.min, kept.first().map(|v| Value::from(*v)));
    assert_eq!(id.max, kept.last().map(|v| Value::from(*v)));
    assert_eq!(id.distinct_count, Some(kept.len() as u64));
    let nulls = kept.iter().filter(|i| *i % 11 == 0).count() as u64;
    assert_eq!(col(&single, "s").null_count, nulls);

    let mut hybrid = request(Strategy::Hybrid, 4, sampling);
    hybrid.column_partitions = Some(2);
    let mut hash_k = request(Strategy::Hash, 5, sampling);
    hash_k.hash_column = Some("k".into());
    let mut hash_s = request(Strategy::Hash, 3, sampling);
    hash_s.hash_column = Some("s".into());
    for (what, req) in [
        ("row_based 2", request(Strategy::RowBased, 2, sampling)),
        ("row_based 9", request(Strategy::RowBased, 9, sampling)),
        ("row_based 35", request(Strategy::RowBased, 35, sampling)),
        (
            "column_based 3",
            request(Strategy::ColumnBased, 3, sampling),
        ),
        ("hybrid 4x2", hybrid),
        ("hash k 5", hash_k),
        ("hash s 3", hash_s),
    ] {
        let plan = make_plan(uri, None, &req).unwrap();
        assert!(plan.tasks.len() > 1, "{what}");
        if what.starts_with("row_based") {
            // Tasks read some of a file's row groups: positions must still be the file's.
            assert!(plan.tasks.iter().any(|t| {
                t.reads
                    .iter()
                    .any(|r| r.row_groups.as_ref().is_some_and(|g| g[0] > 0))
            }));
        }
        let merged = TableProfile::from_partial(&run(&plan), 0, false, 20);
        assert_same(&merged, &single, what);
    }
}

#[test]
fn sample_size_follows_the_fraction_and_the_seed_picks_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), &[12_000, 8_000], 1000);
    let uri = dir.path().to_str().unwrap();
    let n = 20_000.0;
    let mut sums = Vec::new();
    for (fraction, seed) in [(0.1, 0), (0.1, 1), (0.5, 0), (0.02, 9)] {
        let p = profile(
            uri,
            None,
            &request(Strategy::RowBased, 3, Some(Sampling::new(fraction, seed))),
        );
        let sigma = (n * fraction * (1.0 - fraction)).sqrt();
        let got = p.row_count as f64;
        assert!(
            (got - n * fraction).abs() <= 6.0 * sigma,
            "fraction {fraction}: {got} rows of {n}"
        );
        assert_eq!(p.sampling.as_ref().unwrap().rows_scanned, 20_000);
        sums.push(col(&p, "id").sum.clone());
    }
    assert_ne!(sums[0], sums[1], "another seed samples other rows");

    // Fraction 1 is no sampling: the plan (and its id) and the profile are the unsampled ones.
    let all = make_plan(uri, None, &request(Strategy::RowBased, 3, None)).unwrap();
    let one = make_plan(
        uri,
        None,
        &request(Strategy::RowBased, 3, Some(Sampling::new(1.0, 5))),
    )
    .unwrap();
    assert_eq!(one.id, all.id);
    assert_eq!(one.options.sampling, None);
    let (a, b) = (
        TableProfile::from_partial(&run(&all), 0, false, 20),
        TableProfile::from_partial(&run(&one), 0, false, 20),
    );
    assert_eq!(a.sampling, None);
    assert_eq!(a.row_count, 20_000);
    assert_same(&a, &b, "fraction 1");
    // A sampled plan is another plan.
    let half = make_plan(
        uri,
        None,
        &request(Strategy::RowBased, 3, Some(Sampling::new(0.5, 0))),
    )
    .unwrap();
    assert_ne!(half.id, all.id);
    let other_seed = make_plan(
        uri,
        None,
        &request(Strategy::RowBased, 3, Some(Sampling::new(0.5, 1))),
    )
    .unwrap();
    assert_ne!(half.id, other_seed.id);
}

#[test]
fn positions_are_the_files_whatever_the_format_and_row_groups_read() {
    // The same rows as CSV and as Parquet in row groups of 64, both files named `data`.
    let batch = table(0, 3000);
    let (csv_dir, pq_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_csv(&csv_dir.path().join("data"), &batch);
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(64))
        .build();
    let file = std::fs::File::create(pq_dir.path().join("data")).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let sampling = Some(Sampling::new(0.25, 42));
    let csv_uri = csv_dir.path().join("data");
    let pq_uri = pq_dir.path().join("data");
    let csv = profile(
        csv_uri.to_str().unwrap(),
        Some(Format::Csv),
        &request(Strategy::RowBased, 1, sampling),
    );
    for partitions in [1, 3, 10] {
        let req = request(Strategy::RowBased, partitions, sampling);
        let plan = make_plan(pq_uri.to_str().unwrap(), Some(Format::Parquet), &req).unwrap();
        assert_eq!(plan.tasks.len(), partitions as usize);
        let pq = TableProfile::from_partial(&run(&plan), 0, false, 20);
        assert!(
            csv.row_count > 600 && csv.row_count < 900,
            "{}",
            csv.row_count
        );
        assert_eq!(pq.row_count, csv.row_count, "{partitions} tasks");
        assert_eq!(pq.sampling, csv.sampling);
        for name in ["id", "k", "x", "s"] {
            let (a, b) = (col(&pq, name), col(&csv, name));
            assert_eq!(a.null_count, b.null_count, "{name}");
            assert_eq!(a.min, b.min, "{name}");
            assert_eq!(a.max, b.max, "{name}");
            assert_eq!(a.distinct_count, b.distinct_count, "{name}");
            assert_eq!(a.top_values, b.top_values, "{name}");
            assert_eq!(a.quantiles, b.quantiles, "{name}");
            assert!(close(
                a.distribution.as_ref().and_then(|d| d.mean),
                b.distribution.as_ref().and_then(|d| d.mean)
            ));
        }
    }
}

#[test]
fn a_row_count_becomes_a_fraction_where_the_footers_give_the_total() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), &[6000, 4000], 500);
    let uri = dir.path().to_str().unwrap();
    let mut req = PlanRequest::new(Strategy::RowBased, 4);
    req.sample_rows = Some(SampleRows {
        rows: 1000,
        seed: 3,
    });
    let plan = make_plan(uri, None, &req).unwrap();
    assert_eq!(plan.options.sampling, Some(Sampling::new(0.1, 3)));
    let p = TableProfile::from_partial(&run(&plan), 0, false, 20);
    let sigma = (10_000.0f64 * 0.1 * 0.9).sqrt();
    assert!(
        (p.row_count as f64 - 1000.0).abs() <= 6.0 * sigma,
        "{}",
        p.row_count
    );

    // As many rows as there are, or more: no sampling.
    req.sample_rows = Some(SampleRows {
        rows: 10_000,
        seed: 3,
    });
    assert_eq!(make_plan(uri, None, &req).unwrap().options.sampling, None);

    // A fraction and a row count: refused.
    req.options.sampling = Some(Sampling::new(0.5, 0));
    let err = make_plan(uri, None, &req).unwrap_err().to_string();
    assert!(err.contains("not both"), "{err}");

    // No row count before reading (CSV): refused, saying why and what to do instead.
    let csv_dir = tempfile::tempdir().unwrap();
    write_csv(&csv_dir.path().join("a.csv"), &table(0, 100));
    let mut req = PlanRequest::new(Strategy::RowBased, 1);
    req.sample_rows = Some(SampleRows { rows: 10, seed: 0 });
    let err = make_plan(csv_dir.path().to_str().unwrap(), None, &req).unwrap_err();
    assert_eq!(err.class(), truthound_profile::ErrorClass::Invalid);
    let err = err.to_string();
    assert!(
        err.contains("sampling") && err.contains("Parquet") && err.contains("csv"),
        "{err}"
    );
    req.sample_rows = Some(SampleRows { rows: 0, seed: 0 });
    let err = make_plan(uri, None, &req).unwrap_err().to_string();
    assert!(err.contains("0 rows"), "{err}");
}

#[test]
fn bad_fractions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), &[100], 50);
    let uri = dir.path().to_str().unwrap();
    for bad in [0.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
        let sampling = Sampling::new(bad, 0);
        let err = sampling.validate().unwrap_err();
        assert_eq!(err.class(), truthound_profile::ErrorClass::Invalid);
        let text = err.to_string();
        assert!(
            text.contains("sampling") && text.contains("fraction"),
            "{text}"
        );
        let err = make_plan(uri, None, &request(Strategy::RowBased, 1, Some(sampling)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("fraction"), "{bad}: {err}");
    }
    // A plan from storage with a bad fraction is refused when read.
    let plan = make_plan(
        uri,
        None,
        &request(Strategy::RowBased, 1, Some(Sampling::new(0.5, 0))),
    )
    .unwrap();
    let text = String::from_utf8(plan.to_json())
        .unwrap()
        .replace("\"fraction\": 0.5", "\"fraction\": 2.0");
    let err = Plan::from_json(text.as_bytes(), "plan.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("fraction"), "{err}");
}

#[test]
fn plans_and_options_without_sampling_still_read() {
    // Options as written before sampling existed.
    let old = r#"{"top_k":10,"exact_distinct_limit":10000,"kll_k":200,"hll_lg_k":14,
        "frequent_items_map_size":1024,"histogram_bins":20,"patterns":true,"duplicates":true,
        "exact_row_hash_limit":1048576,"row_hll_lg_k":18,"batch_rows":65536}"#;
    let o: ProfileOptions = serde_json::from_str(old).unwrap();
    assert_eq!(o, ProfileOptions::default());
    assert_eq!(o.sampling, None);
    // An unsampled plan's JSON has no sampling field, so its id is what it was.
    let dir = tempfile::tempdir().unwrap();
    write_parquet(dir.path(), &[100], 50);
    let uri = dir.path().to_str().unwrap();
    let plan = make_plan(uri, None, &PlanRequest::new(Strategy::RowBased, 2)).unwrap();
    let json = String::from_utf8(plan.to_json()).unwrap();
    assert!(!json.contains("sampling"), "{json}");
    assert_eq!(Plan::from_json(json.as_bytes(), "p").unwrap(), plan);
    // The sampled shape: {"fraction": f, "seed": n}; the seed may be left out (0).
    let sampled: ProfileOptions =
        serde_json::from_str(r#"{"sampling": {"fraction": 0.25}}"#).unwrap();
    assert_eq!(sampled.sampling, Some(Sampling::new(0.25, 0)));
    let v = serde_json::to_value(ProfileOptions {
        sampling: Some(Sampling::new(0.25, 9)),
        ..ProfileOptions::default()
    })
    .unwrap();
    assert_eq!(
        v["sampling"],
        serde_json::json!({"fraction": 0.25, "seed": 9})
    );
    let err =
        serde_json::from_str::<ProfileOptions>(r#"{"sampling": {"fraction": 0.5, "rate": 1}}"#)
            .unwrap_err()
            .to_string();
    assert!(err.contains("rate"), "{err}");
}

#[test]
fn merges_keep_the_rows_scanned_and_refuse_mixed_rates() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_parquet(a.path(), &[3000], 200);
    write_parquet(b.path(), &[2000], 200);
    let (ua, ub) = (a.path().to_str().unwrap(), b.path().to_str().unwrap());
    let half = |seed| Some(Sampling::new(0.5, seed));
    let pa = run(&make_plan(ua, None, &request(Strategy::Hybrid, 3, half(1))).unwrap());
    let pb = run(&make_plan(ub, None, &request(Strategy::RowBased, 2, half(1))).unwrap());
    assert_eq!((pa.rows_scanned(), pb.rows_scanned()), (3000, 2000));
    let mut both = pa.clone();
    both.merge(&pb).unwrap();
    let p = TableProfile::from_partial(&both, 0, true, 20);
    let s = p.sampling.clone().unwrap();
    assert_eq!((s.fraction, s.seed, s.rows_scanned), (0.5, Some(1), 5000));
    assert_eq!(p.row_count, pa.row_count() + pb.row_count());
    // Through a profile's embedded state and back.
    let back: TableProfile = serde_json::from_slice(&p.to_json()).unwrap();
    assert_eq!(back.sampling, p.sampling);
    let state = back.state().unwrap().unwrap();
    assert_eq!(state.rows_scanned(), 5000);
    // Through the partial's bytes.
    let bytes = PartialProfile::from_bytes(&both.to_bytes(), "t").unwrap();
    assert_eq!(bytes.rows_scanned(), 5000);
    assert_eq!(bytes.sampling(), Some(Sampling::new(0.5, 1)));

    // Another seed: still a sample at one rate; the seed is no longer one.
    let pb2 = run(&make_plan(ub, None, &request(Strategy::RowBased, 2, half(2))).unwrap());
    let mut mixed_seeds = pa.clone();
    mixed_seeds.merge(&pb2).unwrap();
    let s = TableProfile::from_partial(&mixed_seeds, 0, false, 20)
        .sampling
        .unwrap();
    assert_eq!((s.fraction, s.seed, s.rows_scanned), (0.5, None, 5000));

    // Another rate, or none: refused.
    for other in [None, Some(Sampling::new(0.25, 1))] {
        let pc = run(&make_plan(ub, None, &request(Strategy::RowBased, 2, other)).unwrap());
        let err = pa.clone().merge(&pc).unwrap_err().to_string();
        assert!(err.contains("same sampling fraction"), "{err}");
        let err = pc.clone().merge(&pa).unwrap_err().to_string();
        assert!(err.contains("same sampling fraction"), "{err}");
    }

    // An unsampled profile says nothing of sampling.
    let plain = run(&make_plan(ub, None, &request(Strategy::RowBased, 2, None)).unwrap());
    assert_eq!(plain.rows_scanned(), 2000);
    let json = TableProfile::from_partial(&plain, 0, false, 20).to_json();
    assert!(!String::from_utf8(json).unwrap().contains("sampling"));
}
