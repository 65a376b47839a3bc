//! Turns a [`Suite`] into `BENCHMARKS.md` and its SVG plots under `docs/benchmarks/`, and keeps
//! the suite beside them (`docs/benchmarks/results.json`).
//!
//! The markdown is generated in full on every run, down to the [`MARKER`] line; whatever an
//! existing `BENCHMARKS.md` holds after that marker (the hand-written analysis) is kept.
//!
//! Tables: one per workload, one row per system (in [`SYSTEMS`] order), one column per metric
//! the workload measured (in [`METRICS`] order), each cell "min / median" over the repeats,
//! plus a ratio to switchboard for the workload's headline metric. Plots: a latency CDF, a
//! server CPU (or, for W1, memory) bar chart and a throughput bar chart per workload, each only
//! where the runs carry the data. [`plots`] decides which exist, so the markdown links exactly
//! the files `write` draws.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::Context as _;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::results::{Measured, Run, SYSTEMS, Suite, WORKLOADS, metric};

/// Everything after this line of `BENCHMARKS.md` is hand-written and kept across runs.
pub const MARKER: &str = "<!-- analysis -->";

/// Where the plots go, relative to the repository (and so to `BENCHMARKS.md`).
const PLOT_DIR: &str = "docs/benchmarks";

/// Writes `<repo>/BENCHMARKS.md`, the plots under `<repo>/docs/benchmarks/` (SVG) and, beside
/// them, the runs they were drawn from (`results.json`), so the three always agree: a suite run
/// with `--out` elsewhere still leaves the figures behind the report in the repository.
pub fn write(suite: &Suite, repo: &Path) -> anyhow::Result<()> {
    let dir = repo.join(PLOT_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let results = dir.join("results.json");
    fs::write(&results, serde_json::to_vec_pretty(suite)?).with_context(|| format!("writing {}", results.display()))?;
    let groups = groups(suite);
    for plot in plots(&groups) {
        let path = dir.join(&plot.file);
        draw(&plot, &path).with_context(|| format!("drawing {}", path.display()))?;
    }

    let path = repo.join("BENCHMARKS.md");
    let kept = match fs::read_to_string(&path) {
        Ok(old) => analysis_after_marker(&old).to_owned(),
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    fs::write(&path, markdown(suite) + &kept).with_context(|| format!("writing {}", path.display()))
}

/// The markdown alone (used by write; testable). Ends with the [`MARKER`] line.
pub fn markdown(suite: &Suite) -> String {
    let groups = groups(suite);
    let mut out = header();
    out += &method_section(suite);
    out += &systems_section(suite);
    for group in &groups {
        out += &workload_section(group);
    }
    out += &plots_section(&plots(&groups));
    out += MARKER;
    out.push('\n');
    out
}

/// The text after the marker line (a line holding just [`MARKER`]) of an old `BENCHMARKS.md`;
/// empty when there is no such line.
fn analysis_after_marker(old: &str) -> &str {
    let mut start = 0;
    for line in old.split_inclusive('\n') {
        start += line.len();
        if line.trim_end() == MARKER {
            return &old[start..];
        }
    }
    ""
}

// ---------------------------------------------------------------------------------------------
// Grouping runs

/// The runs of one workload, per system, systems in table order.
struct Group<'a> {
    workload: &'a str,
    systems: Vec<(&'a str, Vec<&'a Run>)>,
}

impl<'a> Group<'a> {
    fn runs(&self) -> impl Iterator<Item = &'a Run> + '_ {
        self.systems.iter().flat_map(|(_, runs)| runs.iter().copied())
    }

    fn has_metric(&self, key: &str) -> bool {
        self.runs().any(|r| r.metrics.get(key).is_some_and(|v| v.is_finite()))
    }

    /// Median of `key` over the system's repeats, if it has any finite value.
    fn median(&self, system: &str, key: &str) -> Option<f64> {
        let runs = &self.systems.iter().find(|(s, _)| *s == system)?.1;
        min_median(&values(runs, key)).map(|(_, median)| median)
    }
}

/// Known names first in their fixed order, then any others alphabetically.
fn ordered<'a>(known: &[&'a str], present: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let present: BTreeSet<&str> = present.into_iter().collect();
    let mut out: Vec<&str> = known.iter().copied().filter(|k| present.contains(k)).collect();
    out.extend(present.iter().copied().filter(|p| !known.contains(p)));
    out
}

fn groups(suite: &Suite) -> Vec<Group<'_>> {
    let workloads = ordered(WORKLOADS, suite.runs.iter().map(|r| r.workload.as_str()));
    workloads
        .into_iter()
        .map(|workload| {
            let runs: Vec<&Run> = suite.runs.iter().filter(|r| r.workload == workload).collect();
            let systems = ordered(SYSTEMS, runs.iter().map(|r| r.system.as_str()))
                .into_iter()
                .map(|system| {
                    let mut mine: Vec<&Run> = runs.iter().copied().filter(|r| r.system == system).collect();
                    mine.sort_by_key(|r| r.repeat);
                    (system, mine)
                })
                .collect();
            Group { workload, systems }
        })
        .collect()
}

/// The finite values of `key` over `runs`, ascending.
fn values(runs: &[&Run], key: &str) -> Vec<f64> {
    let mut v: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.metrics.get(key).copied())
        .filter(|v| v.is_finite())
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// (min, median) of ascending values; the median of an even count is the mean of the middle two.
fn min_median(sorted: &[f64]) -> Option<(f64, f64)> {
    let n = sorted.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    };
    Some((sorted[0], median))
}

fn client_limited(runs: &[&Run]) -> bool {
    runs.iter().any(|r| r.client_limited)
}

/// The system's name as tables and bar charts show it: `†` when the load tool was the limit.
fn system_label(system: &str, runs: &[&Run]) -> String {
    if client_limited(runs) {
        format!("{system} †")
    } else {
        system.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics: names, units, formatting

#[derive(Clone, Copy)]
enum Unit {
    Count,
    Rate,
    Bytes,
    Mib,
    Micros,
    Millis,
    Share,
    Plain,
}

struct MetricInfo {
    key: &'static str,
    /// Column header, with the unit.
    header: &'static str,
    /// Name in prose and plot titles.
    name: &'static str,
    unit: Unit,
}

const fn m(key: &'static str, header: &'static str, name: &'static str, unit: Unit) -> MetricInfo {
    MetricInfo {
        key,
        header,
        name,
        unit,
    }
}

/// Table columns, in order. Metrics not listed here follow, alphabetically.
#[rustfmt::skip]
const METRICS: &[MetricInfo] = &[
    m(metric::SESSIONS, "sessions", "sessions", Unit::Count),
    m(metric::CONNECT_PER_S, "connects/s", "connects per second", Unit::Rate),
    m(metric::RSS_PER_SESSION, "RSS/session (B)", "RSS per session (bytes)", Unit::Bytes),
    m(metric::RSS_MIB, "RSS (MiB)", "RSS (MiB)", Unit::Mib),
    m(metric::SESSIONS_MAX, "sessions at max", "sessions at the most one process holds", Unit::Count),
    m(metric::RSS_PER_SESSION_MAX, "RSS/session at max (B)", "RSS per session at max sessions (bytes)", Unit::Bytes),
    m(metric::MESSAGES_PER_S, "messages/s", "messages per second", Unit::Rate),
    m(metric::MAX_RATE, "max rate (msg/s)", "max rate (messages/s)", Unit::Rate),
    m(metric::DELIVERIES_PER_S, "deliveries/s", "deliveries per second", Unit::Rate),
    m(metric::CPU_US_PER_MESSAGE, "CPU/message (µs)", "server CPU per message (µs)", Unit::Micros),
    m(metric::CPU_US_PER_DELIVERY, "CPU/delivery (µs)", "server CPU per delivery (µs)", Unit::Micros),
    m(metric::P50_MS, "p50 (ms)", "p50 latency (ms)", Unit::Millis),
    m(metric::P99_MS, "p99 (ms)", "p99 latency (ms)", Unit::Millis),
    m(metric::P999_MS, "p99.9 (ms)", "p99.9 latency (ms)", Unit::Millis),
    m(metric::MAX_MS, "max (ms)", "max latency (ms)", Unit::Millis),
    m(metric::LAST_DELIVERY_P50_MS, "last delivery p50 (ms)", "last delivery p50 (ms)", Unit::Millis),
    m(metric::LAST_DELIVERY_MAX_MS, "last delivery max (ms)", "last delivery max (ms)", Unit::Millis),
    m(metric::REDIS_CPU_US_PER_MESSAGE, "Redis CPU/message (µs)", "Redis CPU per message (µs)", Unit::Micros),
    m(metric::POSTGRES_CPU_US_PER_MESSAGE, "PostgreSQL CPU/message (µs)", "PostgreSQL CPU per message (µs)", Unit::Micros),
    m(metric::TOTAL_CPU_US_PER_MESSAGE, "all CPU/message (µs)", "nodes + Redis + PostgreSQL CPU per message (µs)", Unit::Micros),
    m(metric::REDIS_MEMORY_GROWTH, "Redis memory growth (B)", "Redis used_memory growth over the run (bytes)", Unit::Bytes),
    m(metric::SERVER_CPU_SHARE, "server CPU", "server CPU share", Unit::Share),
    m(metric::CLIENT_CPU_SHARE, "load tool CPU", "load tool CPU share", Unit::Share),
];

/// Header, prose name and unit of a metric (unknown metrics show their key).
fn info(key: &str) -> (&str, &str, Unit) {
    match METRICS.iter().find(|i| i.key == key) {
        Some(i) => (i.header, i.name, i.unit),
        None => (key, key, Unit::Plain),
    }
}

fn format_value(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Count | Unit::Rate | Unit::Bytes => thousands(v),
        Unit::Mib => format!("{v:.1}"),
        Unit::Micros | Unit::Millis => format!("{v:.2}"),
        Unit::Share => format!("{:.0}%", v * 100.0),
        Unit::Plain if v.fract() == 0.0 => format!("{v:.0}"),
        Unit::Plain => format!("{v:.2}"),
    }
}

/// An integer with `,` between thousands: 1234567.8 → "1,234,568".
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v.round() < 0.0 { format!("-{out}") } else { out }
}

/// The metric a workload's "vs switchboard" column compares.
fn headline(workload: &str) -> Option<&'static str> {
    match workload {
        "W1" => Some(metric::RSS_PER_SESSION),
        "W2" => Some(metric::CPU_US_PER_MESSAGE),
        "W3" => Some(metric::CPU_US_PER_DELIVERY),
        "W4" => Some(metric::P99_MS),
        _ => None,
    }
}

fn workload_title(workload: &str) -> String {
    let what = match workload {
        "W1" => "idle capacity",
        "W2" => "targeted fan-out",
        "W3" => "broadcast",
        "W4" => "cluster",
        _ => return workload.to_owned(),
    };
    format!("{workload} — {what}")
}

// ---------------------------------------------------------------------------------------------
// Markdown sections

fn header() -> String {
    format!(
        "# Benchmarks\n\n\
         > Written by `switchboard-load suite` from `docs/benchmarks/results.json`. Each \
         workload's section names the machine, date and command its runs were measured by: \
         compare systems within a section (measured side by side in one run), not across \
         sections. Everything above the `{MARKER}` line at the end is rewritten on every run; \
         the analysis below it is kept.\n\n"
    )
}

fn method_section(suite: &Suite) -> String {
    let repeats = groups(suite)
        .iter()
        .flat_map(|g| g.systems.iter().map(|(_, runs)| runs.len()))
        .max()
        .unwrap_or(0);
    format!(
        "## Method\n\n\
         - The server is pinned to core 0 and the load tool to core 1 (`taskset`).\n\
         - Server CPU = utime + stime from `/proc/PID/stat` over the send phase, divided by the \
         deliveries (or inbound messages); the connect phase is excluded.\n\
         - Memory per session = server RSS growth / sessions opened.\n\
         - Each (system, workload) run is repeated (up to {repeats} times here); table cells are \
         **min / median** over the repeats.\n\
         - A system marked `†` was limited by the load tool's core (`client_limited`), not by the \
         server, in at least one repeat: its rates are a lower bound for the server.\n\n"
    )
}

/// Which machine, when and by which command a workload's runs were measured: one line per
/// distinct measurement, with the systems it holds.
fn measured_list(group: &Group) -> String {
    let mut seen: Vec<(&Measured, Vec<&str>)> = Vec::new();
    for (system, runs) in &group.systems {
        for run in runs {
            match seen.iter_mut().find(|(m, _)| **m == run.measured) {
                Some((_, systems)) if systems.contains(system) => {}
                Some((_, systems)) => systems.push(system),
                None => seen.push((&run.measured, vec![system])),
            }
        }
    }
    let mut out = String::from("Measured:\n\n");
    for (m, systems) in seen {
        let c = &m.machine;
        let _ = writeln!(
            out,
            "- {}: {} on {} ({} cores, {:.1} GiB, kernel {}, open-files limit {}), scale {}, by `{}`",
            systems.join(", "),
            or_unknown(&c.date),
            or_unknown(&c.cpu),
            c.cores,
            c.memory_gib,
            or_unknown(&c.kernel),
            c.open_files_limit,
            or_unknown(&m.scale),
            or_unknown(&m.command),
        );
    }
    out.push('\n');
    out
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "(not recorded)" } else { s }
}

/// What each system present does per inbound message, so the figures compare like with like.
fn systems_section(suite: &Suite) -> String {
    let mut out = String::from("What each system does per message:\n\n");
    for name in SYSTEMS {
        if let (true, Ok(system)) = (
            suite.runs.iter().any(|r| r.system == *name),
            crate::systems::System::parse(name),
        ) {
            out += &format!("- **{name}**: {}.\n", system.per_message());
        }
    }
    out + "\n"
}

fn workload_section(group: &Group) -> String {
    let mut out = format!("## {}\n\n", workload_title(group.workload));
    out += &measured_list(group);
    out += &params_list(group);
    out += &table(group);
    out += &notes_list(group);
    out
}

/// The parameters of each system's first run: one value per key when all systems agree, else
/// the value per system ("rate: switchboard 1000, socketio 500").
fn params_list(group: &Group) -> String {
    let firsts: Vec<(&str, &Run)> = group
        .systems
        .iter()
        .filter_map(|(s, runs)| Some((*s, *runs.first()?)))
        .collect();
    let keys: BTreeSet<&String> = firsts.iter().flat_map(|(_, r)| r.params.keys()).collect();
    if keys.is_empty() {
        return String::new();
    }
    let mut out = String::from("Parameters:\n\n");
    for key in keys {
        let per_system: Vec<(&str, Option<&String>)> = firsts.iter().map(|(s, r)| (*s, r.params.get(key))).collect();
        match per_system[0].1 {
            Some(v) if per_system.iter().all(|(_, w)| *w == Some(v)) => {
                let _ = writeln!(out, "- {key}: {v}");
            }
            _ => {
                let values: Vec<String> = per_system
                    .iter()
                    .filter_map(|(s, v)| Some(format!("{s} {}", (*v)?)))
                    .collect();
                let _ = writeln!(out, "- {key}: {}", values.join(", "));
            }
        }
    }
    out.push('\n');
    out
}

/// The metric columns of a workload: known metrics in `METRICS` order, then others.
fn columns<'a>(group: &Group<'a>) -> Vec<&'a str> {
    let known: Vec<&str> = METRICS.iter().map(|i| i.key).collect();
    let present = group
        .runs()
        .flat_map(|r| r.metrics.keys().map(String::as_str))
        .filter(|k| group.has_metric(k));
    ordered(&known, present)
}

fn table(group: &Group) -> String {
    let columns = columns(group);
    let ratio = headline(group.workload)
        .filter(|h| columns.contains(h))
        .filter(|h| group.median("switchboard", h).is_some_and(|v| v != 0.0));

    let mut head = vec!["system".to_owned()];
    head.extend(columns.iter().map(|c| info(c).0.to_owned()));
    if let Some(h) = ratio {
        head.push(format!("vs switchboard ({})", short_header(h)));
    }
    let mut out = row(&head);
    out += &row(&vec!["---".to_owned(); head.len()]);

    for (system, runs) in &group.systems {
        let mut cells = vec![system_label(system, runs)];
        cells.extend(columns.iter().map(|c| cell(runs, c)));
        if let Some(h) = ratio {
            cells.push(ratio_cell(group, system, h));
        }
        out += &row(&cells);
    }
    out.push('\n');
    if let Some(h) = ratio {
        let _ = writeln!(
            out,
            "*vs switchboard*: the system's median {} divided by switchboard's (lower is better).\n",
            info(h).1
        );
    }
    out
}

/// A column header without its unit: "p99 (ms)" → "p99".
fn short_header(key: &str) -> &str {
    let header = info(key).0;
    header.split(" (").next().unwrap_or(header)
}

fn row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

/// "min / median" of `key` over the repeats, or "–" without data.
fn cell(runs: &[&Run], key: &str) -> String {
    let unit = info(key).2;
    match min_median(&values(runs, key)) {
        Some((min, median)) => format!("{} / {}", format_value(unit, min), format_value(unit, median)),
        None => "–".to_owned(),
    }
}

fn ratio_cell(group: &Group, system: &str, key: &str) -> String {
    match (group.median(system, key), group.median("switchboard", key)) {
        (Some(v), Some(base)) if base != 0.0 => format!("{:.2}×", v / base),
        _ => "–".to_owned(),
    }
}

/// Every run's notes, prefixed by the system, each once.
fn notes_list(group: &Group) -> String {
    let mut seen = BTreeSet::new();
    let mut out = String::new();
    for (system, runs) in &group.systems {
        for note in runs.iter().flat_map(|r| &r.notes) {
            let line = format!("- {system}: {note}");
            if seen.insert(line.clone()) {
                out += &line;
                out.push('\n');
            }
        }
    }
    if out.is_empty() {
        out
    } else {
        format!("Notes:\n\n{out}\n")
    }
}

fn plots_section(plots: &[Plot]) -> String {
    if plots.is_empty() {
        return String::new();
    }
    let mut out = String::from("## Plots\n\n");
    let mut current = "";
    for plot in plots {
        if plot.workload != current {
            current = &plot.workload;
            let _ = writeln!(out, "### {}\n", workload_title(current));
        }
        let _ = writeln!(out, "![{}]({PLOT_DIR}/{})\n", plot.title, plot.file);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Plots: what to draw

/// One SVG: its file name, title and data.
struct Plot {
    workload: String,
    file: String,
    title: String,
    data: PlotData,
}

enum PlotData {
    /// One line per system.
    Cdf(Vec<Series>),
    /// One bar per system, with the unit of the values.
    Bars(Vec<Bar>, Unit),
}

/// A system's latency CDF: points are (latency ms, quantile).
struct Series {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

struct Bar {
    label: String,
    color: RGBColor,
    value: f64,
}

/// Every plot the suite has data for, grouped by workload.
fn plots(groups: &[Group]) -> Vec<Plot> {
    let mut out = Vec::new();
    for group in groups {
        let w = group.workload.to_lowercase();
        let title = workload_title(group.workload);
        let plot = |file: String, what: &str, data| Plot {
            workload: group.workload.to_owned(),
            file,
            title: format!("{title}: {what}"),
            data,
        };
        if let Some(lines) = cdf_series(group) {
            out.push(plot(format!("latency-{w}.svg"), "latency CDF", PlotData::Cdf(lines)));
        }
        let mut add_bars = |prefix: &str, key: &str| {
            if let Some(bars) = bars(group, key) {
                let what = format!("{}, median", info(key).1);
                out.push(plot(
                    format!("{prefix}-{w}.svg"),
                    &what,
                    PlotData::Bars(bars, info(key).2),
                ));
            }
        };
        if let Some(key) = cpu_metric(group) {
            add_bars("cpu", key);
        }
        if group.workload == "W1" {
            add_bars("memory", metric::RSS_PER_SESSION);
        }
        add_bars("throughput", metric::DELIVERIES_PER_S);
    }
    out
}

/// The CPU metric to chart: the headline one when it is a CPU metric, else per delivery, else
/// per message.
fn cpu_metric(group: &Group) -> Option<&'static str> {
    let cpu = [metric::CPU_US_PER_DELIVERY, metric::CPU_US_PER_MESSAGE];
    let preferred = headline(group.workload).filter(|h| cpu.contains(h));
    preferred.into_iter().chain(cpu).find(|k| group.has_metric(k))
}

/// The median of `key` per system that has it; `None` when none has.
fn bars(group: &Group, key: &str) -> Option<Vec<Bar>> {
    let bars: Vec<Bar> = group
        .systems
        .iter()
        .filter_map(|(system, runs)| {
            let value = group.median(system, key)?;
            Some(Bar {
                label: system_label(system, runs),
                color: color(system),
                value,
            })
        })
        .collect();
    (!bars.is_empty()).then_some(bars)
}

/// Per system, the CDF of its median repeat (by p99); `None` when no run has one.
fn cdf_series(group: &Group) -> Option<Vec<Series>> {
    let lines: Vec<Series> = group
        .systems
        .iter()
        .filter_map(|(system, runs)| {
            let mut with_cdf: Vec<&Run> = runs.iter().copied().filter(|r| !r.cdf.is_empty()).collect();
            with_cdf.sort_by(|a, b| p99(a).total_cmp(&p99(b)));
            let median = with_cdf.get(with_cdf.len().checked_sub(1)? / 2)?;
            Some(Series {
                label: system.to_string(),
                color: color(system),
                points: median.cdf.clone(),
            })
        })
        .collect();
    (!lines.is_empty()).then_some(lines)
}

fn p99(run: &Run) -> f64 {
    run.metrics
        .get(metric::P99_MS)
        .copied()
        .filter(|v| v.is_finite())
        .unwrap_or(f64::INFINITY)
}

/// A fixed color per system, so a system looks the same in every plot.
fn color(system: &str) -> RGBColor {
    match system {
        "switchboard" => RGBColor(31, 119, 180),
        "switchboard-redis-cluster" => RGBColor(23, 190, 207),
        "socketioxide" => RGBColor(255, 127, 14),
        "socketio" => RGBColor(44, 160, 44),
        "bare-actix" => RGBColor(214, 39, 40),
        "bare-tungstenite" => RGBColor(148, 103, 189),
        _ => RGBColor(127, 127, 127),
    }
}

// ---------------------------------------------------------------------------------------------
// Plots: drawing

const WIDTH: u32 = 800;
const FONT: &str = "sans-serif";

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn draw(plot: &Plot, path: &Path) -> anyhow::Result<()> {
    match &plot.data {
        PlotData::Cdf(lines) => draw_cdf(path, &plot.title, lines),
        PlotData::Bars(bars, unit) => draw_bars(path, &plot.title, bars, *unit),
    }
}

/// Latency CDF: log x when the latencies span more than two decades.
fn draw_cdf(path: &Path, title: &str, lines: &[Series]) -> anyhow::Result<()> {
    let xs = || {
        lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .filter(|x| x.is_finite())
    };
    let hi = xs().fold(f64::MIN, f64::max);
    let lo_positive = xs().filter(|x| *x > 0.0).fold(f64::MAX, f64::min);
    let root = SVGBackend::new(path, (WIDTH, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    if hi > 0.0 && hi / lo_positive > 100.0 {
        let positive = |l: &Series| Series {
            points: l.points.iter().copied().filter(|p| p.0 > 0.0).collect(),
            label: l.label.clone(),
            ..*l
        };
        let lines: Vec<Series> = lines.iter().map(positive).collect();
        cdf_chart(&root, title, (lo_positive..hi).log_scale(), &lines)?;
    } else {
        let lo = xs().fold(f64::MAX, f64::min).min(0.0);
        let hi = if hi > lo { hi } else { lo + 1.0 };
        cdf_chart(&root, title, lo..hi, lines)?;
    }
    root.present()?;
    Ok(())
}

fn cdf_chart<X>(root: &Area, title: &str, x: X, lines: &[Series]) -> anyhow::Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x, 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("quantile")
        .x_label_formatter(&|v| axis_number(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for line in lines {
        let color = line.color;
        chart
            .draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

/// A tick label without trailing zeros: 0.0005, 0.05, 1, 250, 12,000.
fn axis_number(v: f64) -> String {
    if v.abs() >= 1000.0 {
        thousands(v)
    } else {
        let s = format!("{v:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Horizontal bars, first system on top, each labelled with its value.
fn draw_bars(path: &Path, title: &str, bars: &[Bar], unit: Unit) -> anyhow::Result<()> {
    let n = bars.len();
    let height = (140 + 56 * n as u32).clamp(260, 450);
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = bars.iter().map(|b| b.value).fold(0.0, f64::max);
    let x_max = if max > 0.0 { max * 1.2 } else { 1.0 };
    let name_width = bars.iter().map(|b| b.label.chars().count()).max().unwrap_or(0) as u32 * 9 + 24;

    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(name_width)
        .build_cartesian_2d(0.0..x_max, 0.0..n as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_label_formatter(&|v| axis_number(*v))
        .label_style((FONT, 14))
        .light_line_style(TRANSPARENT)
        .draw()?;

    // Row i from the top spans y in [n-1-i, n-i].
    let slot = |i: usize| (n - 1 - i) as f64;
    let length = |b: &Bar| b.value.max(0.0);
    chart.draw_series(
        bars.iter()
            .enumerate()
            .map(|(i, b)| Rectangle::new([(0.0, slot(i) + 0.2), (length(b), slot(i) + 0.8)], b.color.filled())),
    )?;
    // Names left of the plotting area, values right of each bar: placed in pixels on the root.
    let name_style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let value_style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (i, b) in bars.iter().enumerate() {
        let (x0, y) = chart.backend_coord(&(0.0, slot(i) + 0.5));
        root.draw(&Text::new(b.label.clone(), (x0 - 8, y), name_style.clone()))?;
        let (x1, _) = chart.backend_coord(&(length(b), slot(i) + 0.5));
        root.draw(&Text::new(
            format_value(unit, b.value),
            (x1 + 6, y),
            value_style.clone(),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::results::Machine;

    /// A run whose CDF spans `growth^20`: linear x below 100, log above.
    fn run(system: &str, workload: &str, repeat: u32, metrics: &[(&str, f64)], growth: f64) -> Run {
        let cdf = (0..=20).map(|i| (0.01 * growth.powi(i), f64::from(i) / 20.0)).collect();
        let rate = if system == "socketio" && workload == "W3" {
            "500"
        } else {
            "1000"
        };
        Run {
            system: system.into(),
            workload: workload.into(),
            repeat,
            params: BTreeMap::from([
                ("sessions".to_owned(), "1000".to_owned()),
                ("rate".to_owned(), rate.to_owned()),
            ]),
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            cdf,
            client_limited: system == "socketio" && repeat == 2,
            notes: vec![format!("{workload} note")],
            // W3's socketio was measured on another machine than the rest.
            measured: Measured {
                command: format!("switchboard-load suite --scale tiny --workloads {workload}"),
                scale: "tiny".into(),
                machine: Machine {
                    cpu: if system == "socketio" && workload == "W3" {
                        "Other CPU"
                    } else {
                        "Test CPU"
                    }
                    .into(),
                    cores: 2,
                    memory_gib: 24.0,
                    kernel: "6.1".into(),
                    date: "2026-01-01 00:00 UTC".into(),
                    open_files_limit: 20_000,
                },
            },
        }
    }

    fn suite() -> Suite {
        use metric::*;
        let mut runs = Vec::new();
        for (system, k) in [("switchboard", 1.0), ("socketio", 2.0)] {
            for repeat in 1..=2 {
                let r = f64::from(repeat);
                runs.push(run(
                    system,
                    "W1",
                    repeat,
                    &[
                        (SESSIONS, 1000.0),
                        (RSS_PER_SESSION, 2000.0 * k * r),
                        (CONNECT_PER_S, 12345.4 * r),
                    ],
                    1.1,
                ));
                runs.push(run(
                    system,
                    "W3",
                    repeat,
                    &[
                        (CPU_US_PER_DELIVERY, 1.234 * k * r),
                        (DELIVERIES_PER_S, 1_500_000.0 / k),
                        (P99_MS, 3.0 * r),
                    ],
                    1.5,
                ));
            }
        }
        Suite { runs }
    }

    #[test]
    fn markdown_has_tables_ratios_and_plots() {
        let md = markdown(&suite());
        // Each workload names the machines and commands of its own runs.
        let machine =
            "2026-01-01 00:00 UTC on Test CPU (2 cores, 24.0 GiB, kernel 6.1, open-files limit 20000), scale tiny";
        assert!(
            md.contains(&format!(
                "Measured:\n\n- switchboard, socketio: {machine}, by `switchboard-load suite --scale tiny --workloads W1`\n\n"
            )),
            "{md}"
        );
        assert!(
            md.contains(&format!(
                "Measured:\n\n- switchboard: {machine}, by `switchboard-load suite --scale tiny --workloads W3`\n\
                 - socketio: 2026-01-01 00:00 UTC on Other CPU (2 cores"
            )),
            "{md}"
        );
        assert!(
            md.contains("## W1 — idle capacity") && md.contains("## W3 — broadcast"),
            "{md}"
        );
        assert!(!md.contains("## W2"), "{md}");
        assert!(md.contains("- sessions: 1000\n"), "{md}");
        assert!(md.contains("- rate: 1000\n"), "W1 rates agree: {md}");
        assert!(
            md.contains("- rate: switchboard 1000, socketio 500\n"),
            "W3 rates differ: {md}"
        );
        assert!(md.contains("| vs switchboard (RSS/session) |"), "{md}");
        // W1: bytes as integers, rates with separators, ratio of medians 6000/3000.
        assert!(
            md.contains("| switchboard | 1,000 / 1,000 | 12,345 / 18,518 | 2,000 / 3,000 | 1.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| socketio † | 1,000 / 1,000 | 12,345 / 18,518 | 4,000 / 6,000 | 2.00× |"),
            "{md}"
        );
        // W3: µs with 2 decimals.
        assert!(
            md.contains("| switchboard | 1,500,000 / 1,500,000 | 1.23 / 1.85 | 3.00 / 4.50 | 1.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| socketio † | 750,000 / 750,000 | 2.47 / 3.70 | 3.00 / 4.50 | 2.00× |"),
            "{md}"
        );
        assert_eq!(md.matches("- switchboard: W1 note").count(), 1, "{md}");
        for file in ["latency-w1", "memory-w1", "latency-w3", "cpu-w3", "throughput-w3"] {
            assert!(md.contains(&format!("(docs/benchmarks/{file}.svg)")), "{file}: {md}");
        }
        assert!(!md.contains("cpu-w1.svg") && !md.contains("throughput-w1.svg"), "{md}");
        assert!(md.ends_with("<!-- analysis -->\n"), "{md}");
        assert_eq!(md.lines().filter(|l| *l == MARKER).count(), 1, "{md}");
    }

    #[test]
    fn write_draws_plots_and_keeps_the_analysis() {
        let repo = std::env::temp_dir().join(format!("switchboard-report-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&repo);
        fs::create_dir_all(&repo).unwrap();
        let path = repo.join("BENCHMARKS.md");
        fs::write(&path, "old generated text\n<!-- analysis -->\nHand-written analysis.\n").unwrap();

        write(&suite(), &repo).unwrap();
        let first = fs::read_to_string(&path).unwrap();
        let kept: Suite =
            serde_json::from_slice(&fs::read(repo.join("docs/benchmarks/results.json")).unwrap()).unwrap();
        assert_eq!(
            markdown(&kept),
            markdown(&suite()),
            "the runs behind the report are kept beside it"
        );
        assert!(!first.contains("old generated text"));
        assert!(
            first.ends_with("<!-- analysis -->\nHand-written analysis.\n"),
            "{first}"
        );
        for file in ["latency-w1", "memory-w1", "latency-w3", "cpu-w3", "throughput-w3"] {
            let svg = fs::read_to_string(repo.join(format!("docs/benchmarks/{file}.svg"))).unwrap();
            assert!(svg.starts_with("<svg") && svg.contains("switchboard"), "{file}");
        }

        write(&suite(), &repo).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            first,
            "a second write changes nothing"
        );
        fs::remove_dir_all(&repo).unwrap();
    }

    #[test]
    fn number_formats() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.6), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-12_345.0), "-12,345");
        assert_eq!(axis_number(0.050), "0.05");
        assert_eq!(axis_number(250.0), "250");
    }
}
