//! Drift between two distributions of one feature, and the verdict it leads to. Numeric
//! features are compared on the reference's bins (PSI, Jensen-Shannon distance, Hellinger
//! distance, total variation distance) and on their quantile tables (Kolmogorov-Smirnov);
//! categorical ones on their frequent items plus "other" (TVD, chi-square). A verdict is per
//! feature and per window, never a mean over features: `ok`, `possible` or `drift` by
//! thresholds per metric, none below a minimum count, and a status that changes only after a
//! run of windows in a row ([`Judge`]), so one noisy minute pages nobody.

use serde::{Deserialize, Serialize};

/// A bin with no value counts as this share, so that PSI and the divergences stay finite (the
/// value Evidently and most PSI write-ups use).
pub const EPSILON: f64 = 1e-4;

/// Shares of counts (they sum to 1; all zero when there are none).
pub fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&c| if total == 0 { 0.0 } else { c as f64 / total as f64 })
        .collect()
}

/// Population stability index of `actual` against `expected` (shares over the same bins):
/// Σ (a − e) · ln(a / e), an empty bin counted as [`EPSILON`].
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(EPSILON), a.max(EPSILON));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// Kullback-Leibler divergence, natural log (terms with p = 0 are 0).
fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(&p, _)| p > 0.0)
        .map(|(&p, &q)| p * (p / q).ln())
        .sum()
}

/// Jensen-Shannon distance (the square root of the divergence, natural log; 0 … √ln 2), as
/// `scipy.spatial.distance.jensenshannon` gives.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let m: Vec<f64> = p.iter().zip(q).map(|(a, b)| (a + b) / 2.0).collect();
    ((kl(p, &m) + kl(q, &m)) / 2.0).max(0.0).sqrt()
}

/// Hellinger distance (0 … 1): √(½ Σ (√p − √q)²).
pub fn hellinger(p: &[f64], q: &[f64]) -> f64 {
    let sum: f64 = p.iter().zip(q).map(|(a, b)| (a.sqrt() - b.sqrt()).powi(2)).sum();
    (sum / 2.0).sqrt()
}

/// Total variation distance (0 … 1): ½ Σ |p − q|.
pub fn total_variation(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>() / 2.0
}

/// The CDF at `x` of a distribution given by its quantile table (`table[i]` is the
/// `i / (len − 1)` quantile), linear between entries.
fn cdf(table: &[f64], x: f64) -> f64 {
    let n = table.len();
    if n == 0 || x < table[0] {
        return 0.0;
    }
    if x >= table[n - 1] {
        return 1.0;
    }
    let above = table.partition_point(|&v| v <= x);
    let (lo, hi) = (table[above - 1], table[above]);
    let within = if hi > lo { (x - lo) / (hi - lo) } else { 1.0 };
    ((above - 1) as f64 + within) / (n - 1) as f64
}

/// Kolmogorov-Smirnov statistic (0 … 1) of two distributions given by quantile tables: the
/// largest gap between their CDFs, looked for at every entry of either table.
pub fn kolmogorov_smirnov(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .chain(b)
        .map(|&x| (cdf(a, x) - cdf(b, x)).abs())
        .fold(0.0, f64::max)
}

/// Pearson's chi-square statistic of observed counts against expected shares, and its
/// p-value (degrees of freedom: bins − 1). Bins expected empty are counted as [`EPSILON`].
pub fn chi_square(expected: &[f64], observed: &[u64]) -> (f64, f64) {
    let n: u64 = observed.iter().sum();
    if n == 0 || expected.len() < 2 {
        return (0.0, 1.0);
    }
    let statistic: f64 = expected
        .iter()
        .zip(observed)
        .map(|(&e, &o)| {
            let e = e.max(EPSILON) * n as f64;
            (o as f64 - e).powi(2) / e
        })
        .sum();
    let dof = (expected.len() - 1) as f64;
    (statistic, upper_gamma_regularized(dof / 2.0, statistic / 2.0))
}

/// ln Γ(x), Lanczos (g = 7, 9 terms), for x > 0.
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = C[1..]
        .iter()
        .enumerate()
        .fold(C[0], |s, (i, c)| s + c / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// Q(a, x) = Γ(a, x) / Γ(a): a series below a + 1, a continued fraction above (Numerical
/// Recipes' gammp/gammq).
fn upper_gamma_regularized(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let front = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut sum, mut term, mut ap) = (1.0 / a, 1.0 / a, a);
        for _ in 0..500 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-15 {
                break;
            }
        }
        return (1.0 - sum * front).clamp(0.0, 1.0);
    }
    let tiny = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / tiny;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..500 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        d = if d.abs() < tiny { tiny } else { d };
        c = b + an / c;
        c = if c.abs() < tiny { tiny } else { c };
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    (front * h).clamp(0.0, 1.0)
}

/// A drift metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Population stability index.
    Psi,
    /// Jensen-Shannon distance.
    JensenShannon,
    /// Hellinger distance.
    Hellinger,
    /// Total variation distance.
    Tvd,
    /// Kolmogorov-Smirnov statistic.
    Ks,
    /// Chi-square p-value (categorical; small means the mix changed).
    ChiSquareP,
}

impl Metric {
    /// The name used in the config, the API and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Psi => "psi",
            Metric::JensenShannon => "jensen_shannon",
            Metric::Hellinger => "hellinger",
            Metric::Tvd => "tvd",
            Metric::Ks => "ks",
            Metric::ChiSquareP => "chi_square_p",
        }
    }
}

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Within the thresholds.
    Ok,
    /// Past the first threshold of some metric.
    Possible,
    /// Past the second.
    Drift,
}

impl Status {
    /// `ok`, `possible`, `drift`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Possible => "possible",
            Status::Drift => "drift",
        }
    }
}

/// The two thresholds of a metric: past `possible` it is possible drift, past `drift` drift.
/// (For the chi-square p-value, below.)
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// First threshold.
    pub possible: f64,
    /// Second threshold.
    pub drift: f64,
}

/// The thresholds of each metric that gives a verdict (a metric without thresholds is
/// reported only), the minimum count and the hysteresis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// PSI: 0.1 / 0.25, the usual reading (below 0.1 stable, above 0.25 shifted).
    pub psi: Option<Thresholds>,
    /// Jensen-Shannon distance: 0.1 / 0.2.
    pub jensen_shannon: Option<Thresholds>,
    /// Hellinger: 0.1 / 0.2.
    pub hellinger: Option<Thresholds>,
    /// TVD: 0.1 / 0.2.
    pub tvd: Option<Thresholds>,
    /// KS statistic: 0.1 / 0.2 (the statistic, not its p-value, which flags any difference on
    /// large samples).
    pub ks: Option<Thresholds>,
    /// Chi-square p-value: none by default (like KS's p-value, it flags tiny changes once
    /// windows hold thousands of rows).
    pub chi_square_p: Option<Thresholds>,
    /// Values a window needs before any verdict (fewer: no verdict).
    pub min_count: u64,
    /// Windows in a row past a threshold before the status rises.
    pub raise_after: u32,
    /// Windows in a row below it before the status falls.
    pub clear_after: u32,
}

impl Default for Policy {
    fn default() -> Self {
        let t = |possible, drift| Some(Thresholds { possible, drift });
        Policy {
            psi: t(0.1, 0.25),
            jensen_shannon: t(0.1, 0.2),
            hellinger: t(0.1, 0.2),
            tvd: t(0.1, 0.2),
            ks: t(0.1, 0.2),
            chi_square_p: None,
            min_count: 500,
            raise_after: 2,
            clear_after: 2,
        }
    }
}

impl Policy {
    fn thresholds(&self, metric: Metric) -> Option<Thresholds> {
        match metric {
            Metric::Psi => self.psi,
            Metric::JensenShannon => self.jensen_shannon,
            Metric::Hellinger => self.hellinger,
            Metric::Tvd => self.tvd,
            Metric::Ks => self.ks,
            Metric::ChiSquareP => self.chi_square_p,
        }
    }

    /// The verdict of one window's scores of `count` values (`None` below the minimum count):
    /// the worst of the metrics that have thresholds.
    pub fn verdict(&self, scores: &[(Metric, f64)], count: u64) -> Option<Status> {
        if count < self.min_count {
            return None;
        }
        let worst = scores
            .iter()
            .filter_map(|&(metric, value)| {
                let t = self.thresholds(metric)?;
                // A p-value drifts downwards; every other metric upwards.
                let past = |limit: f64| match metric {
                    Metric::ChiSquareP => value < limit,
                    _ => value > limit,
                };
                Some(if past(t.drift) {
                    Status::Drift
                } else if past(t.possible) {
                    Status::Possible
                } else {
                    Status::Ok
                })
            })
            .max()
            .unwrap_or(Status::Ok);
        Some(worst)
    }
}

/// The status of one feature over successive windows, with hysteresis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Judge {
    /// The status reported.
    pub status: Status,
    /// The verdict of the windows in a row that disagree with it, and how many.
    pending: Option<(Status, u32)>,
}

impl Default for Judge {
    fn default() -> Self {
        Judge {
            status: Status::Ok,
            pending: None,
        }
    }
}

impl Judge {
    /// A judge resumed from a stored window's status and hysteresis state.
    pub fn resume(status: Status, pending: Option<(Status, u32)>) -> Judge {
        Judge { status, pending }
    }

    /// The verdict of the windows in a row that disagree with the status, and how many.
    pub fn pending(&self) -> Option<(Status, u32)> {
        self.pending
    }

    /// Takes a window's verdict (`None`: too few values, which changes nothing); returns the
    /// new status when it changed.
    pub fn window(&mut self, verdict: Option<Status>, policy: &Policy) -> Option<Status> {
        let verdict = verdict?;
        if verdict == self.status {
            self.pending = None;
            return None;
        }
        let run = match self.pending {
            Some((pending, n)) if pending == verdict => n + 1,
            _ => 1,
        };
        let needed = if verdict > self.status {
            policy.raise_after
        } else {
            policy.clear_after
        };
        if run >= needed.max(1) {
            self.status = verdict;
            self.pending = None;
            Some(verdict)
        } else {
            self.pending = Some((verdict, run));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_score_zero_and_disjoint_ones_the_maximum() {
        let p = shares(&[10, 20, 30, 40]);
        assert_eq!(psi(&p, &p), 0.0);
        assert_eq!(jensen_shannon(&p, &p), 0.0);
        assert!(hellinger(&p, &p).abs() < 1e-12);
        assert_eq!(total_variation(&p, &p), 0.0);
        let (a, b) = ([1.0, 0.0], [0.0, 1.0]);
        assert!((jensen_shannon(&a, &b) - 2f64.ln().sqrt()).abs() < 1e-12);
        assert!((hellinger(&a, &b) - 1.0).abs() < 1e-12);
        assert_eq!(total_variation(&a, &b), 1.0);
    }

    #[test]
    fn ks_of_shifted_uniform_quantile_tables() {
        let a: Vec<f64> = (0..=100).map(|i| i as f64).collect();
        let b: Vec<f64> = (0..=100).map(|i| i as f64 + 20.0).collect();
        assert!((kolmogorov_smirnov(&a, &b) - 0.2).abs() < 1e-9);
        assert_eq!(kolmogorov_smirnov(&a, &a), 0.0);
    }

    #[test]
    fn chi_square_p_values_match_known_ones() {
        // 1 degree of freedom, statistic 3.841: p = 0.05.
        assert!((upper_gamma_regularized(0.5, 3.841_458_820_694_124 / 2.0) - 0.05).abs() < 1e-9);
        // 10 degrees of freedom, statistic 18.307: p = 0.05.
        assert!((upper_gamma_regularized(5.0, 18.307_038_053_275_146 / 2.0) - 0.05).abs() < 1e-9);
        let (statistic, p) = chi_square(&[0.5, 0.5], &[50, 50]);
        assert_eq!((statistic, p), (0.0, 1.0));
    }

    #[test]
    fn the_verdict_needs_the_minimum_count_and_takes_the_worst_metric() {
        let policy = Policy::default();
        let scores = [(Metric::Psi, 0.05), (Metric::Tvd, 0.15), (Metric::ChiSquareP, 0.0)];
        assert_eq!(policy.verdict(&scores, 499), None);
        assert_eq!(policy.verdict(&scores, 500), Some(Status::Possible));
        assert_eq!(policy.verdict(&[(Metric::Psi, 0.3)], 1000), Some(Status::Drift));
    }

    #[test]
    fn the_status_rises_and_clears_only_after_runs_of_windows() {
        let policy = Policy::default();
        let mut judge = Judge::default();
        assert_eq!(judge.window(Some(Status::Drift), &policy), None, "one noisy window");
        assert_eq!(judge.window(Some(Status::Ok), &policy), None);
        assert_eq!(judge.window(Some(Status::Drift), &policy), None);
        assert_eq!(judge.window(None, &policy), None, "too few values change nothing");
        assert_eq!(judge.window(Some(Status::Drift), &policy), Some(Status::Drift));
        assert_eq!(judge.window(Some(Status::Ok), &policy), None);
        assert_eq!(judge.window(Some(Status::Ok), &policy), Some(Status::Ok));
        assert_eq!(judge.status, Status::Ok);
    }
}
