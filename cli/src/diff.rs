//! `th diff OLD NEW`: which columns drifted between two profiles of one table, beyond
//! thresholds (see `truthound_profile::drift` for each measure). Like diff(1) it prints nothing
//! and exits 0 when nothing drifted, and exits 1 when something did.

use crate::args::StorageArgs;
use crate::load;
use crate::numfmt::{self, display_width, percent, truncate};
use crate::show::one_line;
use anyhow::Result;
use clap::Args;
use std::io::{self, Write};
use truthound_profile::drift::{self, Change, Drift, Thresholds};
use truthound_profile::profile::ValueCount;

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The old profile: a path or URI of the JSON `th profile --output` writes (profiles written
    /// with --keep-state compare distributions exactly or by their sketches).
    pub old: String,
    /// The new profile.
    pub new: String,
    /// Print the drift as JSON (also when nothing drifted).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// The drift thresholds, shared by `th diff` and `th report --previous`.
#[derive(Debug, Args)]
pub struct ThresholdArgs {
    /// Absolute change of the null ratio that is drift [default: 0.05].
    #[arg(long, value_name = "CHANGE")]
    pub null_ratio: Option<f64>,
    /// Relative change of the distinct count that is drift, when the counts' bounds do not
    /// overlap either [default: 0.1].
    #[arg(long, value_name = "CHANGE")]
    pub distinct_ratio: Option<f64>,
    /// Shift of the mean, in standard deviations of the old profile [default: 0.5].
    #[arg(long, value_name = "STDS")]
    pub mean_shift: Option<f64>,
    /// Change of the standard deviation, max(new/old, old/new) − 1 [default: 0.5].
    #[arg(long, value_name = "CHANGE")]
    pub std_ratio: Option<f64>,
    /// Kolmogorov–Smirnov distance, beyond the sketches' rank errors [default: 0.1].
    #[arg(long, value_name = "DISTANCE")]
    pub ks: Option<f64>,
    /// Population stability index over the old profile's deciles [default: 0.2].
    #[arg(long, value_name = "INDEX")]
    pub psi: Option<f64>,
    /// Do not report frequent values that appeared or vanished.
    #[arg(long)]
    pub no_top_values: bool,
}

impl ThresholdArgs {
    /// The thresholds asked for, the defaults for the others.
    pub fn thresholds(&self) -> Result<Thresholds> {
        let d = Thresholds::default();
        let pick = |flag: &str, v: Option<f64>, default: f64| -> Result<f64> {
            match v {
                Some(x) if !x.is_finite() || x < 0.0 => Err(truthound_profile::Error::Invalid {
                    what: "threshold",
                    detail: format!("--{flag} must be a number ≥ 0, got {x}"),
                }
                .into()),
                Some(x) => Ok(x),
                None => Ok(default),
            }
        };
        Ok(Thresholds {
            null_ratio: pick("null-ratio", self.null_ratio, d.null_ratio)?,
            distinct_ratio: pick("distinct-ratio", self.distinct_ratio, d.distinct_ratio)?,
            mean_shift: pick("mean-shift", self.mean_shift, d.mean_shift)?,
            std_ratio: pick("std-ratio", self.std_ratio, d.std_ratio)?,
            ks: pick("ks", self.ks, d.ks)?,
            psi: pick("psi", self.psi, d.psi)?,
            top_values: !self.no_top_values,
        })
    }
}

/// Runs `th diff`; `Ok(true)` when something drifted.
pub fn run(args: DiffArgs) -> Result<bool> {
    let thresholds = args.thresholds.thresholds()?;
    let storage = args.storage.options()?;
    let old = load::read(&args.old, &storage)?;
    let new = load::read(&args.new, &storage)?;
    let drift = drift::diff(&old.profile, &new.profile, &thresholds);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &drift)
            .map_err(io::Error::other)
            .and_then(|()| writeln!(out))
    } else {
        for note in &drift.notes {
            eprintln!("note: {note}");
        }
        print(&mut out, &drift)
    };
    crate::show::quiet_on_broken_pipe(written.and_then(|()| out.flush()))?;
    Ok(!drift.is_empty())
}

const TITLES: [&str; 6] = ["column", "change", "old", "new", "measure", "threshold"];
/// The widest a cell of each column is before it is cut (the whole of it is in `--json`).
const MAX: [usize; 6] = [28, 14, 28, 28, 16, 10];
/// Right-aligned (numbers) or not.
const RIGHT: [bool; 6] = [false, false, false, false, true, true];

/// The drift as a table, one row per change; nothing when nothing drifted.
pub fn print(out: &mut impl Write, d: &Drift) -> io::Result<()> {
    let cells = rows(d);
    if cells.is_empty() {
        return Ok(());
    }
    let mut w = [0usize; 6];
    for (i, title) in TITLES.iter().enumerate() {
        w[i] = cells
            .iter()
            .map(|r| display_width(&r[i]).min(MAX[i]))
            .chain([display_width(title)])
            .max()
            .unwrap_or(0);
    }
    let line = |row: [&str; 6]| -> String {
        let parts: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                let cut = truncate(cell, w[i]);
                let pad = " ".repeat(w[i].saturating_sub(display_width(&cut)));
                if RIGHT[i] {
                    format!("{pad}{cut}")
                } else {
                    format!("{cut}{pad}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    writeln!(out, "{}", line(TITLES))?;
    writeln!(
        out,
        "{}",
        w.iter()
            .map(|n| "─".repeat(*n))
            .collect::<Vec<_>>()
            .join("  ")
    )?;
    for row in &cells {
        writeln!(out, "{}", line(std::array::from_fn(|i| row[i].as_str())))?;
    }
    writeln!(out)?;
    writeln!(out, "{}", d.summary())
}

fn rows(d: &Drift) -> Vec<[String; 6]> {
    let mut rows = Vec::new();
    let blank = String::new;
    for c in &d.removed {
        rows.push([
            one_line(c),
            "removed".into(),
            blank(),
            blank(),
            blank(),
            blank(),
        ]);
    }
    for c in &d.added {
        rows.push([
            one_line(c),
            "added".into(),
            blank(),
            blank(),
            blank(),
            blank(),
        ]);
    }
    for r in &d.retyped {
        rows.push([
            one_line(&r.column),
            "retyped".into(),
            one_line(&r.old),
            one_line(&r.new),
            blank(),
            blank(),
        ]);
    }
    for c in &d.columns {
        for ch in &c.changes {
            let [change, old, new, measure, threshold] = cells(ch);
            rows.push([one_line(&c.column), change, old, new, measure, threshold]);
        }
    }
    rows
}

fn median(v: &Option<serde_json::Value>) -> String {
    v.as_ref()
        .and_then(numfmt::value)
        .map(|s| format!("p50 {}", one_line(&s)))
        .unwrap_or_default()
}

fn values(v: &[ValueCount]) -> String {
    v.iter()
        .map(|c| {
            let s = numfmt::value(&c.value).unwrap_or_else(|| "null".into());
            format!("{} ({})", one_line(&s), percent(c.ratio))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// (change, old, new, measure, threshold) of one change.
fn cells(c: &Change) -> [String; 5] {
    let f = |x: f64| numfmt::float(x);
    match c {
        Change::NullRatio {
            old,
            new,
            change,
            threshold,
        } => [
            "null ratio".into(),
            percent(*old),
            percent(*new),
            f(*change),
            f(*threshold),
        ],
        Change::DistinctCount {
            old,
            new,
            old_bounds,
            new_bounds,
            change,
            threshold,
        } => {
            let shown = |n: u64, b: &(f64, f64)| {
                let approx = b.0 != b.1;
                format!("{}{}", if approx { "≈" } else { "" }, numfmt::count(n))
            };
            [
                "distinct".into(),
                shown(*old, old_bounds),
                shown(*new, new_bounds),
                f(*change),
                f(*threshold),
            ]
        }
        Change::Mean {
            old,
            new,
            shift,
            threshold,
        } => [
            "mean".into(),
            f(*old),
            f(*new),
            format!("{} σ", f(*shift)),
            f(*threshold),
        ],
        Change::Std {
            old,
            new,
            change,
            threshold,
        } => ["std".into(), f(*old), f(*new), f(*change), f(*threshold)],
        Change::Ks {
            old_median,
            new_median,
            distance,
            rank_error,
            threshold,
            basis,
        } => {
            let measure = if *rank_error > 0.0 {
                format!("{} ± {}", f(*distance), f(*rank_error))
            } else {
                f(*distance)
            };
            [
                with_basis("KS", *basis),
                median(old_median),
                median(new_median),
                measure,
                f(*threshold),
            ]
        }
        Change::Psi {
            old_median,
            new_median,
            psi,
            threshold,
            basis,
            ..
        } => [
            with_basis("PSI", *basis),
            median(old_median),
            median(new_median),
            f(*psi),
            f(*threshold),
        ],
        Change::TopValues { appeared, vanished } => [
            "top values".into(),
            if vanished.is_empty() {
                String::new()
            } else {
                format!("− {}", values(vanished))
            },
            if appeared.is_empty() {
                String::new()
            } else {
                format!("+ {}", values(appeared))
            },
            String::new(),
            String::new(),
        ],
    }
}

fn with_basis(name: &str, basis: drift::Basis) -> String {
    match basis {
        drift::Basis::State => name.into(),
        // From the quantile tables: the reader should know it is less exact.
        drift::Basis::QuantileTable => format!("{name} (table)"),
        // Over the shares of unordered values.
        drift::Basis::TopValues => format!("{name} (shares)"),
    }
}
