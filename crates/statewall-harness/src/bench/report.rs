//! What a bench run reports: its rows (a figure beside a baseline measured in the same
//! run, with its target as a ratio, MET or MISSED), the attempts at each group, the
//! report written to `target/bench/latest.json`, and the table printed. Every group
//! builds its rows here; imports nothing of the workspace, so that every group may.

use serde::Serialize;

/// Runs of each measurement (the median is reported).
pub const RUNS: usize = 5;

/// Test-run repetitions inside the kernel per run.
pub const REPEAT: u32 = 1_000_000;

/// One row of the table.
#[derive(Serialize, serde::Deserialize, Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Unit of `value`.
    pub unit: String,
    /// Median.
    pub value: f64,
    /// Every run.
    pub runs: Vec<f64>,
    /// What one run is (how many repetitions it takes the figure over).
    #[serde(default)]
    pub each: String,
    /// The baseline's name.
    pub baseline: String,
    /// The baseline's median, in the same unit.
    pub baseline_value: f64,
    /// `value / baseline_value`.
    pub ratio: f64,
    /// Extra figure compared with the target, e.g. ns above the baseline.
    pub delta: f64,
    /// The target, in words.
    pub target: Option<String>,
    /// Whether the target was met (None when there is no target).
    pub met: Option<bool>,
}

/// One attempt at a group: the probe (the empty tc program's test-run cost) measured just
/// before and just after it, and the rows it gave.
#[derive(Serialize, serde::Deserialize, Debug, Clone)]
pub struct Attempt {
    /// The group.
    pub group: String,
    /// 1 for the first attempt, up to [`ATTEMPTS`].
    pub attempt: usize,
    /// The probe before the group, ns per packet.
    pub probe_before: f64,
    /// The probe after the group, ns per packet.
    pub probe_after: f64,
    /// Whether the two probes are within [`STEADY`] of each other.
    pub steady: bool,
    /// The rows of this attempt.
    pub rows: Vec<Row>,
}

/// The report.
#[derive(Serialize, serde::Deserialize, Debug, Default)]
pub struct Report {
    /// Rows in order: each group's last attempt.
    pub rows: Vec<Row>,
    /// Every attempt of every group, the re-run ones included.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    /// When the run started (UTC).
    #[serde(default)]
    pub date: String,
    /// The CPU model.
    #[serde(default)]
    pub machine: String,
    /// Kernel release.
    pub kernel: String,
    /// CPUs.
    pub cpus: usize,
    /// Groups that could not be measured, with why: the run goes on with the others, and
    /// ends in failure.
    #[serde(default)]
    pub failed: Vec<Failed>,
}

/// A group that could not be measured.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Failed {
    /// The group.
    pub group: String,
    /// Why, with every cause.
    pub error: String,
}

/// A group is run again (at most `ATTEMPTS - 1` times) when the probe measured before and
/// after it differs by more than this fraction: the machine changed speed under it. A
/// missed target never causes a re-run.
pub const STEADY: f64 = 0.10;

/// Attempts at a group, the first included.
pub const ATTEMPTS: usize = 3;

/// Median of a slice.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// A row: the median of `runs` (each run being `each`) beside a baseline figure, with an
/// optional bound on their ratio.
pub fn ratio_row(
    name: &str,
    unit: &str,
    runs: Vec<f64>,
    each: String,
    base_name: &str,
    base: f64,
    max_ratio: Option<f64>,
) -> Row {
    let value = median(&runs);
    let ratio = value / base;
    Row {
        name: name.into(),
        unit: unit.into(),
        value,
        runs,
        each,
        baseline: base_name.into(),
        baseline_value: base,
        ratio,
        delta: value - base,
        target: max_ratio.map(|t| format!("<= {t}x")),
        met: max_ratio.map(|t| ratio <= t),
    }
}

/// A per-packet row from test runs of `repeat` repetitions: medians of the subject's and
/// the baseline's runs, with an optional bound on their ratio.
pub fn row(
    name: &str,
    base_name: &str,
    b: &[f64],
    s: Vec<f64>,
    repeat: u32,
    max_ratio: Option<f64>,
) -> Row {
    ratio_row(
        name,
        "ns/packet",
        s,
        format!("{repeat} test runs"),
        base_name,
        median(b),
        max_ratio,
    )
}

/// The kernel release (`/proc/sys/kernel/osrelease`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The CPU model, from `/proc/cpuinfo`.
pub fn machine() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into())
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM` (UTC; days to a civil date after
/// H. Hinnant's algorithm).
pub fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// A figure with three decimals below 1 (0.194 ms), two below 10 and one above, so that a
/// sub-millisecond median is not printed as "0.2".
fn figure(v: f64, signed: bool) -> String {
    let a = v.abs();
    let places = if a > 0.0 && a < 1.0 {
        3
    } else if a < 10.0 {
        2
    } else {
        1
    };
    if signed {
        format!("{v:+.places$}")
    } else {
        format!("{v:.places$}")
    }
}

/// A ratio with two decimals, four below 0.1 (so that 0.0504 against a target of 0.05x
/// does not read as 0.05 and MISSED).
fn ratio_text(r: f64) -> String {
    if r.abs() < 0.1 && r != 0.0 {
        format!("{r:.4}")
    } else {
        format!("{r:.2}")
    }
}

/// Prints the table as Markdown, then every group that was run again and why.
pub fn print(report: &Report) {
    println!(
        "statewall bench, {} UTC: {}, {} CPUs, kernel {}; each figure is the median of {RUNS} runs unless its row says otherwise",
        report.date, report.machine, report.cpus, report.kernel
    );
    println!();
    println!(
        "| measurement | median | each run | baseline | ratio | above baseline | target | result |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &report.rows {
        println!(
            "| {} | {} {} | {} | {}: {} | {} | {} | {} | {} |",
            r.name,
            figure(r.value, false),
            r.unit,
            if r.each.is_empty() { "-" } else { &r.each },
            r.baseline,
            figure(r.baseline_value, false),
            ratio_text(r.ratio),
            figure(r.delta, true),
            r.target.as_deref().unwrap_or("-"),
            match r.met {
                Some(true) => "MET",
                Some(false) => "MISSED",
                None => "-",
            }
        );
    }
    println!();
    let again: Vec<&Attempt> = report.attempts.iter().filter(|a| !a.steady).collect();
    if again.is_empty() {
        println!(
            "Every group ran once: the empty tc program's cost before and after each differed \
             by at most {:.0}%.",
            STEADY * 100.0
        );
    }
    for a in again {
        println!(
            "{} (attempt {} of at most {ATTEMPTS}): the empty tc program took {:.1} ns before \
             and {:.1} ns after ({:+.0}%){}",
            a.group,
            a.attempt,
            a.probe_before,
            a.probe_after,
            (a.probe_after / a.probe_before - 1.0) * 100.0,
            if a.attempt < ATTEMPTS {
                "; run again"
            } else {
                "; kept, as the last attempt"
            }
        );
    }
    for f in &report.failed {
        println!("{}: not measured: {}", f.group, f.error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_keep_three_digits_below_one_and_ratios_below_a_tenth() {
        assert_eq!(figure(0.194, false), "0.194");
        assert_eq!(figure(-3.21, true), "-3.21");
        assert_eq!(figure(1135.24, false), "1135.2");
        assert_eq!(figure(0.0, true), "+0.00");
        assert_eq!(ratio_text(0.0504), "0.0504");
        assert_eq!(ratio_text(0.0496), "0.0496");
        assert_eq!(ratio_text(1.2345), "1.23");
    }

    #[test]
    fn targets_are_ratios_to_the_baseline() {
        let r = row(
            "x",
            "empty tc program",
            &[20.0, 20.0],
            vec![79.0, 81.0],
            7,
            Some(4.0),
        );
        assert_eq!(
            (r.ratio, r.met, r.each.as_str()),
            (4.0, Some(true), "7 test runs")
        );
        let r = row("x", "empty tc program", &[20.0], vec![81.0], 7, Some(4.0));
        assert_eq!(r.met, Some(false));
        assert_eq!(r.target.as_deref(), Some("<= 4x"));
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_868_740), "2000-02-29 23:59");
        assert_eq!(utc(1_796_281_500), "2026-12-03 07:05");
    }
}
