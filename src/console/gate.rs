//! The sign-in throttle: after `ui.max_failures` failed sign-ins from one client address
//! or for one user name within `ui.lockout`, further attempts from that address (or for
//! that name) are refused until the lockout has passed, whether the password is right
//! or not. A good sign-in clears the name's and the address's count.

use std::collections::HashMap;
use std::sync::Mutex;

/// Addresses and names tracked at most; the oldest entries are dropped beyond that.
const MAX_TRACKED: usize = 50_000;

#[derive(Debug, Clone, Copy)]
struct Tally {
    failures: u32,
    first_ms: i64,
    locked_until: i64,
}

/// Counts failed sign-ins per key (`ip:ADDRESS`, `name:NAME`).
pub struct Gate {
    max_failures: u32,
    lockout_ms: i64,
    tallies: Mutex<HashMap<String, Tally>>,
}

impl Gate {
    pub fn new(max_failures: u32, lockout_ms: i64) -> Self {
        Self {
            max_failures: max_failures.max(1),
            lockout_ms: lockout_ms.max(1),
            tallies: Mutex::new(HashMap::new()),
        }
    }

    /// When any of `keys` is locked: until when (ms).
    pub fn locked(&self, keys: &[String], now_ms: i64) -> Option<i64> {
        let t = self.tallies.lock().expect("sign-in tallies");
        keys.iter()
            .filter_map(|k| t.get(k))
            .map(|t| t.locked_until)
            .filter(|&until| until > now_ms)
            .max()
    }

    /// Counts a failure for each of `keys`.
    pub fn failed(&self, keys: &[String], now_ms: i64) {
        let mut t = self.tallies.lock().expect("sign-in tallies");
        if t.len() >= MAX_TRACKED {
            let window = self.lockout_ms;
            t.retain(|_, v| v.locked_until > now_ms || v.first_ms + window > now_ms);
            if t.len() >= MAX_TRACKED {
                let mut ages: Vec<(i64, String)> =
                    t.iter().map(|(k, v)| (v.first_ms, k.clone())).collect();
                ages.sort();
                for (_, k) in ages.into_iter().take(MAX_TRACKED / 2) {
                    t.remove(&k);
                }
            }
        }
        for k in keys {
            let e = t.entry(k.clone()).or_insert(Tally {
                failures: 0,
                first_ms: now_ms,
                locked_until: 0,
            });
            // A count older than the lockout window starts over.
            if e.first_ms + self.lockout_ms <= now_ms {
                *e = Tally {
                    failures: 0,
                    first_ms: now_ms,
                    locked_until: 0,
                };
            }
            e.failures += 1;
            if e.failures >= self.max_failures {
                e.locked_until = now_ms + self.lockout_ms;
            }
        }
    }

    /// Clears the counts of `keys` (a good sign-in).
    pub fn passed(&self, keys: &[String]) {
        let mut t = self.tallies.lock().expect("sign-in tallies");
        for k in keys {
            t.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fifth_failure_locks_for_the_lockout_then_it_opens_again() {
        let g = Gate::new(5, 60_000);
        let keys = vec!["ip:192.0.2.1".to_string(), "name:anna".to_string()];
        for i in 0..4 {
            g.failed(&keys, 1_000 + i);
            assert_eq!(g.locked(&keys, 1_000 + i), None);
        }
        g.failed(&keys, 2_000);
        assert_eq!(g.locked(&keys, 2_001), Some(62_000));
        // Another address for the same name is locked too; another name from a new
        // address is not.
        assert!(
            g.locked(&["ip:192.0.2.9".into(), "name:anna".into()], 3_000)
                .is_some()
        );
        assert!(
            g.locked(&["ip:192.0.2.9".into(), "name:ben".into()], 3_000)
                .is_none()
        );
        assert_eq!(g.locked(&keys, 62_000), None);
        // Old failures do not add up with new ones.
        g.failed(&keys, 200_000);
        assert_eq!(g.locked(&keys, 200_001), None);
        g.passed(&keys);
        assert_eq!(g.locked(&keys, 200_001), None);
    }
}
