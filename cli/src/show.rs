//! `th show`: a profile as a table in the terminal, one row per column. Plain text when stdout is
//! not a terminal; on a terminal the header is bold and the table is cut to the terminal's width.

use crate::args::StorageArgs;
use crate::load;
use crate::numfmt::{self, count, display_width, percent, truncate};
use anyhow::Result;
use clap::Args;
use std::io::{self, IsTerminal, Write};
use truthound_profile::TableProfile;

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The profile: a path or URI of the JSON `th profile --output` writes.
    pub profile: String,
    /// Print the profile JSON as it is instead of the table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub storage: StorageArgs,
}

pub fn run(args: ShowArgs) -> Result<()> {
    let storage = args.storage.options()?;
    let loaded = load::read(&args.profile, &storage)?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let written = if args.json {
        out.write_all(&loaded.bytes)
    } else {
        let style = if stdout.is_terminal() {
            Style::Terminal {
                width: terminal_size::terminal_size().map(|(w, _)| usize::from(w.0)),
                color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            }
        } else {
            Style::Plain
        };
        print(&mut out, &loaded.profile, style)
    };
    quiet_on_broken_pipe(written.and_then(|()| out.flush()))
}

/// `th show ... | head` stops reading early: that is not an error.
pub fn quiet_on_broken_pipe(result: io::Result<()>) -> Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Style {
    /// No escape codes, no width limit (beyond each cell's own).
    Plain,
    /// A terminal: bold header when `color`, lines cut to `width` when known.
    Terminal { width: Option<usize>, color: bool },
}

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}

/// A column of the table: its title, alignment, and the narrowest it may be cut to.
struct Col {
    title: &'static str,
    align: Align,
    min: usize,
}

const COLS: [Col; 9] = [
    Col {
        title: "column",
        align: Align::Left,
        min: 8,
    },
    Col {
        title: "type",
        align: Align::Left,
        min: 6,
    },
    Col {
        title: "inferred",
        align: Align::Left,
        min: 8,
    },
    Col {
        title: "nulls",
        align: Align::Right,
        min: 5,
    },
    Col {
        title: "distinct",
        align: Align::Right,
        min: 8,
    },
    Col {
        title: "min",
        align: Align::Left,
        min: 6,
    },
    Col {
        title: "max",
        align: Align::Left,
        min: 6,
    },
    Col {
        title: "mean",
        align: Align::Right,
        min: 6,
    },
    Col {
        title: "top value",
        align: Align::Left,
        min: 10,
    },
];

/// The widest a cell of each column is before it is cut (the whole value is in the JSON).
const MAX: [usize; 9] = [28, 20, 12, 7, 12, 20, 20, 12, 28];

fn rows(p: &TableProfile) -> Vec<[String; 9]> {
    p.columns
        .iter()
        .map(|c| {
            let approx = c.accuracy.distinct_count.as_ref().is_some_and(|e| !e.exact);
            let distinct = c
                .distinct_count
                .map(|d| format!("{}{}", if approx { "≈" } else { "" }, count(d)))
                .unwrap_or_default();
            let mean = c
                .distribution
                .as_ref()
                .and_then(|d| d.mean)
                .map(numfmt::float)
                .unwrap_or_default();
            let shown = |v: Option<String>| match v {
                Some(s) if s.is_empty() => "\"\"".to_string(),
                Some(s) => one_line(&s),
                None => String::new(),
            };
            let top = c
                .top_values
                .first()
                .map(|t| {
                    let v = numfmt::value(&t.value)
                        .map_or_else(|| numfmt::null_value(c).to_string(), |s| shown(Some(s)));
                    format!("{} ({})", truncate(&v, 16), percent(t.ratio))
                })
                .unwrap_or_default();
            [
                // A nested column's derived columns are indented under it.
                format!("{}{}", "  ".repeat(depth(p, c)), one_line(&c.name)),
                one_line(&c.physical_type),
                c.inferred_type.clone(),
                percent(c.null_ratio),
                distinct,
                shown(numfmt::bound(c.min.as_ref(), c.neg_inf_count, "-inf")),
                shown(numfmt::bound(c.max.as_ref(), c.pos_inf_count, "inf")),
                mean,
                top,
            ]
        })
        .collect()
}

/// How many nested columns up a column is derived from (0 for a column of the dataset).
pub fn depth(p: &TableProfile, c: &truthound_profile::profile::ColumnProfile) -> usize {
    let mut depth = 0;
    let mut parent = c.parent.as_deref();
    // Bounded by the column count: a hand-edited profile could make a parent its own ancestor.
    while let Some(name) = parent
        && depth < p.columns.len()
    {
        depth += 1;
        parent = p
            .columns
            .iter()
            .find(|x| x.name == name)
            .and_then(|x| x.parent.as_deref());
    }
    depth
}

/// Control characters (a newline in a column name) would break the table: shown escaped.
pub fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Column widths: each column's widest cell up to its cap; then, when a terminal width is known
/// and the table is wider, the widest columns give way first, down to their minimum.
fn widths(cells: &[[String; 9]], width: Option<usize>) -> [usize; 9] {
    let mut w = [0; 9];
    for (i, col) in COLS.iter().enumerate() {
        w[i] = cells
            .iter()
            .map(|r| display_width(&r[i]).min(MAX[i]))
            .chain([display_width(col.title)])
            .max()
            .unwrap_or(0);
    }
    if let Some(limit) = width {
        let gaps = 2 * (COLS.len() - 1);
        while w.iter().sum::<usize>() + gaps > limit {
            // the column with the most room above its minimum
            let Some((i, _)) = w
                .iter()
                .enumerate()
                .filter(|(i, x)| **x > COLS[*i].min.max(display_width(COLS[*i].title)))
                .max_by_key(|(i, x)| **x - COLS[*i].min)
            else {
                break;
            };
            w[i] -= 1;
        }
    }
    w
}

pub fn print(out: &mut impl Write, p: &TableProfile, style: Style) -> io::Result<()> {
    let (width, color) = match style {
        Style::Plain => (None, false),
        Style::Terminal { width, color } => (width, color),
    };
    let (bold, dim, reset) = if color {
        ("\x1b[1m", "\x1b[2m", "\x1b[0m")
    } else {
        ("", "", "")
    };
    let source = match p.sources.as_slice() {
        [one] => one.uri.clone(),
        many => format!("{} datasets", many.len()),
    };
    writeln!(
        out,
        "{bold}{}{reset}: {} rows × {} columns, profiled {} in {} ({} of {} tasks, {})",
        one_line(&source),
        count(p.row_count),
        count(p.column_count),
        p.profiled_at.split('.').next().unwrap_or(&p.profiled_at),
        numfmt::duration_ms(p.profile_duration_ms),
        count(p.partitioning.tasks_merged),
        count(p.partitioning.tasks_total),
        p.partitioning.strategies.join(", "),
    )?;
    crate::summary::notes(out, p)?;
    if !p.partitioning.missing_tasks.is_empty() {
        writeln!(
            out,
            "warning: tasks missing ({}); the profile covers only part of the data",
            p.partitioning.missing_tasks.join("; ")
        )?;
    }
    writeln!(out)?;
    let cells = rows(p);
    let w = widths(&cells, width);
    let line = |row: [&str; 9]| -> String {
        let mut parts = Vec::with_capacity(9);
        for (i, cell) in row.iter().enumerate() {
            let cut = truncate(cell, w[i]);
            let pad = " ".repeat(w[i].saturating_sub(display_width(&cut)));
            parts.push(match COLS[i].align {
                Align::Left => format!("{cut}{pad}"),
                Align::Right => format!("{pad}{cut}"),
            });
        }
        parts.join("  ").trim_end().to_string()
    };
    writeln!(out, "{bold}{}{reset}", line(COLS.map(|c| c.title)))?;
    writeln!(
        out,
        "{dim}{}{reset}",
        w.iter()
            .map(|n| "─".repeat(*n))
            .collect::<Vec<_>>()
            .join("  ")
    )?;
    for row in &cells {
        writeln!(out, "{}", line(std::array::from_fn(|i| row[i].as_str())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_give_way_to_the_terminal() {
        let cells = vec![std::array::from_fn(|i| "x".repeat(MAX[i]))];
        let full = widths(&cells, None);
        assert_eq!(full, MAX);
        let cut = widths(&cells, Some(100));
        assert!(cut.iter().sum::<usize>() + 16 <= 100, "{cut:?}");
        for (i, c) in cut.iter().enumerate() {
            assert!(*c >= COLS[i].min, "{cut:?}");
        }
        // Narrower than the minimums: stop at the minimums rather than loop.
        let tiny = widths(&cells, Some(10));
        assert!(tiny.iter().enumerate().all(|(i, c)| *c >= COLS[i].min));
    }

    #[test]
    fn control_characters_do_not_break_lines() {
        assert_eq!(one_line("a\nb"), "a\\nb");
        assert_eq!(one_line("plain"), "plain");
    }
}
