//! Splitting inside files: CSV and NDJSON files cut into byte ranges profile to exactly the
//! profile of one pass over the whole file, on adversarial files (quoted line breaks, CRLF, a
//! byte-order mark, a header, a last line without a line break, records longer than a range,
//! comment lines), for many range sizes; and Parquet files of one row group cut into row ranges
//! (with and without a page index) likewise, a range fetching only its pages.

use serde_json::Value;
use truthound_profile::dataset::{CsvOptions, StorageOptions, discover_with};
use truthound_profile::run::{no_progress, plan_store, run_task};
use truthound_profile::{Plan, PlanRequest, Strategy, TableProfile, plan};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn make_plan(uri: &str, csv: &CsvOptions, strategy: Strategy, target: u64) -> Plan {
    rt().block_on(async {
        let ds = discover_with(uri, None, &StorageOptions::default(), csv)
            .await
            .unwrap();
        let mut req = PlanRequest::new(strategy, 64);
        req.target_task_bytes = Some(target);
        let p = plan::plan_with_scan(&ds, &req).await.unwrap();
        Plan::from_json(&p.to_json(), "plan").unwrap()
    })
}

fn run(plan: &Plan) -> TableProfile {
    rt().block_on(async {
        let store = plan_store(plan).unwrap();
        let mut merged: Option<truthound_profile::PartialProfile> = None;
        for t in &plan.tasks {
            let p = run_task(plan, t.id, store.clone(), &no_progress())
                .await
                .unwrap();
            match &mut merged {
                None => merged = Some(p),
                Some(m) => m.merge(&p).unwrap(),
            }
        }
        TableProfile::from_partial(&merged.unwrap(), 0, false, 20)
    })
}

/// The exact figures of a profile: everything but timings, partitioning and sketch bounds.
fn exact(p: &TableProfile) -> Value {
    let cols: Vec<Value> = p
        .columns
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name, "rows": c.row_count, "nulls": c.null_count,
                "distinct": c.distinct_count, "min": c.min, "max": c.max, "sum": c.sum,
                "top": c.top_values.iter().map(|v| (v.value.clone(), v.count)).collect::<Vec<_>>(),
                "empty": c.empty_string_count, "min_len": c.min_length, "max_len": c.max_length,
            })
        })
        .collect();
    serde_json::json!({"rows": p.row_count, "duplicates": p.duplicate_row_count, "columns": cols})
}

fn ranged_tasks(plan: &Plan) -> usize {
    plan.tasks
        .iter()
        .filter(|t| t.reads.iter().any(|r| r.bytes.is_some()))
        .count()
}

/// Profiles `bytes` whole and cut into ranges of many sizes; every cut profile must equal the
/// whole one, and `expect_rows` rows must be read.
fn check_splits(name: &str, bytes: &[u8], csv: &CsvOptions, expect_rows: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let uri = path.to_str().unwrap();
    let whole_plan = make_plan(uri, csv, Strategy::RowBased, 0);
    assert_eq!(whole_plan.tasks.len(), 1);
    let whole = exact(&run(&whole_plan));
    assert_eq!(whole["rows"], expect_rows, "{name}: {whole}");
    for target in [1u64, 2, 3, 5, 7, 11, 16, 29, 64, 100, 333] {
        for strategy in [Strategy::RowBased, Strategy::Hybrid] {
            let plan = make_plan(uri, csv, strategy, target);
            if (bytes.len() as u64) > target * 2 {
                assert!(
                    ranged_tasks(&plan) > 1,
                    "{name}: target {target} gave {} tasks",
                    plan.tasks.len()
                );
            }
            let cut = exact(&run(&plan));
            assert_eq!(cut, whole, "{name}, {strategy}, ranges of {target} bytes");
        }
    }
}

#[test]
fn quoted_csv_with_every_hazard() {
    let mut text = String::from("\u{feff}id,note,amount\r\n");
    text.push_str("1,\"first\nline, with comma\",2.5\r\n");
    text.push_str("2,plain,3\n");
    text.push_str("3,\"quote \"\"inside\"\"\r\nand CRLF\",\n");
    text.push_str(&format!("4,\"{}\",7\n", "long\n".repeat(40))); // longer than most ranges
    text.push_str("5,,8\n");
    text.push_str("6,\"\n\n\",9\n");
    text.push_str("7,last without newline,10");
    check_splits("hazards.csv", text.as_bytes(), &CsvOptions::default(), 7);
}

#[test]
fn semicolon_csv_with_comments_and_a_sniffed_dialect() {
    let mut text = String::from("# export\na;b\n");
    for i in 0..40 {
        text.push_str(&format!("{i};\"v{}\n{i}\"\n", i % 7));
        if i % 9 == 0 {
            text.push_str("# a comment with a \" quote\n");
        }
    }
    check_splits("semi.csv", text.as_bytes(), &CsvOptions::default(), 40);
}

#[test]
fn unquoted_csv_is_cut_without_a_scan() {
    let asked = CsvOptions {
        quote: Some(None),
        ..CsvOptions::default()
    };
    let mut text = String::from("k,v\r\n");
    for i in 0..50 {
        text.push_str(&format!("k{},{}\r\n", i % 5, i * 3));
    }
    text.push_str("end,1");
    check_splits("plain.csv", text.as_bytes(), &asked, 51);
}

#[test]
fn ndjson_is_cut_at_lines() {
    let mut text = String::from("\u{feff}");
    for i in 0..40 {
        // A JSON string holds no raw line break: every \n ends a record.
        text.push_str(&format!(
            "{{\"id\": {i}, \"s\": \"a\\nb {}\", \"x\": {}}}\n",
            i % 4,
            i as f64 / 3.0
        ));
    }
    text.push_str(&format!(
        "{{\"id\": 99, \"s\": \"{}\", \"x\": 1}}",
        "y".repeat(500)
    ));
    check_splits("rows.ndjson", text.as_bytes(), &CsvOptions::default(), 41);
}

#[test]
fn utf16_files_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let text = "a,b\n1,2\n3,4\n5,6\n";
    let bytes: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let path = dir.path().join("u16.csv");
    std::fs::write(&path, bytes).unwrap();
    let plan = make_plan(
        path.to_str().unwrap(),
        &CsvOptions::default(),
        Strategy::RowBased,
        4,
    );
    assert_eq!(ranged_tasks(&plan), 0);
    assert_eq!(run(&plan).row_count, 3);
}

mod properties {
    use super::{CsvOptions, exact, make_plan, run};
    use proptest::prelude::*;
    use proptest::test_runner::Config;
    use truthound_profile::Strategy as PlanStrategy;

    /// A field: text with the characters that make CSV hard, or a number, or empty.
    fn field() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-c]{0,3}".prop_map(String::from),
            (0i64..50).prop_map(|n| n.to_string()),
            prop::collection::vec(
                prop_oneof![
                    Just("x".to_string()),
                    Just(",".to_string()),
                    Just("\"".to_string()),
                    Just("\n".to_string()),
                    Just("\r\n".to_string()),
                    Just("é".to_string()),
                ],
                0..6
            )
            .prop_map(|parts| parts.concat()),
        ]
    }

    fn quoted(f: &str) -> String {
        if f.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", f.replace('"', "\"\""))
        } else {
            f.to_string()
        }
    }

    proptest! {
        #![proptest_config(Config { cases: 24, ..Config::default() })]

        /// Random CSV (quoted line breaks and quotes, CRLF or LF, a BOM or not, a last line
        /// with or without its line break), cut into ranges of a random size: the merged
        /// profile's exact figures equal the single pass's.
        #[test]
        fn cut_csv_profiles_equal_the_single_pass(
            rows in prop::collection::vec((0i64..1000, field(), field()), 1..40),
            crlf in any::<bool>(),
            bom in any::<bool>(),
            final_newline in any::<bool>(),
            target in 1u64..200,
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut text = String::from(if bom { "\u{feff}" } else { "" });
            text.push_str(&format!("n,s,t{eol}"));
            for (i, (n, s, t)) in rows.iter().enumerate() {
                text.push_str(&format!("{n},{},{}", quoted(s), quoted(t)));
                if i + 1 < rows.len() || final_newline {
                    text.push_str(eol);
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r.csv");
            std::fs::write(&path, &text).unwrap();
            let uri = path.to_str().unwrap();
            // The dialect is given: the property is about cutting, not sniffing.
            let csv = CsvOptions {
                delimiter: Some(b','),
                quote: Some(Some(b'"')),
                header: Some(true),
                ..CsvOptions::default()
            };
            let whole = exact(&run(&make_plan(uri, &csv, PlanStrategy::RowBased, 0)));
            prop_assert_eq!(&whole["rows"], &serde_json::json!(rows.len()));
            let cut = exact(&run(&make_plan(uri, &csv, PlanStrategy::RowBased, target)));
            prop_assert_eq!(cut, whole);
        }
    }
}

mod parquet_splits {
    use super::{exact, rt, run};
    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use arrow::record_batch::RecordBatch;
    use async_trait::async_trait;
    use bytes::Bytes;
    use futures::stream::BoxStream;
    use object_store::path::Path;
    use object_store::{
        CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
        PutMultipartOptions, PutOptions, PutPayload, PutResult,
    };
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::{EnabledStatistics, WriterProperties};
    use proptest::prelude::*;
    // Its name is the planner's strategy here; its methods are still needed.
    use proptest::strategy::Strategy as _;
    use proptest::test_runner::Config;
    use std::ops::Range;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use truthound_profile::dataset::{StorageOptions, discover};
    use truthound_profile::run::{no_progress, plan_store, run_task};
    use truthound_profile::{Plan, PlanRequest, Sampling, Strategy, plan};

    type Row = (Option<i64>, Option<String>, f64);

    /// One row group of `rows`, in pages of at most `page_rows` rows, with a page index (column
    /// and offset indexes) or without any.
    fn write_one_group(path: &std::path::Path, rows: &[Row], page_index: bool, page_rows: usize) {
        let cols: Vec<(&str, ArrayRef)> = vec![
            (
                "n",
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
            ),
            (
                "s",
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1.clone()))),
            ),
            (
                "x",
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ),
        ];
        let batch = RecordBatch::try_from_iter(cols).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(rows.len().max(1)))
            .set_max_row_group_bytes(None)
            .set_data_page_row_count_limit(page_rows)
            .set_write_batch_size(page_rows)
            .set_dictionary_enabled(false)
            .set_statistics_enabled(if page_index {
                EnabledStatistics::Page
            } else {
                EnabledStatistics::Chunk
            })
            .set_offset_index_disabled(!page_index)
            .build();
        let mut w = ArrowWriter::try_new(
            std::fs::File::create(path).unwrap(),
            batch.schema(),
            Some(props),
        )
        .unwrap();
        w.write(&batch).unwrap();
        let meta = w.close().unwrap();
        assert_eq!(meta.num_row_groups(), 1);
        let chunk = meta.row_group(0).column(0);
        assert_eq!(chunk.offset_index_offset().is_some(), page_index);
    }

    fn plan_of(uri: &str, strategy: Strategy, partitions: u32, target: Option<u64>) -> Plan {
        plan_sampled(uri, strategy, partitions, target, None)
    }

    fn plan_sampled(
        uri: &str,
        strategy: Strategy,
        partitions: u32,
        target: Option<u64>,
        sampling: Option<Sampling>,
    ) -> Plan {
        rt().block_on(async {
            let ds = discover(uri, None, &StorageOptions::default())
                .await
                .unwrap();
            let mut req = PlanRequest::new(strategy, partitions);
            req.target_task_bytes = target;
            req.options.sampling = sampling;
            let p = plan::plan(&ds, &req).unwrap();
            // What a worker gets: the plan through its JSON.
            Plan::from_json(&p.to_json(), "plan").unwrap()
        })
    }

    /// Every row of the file is in exactly one row slice, and each task's rows are its ranges'.
    fn check_cover(plan: &Plan, total: u64) {
        let mut ranges = Vec::new();
        for t in plan.tasks.iter().filter(|t| t.column_group == 0) {
            let mut rows = 0;
            for r in &t.reads {
                let [a, b] = r.rows.unwrap_or([0, total]);
                assert_eq!(r.row_groups.as_deref(), Some(&[0][..]), "{r:?}");
                ranges.push((a, b));
                rows += b - a;
            }
            assert_eq!(t.rows, Some(rows), "task {}", t.id);
        }
        ranges.sort();
        let mut next = 0;
        for (a, b) in ranges {
            assert_eq!(a, next, "contiguous, no overlap");
            assert!(b > a, "no empty range");
            next = b;
        }
        assert_eq!(next, total);
        let bytes: u64 = plan
            .tasks
            .iter()
            .filter(|t| t.column_group == 0)
            .map(|t| t.bytes)
            .sum();
        let group: u64 = plan.files[0].row_groups[0].column_bytes.iter().sum();
        assert_eq!(bytes, group, "the group's bytes, shared out");
    }

    fn rows_of(n: usize) -> Vec<Row> {
        (0..n)
            .map(|i| {
                let i = i as i64;
                (
                    (i % 13 != 0).then_some(i * 7 % 101),
                    (i % 5 != 0).then(|| format!("v{}", i % 17)),
                    i as f64 / 4.0,
                )
            })
            .collect()
    }

    #[test]
    fn one_row_group_is_cut_into_row_ranges_at_many_targets() {
        let dir = tempfile::tempdir().unwrap();
        let rows = rows_of(3000);
        for page_index in [true, false] {
            let path = dir.path().join(format!("one-{page_index}.parquet"));
            write_one_group(&path, &rows, page_index, 100);
            let uri = path.to_str().unwrap();
            let whole_plan = plan_of(uri, Strategy::RowBased, 8, Some(0));
            assert_eq!(whole_plan.tasks.len(), 1);
            assert_eq!(whole_plan.tasks[0].reads[0].rows, None);
            let whole = exact(&run(&whole_plan));
            assert_eq!(whole["rows"], 3000);
            let group: u64 = whole_plan.files[0].row_groups[0].column_bytes.iter().sum();
            for target in [1u64, 7, 100, group / 9, group / 3, group / 2, group - 1] {
                for strategy in [Strategy::RowBased, Strategy::Hybrid] {
                    let plan = plan_of(uri, strategy, 64, Some(target));
                    let slices = plan.tasks.iter().filter(|t| t.column_group == 0).count();
                    let want = group.div_ceil(target).min(64) as usize;
                    assert_eq!(slices, want, "target {target}");
                    check_cover(&plan, 3000);
                    let cut = exact(&run(&plan));
                    assert_eq!(
                        cut, whole,
                        "{strategy}, target {target}, index {page_index}"
                    );
                }
            }
            // The target at or above the group's size: the group whole.
            assert_eq!(
                plan_of(uri, Strategy::RowBased, 64, Some(group))
                    .tasks
                    .len(),
                1
            );
            // A sample keys rows by their position in the file: the same rows whichever range
            // reads them.
            let s = Some(Sampling::new(0.3, 11));
            let whole = exact(&run(&plan_sampled(uri, Strategy::RowBased, 1, Some(0), s)));
            let cut_plan = plan_sampled(uri, Strategy::RowBased, 7, Some(group / 7), s);
            assert_eq!(cut_plan.tasks.len(), 7);
            assert_eq!(exact(&run(&cut_plan)), whole, "sampled, index {page_index}");
        }
    }

    /// The planner's default target: `partitions` tasks when the group is large enough (at
    /// least 1 MiB a task).
    #[test]
    fn the_default_target_gives_partitions_tasks_for_a_large_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.parquet");
        // Distinct 8-byte values without a dictionary: about 3.2 MB.
        let rows: Vec<Row> = (0..400_000)
            .map(|i| (Some(i * 7919), None, i as f64))
            .collect();
        write_one_group(&path, &rows, true, 4096);
        let uri = path.to_str().unwrap();
        let plan = plan_of(uri, Strategy::RowBased, 3, None);
        assert_eq!(plan.tasks.len(), 3);
        check_cover(&plan, 400_000);
        // Many partitions: ranges of at least 1 MiB.
        let group: u64 = plan.files[0].row_groups[0].column_bytes.iter().sum();
        let many = plan_of(uri, Strategy::RowBased, 100, None);
        assert_eq!(many.tasks.len() as u64, group.div_ceil(1 << 20));
        assert!(many.tasks.len() > 3, "{group} bytes");
        check_cover(&many, 400_000);
        assert_eq!(
            plan_of(uri, Strategy::ColumnBased, 3, None).tasks.len(),
            3,
            "column groups, not row ranges"
        );
        assert!(
            plan_of(uri, Strategy::ColumnBased, 3, None)
                .tasks
                .iter()
                .all(|t| t.reads[0].rows.is_none())
        );
    }

    /// An object store that counts the bytes it returns.
    #[derive(Debug)]
    struct Counting {
        inner: Arc<dyn ObjectStore>,
        bytes: AtomicU64,
    }

    impl std::fmt::Display for Counting {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Counting({})", self.inner)
        }
    }

    #[async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(
            &self,
            location: &Path,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<PutResult> {
            self.inner.put_opts(location, payload, opts).await
        }
        async fn put_multipart_opts(
            &self,
            location: &Path,
            opts: PutMultipartOptions,
        ) -> object_store::Result<Box<dyn MultipartUpload>> {
            self.inner.put_multipart_opts(location, opts).await
        }
        async fn get_opts(
            &self,
            location: &Path,
            options: GetOptions,
        ) -> object_store::Result<GetResult> {
            let head = options.head;
            let got = self.inner.get_opts(location, options).await?;
            if !head {
                self.bytes
                    .fetch_add(got.range.end - got.range.start, Ordering::Relaxed);
            }
            Ok(got)
        }
        async fn get_ranges(
            &self,
            location: &Path,
            ranges: &[Range<u64>],
        ) -> object_store::Result<Vec<Bytes>> {
            let got = self.inner.get_ranges(location, ranges).await?;
            let n: usize = got.iter().map(Bytes::len).sum();
            self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            Ok(got)
        }
        fn delete_stream(
            &self,
            locations: BoxStream<'static, object_store::Result<Path>>,
        ) -> BoxStream<'static, object_store::Result<Path>> {
            self.inner.delete_stream(locations)
        }
        fn list(
            &self,
            prefix: Option<&Path>,
        ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
            self.inner.list(prefix)
        }
        async fn list_with_delimiter(
            &self,
            prefix: Option<&Path>,
        ) -> object_store::Result<ListResult> {
            self.inner.list_with_delimiter(prefix).await
        }
        async fn copy_opts(
            &self,
            from: &Path,
            to: &Path,
            options: CopyOptions,
        ) -> object_store::Result<()> {
            self.inner.copy_opts(from, to, options).await
        }
    }

    /// Bytes task `id` of `plan` fetches from the store.
    fn bytes_fetched(plan: &Plan, id: u32) -> u64 {
        let counting = Arc::new(Counting {
            inner: plan_store(plan).unwrap(),
            bytes: AtomicU64::new(0),
        });
        rt().block_on(run_task(plan, id, counting.clone(), &no_progress()))
            .unwrap();
        counting.bytes.load(Ordering::Relaxed)
    }

    /// With a page index, a task of a tenth of a row group fetches (and so decodes) about a
    /// tenth of its pages; without one it fetches the whole column chunk, and still keeps only
    /// its rows.
    #[test]
    fn a_row_range_fetches_only_its_pages_where_the_file_has_a_page_index() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<Row> = (0..400_000)
            .map(|i| (Some(i * 7919), None, i as f64))
            .collect();
        for page_index in [true, false] {
            let path = dir.path().join(format!("pages-{page_index}.parquet"));
            write_one_group(&path, &rows, page_index, 2000);
            let uri = path.to_str().unwrap();
            let whole = plan_of(uri, Strategy::RowBased, 1, Some(0));
            let group: u64 = whole.files[0].row_groups[0].column_bytes.iter().sum();
            let plan = plan_of(uri, Strategy::RowBased, 10, Some(group.div_ceil(10)));
            assert_eq!(plan.tasks.len(), 10);
            let all = bytes_fetched(&whole, 0);
            assert!(all >= group, "the whole group: {all} of {group}");
            let part = bytes_fetched(&plan, 4);
            eprintln!(
                "page index {page_index}: task 4 of 10 fetched {part} bytes, the whole file {all}, the group {group}"
            );
            if page_index {
                // A tenth of the pages, plus the footer, its page index and a page at each end.
                assert!(
                    part < group / 4,
                    "task 4 fetched {part} bytes of a {group}-byte group"
                );
            } else {
                assert!(
                    part >= group,
                    "no index: the whole chunk ({part} of {group})"
                );
            }
            // 400,000 distinct values are past the exact limit: distinct counts are sketched,
            // and a merge of sketches estimates them apart from the single pass's sketch.
            let without_distinct = |mut v: serde_json::Value| {
                for c in v["columns"].as_array_mut().unwrap() {
                    c.as_object_mut().unwrap().remove("distinct");
                }
                v
            };
            assert_eq!(
                without_distinct(exact(&run(&plan))),
                without_distinct(exact(&run(&whole))),
                "index {page_index}"
            );
        }
    }

    proptest! {
        #![proptest_config(Config { cases: 24, ..Config::default() })]

        /// A random single-row-group file (nulls, strings, pages of random rows, with or
        /// without a page index) cut at a random target: the merged profile's exact figures
        /// equal the single pass's.
        #[test]
        fn cut_parquet_profiles_equal_the_single_pass(
            rows in prop::collection::vec(
                (
                    prop::option::of(-50i64..50),
                    prop::option::of("[a-d]{0,3}"),
                    // Eighths: sums exact in any order, so the comparison is of the cut
                    // and not of floating-point rounding.
                    (-8000i32..8000).prop_map(|v| f64::from(v) / 8.0),
                ),
                1..400,
            ),
            page_index in any::<bool>(),
            page_rows in 1usize..64,
            target in 1u64..3000,
            partitions in 1u32..12,
            hybrid in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r.parquet");
            write_one_group(&path, &rows, page_index, page_rows);
            let uri = path.to_str().unwrap();
            let whole = exact(&run(&plan_of(uri, Strategy::RowBased, 1, Some(0))));
            prop_assert_eq!(&whole["rows"], &serde_json::json!(rows.len()));
            let strategy = if hybrid { Strategy::Hybrid } else { Strategy::RowBased };
            let plan = plan_of(uri, strategy, partitions, Some(target));
            check_cover(&plan, rows.len() as u64);
            prop_assert_eq!(exact(&run(&plan)), whole);
        }
    }
}
