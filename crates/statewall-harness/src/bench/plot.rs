//! The benchmark figures drawn as SVG (by hand: a few lines, no font machinery), from the
//! rows of a run: the firewall's cost per packet against nftables by rule count (real
//! traffic), the firewall program's cost beside bpfilter's published figures (test-run),
//! and the time from the last knock (or the SPA packet) to an answered SYN against knockd
//! and fwknopd. A figure whose rows the run did not measure is not drawn.

use std::{fmt::Write, path::Path};

use crate::bench::report::{Report, Row};

const W: f64 = 720.0;
const H: f64 = 420.0;
const L: f64 = 80.0;
const R: f64 = 170.0;
const T: f64 = 50.0;
const B: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Decades covering `lo..hi` (log axis).
fn decades(lo: f64, hi: f64) -> (f64, f64) {
    (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil()),
    )
}

struct Chart {
    svg: String,
    x: (f64, f64),
    y: (f64, f64),
}

impl Chart {
    fn new(title: &str, xlabel: &str, ylabel: &str, x: (f64, f64), y: (f64, f64)) -> Chart {
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="28" font-size="15" text-anchor="middle">{}</text>"#,
            (L + W - R) / 2.0,
            esc(title)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (L + W - R) / 2.0,
            H - 15.0,
            esc(xlabel)
        );
        let _ = writeln!(
            svg,
            r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{}</text>"#,
            (T + H - B) / 2.0,
            (T + H - B) / 2.0,
            esc(ylabel)
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
            W - L - R,
            H - T - B
        );
        Chart { svg, x, y }
    }

    fn px(&self, v: f64) -> f64 {
        L + (v.log10() - self.x.0.log10()) / (self.x.1.log10() - self.x.0.log10()) * (W - L - R)
    }

    fn py(&self, v: f64) -> f64 {
        H - B - (v.log10() - self.y.0.log10()) / (self.y.1.log10() - self.y.0.log10()) * (H - T - B)
    }

    /// Grid lines and labels at each decade of the y axis.
    fn y_grid(&mut self, unit: &str) {
        let mut d = self.y.0;
        while d <= self.y.1 * 1.0001 {
            let y = self.py(d);
            let _ = writeln!(
                self.svg,
                r##"<line x1="{L}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{} {unit}</text>"##,
                W - R,
                L - 6.0,
                y + 4.0,
                human(d)
            );
            d *= 10.0;
        }
    }

    fn legend(&mut self, i: usize, color: &str, label: &str) {
        let y = T + 16.0 + i as f64 * 20.0;
        let x = W - R + 12.0;
        let _ = writeln!(
            self.svg,
            r#"<rect x="{x}" y="{}" width="14" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            y - 9.0,
            x + 20.0,
            y,
            esc(label)
        );
    }

    fn finish(mut self) -> String {
        self.svg.push_str("</svg>\n");
        self.svg
    }
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else if v >= 1.0 {
        format!("{v}")
    } else {
        format!("{v:.1}")
    }
}

/// (rules, statewall, nftables, nothing attached) from the firewall-nft rows.
fn firewall_points(rows: &[Row]) -> Vec<(f64, f64, f64, Option<f64>)> {
    rows.iter()
        .filter_map(|r| {
            let rest = r.name.strip_prefix("firewall vs nftables, ")?;
            let n: f64 = rest.split_whitespace().next()?.parse().ok()?;
            let none = rest
                .split("nothing attached: ")
                .nth(1)
                .and_then(|x| x.split_whitespace().next())
                .and_then(|x| x.parse().ok());
            Some((n, r.value, r.baseline_value, none))
        })
        .collect()
}

/// A series: colour, label, points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// A log-log line chart: one polyline with points per series.
fn line_chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    unit: &str,
    series: &[Series<'_>],
) -> Option<String> {
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.2.iter().copied()).collect();
    if all.len() < 2 {
        return None;
    }
    let min = |f: fn(&(f64, f64)) -> f64| all.iter().map(f).fold(f64::MAX, f64::min);
    let max = |f: fn(&(f64, f64)) -> f64| all.iter().map(f).fold(0.0, f64::max);
    let mut c = Chart::new(
        title,
        xlabel,
        ylabel,
        decades(min(|p| p.0), max(|p| p.0)),
        decades(min(|p| p.1), max(|p| p.1)),
    );
    c.y_grid(unit);
    let mut d = c.x.0;
    while d <= c.x.1 * 1.0001 {
        let x = c.px(d);
        let _ = writeln!(
            c.svg,
            r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            H - B,
            H - B + 16.0,
            human(d)
        );
        d *= 10.0;
    }
    for (i, (color, label, pts)) in series.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let xy: Vec<(f64, f64)> = pts.iter().map(|p| (c.px(p.0), c.py(p.1))).collect();
        let path: Vec<String> = xy.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            c.svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for (x, y) in &xy {
            let _ = writeln!(
                c.svg,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{color}"/>"#
            );
        }
        c.legend(i, color, label);
    }
    Some(c.finish())
}

/// The firewall against nftables on real traffic, if the run measured it.
pub fn firewall_svg(report: &Report) -> Option<String> {
    let pts = firewall_points(&report.rows);
    let sw: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
    let nf: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.2)).collect();
    let none: Vec<(f64, f64)> = pts.iter().filter_map(|p| p.3.map(|v| (p.0, v))).collect();
    if sw.len() < 2 {
        return None;
    }
    line_chart(
        "Firewall cost per packet, real UDP between namespaces",
        "rules in the chain (only the last one matches)",
        "CPU time per packet (send + receive)",
        "ns",
        &[
            ("#1f77b4", "statewall (tcx)", sw),
            ("#d62728", "nftables (netdev)", nf),
            ("#7f7f7f", "nothing attached", none),
        ],
    )
}

/// The goodput group's flood, per mode: (kpps sent, kpps dropped at the hook, goodput
/// ratio), from the row names.
fn flood_points(rows: &[Row], mode: &str) -> Vec<(f64, f64, f64)> {
    rows.iter()
        .filter_map(|r| {
            let rest = r.name.strip_prefix("goodput under a flood, ")?;
            let rest = rest.strip_prefix(mode)?;
            let (_, figures) = rest.split_once(": ")?;
            let sent: f64 = figures.split_whitespace().next()?.parse().ok()?;
            let hook: f64 = figures
                .split(", ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((sent.max(1.0), hook.max(1.0), r.ratio))
        })
        .collect()
}

/// The flood each mode took in at its hook against what the generator sent, if the run
/// measured it (the goodput beside it is in the table).
pub fn goodput_svg(report: &Report) -> Option<String> {
    let series: Vec<Series<'_>> = [
        ("#1f77b4", "statewall XDP"),
        ("#2ca02c", "statewall tc"),
        ("#d62728", "nftables"),
    ]
    .into_iter()
    .map(|(color, mode)| {
        let pts = flood_points(&report.rows, mode)
            .into_iter()
            .map(|(sent, hook, _)| (sent * 1e3, hook * 1e3))
            .collect();
        (color, mode, pts)
    })
    .collect();
    if series.iter().all(|s| s.2.len() < 2) {
        return None;
    }
    line_chart(
        "A flood matching the last of 1,000 DROP rules",
        "flood sent, packets per second",
        "flood dropped at the hook",
        "pps",
        &series,
    )
}

/// bpfilter's published figures for the same measurement (a packet matching the last of
/// N rules, BPF_PROG_TEST_RUN): (rules, ns).
pub const BPFILTER_PUBLISHED: [(f64, f64); 3] = [(1.0, 95.0), (512.0, 2081.0), (2048.0, 17087.0)];

/// The firewall program alone (test-run) beside bpfilter's published figures.
pub fn firewall_testrun_svg(report: &Report) -> Option<String> {
    let mut sw = Vec::new();
    let mut empty = Vec::new();
    for r in &report.rows {
        let Some(rest) = r.name.strip_prefix("firewall, ") else {
            continue;
        };
        let Some(n) = rest
            .split_whitespace()
            .next()
            .and_then(|x| x.parse::<f64>().ok())
        else {
            continue;
        };
        if rest.contains("packet matching the last") {
            sw.push((n, r.value));
            empty.push((n, r.baseline_value));
        }
    }
    if sw.len() < 2 {
        return None;
    }
    line_chart(
        "Firewall program cost (BPF_PROG_TEST_RUN), packet matching the last rule",
        "rules in the chain",
        "time per packet",
        "ns",
        &[
            ("#1f77b4", "statewall", sw),
            (
                "#2ca02c",
                "bpfilter (published)",
                BPFILTER_PUBLISHED.to_vec(),
            ),
            ("#7f7f7f", "empty tc program", empty),
        ],
    )
}

/// The time-to-open figure, if the run measured it.
pub fn open_svg(report: &Report) -> Option<String> {
    let find = |p: &str| report.rows.iter().find(|r| r.name.starts_with(p));
    let mut bars: Vec<(String, f64, &str)> = Vec::new();
    if let Some(r) = find("time to open: last knock") {
        bars.push(("statewall knock".into(), r.value, "#1f77b4"));
        bars.push(("knockd".into(), r.baseline_value, "#d62728"));
    }
    if let Some(r) = find("SPA to open: fwknop packet") {
        bars.push(("statewall SPA".into(), r.value, "#1f77b4"));
        bars.push(("fwknopd".into(), r.baseline_value, "#d62728"));
    }
    if bars.is_empty() {
        return None;
    }
    let lo = bars.iter().map(|b| b.1).fold(f64::MAX, f64::min);
    let hi = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let ys = decades(lo / 2.0, hi);
    let mut c = Chart::new(
        "Time to open: last knock or SPA packet to an answered SYN",
        "median of the runs in this make bench",
        "time",
        (1.0, 10.0),
        ys,
    );
    c.y_grid("us");
    let slot = (W - L - R) / bars.len() as f64;
    for (i, (label, v, color)) in bars.iter().enumerate() {
        let x = L + slot * i as f64 + slot * 0.2;
        let y = c.py(*v);
        let _ = writeln!(
            c.svg,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            slot * 0.6,
            (H - B - y).max(0.0),
            x + slot * 0.3,
            y - 6.0,
            if *v >= 1000.0 {
                format!("{:.1} ms", v / 1000.0)
            } else {
                format!("{v:.0} us")
            },
            x + slot * 0.3,
            H - B + 16.0,
            esc(label)
        );
    }
    c.legend(0, "#1f77b4", "statewall");
    c.legend(1, "#d62728", "knockd / fwknopd");
    Some(c.finish())
}

/// Writes the figures the run has data for into `dir`; returns their paths.
pub fn draw(report: &Report, dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (name, svg) in [
        ("firewall-vs-nftables.svg", firewall_svg(report)),
        ("firewall-vs-bpfilter.svg", firewall_testrun_svg(report)),
        ("time-to-open.svg", open_svg(report)),
        ("goodput-under-flood.svg", goodput_svg(report)),
    ] {
        if let Some(svg) = svg {
            let p = dir.join(name);
            std::fs::write(&p, svg)?;
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, value: f64, baseline: f64) -> Row {
        Row {
            name: name.into(),
            unit: "x".into(),
            value,
            runs: vec![value],
            baseline: "b".into(),
            baseline_value: baseline,
            ratio: value / baseline,
            delta: value - baseline,
            each: String::new(),
            target: None,
            met: None,
        }
    }

    #[test]
    fn figures_from_rows() {
        let report = Report {
            rows: vec![
                row("firewall vs nftables, 1 rule, real traffic (nothing attached: 1359 ns/packet)", 1478.0, 1339.0),
                row("firewall vs nftables, 10000 rules, real traffic (nothing attached: 1300 ns/packet)", 1471.0, 186001.0),
                row("time to open: last knock to answered SYN, statewall", 80.0, 250000.0),
                row("firewall, 1 rule, packet matching the last", 147.0, 20.0),
                row("firewall, 2048 rules, packet matching the last", 193.0, 20.0),
            ],
            ..Default::default()
        };
        let f = firewall_svg(&report).unwrap();
        assert_eq!(f.matches("<polyline").count(), 3);
        assert_eq!(f.matches("<circle").count(), 6);
        // nftables at 10000 rules is near the top, statewall near the floor.
        assert!(f.contains("nftables (netdev)") && f.contains("1M ns"));
        let o = open_svg(&report).unwrap();
        assert!(
            o.contains("250.0 ms") && o.contains("80 us") && !o.contains("fwknopd</text><text")
        );
        assert!(firewall_svg(&Report::default()).is_none());
        let b = firewall_testrun_svg(&report).unwrap();
        assert_eq!(b.matches("<circle").count(), 2 + 3 + 2);
        assert!(b.contains("bpfilter (published)"));
        assert!(goodput_svg(&report).is_none());
        let flood = Report {
            rows: vec![
                row("goodput under a flood, statewall XDP, 100 kpps: 42 kpps sent, 41 kpps dropped at the hook", 1.0, 1.0),
                row("goodput under a flood, statewall XDP, flat out: 563 kpps sent, 493 kpps dropped at the hook", 1.0, 1.0),
                row("goodput under a flood, nftables, 100 kpps: 19 kpps sent, 19 kpps dropped at the hook", 1.0, 1.0),
                row("goodput under a flood, nftables, flat out: 40 kpps sent, 40 kpps dropped at the hook", 1.0, 1.0),
            ],
            ..Default::default()
        };
        assert_eq!(
            flood_points(&flood.rows, "statewall XDP")[1],
            (563.0, 493.0, 1.0)
        );
        let g = goodput_svg(&flood).unwrap();
        assert_eq!(g.matches("<circle").count(), 4);
        assert!(g.contains("statewall XDP") && g.contains("nftables"));
    }
}
