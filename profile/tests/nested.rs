//! Nested and binary columns under every partitioning: the profile merged from the partials of
//! row, column and hybrid plans, in random orders and groupings, equals the single pass exactly
//! (derived columns, list lengths, binary value counts and duplicate rows alike; floats to
//! 1e-9 relative, as the moments of any column). The file is
//! written by pyarrow (`fixtures/nested.py`); its figures are checked against DuckDB in the cli's
//! tests (`cli/tests/nested.rs`).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use truthound_profile::dataset::{StorageOptions, discover};
use truthound_profile::run::{no_progress, plan_store, run_task};
use truthound_profile::{PartialProfile, PlanRequest, Strategy, TableProfile, plan};

/// The Python with pyarrow and DuckDB the fixtures are written with.
fn python() -> String {
    std::env::var("TH_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "TH_TEST_PYTHON is not set: this test writes its Parquet file with pyarrow; run it \
             through scripts/test.sh or export TH_TEST_PYTHON=$(scripts/py-tools.sh python)"
        )
    })
}

/// Writes the fixture into `dir` (the data under `dir/data`).
fn write_fixture(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nested.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn partials(dir: &Path, request: &PlanRequest) -> Vec<PartialProfile> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let ds = discover(dir.to_str().unwrap(), None, &StorageOptions::default())
                .await
                .unwrap();
            let plan = plan::plan(&ds, request).unwrap();
            let store = plan_store(&plan).unwrap();
            let mut out = Vec::new();
            for t in &plan.tasks {
                out.push(
                    run_task(&plan, t.id, store.clone(), &no_progress())
                        .await
                        .unwrap(),
                );
            }
            out
        })
}

/// Merges in a random grouping, each partial through its bytes (as a stored run reads them).
fn merge_randomly(parts: Vec<PartialProfile>, rng: &mut StdRng) -> PartialProfile {
    let mut parts: Vec<PartialProfile> = parts
        .iter()
        .map(|p| PartialProfile::from_bytes(&p.to_bytes(), "partial").unwrap())
        .collect();
    parts.shuffle(rng);
    while parts.len() > 1 {
        let a = parts.swap_remove(rng.random_range(0..parts.len()));
        let mut b = parts.swap_remove(rng.random_range(0..parts.len()));
        b.merge(&a).unwrap();
        parts.push(b);
    }
    parts.pop().unwrap()
}

/// What must not depend on the partitioning: every column and the duplicate rows.
fn figures(p: &PartialProfile) -> Value {
    let t = TableProfile::from_partial(p, 0, false, 10);
    serde_json::json!({
        "rows": t.row_count,
        "duplicates": t.duplicate_row_count,
        "columns": serde_json::to_value(&t.columns).unwrap(),
    })
}

/// `a` equals `b`: every count, string and structure exactly, floats to 1e-9 relative (plus
/// 1e-12 for a skewness of about 0) (the
/// moments of merged partials are summed in another order, as for every column).
fn same(a: &Value, b: &Value, path: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) + 1e-12,
                "{path}: {x} vs {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                let name = y.get("name").and_then(Value::as_str).unwrap_or_default();
                same(x, y, &format!("{path}[{i}]{name}"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| o.keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(x), keys(y), "{path}: fields");
            for (k, v) in x {
                same(v, &y[k], &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

#[test]
fn nested_profiles_merge_to_the_single_pass_exactly() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture(dir.path());
    let data = dir.path().join("data");
    let single = partials(&data, &PlanRequest::new(Strategy::RowBased, 1));
    assert_eq!(single.len(), 1);
    let single = figures(&single[0]);
    let names: Vec<&str> = single["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    // Each nested column followed by its derived columns, depth first, in schema order.
    assert_eq!(
        names,
        [
            "id", "s", "s.a", "s.b", "s.b.c", "s.b.d", "l", "l[]", "ls", "ls[]", "ls[].x",
            "ls[].y", "m", "m{key}", "m{value}", "bin", "big"
        ]
    );
    // Every row differs in `id`: no duplicates, with the nested columns hashed too.
    assert_eq!(single["duplicates"], 0);

    let mut hybrid = PlanRequest::new(Strategy::Hybrid, 2);
    hybrid.row_partitions = Some(2);
    hybrid.column_partitions = Some(3);
    let requests = [
        ("row_based 4", PlanRequest::new(Strategy::RowBased, 4)),
        ("column_based 3", PlanRequest::new(Strategy::ColumnBased, 3)),
        ("hybrid 2×3", hybrid),
    ];
    let mut rng = StdRng::seed_from_u64(7);
    for (what, request) in requests {
        let parts = partials(&data, &request);
        assert!(parts.len() >= 3, "{what}: {} tasks", parts.len());
        for round in 0..3 {
            let merged = merge_randomly(parts.clone(), &mut rng);
            same(
                &figures(&merged),
                &single,
                &format!("{what}, merge order {round}"),
            );
        }
    }
}

#[test]
fn duplicate_rows_compare_nested_values() {
    // Two rows equal but for a list element are not duplicates; an exact copy is.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let script = "import pyarrow as pa, pyarrow.parquet as pq, sys\n\
        t = pa.table({'k': [1, 1, 1], 'l': [[1, 2], [1, 3], [1, 2]],\n\
                      's': [{'a': 'x'}, {'a': 'x'}, {'a': 'x'}]})\n\
        pq.write_table(t, sys.argv[1])\n";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(data.join("d.parquet"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = &partials(&data, &PlanRequest::new(Strategy::RowBased, 1))[0];
    assert_eq!(figures(p)["duplicates"], 1);
}
