//! Figures the reports share: percentiles of durations (median, p90), rates, and
//! durations for people ("3d 4h").

use serde::Serialize;

/// The `p`-th percentile (0.0..=1.0) of sorted values, interpolated linearly between
/// the two nearest ranks (as spreadsheets' PERCENTILE and numpy's default do), rounded
/// to whole units; `None` for no values. The median of an even count is the mean of
/// the middle two.
pub fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    let last = sorted.len().checked_sub(1)?;
    let rank = p.clamp(0.0, 1.0) * last as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    let (a, b) = (sorted[lo] as f64, sorted[hi] as f64);
    Some((a + (b - a) * (rank - lo as f64)).round() as i64)
}

/// How many durations there were, their median and 90th percentile (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct Spread {
    pub count: usize,
    pub median_ms: Option<i64>,
    pub p90_ms: Option<i64>,
}

impl Spread {
    pub fn of(mut values: Vec<i64>) -> Self {
        values.sort_unstable();
        Self {
            count: values.len(),
            median_ms: percentile(&values, 0.5),
            p90_ms: percentile(&values, 0.9),
        }
    }
}

/// `part` of `whole` in percent with one decimal; `None` when `whole` is 0.
pub fn rate(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 * 1000.0 / whole as f64).round() / 10.0)
}

/// "25.0 %", or "-" without a rate.
pub fn rate_text(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |r| format!("{r:.1} %"))
}

/// A duration in its two largest units: "3d 4h", "5h 12m", "4m 10s", "12s"; "<1s"
/// below a second. Negative durations get a minus sign.
pub fn human(ms: i64) -> String {
    if ms < 0 {
        return format!("-{}", human(ms.saturating_neg()));
    }
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return "<1s".into();
    }
    let secs = ms / 1000;
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
    ];
    let first = parts.iter().position(|(n, _)| *n > 0).unwrap_or(3);
    parts[first..]
        .iter()
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`human`] of an optional duration, "-" without one.
pub fn human_or_dash(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".into(), human)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7], 0.5), Some(7));
        assert_eq!(percentile(&[1, 2, 9], 0.5), Some(2));
        assert_eq!(percentile(&[1, 2, 4, 9], 0.5), Some(3));
        assert_eq!(percentile(&[10, 20], 0.5), Some(15));
    }

    #[test]
    fn p90_interpolates_between_ranks() {
        let ten: Vec<i64> = (1..=10).map(|i| i * 10).collect();
        // rank 0.9 * 9 = 8.1: 90 + 0.1 * (100 - 90)
        assert_eq!(percentile(&ten, 0.9), Some(91));
        assert_eq!(percentile(&[5], 0.9), Some(5));
        assert_eq!(percentile(&[0, 100], 0.9), Some(90));
        assert_eq!(percentile(&ten, 1.0), Some(100));
        assert_eq!(percentile(&ten, 0.0), Some(10));
    }

    #[test]
    fn spread_sorts_first() {
        let s = Spread::of(vec![30, 10, 20]);
        assert_eq!(s.count, 3);
        assert_eq!(s.median_ms, Some(20));
        assert_eq!(s.p90_ms, Some(28));
        assert_eq!(Spread::of(vec![]), Spread::default());
    }

    #[test]
    fn rates_round_to_one_decimal() {
        assert_eq!(rate(30, 120), Some(25.0));
        assert_eq!(rate(1, 3), Some(33.3));
        assert_eq!(rate(2, 3), Some(66.7));
        assert_eq!(rate(1, 0), None);
        assert_eq!(rate_text(Some(25.0)), "25.0 %");
        assert_eq!(rate_text(None), "-");
    }

    #[test]
    fn durations_for_people() {
        let h = 3_600_000;
        assert_eq!(human(0), "0s");
        assert_eq!(human(999), "<1s");
        assert_eq!(human(12_000), "12s");
        assert_eq!(human(250_000), "4m 10s");
        assert_eq!(human(5 * h + 12 * 60_000 + 5_000), "5h 12m");
        assert_eq!(human(3 * 24 * h + 4 * h + 59 * 60_000), "3d 4h");
        assert_eq!(human(2 * 24 * h + 30 * 60_000), "2d");
        assert_eq!(human(h), "1h");
        assert_eq!(human(-90_000), "-1m 30s");
        assert_eq!(human_or_dash(None), "-");
    }
}
