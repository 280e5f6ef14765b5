//! A task run twice over the same rows writes the same partial, byte for byte, once the one
//! documented source of randomness is out of the way: KLL's random compaction (every
//! DataSketches implementation compacts with coin flips; its error stays within the stated
//! bound). With a sketch large enough never to compact, nothing else may differ — in particular
//! not the order in which randomly seeded hash maps hand their contents to the HLL and
//! frequent-items sketches when a column leaves exact counting.

use std::path::Path;
use truthound_profile::dataset::{self, StorageOptions};
use truthound_profile::run::{no_progress, plan_store, run_task};
use truthound_profile::{PlanRequest, Strategy};

#[tokio::test]
async fn the_same_task_twice_gives_the_same_partial() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/sample/events");
    let uri = format!("file://{}/", sample.display());
    let ds = dataset::discover(&uri, None, &StorageOptions::default())
        .await
        .expect("discover");
    let mut req = PlanRequest::new(Strategy::RowBased, 2);
    // Sketch mode for most columns (more than 100 distinct values), with more distinct values
    // than the frequent-items map holds, so that its purges depend on the order of updates.
    req.options.exact_distinct_limit = 100;
    req.options.exact_row_hash_limit = 100;
    // No KLL compaction: its capacity is above the task's rows.
    req.options.kll_k = 65535;
    let plan = truthound_profile::plan::plan(&ds, &req).expect("plan");
    for task in 0..plan.tasks.len() as u32 {
        let mut runs = Vec::new();
        for _ in 0..3 {
            let store = plan_store(&plan).expect("store");
            let mut p = run_task(&plan, task, store, &no_progress())
                .await
                .expect("task");
            p.task_millis = 0;
            runs.push(p.to_bytes());
        }
        assert!(
            runs.windows(2).all(|w| w[0] == w[1]),
            "task {task}: the partials differ between runs"
        );
    }
}
