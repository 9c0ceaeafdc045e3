//! The figures of `cargo xtask bench`: each measured value against a baseline taken in the same
//! run, and its target. Every part of the benchmark (the daemon's `bench` example, the xtask's
//! own whole-daemon figures) prints a figure when it has it and appends it, one JSON object a
//! line, to the file [`FIGURES_ENV`] names; the xtask then prints them all as one table and can
//! write that table as a report.

use std::{fmt::Write as _, fs::OpenOptions, io::Write as _, path::Path};

use anyhow::Context as _;
use serde_json::{Value, json};

/// The environment variable naming the file figures are appended to.
pub const FIGURES_ENV: &str = "AIESIM_BENCH_FIGURES";

/// What a figure must reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// value ÷ baseline at most this.
    RatioAtMost(f64),
    /// value ÷ baseline at least this.
    RatioAtLeast(f64),
    /// The value itself at most this, in its unit.
    AtMost(f64),
    /// The value itself at least this, in its unit.
    AtLeast(f64),
    /// Informative only.
    None,
}

impl Target {
    fn met(self, value: f64, baseline: f64) -> Option<bool> {
        let ratio = value / baseline;
        match self {
            Self::RatioAtMost(t) => Some(ratio <= t),
            Self::RatioAtLeast(t) => Some(ratio >= t),
            Self::AtMost(t) => Some(value <= t),
            Self::AtLeast(t) => Some(value >= t),
            Self::None => None,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Self::RatioAtMost(t) => format!("<= {t} x"),
            Self::RatioAtLeast(t) => format!(">= {t} x"),
            Self::AtMost(t) => format!("<= {t} {unit}"),
            Self::AtLeast(t) => format!(">= {t} {unit}"),
            Self::None => "-".to_owned(),
        }
    }
}

/// One measured figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    /// What the baseline is, e.g. "empty program".
    pub baseline_name: String,
    pub baseline: f64,
    pub target: Target,
}

impl Figure {
    pub fn new(name: impl Into<String>, value: f64, unit: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value,
            unit: unit.into(),
            baseline_name: String::new(),
            baseline: f64::NAN,
            target: Target::None,
        }
    }

    /// The baseline, in the figure's unit, and what it is.
    #[must_use]
    pub fn against(mut self, baseline_name: impl Into<String>, baseline: f64) -> Self {
        self.baseline_name = baseline_name.into();
        self.baseline = baseline;
        self
    }

    #[must_use]
    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// value ÷ baseline, when there is a baseline.
    pub fn ratio(&self) -> Option<f64> {
        (self.baseline.is_finite() && self.baseline != 0.0).then(|| self.value / self.baseline)
    }

    /// Whether the target is met; `None` for an informative figure.
    pub fn met(&self) -> Option<bool> {
        self.target.met(self.value, self.baseline)
    }

    /// Prints the figure as one line and appends it to the file [`FIGURES_ENV`] names, if any.
    pub fn record(self) {
        println!("  {}", self.line());
        if let Ok(path) = std::env::var(FIGURES_ENV) {
            if let Err(e) = append(Path::new(&path), &self) {
                println!("  (cannot record the figure in {path}: {e:#})");
            }
        }
    }

    fn line(&self) -> String {
        let mut line = format!("{:<52} {:>12} {:<6}", self.name, number(self.value), self.unit);
        if let Some(ratio) = self.ratio() {
            let _ = write!(
                line,
                " baseline {} {} ({}) ratio {ratio:.3} x",
                number(self.baseline),
                self.unit,
                self.baseline_name
            );
        }
        let _ = write!(
            line,
            "  target {}{}",
            self.target.describe(&self.unit),
            verdict(self.met())
        );
        line
    }

    fn to_json(&self) -> Value {
        let (kind, limit) = match self.target {
            Target::RatioAtMost(t) => ("ratio_at_most", t),
            Target::RatioAtLeast(t) => ("ratio_at_least", t),
            Target::AtMost(t) => ("at_most", t),
            Target::AtLeast(t) => ("at_least", t),
            Target::None => ("none", 0.0),
        };
        json!({
            "name": self.name, "value": self.value, "unit": self.unit,
            "baseline_name": self.baseline_name,
            "baseline": self.baseline.is_finite().then_some(self.baseline),
            "target": kind, "limit": limit,
        })
    }

    fn from_json(value: &Value) -> anyhow::Result<Self> {
        let text = |key: &str| {
            value[key]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("no {key}"))
        };
        let number = |key: &str| value[key].as_f64().with_context(|| format!("no {key}"));
        let limit = number("limit")?;
        let target = match value["target"].as_str() {
            Some("ratio_at_most") => Target::RatioAtMost(limit),
            Some("ratio_at_least") => Target::RatioAtLeast(limit),
            Some("at_most") => Target::AtMost(limit),
            Some("at_least") => Target::AtLeast(limit),
            Some("none") => Target::None,
            other => anyhow::bail!("unknown target {other:?}"),
        };
        Ok(Self {
            name: text("name")?,
            value: number("value")?,
            unit: text("unit")?,
            baseline_name: text("baseline_name")?,
            baseline: value["baseline"].as_f64().unwrap_or(f64::NAN),
            target,
        })
    }
}

fn append(path: &Path, figure: &Figure) -> anyhow::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(file, "{}", figure.to_json())?;
    Ok(())
}

/// Every figure recorded in `path`, in order.
pub fn read(path: &Path) -> anyhow::Result<Vec<Figure>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(anyhow::Error::from)
                .and_then(|v| Figure::from_json(&v))
                .with_context(|| format!("{}:{}: not a figure", path.display(), i + 1))
        })
        .collect()
}

/// The figures as one Markdown table, with a last line counting targets met.
pub fn table(figures: &[Figure]) -> String {
    let mut out = String::from("| figure | value | baseline | ratio | target | met |\n|---|---:|---|---:|---|---|\n");
    for f in figures {
        let baseline = if f.ratio().is_some() {
            format!("{} {} ({})", number(f.baseline), f.unit, f.baseline_name)
        } else {
            "-".to_owned()
        };
        let ratio = f.ratio().map_or_else(|| "-".to_owned(), |r| format!("{r:.3} x"));
        let met = match f.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        let _ = writeln!(
            out,
            "| {} | {} {} | {baseline} | {ratio} | {} | {met} |",
            f.name,
            number(f.value),
            f.unit,
            f.target.describe(&f.unit)
        );
    }
    let judged = figures.iter().filter(|f| f.met().is_some()).count();
    let met = figures.iter().filter(|f| f.met() == Some(true)).count();
    let _ = writeln!(out, "\n{met} of {judged} targets met ({} figures).", figures.len());
    out
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => " (met)",
        Some(false) => " (MISSED)",
        None => "",
    }
}

/// A value with as many decimals as its size asks for.
fn number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1000.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_survive_the_file_and_are_judged_by_their_targets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("figures");
        let figures = [
            Figure::new("classifier", 45.0, "ns")
                .against("empty program", 30.0)
                .target(Target::RatioAtMost(1.8)),
            Figure::new("ledger", 15_000.0, "ops/s")
                .against("in memory", 150_000.0)
                .target(Target::AtLeast(20_000.0)),
            Figure::new("idle radio", 0.0, "packets/h").target(Target::AtMost(0.0)),
            Figure::new("streams", 400.0, "streams").target(Target::RatioAtLeast(1.0)),
        ];
        for f in &figures {
            append(&path, f).unwrap();
        }
        let read_back = read(&path).unwrap();
        assert_eq!(read_back.len(), figures.len());
        assert_eq!(read_back[0], figures[0]);
        assert!(read_back[2].baseline.is_nan());
        let met: Vec<_> = read_back.iter().map(Figure::met).collect();
        // 1.5 x ≤ 1.8; 15 000 < 20 000; 0 ≤ 0; no baseline, so a ratio target cannot be met.
        assert_eq!(met, [Some(true), Some(false), Some(true), Some(false)]);
        let table = table(&read_back);
        assert!(
            table.contains("| classifier | 45 ns | 30 ns (empty program) | 1.500 x | <= 1.8 x | yes |"),
            "{table}"
        );
        assert!(table.contains("| ledger | 15000 ops/s |"), "{table}");
        assert!(table.ends_with("2 of 4 targets met (4 figures).\n"), "{table}");
    }

    #[test]
    fn a_damaged_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("figures");
        std::fs::write(&path, "{\"name\": \"x\"}\n").unwrap();
        let error = format!("{:#}", read(&path).unwrap_err());
        assert!(error.contains("figures:1: not a figure"), "{error}");
    }
}
