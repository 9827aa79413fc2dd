//! What a bench run prints: the machine it ran on, the figures of each run, the
//! medians over `--runs`, and, when several setups alternate (`--daemons 1,2,3`,
//! `--sqlite-too`), one table of the medians per setup. Every mode hands its figures
//! over as a [`Figures`] list, so the summary table is the same for all of them.

use std::time::Duration;

/// One measured value of a run.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// Decimals to print.
    pub decimals: usize,
}

/// The figures of one run, in the order they are printed.
#[derive(Debug, Clone, Default)]
pub struct Figures(pub Vec<Figure>);

impl Figures {
    pub fn add(
        &mut self,
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        decimals: usize,
    ) {
        self.0.push(Figure {
            name: name.into(),
            value,
            unit,
            decimals,
        });
    }
}

/// Prints every run's figures side by side with their median. Nothing for one run:
/// its figures were printed with it.
pub fn print_summary(runs: &[Figures]) {
    print_runs(&format!("all {} runs and their medians", runs.len()), runs);
}

/// Prints the figures of `runs` side by side with their median under `title`; nothing
/// for fewer than two runs.
pub fn print_runs(title: &str, runs: &[Figures]) {
    let Some(first) = runs.first() else {
        return;
    };
    if runs.len() < 2 {
        return;
    }
    println!();
    println!("{title}");
    let width = first.0.iter().map(|f| f.name.len()).max().unwrap_or(0) + 1;
    let mut head = format!("  {:<width$}", "");
    for i in 1..=runs.len() {
        head.push_str(&format!(" {:>11}", format!("run {i}")));
    }
    head.push_str(&format!(" {:>11}", "median"));
    println!("{head}");
    for (i, f) in first.0.iter().enumerate() {
        let values: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.0.get(i).map(|g| g.value))
            .collect();
        let mut line = format!("  {:<width$}", f.name);
        for v in &values {
            line.push_str(&format!(" {:>11.*}", f.decimals, v));
        }
        line.push_str(&format!(
            " {:>11.*} {}",
            f.decimals,
            median(&values),
            f.unit
        ));
        println!("{line}");
    }
}

/// Prints one column of medians per setup (`(name, its runs)`): a row for every
/// figure any setup has, in the order they first appear, `-` where a setup has none.
pub fn print_comparison(setups: &[(String, Vec<Figures>)]) {
    let rows = comparison_rows(setups);
    let width = rows.iter().map(|r| r.0.name.len()).max().unwrap_or(0) + 1;
    let column = setups
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0)
        .max(9);
    println!();
    println!(
        "medians per setup ({} run(s) each, alternating)",
        setups.first().map_or(0, |(_, runs)| runs.len())
    );
    let mut head = format!("  {:<width$}", "");
    for (name, _) in setups {
        head.push_str(&format!("  {name:>column$}"));
    }
    println!("{head}");
    for (figure, medians) in rows {
        let mut line = format!("  {:<width$}", figure.name);
        for m in medians {
            match m {
                Some(v) => line.push_str(&format!("  {:>column$.*}", figure.decimals, v)),
                None => line.push_str(&format!("  {:>column$}", "-")),
            }
        }
        line.push_str(&format!(" {}", figure.unit));
        println!("{}", line.trim_end());
    }
}

/// The rows of [`print_comparison`]: each figure (by name) with its median in every
/// setup. A figure first seen in a later setup goes right after the one it follows
/// there, so each daemon's row stays beside the sum.
fn comparison_rows(setups: &[(String, Vec<Figures>)]) -> Vec<(Figure, Vec<Option<f64>>)> {
    let mut rows: Vec<(Figure, Vec<Option<f64>>)> = Vec::new();
    for (s, (_, runs)) in setups.iter().enumerate() {
        let mut after = 0;
        for figure in runs.iter().flat_map(|r| r.0.iter()) {
            let at = match rows.iter().position(|(f, _)| f.name == figure.name) {
                Some(at) => at,
                None => {
                    rows.insert(after, (figure.clone(), vec![None; setups.len()]));
                    after
                }
            };
            after = at + 1;
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.0.iter().find(|g| g.name == figure.name))
                .map(|g| g.value)
                .collect();
            rows[at].1[s] = Some(median(&values));
        }
    }
    rows
}

/// The median; the mean of the middle two for an even count.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// The nearest-rank percentile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The machine: CPU model, cores, memory, and how busy it was when the bench started
/// (others may share it).
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| kib_field(&s, "MemTotal:"))
        .map_or_else(String::new, |kib| {
            format!(", {:.1} GiB RAM", kib as f64 / 1024.0 / 1024.0)
        });
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .map_or_else(String::new, |l| format!(", load average {l} at start"));
    format!("{cores} cores, {cpu}{memory}{load}")
}

/// The value in kB of a `/proc` status line such as `VmHWM:  1234 kB`.
pub fn kib_field(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn the_comparison_has_a_row_for_every_figure_and_the_median_of_each_setup() {
        let run = |rate: f64, daemons: usize| {
            let mut f = Figures::default();
            f.add("end to end", rate, "events/s", 0);
            for k in 1..=daemons {
                f.add(format!("peak RSS of bench-{k}"), 100.0, "MiB", 0);
            }
            f
        };
        let with_shutdown = |mut f: Figures| {
            f.add("shutdown", 0.5, "s", 2);
            f
        };
        let setups = vec![
            ("0".to_string(), vec![with_shutdown(run(7.0, 0))]),
            ("1".to_string(), vec![run(1.0, 1), run(3.0, 1), run(2.0, 1)]),
            ("2".to_string(), vec![run(5.0, 2), run(4.0, 2), run(6.0, 2)]),
        ];
        let rows = comparison_rows(&setups);
        let names: Vec<&str> = rows.iter().map(|(f, _)| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "end to end",
                "peak RSS of bench-1",
                "peak RSS of bench-2",
                "shutdown"
            ]
        );
        assert_eq!(rows[0].1, [Some(7.0), Some(2.0), Some(5.0)]);
        assert_eq!(rows[2].1, [None, None, Some(100.0)]);
        assert_eq!(rows[3].1, [Some(0.5), None, None]);
    }

    #[test]
    fn reads_proc_fields() {
        let status = "Name:\tnurtured\nVmHWM:\t  123456 kB\nVmRSS:\t   65432 kB\n";
        assert_eq!(kib_field(status, "VmHWM:"), Some(123_456));
        assert_eq!(kib_field(status, "VmRSS:"), Some(65_432));
        assert_eq!(kib_field(status, "VmSwap:"), None);
    }
}
