//! How well the rules predict who buys: the MQL decision against real conversions
//! (precision, recall, lift over the base rate), the ROC AUC of the scores, and the
//! conversion rate per score decile (a calibration table).

use std::cmp::Ordering;

/// One lead's scores, MQL decision and outcome.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LeadOutcome {
    pub email: String,
    /// Scores just before the lead converted (its first move into an outcome stage, or
    /// its end state when converted only by a label), else at the end of the replay.
    pub fit: f64,
    pub interest: f64,
    /// The MQL decision: rules moved the lead into the MQL stage (config
    /// `backtest.mql_stage`, default "mql"), before it converted.
    pub mql: bool,
    pub converted: bool,
}

/// The figures over all leads; a ratio without a denominator is `None`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcomes {
    pub leads: usize,
    pub converted: usize,
    /// converted / leads
    pub base_rate: Option<f64>,
    /// Leads with the MQL decision.
    pub mql: usize,
    /// mql && converted
    pub true_positives: usize,
    /// true positives / mql
    pub precision: Option<f64>,
    /// true positives / converted
    pub recall: Option<f64>,
    /// precision / base rate
    pub lift: Option<f64>,
    /// ROC AUC of fit (ties count 1/2); `None` unless there are leads of both classes.
    pub auc_fit: Option<f64>,
    pub auc_interest: Option<f64>,
    /// Of fit + interest.
    pub auc_fit_interest: Option<f64>,
    pub fit_deciles: Vec<Decile>,
    pub interest_deciles: Vec<Decile>,
}

/// The leads of one score decile (only deciles holding leads are listed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decile {
    /// 1..=10, 10 = the highest scores.
    pub decile: u8,
    pub leads: usize,
    pub converted: usize,
    pub rate: Option<f64>,
    /// The lowest and highest score in the decile.
    pub min: f64,
    pub max: f64,
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// The figures for `leads`.
pub fn outcomes(leads: &[LeadOutcome]) -> Outcomes {
    let n = leads.len();
    let converted = leads.iter().filter(|l| l.converted).count();
    let mql = leads.iter().filter(|l| l.mql).count();
    let true_positives = leads.iter().filter(|l| l.mql && l.converted).count();
    let base_rate = ratio(converted, n);
    let precision = ratio(true_positives, mql);
    let lift = match (precision, base_rate) {
        (Some(p), Some(b)) if b > 0.0 => Some(p / b),
        _ => None,
    };
    let scored = |score: fn(&LeadOutcome) -> f64| -> Vec<(f64, bool)> {
        leads.iter().map(|l| (score(l), l.converted)).collect()
    };
    let fit = sorted(scored(|l| l.fit));
    let interest = sorted(scored(|l| l.interest));
    let both = sorted(scored(|l| l.fit + l.interest));
    Outcomes {
        leads: n,
        converted,
        base_rate,
        mql,
        true_positives,
        precision,
        recall: ratio(true_positives, converted),
        lift,
        auc_fit: auc(&fit),
        auc_interest: auc(&interest),
        auc_fit_interest: auc(&both),
        fit_deciles: deciles(&fit),
        interest_deciles: deciles(&interest),
    }
}

/// Scores in ascending order (NaN last, as `f64::total_cmp` orders them).
fn sorted(mut scores: Vec<(f64, bool)>) -> Vec<(f64, bool)> {
    scores.sort_by(|a, b| a.0.total_cmp(&b.0));
    scores
}

/// The runs of equal scores in sorted `scores`: (start, end) index ranges.
fn ties(scores: &[(f64, bool)]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= scores.len() {
            return None;
        }
        let mut end = start + 1;
        while end < scores.len() && scores[end].0.total_cmp(&scores[start].0) == Ordering::Equal {
            end += 1;
        }
        let run = (start, end);
        start = end;
        Some(run)
    })
}

/// The ROC AUC from the Mann-Whitney U statistic: the chance that a converted lead
/// scores higher than one that did not convert, ties counting one half. Equal scores
/// share their average rank.
fn auc(scores: &[(f64, bool)]) -> Option<f64> {
    let pos = scores.iter().filter(|s| s.1).count();
    let neg = scores.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut rank_sum = 0.0;
    for (start, end) in ties(scores) {
        // Ranks start + 1 ..= end, averaged.
        let rank = (start + 1 + end) as f64 / 2.0;
        let converted = scores[start..end].iter().filter(|s| s.1).count();
        rank_sum += rank * converted as f64;
    }
    let pos_f = pos as f64;
    let u = rank_sum - pos_f * (pos_f + 1.0) / 2.0;
    Some(u / (pos_f * neg as f64))
}

/// Deciles by rank in sorted `scores`: position i (from 0) of n falls in decile
/// `ceil((i + 1) * 10 / n)`, so the highest score is always in decile 10. Equal scores all go to the decile of the middle of their run, so
/// one score never spans two deciles; with fewer than 10 leads (or many ties) some
/// deciles stay empty and are left out.
fn deciles(scores: &[(f64, bool)]) -> Vec<Decile> {
    let n = scores.len();
    let mut out: Vec<Decile> = Vec::new();
    for (start, end) in ties(scores) {
        let middle = (start + end - 1) / 2;
        let decile = ((middle + 1) * 10).div_ceil(n) as u8;
        let score = scores[start].0;
        let converted = scores[start..end].iter().filter(|s| s.1).count();
        match out.last_mut() {
            Some(d) if d.decile == decile => {
                d.leads += end - start;
                d.converted += converted;
                d.max = score;
            }
            _ => out.push(Decile {
                decile,
                leads: end - start,
                converted,
                rate: None,
                min: score,
                max: score,
            }),
        }
    }
    for d in &mut out {
        d.rate = ratio(d.converted, d.leads);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(fit: f64, interest: f64, mql: bool, converted: bool) -> LeadOutcome {
        LeadOutcome {
            email: format!("{fit}-{interest}@example.com"),
            fit,
            interest,
            mql,
            converted,
        }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    /// The AUC by its definition: over all pairs (converted, not converted).
    fn auc_by_pairs(leads: &[LeadOutcome], score: fn(&LeadOutcome) -> f64) -> f64 {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for p in leads.iter().filter(|l| l.converted) {
            for q in leads.iter().filter(|l| !l.converted) {
                pairs += 1.0;
                wins += match score(p).total_cmp(&score(q)) {
                    Ordering::Greater => 1.0,
                    Ordering::Equal => 0.5,
                    Ordering::Less => 0.0,
                };
            }
        }
        wins / pairs
    }

    #[test]
    fn the_mql_decision_against_conversions_by_hand() {
        // 10 leads, 4 converted (base rate 0.4); 5 MQLs of which 3 converted.
        let leads = vec![
            lead(10.0, 5.0, true, true),
            lead(20.0, 15.0, true, true),
            lead(30.0, 25.0, true, true),
            lead(5.0, 35.0, true, false),
            lead(15.0, 45.0, true, false),
            lead(25.0, 10.0, false, true),
            lead(1.0, 0.0, false, false),
            lead(2.0, 0.0, false, false),
            lead(3.0, 0.0, false, false),
            lead(4.0, 0.0, false, false),
        ];
        let o = outcomes(&leads);
        assert_eq!(
            (o.leads, o.converted, o.mql, o.true_positives),
            (10, 4, 5, 3)
        );
        assert!(close(o.base_rate, 0.4));
        assert!(close(o.precision, 0.6));
        assert!(close(o.recall, 0.75));
        assert!(close(o.lift, 1.5));
        // Fit: converted 10, 20, 30, 25; others 5, 15, 1, 2, 3, 4. Pairs won:
        // 10 beats 5,1,2,3,4 (5); 20, 30 and 25 beat all 6 (18): 23 of 24.
        assert!(close(o.auc_fit, 23.0 / 24.0), "{:?}", o.auc_fit);
        // Interest: converted 5, 15, 25, 10; others 35, 45, 0, 0, 0, 0: each beats 4.
        assert!(close(o.auc_interest, 16.0 / 24.0), "{:?}", o.auc_interest);
        assert!(close(
            o.auc_fit_interest,
            auc_by_pairs(&leads, |l| l.fit + l.interest)
        ));
        // One lead per decile; fit order 1,2,3,4,5,10,15,20,25,30.
        let rates: Vec<(u8, usize, usize)> = o
            .fit_deciles
            .iter()
            .map(|d| (d.decile, d.leads, d.converted))
            .collect();
        assert_eq!(
            rates,
            vec![
                (1, 1, 0),
                (2, 1, 0),
                (3, 1, 0),
                (4, 1, 0),
                (5, 1, 0),
                (6, 1, 1),
                (7, 1, 0),
                (8, 1, 1),
                (9, 1, 1),
                (10, 1, 1)
            ]
        );
        assert_eq!((o.fit_deciles[9].min, o.fit_deciles[9].max), (30.0, 30.0));
        // Interest: the four zeros (positions 0..4, middle 1) share decile 2.
        let first = &o.interest_deciles[0];
        assert_eq!((first.decile, first.leads, first.converted), (2, 4, 0));
        assert!(close(first.rate, 0.0));
    }

    #[test]
    fn ties_count_one_half_and_match_the_pairwise_definition() {
        let leads: Vec<LeadOutcome> = (0..200)
            .map(|i| {
                // Coarse scores (many ties), conversions more likely at high scores.
                let fit = f64::from((i * 7919 % 13) as u32);
                let interest = f64::from((i * 104_729 % 7) as u32) * 10.0;
                let converted = (i * 31 % 17) < (fit as usize + interest as usize / 10) / 2;
                lead(fit, interest, i % 3 == 0, converted)
            })
            .collect();
        let o = outcomes(&leads);
        assert!(close(o.auc_fit, auc_by_pairs(&leads, |l| l.fit)));
        assert!(close(o.auc_interest, auc_by_pairs(&leads, |l| l.interest)));
        assert!(close(
            o.auc_fit_interest,
            auc_by_pairs(&leads, |l| l.fit + l.interest)
        ));
        // Every lead is in exactly one decile, deciles ascend, scores do not overlap.
        for ds in [&o.fit_deciles, &o.interest_deciles] {
            assert_eq!(ds.iter().map(|d| d.leads).sum::<usize>(), 200);
            assert_eq!(ds.iter().map(|d| d.converted).sum::<usize>(), o.converted);
            for w in ds.windows(2) {
                assert!(w[0].decile < w[1].decile && w[0].max < w[1].min);
            }
        }
    }

    #[test]
    fn a_perfect_and_an_inverted_score() {
        let leads: Vec<LeadOutcome> = (0..20)
            .map(|i| lead(f64::from(i), f64::from(20 - i), false, i >= 15))
            .collect();
        let o = outcomes(&leads);
        assert!(close(o.auc_fit, 1.0));
        assert!(close(o.auc_interest, 0.0));
        // Two leads per decile: the top two deciles (16..19) are converted, and 15 in 8.
        let d: Vec<usize> = o.fit_deciles.iter().map(|d| d.converted).collect();
        assert_eq!(d, vec![0, 0, 0, 0, 0, 0, 0, 1, 2, 2]);
        assert_eq!(o.mql, 0);
        assert_eq!(o.precision, None);
        assert_eq!(o.lift, None);
        assert!(close(o.recall, 0.0));
    }

    #[test]
    fn edge_cases_give_none_rather_than_nonsense() {
        let empty = outcomes(&[]);
        assert_eq!(empty.leads, 0);
        assert_eq!(empty.base_rate, None);
        assert_eq!(empty.precision, None);
        assert_eq!(empty.recall, None);
        assert_eq!(empty.auc_fit, None);
        assert!(empty.fit_deciles.is_empty());

        // Nobody converted: no recall, no AUC, lift undefined (base rate 0).
        let none: Vec<LeadOutcome> = (0..5)
            .map(|i| lead(f64::from(i), 0.0, true, false))
            .collect();
        let o = outcomes(&none);
        assert!(close(o.base_rate, 0.0));
        assert!(close(o.precision, 0.0));
        assert_eq!((o.recall, o.lift, o.auc_fit), (None, None, None));

        // Everybody converted: precision 1, lift 1, no AUC.
        let all: Vec<LeadOutcome> = (0..5)
            .map(|i| lead(f64::from(i), 0.0, i < 2, true))
            .collect();
        let o = outcomes(&all);
        assert!(close(o.precision, 1.0));
        assert!(close(o.recall, 0.4));
        assert!(close(o.lift, 1.0));
        assert_eq!(o.auc_interest, None);

        // All the same score: one decile, AUC one half.
        let same: Vec<LeadOutcome> = (0..30).map(|i| lead(7.0, 7.0, false, i % 3 == 0)).collect();
        let o = outcomes(&same);
        assert!(close(o.auc_fit, 0.5));
        assert_eq!(o.fit_deciles.len(), 1);
        let d = &o.fit_deciles[0];
        assert_eq!(
            (d.decile, d.leads, d.converted, d.min, d.max),
            (5, 30, 10, 7.0, 7.0)
        );

        // Fewer than 10 leads: one decile each, spread over 1..=10, the highest in 10.
        let few: Vec<LeadOutcome> = (0..3)
            .map(|i| lead(f64::from(i), 0.0, false, i == 2))
            .collect();
        let o = outcomes(&few);
        let ds: Vec<u8> = o.fit_deciles.iter().map(|d| d.decile).collect();
        assert_eq!(ds, vec![4, 7, 10]);
    }
}
