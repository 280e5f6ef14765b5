//! Hostile input: partials, plans and data files whose size fields claim far more than they
//! hold (or than anyone needs) are refused with an error that names the object and the limit,
//! quickly, before anything is allocated from the claim; none of them aborts the process.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};
use truthound_profile::dataset::{
    CsvOptions, Format, StorageOptions, discover, discover_with, read_object_limited,
};
use truthound_profile::merge::{StoredRun, merge_stored};
use truthound_profile::run::{no_progress, plan_store, run_task};
use truthound_profile::{
    Error, PartialProfile, Plan, PlanRequest, ProfileOptions, Strategy, TableProfile, plan,
};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Options with recognizable value-count parameters: `hll_lg_k` 14, a map of 8192 (varint
/// `80 40`) and `top_k` 7 sit side by side in every column's postcard bytes.
fn options() -> ProfileOptions {
    ProfileOptions {
        top_k: 7,
        exact_distinct_limit: 100,
        frequent_items_map_size: 8192,
        hll_lg_k: 14,
        ..ProfileOptions::default()
    }
}

/// `[14, 0x80, 0x40, 7]`: hll_lg_k, freq_map_size, top_k of [`options`].
const PARAMS: [u8; 4] = [14, 0x80, 0x40, 7];

/// Two CSV files (so two tasks) of a string and an integer column; `distinct` values each.
fn dataset(dir: &Path, distinct: usize) -> String {
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    for f in 0..2 {
        let mut text = String::from("s,n\n");
        for i in 0..distinct {
            text.push_str(&format!("v{f}-{i},{}\n", i * 2 + f));
        }
        std::fs::write(data.join(format!("part-{f}.csv")), text).unwrap();
    }
    format!("{}/", data.to_str().unwrap())
}

/// The dialect of every CSV file here, given so that nothing depends on the sniffer (whose
/// sample of a file of 10 MiB lines holds no whole line).
fn csv() -> CsvOptions {
    CsvOptions {
        delimiter: Some(b','),
        quote: Some(Some(b'"')),
        header: Some(true),
        ..CsvOptions::default()
    }
}

fn make_plan(uri: &str, options: ProfileOptions) -> Plan {
    rt().block_on(async {
        let ds = discover_with(uri, None, &StorageOptions::default(), &csv())
            .await
            .unwrap();
        let mut req = PlanRequest::new(Strategy::RowBased, 2);
        req.options = options;
        req.target_task_bytes = Some(0);
        let p = plan::plan_with_scan(&ds, &req).await.unwrap();
        Plan::from_json(&p.to_json(), "plan").unwrap()
    })
}

/// Runs every task and writes its partial to `<work>/partials/<task>`.
fn run_to(plan: &Plan, work: &Path) {
    let partials = work.join("partials");
    std::fs::create_dir_all(&partials).unwrap();
    rt().block_on(async {
        let store = plan_store(plan).unwrap();
        for t in &plan.tasks {
            let p = run_task(plan, t.id, store.clone(), &no_progress())
                .await
                .unwrap();
            std::fs::write(partials.join(t.id.to_string()), p.to_bytes()).unwrap();
        }
    });
}

/// Replaces every occurrence of `from` in `bytes` by `to`; how many there were.
fn replace_all(bytes: &mut Vec<u8>, from: &[u8], to: &[u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= bytes.len() {
        if &bytes[i..i + from.len()] == from {
            bytes.splice(i..i + from.len(), to.iter().copied());
            i += to.len();
            n += 1;
        } else {
            i += 1;
        }
    }
    n
}

/// Edits the partial of `task` with `edit`.
fn tamper(work: &Path, task: u32, edit: impl FnOnce(&mut Vec<u8>)) {
    let path = work.join("partials").join(task.to_string());
    let mut bytes = std::fs::read(&path).unwrap();
    edit(&mut bytes);
    std::fs::write(&path, bytes).unwrap();
}

/// Merges the stored run as the merge pod and the operator do; the error and how long it took.
fn merge_err(plan: &Plan, work: &Path) -> (Error, Duration) {
    let run = StoredRun {
        plan,
        cache: None,
        reused: Default::default(),
        work_prefix: work.to_str().unwrap().to_string(),
        missing: Default::default(),
        profile_uri: work.join("profile.json").to_str().unwrap().to_string(),
        duration_ms: 0,
        keep_state: false,
    };
    let started = Instant::now();
    let err = rt()
        .block_on(merge_stored(&run, &StorageOptions::default()))
        .expect_err("a hostile partial must not merge");
    (err, started.elapsed())
}

fn assert_too_large(err: &Error, names: &[&str]) {
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    let text = err.to_string();
    for n in names {
        assert!(text.contains(n), "`{n}` missing from: {text}");
    }
}

/// varint (postcard's LEB128) of `n`.
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n & 0x7F) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// Without the cap, a map size of 2^40 passes the old checks (a power of two, at least 8), and
/// the merge, whose exact maps overflow their limit, allocates a frequent-items table of 2^41
/// slots for the sketch they go into: the process aborts.
#[test]
fn a_crafted_frequent_items_map_size_is_refused_naming_the_partial_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    // 60 distinct values per file under a limit of 100: exact in each partial, 120 merged.
    let plan = make_plan(&dataset(dir.path(), 60), options());
    assert_eq!(plan.tasks.len(), 2);
    let work = dir.path().join("work");
    run_to(&plan, &work);
    let mut hostile = vec![14];
    hostile.extend(varint(1 << 40));
    hostile.push(7);
    for t in 0..2 {
        tamper(&work, t, |b| {
            assert_eq!(replace_all(b, &PARAMS, &hostile), 2)
        });
    }
    let (err, took) = merge_err(&plan, &work);
    assert_too_large(
        &err,
        &[
            "partials/0",
            "frequent-items map size 1099511627776",
            "1048576",
        ],
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Without the check, the crate allocates a map of the image's current size, 2^30 entries
/// (some 34 GiB), for an image holding a few items: the process aborts.
#[test]
fn a_crafted_frequent_items_image_is_refused_before_the_crate_allocates_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let plan = make_plan(&dataset(dir.path(), 300), options());
    let work = dir.path().join("work");
    run_to(&plan, &work);
    // The image's preamble: 4 longs, serial version 1, family 10, lg_max and lg_cur 13.
    let image = [4u8, 1, 10, 13, 13, 0, 0, 0];
    let crafted = [4u8, 1, 10, 30, 30, 0, 0, 0];
    tamper(&work, 1, |b| assert!(replace_all(b, &image, &crafted) >= 1));
    let (err, took) = merge_err(&plan, &work);
    assert_too_large(&err, &["partials/1", "lg_max_map_size 30", "2^20 entries"]);
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A current map size larger than the items need (within the maximum) is read at the size
    // they need, and counts the same.
    let dir = tempfile::tempdir().unwrap();
    let plan = make_plan(&dataset(dir.path(), 300), options());
    let work = dir.path().join("work");
    run_to(&plan, &work);
    let bytes = std::fs::read(work.join("partials/1")).unwrap();
    let before = PartialProfile::from_bytes(&bytes, "before").unwrap();
    tamper(&work, 1, |b| {
        assert!(replace_all(b, &image, &[4, 1, 10, 20, 20, 0, 0, 0]) >= 1);
    });
    let bytes = std::fs::read(work.join("partials/1")).unwrap();
    let after = PartialProfile::from_bytes(&bytes, "after").unwrap();
    let profile = |p: &PartialProfile| {
        let mut v = serde_json::to_value(TableProfile::from_partial(p, 0, false, 20)).unwrap();
        v["columns"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .map(|c| (c["top_values"].take(), c["distinct_count"].take()))
            .collect::<Vec<_>>()
    };
    assert_eq!(profile(&before), profile(&after));
}

/// An exact map holds at most its limit of values, and the limit itself is capped.
#[test]
fn exact_value_maps_over_their_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // 50 distinct values under a limit of 100: the counts stay exact (limit: `Some(100)`, which
    // postcard writes `01 64`).
    let plan = make_plan(&dataset(dir.path(), 50), options());
    let work = dir.path().join("work");
    run_to(&plan, &work);
    let exact: Vec<u8> = [1u8, 100].iter().chain(&PARAMS).copied().collect();
    let lowered: Vec<u8> = [1u8, 10].iter().chain(&PARAMS).copied().collect();
    tamper(&work, 0, |b| {
        assert_eq!(replace_all(b, &exact, &lowered), 2)
    });
    let (err, _) = merge_err(&plan, &work);
    assert_too_large(&err, &["partials/0", "50 exact values"]);

    let mut huge = vec![1u8];
    huge.extend(varint(1 << 40));
    huge.extend(PARAMS);
    tamper(&work, 0, |b| assert_eq!(replace_all(b, &lowered, &huge), 2));
    let (err, _) = merge_err(&plan, &work);
    assert_too_large(
        &err,
        &[
            "partials/0",
            "exact distinct limit 1099511627776",
            "10000000",
        ],
    );
}

/// Without the size check, a 1 GiB (sparse) partial is read whole into memory before its first
/// bytes are found not to be a partial.
#[test]
fn an_oversized_partial_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let plan = make_plan(&dataset(dir.path(), 20), options());
    let work = dir.path().join("work");
    run_to(&plan, &work);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(work.join("partials/1"))
        .unwrap();
    f.set_len((1 << 30) + 1).unwrap();
    let (err, took) = merge_err(&plan, &work);
    assert_too_large(&err, &["partials/1", "1073741825 bytes", "1 GiB"]);
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Any whole-object read takes a limit; a small one shows the check on a real body too.
    let small = dir.path().join("two-mib");
    std::fs::write(&small, vec![b'x'; 2 << 20]).unwrap();
    let uri = small.to_str().unwrap();
    let err = rt()
        .block_on(read_object_limited(
            uri,
            &StorageOptions::default(),
            1 << 20,
        ))
        .unwrap_err();
    assert_too_large(&err, &["two-mib", "2097152 bytes", "1 MiB"]);
}

/// Without the check, planning reads the 4 GiB the (sparse) file's last 8 bytes declare as its
/// footer into memory.
#[test]
fn a_parquet_footer_declaring_4_gib_is_refused_while_planning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge-footer.parquet");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(b"PAR1").unwrap();
    let size: u64 = (4 << 30) + 4096;
    f.set_len(size - 8).unwrap();
    drop(f);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&0xFFFF_FFF0u32.to_le_bytes()).unwrap();
    f.write_all(b"PAR1").unwrap();
    drop(f);
    let started = Instant::now();
    let err = rt()
        .block_on(discover(
            path.to_str().unwrap(),
            Some(Format::Parquet),
            &StorageOptions::default(),
        ))
        .unwrap_err();
    assert_too_large(
        &err,
        &[
            "huge-footer.parquet",
            "4294967280 bytes of metadata",
            "64 MiB",
        ],
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A footer of a plausible size that is not Parquet metadata is a corrupt file, by name.
    let path = dir.path().join("corrupt-footer.parquet");
    let mut bytes = b"PAR1".to_vec();
    bytes.extend([0xAB; 200]);
    bytes.extend(100u32.to_le_bytes());
    bytes.extend(b"PAR1");
    std::fs::write(&path, bytes).unwrap();
    let err = rt()
        .block_on(discover(
            path.to_str().unwrap(),
            Some(Format::Parquet),
            &StorageOptions::default(),
        ))
        .unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("corrupt-footer.parquet"), "{err}");
}

/// A plan over one text file, read whole, with records of at most `max_record_bytes`.
fn text_plan(path: &Path, max_record_bytes: u64) -> Plan {
    rt().block_on(async {
        let ds = discover_with(
            path.to_str().unwrap(),
            None,
            &StorageOptions::default(),
            &csv(),
        )
        .await
        .unwrap();
        let mut req = PlanRequest::new(Strategy::RowBased, 1);
        req.options.max_record_bytes = max_record_bytes;
        req.target_task_bytes = Some(0);
        let p = plan::plan_with_scan(&ds, &req).await.unwrap();
        Plan::from_json(&p.to_json(), "plan").unwrap()
    })
}

fn run_err(plan: &Plan) -> (Error, Duration) {
    let started = Instant::now();
    let err = rt()
        .block_on(async {
            let store = plan_store(plan).unwrap();
            run_task(plan, 0, store, &no_progress()).await
        })
        .expect_err("the record is too long");
    (err, started.elapsed())
}

/// Without the cap, the decoder buffers the 40 MiB that follow the quote (the whole rest of
/// the file) as one field.
#[test]
fn an_unterminated_csv_quote_is_refused_at_the_record_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open-quote.csv");
    let mut text = b"a,b\n1,x\n2,\"".to_vec();
    text.resize(text.len() + (40 << 20), b'x');
    std::fs::write(&path, &text).unwrap();
    let plan = text_plan(&path, 1 << 20);
    assert_eq!(plan.options.max_record_bytes, 1 << 20);
    let (err, took) = run_err(&plan);
    assert_too_large(
        &err,
        &[
            "open-quote.csv",
            "CSV record 2",
            "without ending",
            "1 MiB",
            "--max-record-bytes",
        ],
    );
    assert!(took < Duration::from_secs(10), "{took:?}");

    // Records under the limit read as ever, however long.
    let path = dir.path().join("long-records.csv");
    let mut text = b"a,b\n".to_vec();
    for i in 0..3 {
        text.extend(format!("{i},\"").as_bytes());
        text.resize(text.len() + (600 << 10), b'y');
        text.extend(b"\"\n");
    }
    std::fs::write(&path, &text).unwrap();
    let plan = text_plan(&path, 1 << 20);
    let store = plan_store(&plan).unwrap();
    let p = rt()
        .block_on(run_task(&plan, 0, store, &no_progress()))
        .unwrap();
    assert_eq!(p.row_count(), 3);
}

#[test]
fn an_ndjson_file_without_line_breaks_is_refused_at_the_record_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one-line.ndjson");
    let mut text = b"{\"a\": 1}\n{\"a\": \"".to_vec();
    text.resize(text.len() + (40 << 20), b'z');
    std::fs::write(&path, &text).unwrap();
    let plan = text_plan(&path, 1 << 20);
    let (err, took) = run_err(&plan);
    assert_too_large(&err, &["one-line.ndjson", "JSON record 2", "1 MiB"]);
    assert!(took < Duration::from_secs(10), "{took:?}");
}

/// A column of 10 MiB strings: without the caps, min, max and the top values hold them whole
/// and the profile is tens of MiB.
#[test]
fn long_strings_give_a_small_profile_the_same_in_one_pass_and_merged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let long = |c: char, tail: &str| {
        let mut s = String::with_capacity(10 << 20);
        // Multi-byte characters, so that a byte cut would split one.
        s.extend(std::iter::repeat_n('é', 600));
        s.extend(std::iter::repeat_n(c, (10 << 20) - 1200 - tail.len()));
        s.push_str(tail);
        s
    };
    // Long values, two of them sharing their first 1024 characters, and a short one (first in
    // each file, so that the schema is inferred from a sample holding a whole line).
    let (a1, a2, b1) = (long('a', "1"), long('a', "2"), long('b', "1"));
    let files = [vec!["short", &a1, &a2], vec!["short", &b1, &a1, &b1]];
    for (f, rows) in files.iter().enumerate() {
        let mut text = String::from("s\n");
        for v in rows {
            text.push_str(v);
            text.push('\n');
        }
        std::fs::write(data.join(format!("part-{f}.csv")), text).unwrap();
    }
    let uri = format!("{}/", data.to_str().unwrap());
    let opts = ProfileOptions {
        max_record_bytes: 32 << 20,
        ..ProfileOptions::default()
    };
    let plan = make_plan(&uri, opts);
    assert_eq!(plan.tasks.len(), 2);
    let profile = |partial: &PartialProfile| {
        let p = TableProfile::from_partial(partial, 0, false, 20);
        serde_json::to_value(&p.columns[0]).unwrap()
    };
    let (merged, one_pass) = rt().block_on(async {
        let store = plan_store(&plan).unwrap();
        let a = run_task(&plan, 0, store.clone(), &no_progress())
            .await
            .unwrap();
        let b = run_task(&plan, 1, store, &no_progress()).await.unwrap();
        let mut ab = a.clone();
        ab.merge(&b).unwrap();
        let mut ba = b.clone();
        ba.merge(&a).unwrap();
        assert_eq!(profile(&ab), profile(&ba));
        (ab, a)
    });
    let col = profile(&merged);
    let json = serde_json::to_string(&col).unwrap();
    assert!(json.len() < 64 << 10, "{} bytes", json.len());
    assert_eq!(col["truncated_strings"], true);
    assert_eq!(
        col["distinct_count"], 4,
        "long values stay distinct: {json:.300}"
    );
    // Lengths are of the whole values, in characters.
    assert_eq!(col["max_length"], (10 << 20) - 600);
    // min and max are the first 1024 characters of the smallest and largest values.
    // ("short" sorts before 'é'.)
    assert_eq!(col["min"], "short");
    let max = col["max"].as_str().unwrap();
    assert_eq!(max.chars().count(), 1024);
    assert!(b1.starts_with(max), "the largest value starts with max");
    // Ties at 2, by value: "short", then a1 (as its prefix, `…` and a hash), then b1.
    let top = &col["top_values"];
    assert_eq!(top[0]["value"], "short");
    let a1_key = top[1]["value"].as_str().unwrap();
    assert_eq!(top[1]["count"], 2);
    assert!(a1_key.starts_with(&a1[..a1.char_indices().nth(1024).unwrap().0]));
    assert!(a1_key.len() < 4096 && a1_key.contains('…'), "{a1_key:.40}");
    assert_eq!(top[2]["count"], 2);
    // The partial stays small too.
    assert!(merged.to_bytes().len() < 64 << 10);
    // One task's profile of its own values agrees with its own strings.
    let first = profile(&one_pass);
    assert_eq!(first["truncated_strings"], true);
}
