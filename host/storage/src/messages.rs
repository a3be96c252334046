//! The message center: each console user's notifications (a task assigned, an event escalated)
//! and messages from other users. A user only ever reads, marks or deletes their own.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Store;
use crate::error::{Result, StorageError};
use crate::events::EventWrites;
use crate::sql::{Sql, insert_rows};

/// Message kinds: sent by the system, or by another user.
pub const MESSAGE_NOTIFICATION: &str = "notification";
pub const MESSAGE_MESSAGE: &str = "message";

/// A message to deliver to one user.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub username: &'a str,
    /// [`MESSAGE_NOTIFICATION`] or [`MESSAGE_MESSAGE`].
    pub kind: &'a str,
    pub title: &'a str,
    pub body: &'a str,
    /// The severity of what it is about (an event's or alarm's level), if any.
    pub level: Option<i64>,
    /// What it is about, for the console to link to: `task:<id>`, `event:<id>`, ….
    pub link: Option<&'a str>,
    /// The user who sent it; `None` for the system.
    pub sender: Option<&'a str>,
    pub at: i64,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub id: i64,
    pub username: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub level: Option<i64>,
    pub link: Option<String>,
    pub sender: Option<String>,
    /// `None` while unread.
    pub read_at: Option<i64>,
    pub created_at: i64,
}

const MESSAGE_COLUMNS: &str =
    "id, username, kind, title, body, level, link, sender, read_at, created_at";

fn message_row(r: &AnyRow) -> Result<MessageRow> {
    Ok(MessageRow {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        kind: r.try_get("kind")?,
        title: r.try_get("title")?,
        body: r.try_get("body")?,
        level: r.try_get("level")?,
        link: r.try_get("link")?,
        sender: r.try_get("sender")?,
        read_at: r.try_get("read_at")?,
        created_at: r.try_get("created_at")?,
    })
}

fn check_message_kind(kind: &str) -> Result<()> {
    if kind != MESSAGE_NOTIFICATION && kind != MESSAGE_MESSAGE {
        return Err(StorageError::Invalid(format!(
            "unknown message kind '{kind}': use notification or message"
        )));
    }
    Ok(())
}

/// A message to insert with others at commit.
pub(crate) struct MessageRecord {
    username: String,
    kind: String,
    title: String,
    body: String,
    level: Option<i64>,
    link: Option<String>,
    sender: Option<String>,
    at: i64,
}

impl EventWrites {
    /// Delivers a message to a user's message center with the transaction (`Invalid` at once
    /// for an unknown kind). Its id is not returned: it is only given at commit.
    pub fn add_message(&mut self, m: &NewMessage<'_>) -> Result<()> {
        check_message_kind(m.kind)?;
        self.messages.push(MessageRecord {
            username: m.username.to_string(),
            kind: m.kind.to_string(),
            title: m.title.to_string(),
            body: m.body.to_string(),
            level: m.level,
            link: m.link.map(str::to_string),
            sender: m.sender.map(str::to_string),
            at: m.at,
        });
        Ok(())
    }

    pub(crate) async fn flush_messages(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.messages);
        let backend = self.backend;
        insert_rows(
            self.conn(),
            backend,
            // Unread: `read_at` is left to its NULL default.
            "INSERT INTO messages (username, kind, title, body, level, link, sender, \
             created_at) VALUES",
            8,
            "",
            &rows,
            |b, m| {
                b.bind(m.username.as_str())
                    .bind(m.kind.as_str())
                    .bind(m.title.as_str())
                    .bind(m.body.as_str())
                    .bind(m.level)
                    .bind(m.link.as_deref())
                    .bind(m.sender.as_deref())
                    .bind(m.at);
            },
        )
        .await?;
        Ok(())
    }
}

impl Store {
    /// Delivers a message to a user's message center; its id.
    pub async fn insert_message(&self, m: &NewMessage<'_>) -> Result<i64> {
        check_message_kind(m.kind)?;
        Ok(sqlx::query_scalar(
            "INSERT INTO messages (username, kind, title, body, level, link, sender, read_at, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8) RETURNING id",
        )
        .bind(m.username)
        .bind(m.kind)
        .bind(m.title)
        .bind(m.body)
        .bind(m.level)
        .bind(m.link)
        .bind(m.sender)
        .bind(m.at)
        .fetch_one(self.write())
        .await?)
    }

    /// One page of a user's messages (only the unread ones when asked), newest first; with how
    /// many the listing has in all and how many of the user's messages are unread.
    pub async fn list_messages(
        &self,
        username: &str,
        unread_only: bool,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<MessageRow>, i64, i64)> {
        let counts = sqlx::query(
            "SELECT COUNT(*) AS total, \
             COUNT(CASE WHEN read_at IS NULL THEN 1 END) AS unread \
             FROM messages WHERE username = $1",
        )
        .bind(username)
        .fetch_one(self.read())
        .await?;
        let all: i64 = counts.try_get("total")?;
        let unread: i64 = counts.try_get("unread")?;
        let unread_filter = if unread_only {
            " AND read_at IS NULL"
        } else {
            ""
        };
        let rows = sqlx::query(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE username = $1{unread_filter} \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(username)
        .bind(limit.max(0))
        .bind(offset.max(0))
        .fetch_all(self.read())
        .await?
        .iter()
        .map(message_row)
        .collect::<Result<_>>()?;
        let total = if unread_only { unread } else { all };
        Ok((rows, total, unread))
    }

    /// Marks the given messages of `username` read; ids of other users' messages and of
    /// messages already read are ignored. How many were marked.
    pub async fn mark_messages_read(&self, username: &str, ids: &[i64], at: i64) -> Result<u64> {
        let mut head = Sql::new(self.backend(), "UPDATE messages SET read_at = ");
        head.push_arg(at);
        let Some(mut sql) = own_ids(head, username, ids) else {
            return Ok(0);
        };
        sql.push(" AND read_at IS NULL");
        let (text, args) = sql.finish()?;
        Ok(sqlx::query_with(&text, args)
            .execute(self.write())
            .await?
            .rows_affected())
    }

    /// Marks all of a user's messages read; how many were unread.
    pub async fn mark_all_read(&self, username: &str, at: i64) -> Result<u64> {
        Ok(
            sqlx::query("UPDATE messages SET read_at = $1 WHERE username = $2 AND read_at IS NULL")
                .bind(at)
                .bind(username)
                .execute(self.write())
                .await?
                .rows_affected(),
        )
    }

    /// Deletes the given messages of `username`; other users' ids are ignored. How many went.
    pub async fn delete_messages(&self, username: &str, ids: &[i64]) -> Result<u64> {
        let head = Sql::new(self.backend(), "DELETE FROM messages");
        let Some(sql) = own_ids(head, username, ids) else {
            return Ok(0);
        };
        let (text, args) = sql.finish()?;
        Ok(sqlx::query_with(&text, args)
            .execute(self.write())
            .await?
            .rows_affected())
    }
}

/// `sql` continued with ` WHERE username = … AND id IN (…)`: only the user's own messages.
/// `None` for no ids, where there is nothing to do.
fn own_ids<'q>(mut sql: Sql<'q>, username: &str, ids: &[i64]) -> Option<Sql<'q>> {
    if ids.is_empty() {
        return None;
    }
    sql.push(" WHERE username = ")
        .push_arg(username.to_string())
        .push(" AND id IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push_arg(*id);
    }
    sql.push(")");
    Some(sql)
}
