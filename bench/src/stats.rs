//! Latency histograms (nanoseconds, `hdrhistogram`) and what is reported from them: a
//! summary in microseconds and a percentile curve for the plots.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Longest latency a histogram holds; anything longer is clamped to it.
pub const MAX_RECORDED: Duration = Duration::from_secs(120);
/// Significant digits kept: 0.1% resolution at any magnitude.
const SIGNIFICANT_DIGITS: u8 = 3;

/// An empty latency histogram in nanoseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_RECORDED.as_nanos() as u64, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Record one latency, clamped to the histogram's range.
pub fn record(h: &mut Histogram<u64>, latency: Duration) {
    let ns = latency.as_nanos().clamp(1, MAX_RECORDED.as_nanos()) as u64;
    h.saturating_record(ns);
}

/// The figures printed and compared, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

pub fn summarize(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    LatencySummary {
        count: h.len(),
        mean_us: h.mean() / 1000.0,
        p50_us: us(h.value_at_quantile(0.50)),
        p90_us: us(h.value_at_quantile(0.90)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
    }
}

/// Points `(percentile, microseconds)` for a latency-by-percentile plot: evenly spaced in
/// "nines" (`-log10(1 - p)`) up to what the sample count supports, then the maximum.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let max_nines = (h.len() as f64).log10().max(1.0);
    let mut points = Vec::new();
    let steps = (max_nines * 10.0).floor() as u32;
    for step in 0..=steps {
        let nines = step as f64 / 10.0;
        let q = 1.0 - 10f64.powf(-nines);
        points.push([q * 100.0, us(h.value_at_quantile(q))]);
    }
    points.push([100.0, us(h.max())]);
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_curve_of_known_values() {
        let mut h = new_histogram();
        for i in 1..=1000u64 {
            record(&mut h, Duration::from_micros(i));
        }
        let s = summarize(&h);
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() <= 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() <= 1.0, "{s:?}");
        let curve = percentile_curve(&h);
        assert_eq!(curve.first().map(|p| p[0]), Some(0.0));
        assert_eq!(curve.last().map(|p| p[0]), Some(100.0));
        assert!(curve.windows(2).all(|w| w[0][1] <= w[1][1]));
        assert_eq!(summarize(&new_histogram()), LatencySummary::default());
    }
}
