//! The stored pause of delivery ([`crate::mail::breaker`]): one row while the SMTP
//! server refuses the sender, none while delivery runs.

use super::{Store, StoreError, in_tx, read, sql};
use crate::clock::{from_ms, to_ms};
use crate::mail::breaker::Pause;

impl Store {
    /// The pause of delivery, if delivery is paused.
    pub async fn mail_pause(&self) -> Result<Option<Pause>, StoreError> {
        let row: Option<(i64, i64, String, i64)> = read!(self, |pool, DB| {
            sqlx::query_as(
                "SELECT since, next_probe, answer, refused_probes FROM mail_pause WHERE id = 1",
            )
            .fetch_optional(pool)
            .await?
        });
        Ok(
            row.map(|(since, next_probe, answer, refused_probes)| Pause {
                since: from_ms(since),
                next_probe: from_ms(next_probe),
                answer,
                refused_probes: u32::try_from(refused_probes).unwrap_or(u32::MAX),
            }),
        )
    }

    /// Stores the pause (`None`: delivery runs).
    pub async fn set_mail_pause(&self, pause: Option<&Pause>) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        in_tx!(tx, |tx, DB| {
            sqlx::query("DELETE FROM mail_pause")
                .execute(&mut **tx)
                .await?;
            if let Some(p) = pause {
                sqlx::query(sql::<DB>(
                    "INSERT INTO mail_pause (id, since, next_probe, answer, refused_probes) \
                     VALUES (1, ?, ?, ?, ?)",
                ))
                .bind(to_ms(p.since))
                .bind(to_ms(p.next_probe))
                .bind(&p.answer)
                .bind(i64::from(p.refused_probes))
                .execute(&mut **tx)
                .await?;
            }
        });
        tx.commit().await?;
        Ok(())
    }
}
