//! The security audit log: append-only (the database refuses updates and deletes) and
//! hash-chained, so that the audit administrator can verify nobody with database access edited,
//! removed or reordered an entry afterwards.

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::error::Result;

/// An entry to append.
#[derive(Debug, Clone)]
pub struct NewAudit<'a> {
    /// Who did it: a username, or `plugin:<id>`, `node`.
    pub actor: &'a str,
    /// What, as `<kind>.<verb>`: `auth.login`, `user.create`, `plugin.approve`, …
    pub action: &'a str,
    /// What it was done to: `user:alice`, `plugin:acme-sms`, `policy:lotus.api`, ….
    pub target: &'a str,
    /// `ok`, `denied` or `failed`.
    pub outcome: &'a str,
    pub detail: &'a Value,
    pub at: i64,
}

/// A stored entry with its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRow {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// What a walk along the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    /// Entries checked.
    pub entries: i64,
    /// The first entry that does not follow from the one before it, and why.
    pub broken: Option<(i64, String)>,
}

const AUDIT_COLUMNS: &str = "seq, at, actor, action, target, outcome, detail, prev_hash, hash";

/// Entries read at once while verifying.
const VERIFY_PAGE: i64 = 1000;

/// The hash of an entry: over the previous hash and every field, each length-prefixed so that
/// no shift of text between fields gives the same input.
fn entry_hash(prev: &str, seq: i64, at: i64, fields: [&str; 5]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    for f in fields {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f.as_bytes());
    }
    hex::encode(h.finalize())
}

struct StoredEntry {
    row: AuditRow,
    /// The detail exactly as stored, which the hash covers.
    detail_text: String,
}

fn audit_row(r: &AnyRow) -> Result<StoredEntry> {
    let detail_text: String = r.try_get("detail")?;
    Ok(StoredEntry {
        row: AuditRow {
            seq: r.try_get("seq")?,
            at: r.try_get("at")?,
            actor: r.try_get("actor")?,
            action: r.try_get("action")?,
            target: r.try_get("target")?,
            outcome: r.try_get("outcome")?,
            detail: serde_json::from_str(&detail_text).unwrap_or(Value::Null),
            prev_hash: r.try_get("prev_hash")?,
            hash: r.try_get("hash")?,
        },
        detail_text,
    })
}

impl Store {
    /// Appends an entry at the end of the chain.
    pub async fn append_audit(&self, e: &NewAudit<'_>) -> Result<AuditRow> {
        let detail = e.detail.to_string();
        let mut tx = self.write().begin().await?;
        // Bumping the head locks its row until commit: concurrent appends queue behind it and
        // each chains onto the one before.
        let head =
            sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
                .fetch_one(&mut *tx)
                .await?;
        let seq: i64 = head.try_get("seq")?;
        let prev: String = head.try_get("hash")?;
        let hash = entry_hash(
            &prev,
            seq,
            e.at,
            [e.actor, e.action, e.target, e.outcome, &detail],
        );
        sqlx::query(
            "INSERT INTO audit_log (seq, at, actor, action, target, outcome, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(seq)
        .bind(e.at)
        .bind(e.actor)
        .bind(e.action)
        .bind(e.target)
        .bind(e.outcome)
        .bind(&detail)
        .bind(&prev)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(AuditRow {
            seq,
            at: e.at,
            actor: e.actor.to_string(),
            action: e.action.to_string(),
            target: e.target.to_string(),
            outcome: e.outcome.to_string(),
            detail: e.detail.clone(),
            prev_hash: prev,
            hash,
        })
    }

    /// Entries after `after_seq` (0: from the start), oldest first, at most `limit`.
    pub async fn audit_entries(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after_seq)
        .bind(limit)
        .fetch_all(self.read())
        .await?;
        rows.iter().map(|r| Ok(audit_row(r)?.row)).collect()
    }

    /// Walks the whole chain: every entry must follow its predecessor (consecutive sequence
    /// numbers, its `prev_hash` the predecessor's hash) and hash to what it says, and the last
    /// must be the head the appends left.
    pub async fn verify_audit(&self) -> Result<AuditVerification> {
        let (mut expected_seq, mut prev, mut entries) = (1i64, String::new(), 0i64);
        loop {
            let rows = sqlx::query(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2"
            ))
            .bind(expected_seq)
            .bind(VERIFY_PAGE)
            .fetch_all(self.read())
            .await?;
            let n = rows.len() as i64;
            for r in &rows {
                let StoredEntry { row, detail_text } = audit_row(r)?;
                let broken = |why: String| {
                    Ok(AuditVerification {
                        entries,
                        broken: Some((row.seq, why)),
                    })
                };
                if row.seq != expected_seq {
                    return broken(format!(
                        "entry {expected_seq} is missing (the next one is {})",
                        row.seq
                    ));
                }
                if row.prev_hash != prev {
                    return broken("it does not chain onto the entry before it".into());
                }
                let hash = entry_hash(
                    &prev,
                    row.seq,
                    row.at,
                    [
                        &row.actor,
                        &row.action,
                        &row.target,
                        &row.outcome,
                        &detail_text,
                    ],
                );
                if hash != row.hash {
                    return broken("its content does not match its hash: it was changed".into());
                }
                entries += 1;
                expected_seq += 1;
                prev = row.hash;
            }
            if n < VERIFY_PAGE {
                break;
            }
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(self.read())
            .await?;
        let (head_seq, head_hash): (i64, String) = (head.try_get("seq")?, head.try_get("hash")?);
        if head_seq != entries || head_hash != prev {
            return Ok(AuditVerification {
                entries,
                broken: Some((
                    entries + 1,
                    format!(
                        "the log ends at entry {entries} but {head_seq} were appended: entries at the end were removed"
                    ),
                )),
            });
        }
        Ok(AuditVerification {
            entries,
            broken: None,
        })
    }
}
