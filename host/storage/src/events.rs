//! The event center: city events with their human-readable numbers, timelines, type
//! definitions, search and statistics.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::error::{Result, StorageError};
use crate::sql::{
    Sql, contains_pattern, insert_rows, json, push_region_condition, push_scope_condition, to_json,
};
use crate::{Backend, Scope, Store, now_ms};

/// Event states: reported, being disposed of, done, and set aside (a duplicate or a false
/// report kept out of the statistics' open counts).
pub const EVENT_NEW: &str = "new";
pub const EVENT_PROCESSING: &str = "processing";
pub const EVENT_CLOSED: &str = "closed";
pub const EVENT_ISOLATED: &str = "isolated";

const MS_PER_DAY: i64 = 86_400_000;

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub id: i64,
    /// `E` + UTC day + `-` + the day's sequence, e.g. `E20261126-000042`.
    pub number: String,
    pub type_code: String,
    pub title: String,
    pub level: i64,
    /// [`EVENT_NEW`], [`EVENT_PROCESSING`], [`EVENT_CLOSED`] or [`EVENT_ISOLATED`].
    pub state: String,
    pub outcome: Option<String>,
    pub region: String,
    pub org: String,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    /// A JSON object of the type's fields.
    pub fields: Value,
    /// What reported it (a rule and device, an operator, a citizen hotline, …).
    pub source: Value,
    pub rule_id: Option<String>,
    pub alarm_id: Option<i64>,
    /// How many later reports were merged into this event.
    pub merged_count: i64,
    pub created_at: i64,
    /// The latest report (creation or merge).
    pub last_at: i64,
    pub closed_at: Option<i64>,
}

/// An event to create; the store gives it its number.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub type_code: &'a str,
    pub title: &'a str,
    pub level: i64,
    pub state: &'a str,
    pub outcome: Option<&'a str>,
    pub region: &'a str,
    pub org: &'a str,
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub fields: &'a Value,
    pub source: &'a Value,
    pub rule_id: Option<&'a str>,
    pub alarm_id: Option<i64>,
    pub at: i64,
}

/// Which events to search, count or time; every field narrows the result. `limit` and
/// `offset` apply to [`Store::list_events`] only.
#[derive(Debug, Clone, Default)]
pub struct EventFilter<'a> {
    pub number: Option<&'a str>,
    /// Case-insensitive substring of the title.
    pub title_contains: Option<&'a str>,
    pub type_code: Option<&'a str>,
    pub level: Option<i64>,
    /// Only events in this region or below it; `/` is the whole city.
    pub region_prefix: Option<&'a str>,
    /// Only events of this organisation (or of none) in its region or below it: what a user
    /// of that scope may see.
    pub within: Option<&'a Scope>,
    pub state: Option<&'a str>,
    /// Created at or after (ms).
    pub from: Option<i64>,
    /// Created before (ms).
    pub to: Option<i64>,
    pub limit: i64,
    pub offset: i64,
}

/// What [`Store::event_counts`] groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventGroup {
    Type,
    Level,
    Region,
    State,
    /// The UTC day of creation, `yyyy-mm-dd`.
    Day,
}

/// One entry of an event's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineRow {
    pub event_id: i64,
    /// 1 for the first entry, consecutive after that.
    pub seq: i64,
    pub at: i64,
    /// The user who acted; `None` for the system (a rule, a deadline).
    pub actor: Option<String>,
    /// `created`, `merged`, or what the workflow did (`assigned`, `approved`, …).
    pub action: String,
    pub detail: Value,
}

const EVENT_COLUMNS: &str = "id, number, type_code, title, level, state, outcome, region, org, \
     lat, lon, fields, source, rule_id, alarm_id, merged_count, created_at, last_at, closed_at";

fn event_row(r: &AnyRow) -> Result<EventRow> {
    Ok(EventRow {
        id: r.try_get("id")?,
        number: r.try_get("number")?,
        type_code: r.try_get("type_code")?,
        title: r.try_get("title")?,
        level: r.try_get("level")?,
        state: r.try_get("state")?,
        outcome: r.try_get("outcome")?,
        region: r.try_get("region")?,
        org: r.try_get("org")?,
        lat: r.try_get("lat")?,
        lon: r.try_get("lon")?,
        fields: json(r, "fields")?,
        source: json(r, "source")?,
        rule_id: r.try_get("rule_id")?,
        alarm_id: r.try_get("alarm_id")?,
        merged_count: r.try_get("merged_count")?,
        created_at: r.try_get("created_at")?,
        last_at: r.try_get("last_at")?,
        closed_at: r.try_get("closed_at")?,
    })
}

fn event_not_found(id: i64) -> StorageError {
    StorageError::NotFound(format!("event {id} not found"))
}

fn check_event_state(state: &str) -> Result<()> {
    if [EVENT_NEW, EVENT_PROCESSING, EVENT_CLOSED, EVENT_ISOLATED].contains(&state) {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!(
            "unknown event state '{state}': use new, processing, closed or isolated"
        )))
    }
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`), so that numbering needs no calendar crate.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The UTC day of a time as `yyyymmdd`, the key of the daily event sequence.
fn day_key(at_ms: i64) -> String {
    let (y, m, d) = civil_from_days(at_ms.div_euclid(MS_PER_DAY));
    format!("{y:04}{m:02}{d:02}")
}

/// The UTC day of a day count as `yyyy-mm-dd`, for statistics.
fn day_label(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Store {
    /// Creates or replaces an event type's definition.
    pub async fn put_event_type(&self, code: &str, definition: &Value) -> Result<()> {
        sqlx::query(
            "INSERT INTO event_types (code, definition, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (code) DO UPDATE SET definition = excluded.definition, \
             updated_at = excluded.updated_at",
        )
        .bind(code)
        .bind(to_json(definition))
        .bind(now_ms())
        .execute(self.write())
        .await?;
        Ok(())
    }

    pub async fn get_event_type(&self, code: &str) -> Result<Option<Value>> {
        sqlx::query("SELECT definition FROM event_types WHERE code = $1")
            .bind(code)
            .fetch_optional(self.read())
            .await?
            .map(|r| json(&r, "definition"))
            .transpose()
    }

    /// Every event type as (code, definition), by code.
    pub async fn list_event_types(&self) -> Result<Vec<(String, Value)>> {
        sqlx::query("SELECT code, definition FROM event_types ORDER BY code")
            .fetch_all(self.read())
            .await?
            .iter()
            .map(|r| Ok((r.try_get("code")?, json(r, "definition")?)))
            .collect()
    }

    /// `false` when there was no such type. Events of the type keep their code.
    pub async fn delete_event_type(&self, code: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM event_types WHERE code = $1")
            .bind(code)
            .execute(self.write())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Creates an event with the next number of its UTC day and a `created` timeline entry
    /// (whose detail is the event's source). A `closed` event gets `closed_at = at`.
    pub async fn create_event(&self, e: &NewEvent<'_>) -> Result<EventRow> {
        let mut w = self.begin_event_writes().await?;
        let event = w.create_event(e, &[]).await?;
        w.commit().await?;
        Ok(event)
    }

    /// Starts a transaction for [`EventWrites`]: events, their timelines, workflows, tasks and
    /// messages written together and committed at once.
    pub async fn begin_event_writes(&self) -> Result<EventWrites> {
        Ok(EventWrites {
            tx: self.write().begin().await?,
            backend: self.backend(),
            numbers: HashMap::new(),
            timeline: Vec::new(),
            instances: Vec::new(),
            tasks: Vec::new(),
            messages: Vec::new(),
        })
    }

    pub async fn get_event(&self, id: i64) -> Result<Option<EventRow>> {
        sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.read())
            .await?
            .as_ref()
            .map(event_row)
            .transpose()
    }

    pub async fn get_event_by_number(&self, number: &str) -> Result<Option<EventRow>> {
        sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE number = $1"
        ))
        .bind(number)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(event_row)
        .transpose()
    }

    /// One page of the events that match, the most recently created first, and how many match.
    pub async fn list_events(&self, f: &EventFilter<'_>) -> Result<(Vec<EventRow>, i64)> {
        self.page(
            "events",
            EVENT_COLUMNS,
            "created_at DESC, id DESC",
            (f.limit, f.offset),
            |head| event_query(self, head, f),
            event_row,
        )
        .await
    }

    /// The open (new or processing) events of a type reported at or after `since_ms`, the most
    /// recent first: the candidates a new report may be merged into.
    pub async fn open_events_of_type(
        &self,
        type_code: &str,
        since_ms: i64,
    ) -> Result<Vec<EventRow>> {
        let mut conn = self.read().acquire().await?;
        open_events_of_type(&mut conn, type_code, since_ms).await
    }

    /// Merges a new report into an event: one more merged report, `last_at` moved forward
    /// and a `merged` timeline entry with `detail`. `NotFound` for an unknown event.
    pub async fn merge_into_event(&self, id: i64, at: i64, detail: &Value) -> Result<EventRow> {
        let mut w = self.begin_event_writes().await?;
        let event = w.merge_into_event(id, at, detail).await?;
        w.commit().await?;
        Ok(event)
    }

    /// Moves an event to `state`. `outcome` replaces the stored outcome when `Some`. Closing
    /// sets `closed_at`; any other state clears it (a reopened event is not closed). No
    /// timeline entry is written: the caller records who did it with [`Store::append_timeline`].
    pub async fn set_event_state(
        &self,
        id: i64,
        state: &str,
        outcome: Option<&str>,
        at: i64,
    ) -> Result<EventRow> {
        let mut conn = self.write().acquire().await?;
        set_event_state(&mut conn, id, state, outcome, at).await
    }

    /// Appends an entry to an event's timeline. `NotFound` for an unknown event.
    pub async fn append_timeline(
        &self,
        event_id: i64,
        at: i64,
        actor: Option<&str>,
        action: &str,
        detail: &Value,
    ) -> Result<()> {
        let mut w = self.begin_event_writes().await?;
        w.append_timeline(event_id, at, actor, action, detail)
            .await?;
        w.commit().await
    }

    /// An event's timeline, oldest first.
    pub async fn event_timeline(&self, event_id: i64) -> Result<Vec<TimelineRow>> {
        sqlx::query(
            "SELECT event_id, seq, at, actor, action, detail FROM event_timeline \
             WHERE event_id = $1 ORDER BY seq",
        )
        .bind(event_id)
        .fetch_all(self.read())
        .await?
        .iter()
        .map(|r| {
            Ok(TimelineRow {
                event_id: r.try_get("event_id")?,
                seq: r.try_get("seq")?,
                at: r.try_get("at")?,
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                detail: json(r, "detail")?,
            })
        })
        .collect()
    }

    /// How many matching events fall in each group, ordered by group key: levels ascending,
    /// days chronologically, names by their bytes (the same on both back ends, whatever the
    /// database's collation).
    pub async fn event_counts(
        &self,
        f: &EventFilter<'_>,
        group_by: EventGroup,
    ) -> Result<Vec<(String, i64)>> {
        // Days are bucketed with integer division, which both databases do the same way, and
        // named in Rust: their date functions have nothing in common.
        let key = match group_by {
            EventGroup::Type => "type_code",
            EventGroup::Level => "level",
            EventGroup::Region => "region",
            EventGroup::State => "state",
            EventGroup::Day => "created_at / 86400000",
        };
        let mut sql = event_query(
            self,
            &format!("SELECT {key} AS k, COUNT(*) AS n FROM events"),
            f,
        )?;
        sql.push(&format!(" GROUP BY {key}"));
        let (text, args) = sql.finish()?;
        let rows = sqlx::query_with(&text, args).fetch_all(self.read()).await?;
        match group_by {
            EventGroup::Level | EventGroup::Day => {
                let mut groups = rows
                    .iter()
                    .map(|r| Ok((r.try_get::<i64, _>("k")?, r.try_get::<i64, _>("n")?)))
                    .collect::<Result<Vec<_>>>()?;
                groups.sort_unstable();
                Ok(groups
                    .into_iter()
                    .map(|(k, n)| {
                        let label = if group_by == EventGroup::Day {
                            day_label(k)
                        } else {
                            k.to_string()
                        };
                        (label, n)
                    })
                    .collect())
            }
            _ => {
                let mut groups = rows
                    .iter()
                    .map(|r| Ok((r.try_get::<String, _>("k")?, r.try_get::<i64, _>("n")?)))
                    .collect::<Result<Vec<_>>>()?;
                groups.sort_unstable();
                Ok(groups)
            }
        }
    }

    /// How long each matching closed event took from creation to closing (ms), shortest
    /// first, for the caller's percentiles.
    pub async fn time_to_close_ms(&self, f: &EventFilter<'_>) -> Result<Vec<i64>> {
        let mut sql = event_query(self, "SELECT closed_at - created_at AS took FROM events", f)?;
        sql.push(" AND state = ")
            .push_arg(EVENT_CLOSED)
            .push(" AND closed_at IS NOT NULL ORDER BY took");
        let (text, args) = sql.finish()?;
        Ok(sqlx::query_scalar_with(&text, args)
            .fetch_all(self.read())
            .await?)
    }
}

/// `head` followed by the filter's WHERE clause (without paging).
fn event_query<'q>(store: &Store, head: &str, f: &EventFilter<'_>) -> Result<Sql<'q>> {
    if let Some(state) = f.state {
        check_event_state(state)?;
    }
    let mut sql = Sql::new(store.backend(), head);
    sql.push(" WHERE 1 = 1");
    if let Some(number) = f.number {
        sql.push(" AND number = ").push_arg(number.to_string());
    }
    if let Some(needle) = f.title_contains.filter(|n| !n.is_empty()) {
        sql.push(" AND LOWER(title) LIKE ")
            .push_arg(contains_pattern(&needle.to_lowercase()))
            .push(" ESCAPE '\\'");
    }
    if let Some(t) = f.type_code {
        sql.push(" AND type_code = ").push_arg(t.to_string());
    }
    if let Some(level) = f.level {
        sql.push(" AND level = ").push_arg(level);
    }
    if let Some(region) = f.region_prefix {
        push_region_condition(&mut sql, "region", region);
    }
    if let Some(scope) = f.within {
        push_scope_condition(&mut sql, "org", "region", scope);
    }
    if let Some(state) = f.state {
        sql.push(" AND state = ").push_arg(state.to_string());
    }
    if let Some(from) = f.from {
        sql.push(" AND created_at >= ").push_arg(from);
    }
    if let Some(to) = f.to {
        sql.push(" AND created_at < ").push_arg(to);
    }
    Ok(sql)
}

/// One more entry of a new event's timeline, written after its `created` entry.
#[derive(Debug, Clone)]
pub struct NewTimelineEntry<'a> {
    pub at: i64,
    /// The user who acted; `None` for the system.
    pub actor: Option<&'a str>,
    pub action: &'a str,
    pub detail: &'a Value,
}

/// A timeline entry waiting for [`EventWrites::commit`].
struct TimelineRecord {
    event_id: i64,
    seq: i64,
    at: i64,
    actor: Option<String>,
    action: String,
    detail: String,
}

/// Writes to the event center's tables in one transaction: events (numbered, merged, moved
/// between states), their timelines, workflow instances, tasks and message-center messages.
/// Nothing is visible to readers before [`EventWrites::commit`], and all of it is then: an
/// event appears with its workflow, tasks and messages or not at all. Dropping it without
/// committing rolls everything back.
///
/// The event center's writer puts many events in one of these, so that a burst of events costs
/// one commit (one sync of the SQLite log) instead of several per event. Rows nothing in the
/// transaction reads back — timeline entries, workflow instances, tasks and messages — are kept
/// in memory and inserted with multi-row statements at commit; their errors (a task id taken,
/// say) surface there.
///
/// The day's event counter is locked at the first number drawn and written back once at
/// commit, so concurrent transactions number consecutively, and a transaction that rolls back
/// leaves no gap.
pub struct EventWrites {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    pub(crate) backend: Backend,
    /// Per UTC day: the counter as stored when this transaction locked it, and the last
    /// number drawn since.
    numbers: HashMap<String, (i64, i64)>,
    timeline: Vec<TimelineRecord>,
    pub(crate) instances: Vec<crate::workflows::InstanceRecord>,
    pub(crate) tasks: Vec<crate::workflows::TaskRecord>,
    pub(crate) messages: Vec<crate::messages::MessageRecord>,
}

impl EventWrites {
    /// The transaction's connection.
    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// The last number drawn today, locking the day's counter in this transaction first.
    async fn counter(&mut self, day: &str) -> Result<&mut (i64, i64)> {
        if !self.numbers.contains_key(day) {
            // The no-op update takes the counter row's lock (on PostgreSQL) until commit, so a
            // concurrent transaction waits for the number written back here instead of drawing
            // the same one.
            let seq: i64 = sqlx::query_scalar(
                "INSERT INTO event_numbers (day, seq) VALUES ($1, 0) ON CONFLICT (day) \
                 DO UPDATE SET seq = event_numbers.seq RETURNING seq",
            )
            .bind(day)
            .fetch_one(&mut *self.tx)
            .await?;
            self.numbers.insert(day.to_string(), (seq, seq));
        }
        Ok(self
            .numbers
            .get_mut(day)
            .expect("the day's counter was just loaded"))
    }

    /// The number the next event created at `at` gets (`E` + UTC day + `-` + sequence). It is
    /// only taken by [`EventWrites::create_event`]: asking twice gives the same number.
    pub async fn next_event_number(&mut self, at: i64) -> Result<String> {
        let day = day_key(at);
        let seq = self.counter(&day).await?.1 + 1;
        Ok(format!("E{day}-{seq:06}"))
    }

    /// Creates an event with the next number of its UTC day, a `created` timeline entry (whose
    /// detail is the event's source) and then the entries of `more`. A `closed` event gets
    /// `closed_at = at`.
    pub async fn create_event(
        &mut self,
        e: &NewEvent<'_>,
        more: &[NewTimelineEntry<'_>],
    ) -> Result<EventRow> {
        check_event_state(e.state)?;
        let number = self.next_event_number(e.at).await?;
        let closed_at = (e.state == EVENT_CLOSED).then_some(e.at);
        // A missing location is written as a literal NULL, not bound: on PostgreSQL the Any
        // driver prepares a statement whose first use bound a NULL float with a parameter type
        // that a later real coordinate then does not match ("incorrect binary data format").
        let location = match (e.lat, e.lon) {
            (Some(lat), Some(lon)) => Some((lat, lon)),
            _ => None,
        };
        let (geo, n) = match location {
            Some(_) => ("$9, $10", 10),
            None => ("NULL, NULL", 8),
        };
        let p = |i: usize| format!("${}", n + i);
        let sql = format!(
            "INSERT INTO events (number, type_code, title, level, state, outcome, region, org, \
             lat, lon, fields, source, rule_id, alarm_id, merged_count, created_at, last_at, \
             closed_at, timeline_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, {geo}, {}, {}, \
             {}, {}, 0, {}, {}, {}, {}) RETURNING id",
            p(1),
            p(2),
            p(3),
            p(4),
            p(5),
            p(5),
            p(6),
            p(7)
        );
        let mut insert = sqlx::query(&sql)
            .bind(number.as_str())
            .bind(e.type_code)
            .bind(e.title)
            .bind(e.level)
            .bind(e.state)
            .bind(e.outcome)
            .bind(e.region)
            .bind(e.org);
        if let Some((lat, lon)) = location {
            insert = insert.bind(lat).bind(lon);
        }
        let source = to_json(e.source);
        // Only the id comes back: the rest of the row is what was written, and decoding it
        // would cost a good part of a batched event's time in the writer.
        let id: i64 = insert
            .bind(to_json(e.fields))
            .bind(source.as_str())
            .bind(e.rule_id)
            .bind(e.alarm_id)
            .bind(e.at)
            .bind(closed_at)
            .bind(1 + more.len() as i64)
            .fetch_one(&mut *self.tx)
            .await?
            .try_get("id")?;
        let event = EventRow {
            id,
            number,
            type_code: e.type_code.to_string(),
            title: e.title.to_string(),
            level: e.level,
            state: e.state.to_string(),
            outcome: e.outcome.map(str::to_string),
            region: e.region.to_string(),
            org: e.org.to_string(),
            lat: location.map(|(lat, _)| lat),
            lon: location.map(|(_, lon)| lon),
            fields: e.fields.clone(),
            source: e.source.clone(),
            rule_id: e.rule_id.map(str::to_string),
            alarm_id: e.alarm_id,
            merged_count: 0,
            created_at: e.at,
            last_at: e.at,
            closed_at,
        };
        self.counter(&day_key(e.at)).await?.1 += 1;
        self.timeline.push(TimelineRecord {
            event_id: event.id,
            seq: 1,
            at: e.at,
            actor: None,
            action: "created".into(),
            detail: source,
        });
        for (i, entry) in more.iter().enumerate() {
            self.timeline.push(TimelineRecord {
                event_id: event.id,
                seq: 2 + i as i64,
                at: entry.at,
                actor: entry.actor.map(str::to_string),
                action: entry.action.to_string(),
                detail: to_json(entry.detail),
            });
        }
        Ok(event)
    }

    /// [`Store::open_events_of_type`], seeing what this transaction wrote.
    pub async fn open_events_of_type(
        &mut self,
        type_code: &str,
        since_ms: i64,
    ) -> Result<Vec<EventRow>> {
        open_events_of_type(&mut self.tx, type_code, since_ms).await
    }

    /// [`Store::merge_into_event`] in this transaction.
    pub async fn merge_into_event(&mut self, id: i64, at: i64, detail: &Value) -> Result<EventRow> {
        let row = sqlx::query(&format!(
            "UPDATE events SET merged_count = merged_count + 1, \
             last_at = CASE WHEN $1 > last_at THEN $1 ELSE last_at END, \
             timeline_seq = timeline_seq + 1 WHERE id = $2 RETURNING {EVENT_COLUMNS}, timeline_seq"
        ))
        .bind(at)
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?
        .ok_or_else(|| event_not_found(id))?;
        let seq: i64 = row.try_get("timeline_seq")?;
        self.timeline.push(TimelineRecord {
            event_id: id,
            seq,
            at,
            actor: None,
            action: "merged".into(),
            detail: to_json(detail),
        });
        event_row(&row)
    }

    /// [`Store::set_event_state`] in this transaction.
    pub async fn set_event_state(
        &mut self,
        id: i64,
        state: &str,
        outcome: Option<&str>,
        at: i64,
    ) -> Result<EventRow> {
        set_event_state(&mut self.tx, id, state, outcome, at).await
    }

    /// [`Store::append_timeline`] in this transaction.
    pub async fn append_timeline(
        &mut self,
        event_id: i64,
        at: i64,
        actor: Option<&str>,
        action: &str,
        detail: &Value,
    ) -> Result<()> {
        // Bumping the counter locks the event's row: concurrent appends get consecutive
        // sequence numbers instead of colliding on the same one.
        let seq: i64 = sqlx::query_scalar(
            "UPDATE events SET timeline_seq = timeline_seq + 1 WHERE id = $1 \
             RETURNING timeline_seq",
        )
        .bind(event_id)
        .fetch_optional(&mut *self.tx)
        .await?
        .ok_or_else(|| event_not_found(event_id))?;
        self.timeline.push(TimelineRecord {
            event_id,
            seq,
            at,
            actor: actor.map(str::to_string),
            action: action.to_string(),
            detail: to_json(detail),
        });
        Ok(())
    }

    /// Writes what is kept in memory and commits. On an error nothing is written.
    pub async fn commit(mut self) -> Result<()> {
        self.flush().await?;
        for (day, (stored, drawn)) in std::mem::take(&mut self.numbers) {
            if drawn != stored {
                sqlx::query("UPDATE event_numbers SET seq = $1 WHERE day = $2")
                    .bind(drawn)
                    .bind(day)
                    .execute(&mut *self.tx)
                    .await?;
            }
        }
        self.tx.commit().await?;
        Ok(())
    }

    /// Inserts the rows kept in memory, parents first.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        let timeline = std::mem::take(&mut self.timeline);
        insert_rows(
            &mut self.tx,
            self.backend,
            "INSERT INTO event_timeline (event_id, seq, at, actor, action, detail) VALUES",
            6,
            "",
            &timeline,
            |b, t| {
                b.bind(t.event_id)
                    .bind(t.seq)
                    .bind(t.at)
                    .bind(t.actor.as_deref())
                    .bind(t.action.as_str())
                    .bind(t.detail.as_str());
            },
        )
        .await?;
        self.flush_instances().await?;
        self.flush_tasks().await?;
        self.flush_messages().await
    }
}

async fn open_events_of_type(
    conn: &mut AnyConnection,
    type_code: &str,
    since_ms: i64,
) -> Result<Vec<EventRow>> {
    sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE type_code = $1 AND state IN ($2, $3) \
         AND last_at >= $4 ORDER BY last_at DESC, id DESC"
    ))
    .bind(type_code)
    .bind(EVENT_NEW)
    .bind(EVENT_PROCESSING)
    .bind(since_ms)
    .fetch_all(conn)
    .await?
    .iter()
    .map(event_row)
    .collect()
}

async fn set_event_state(
    conn: &mut AnyConnection,
    id: i64,
    state: &str,
    outcome: Option<&str>,
    at: i64,
) -> Result<EventRow> {
    check_event_state(state)?;
    let closed_at = (state == EVENT_CLOSED).then_some(at);
    sqlx::query(&format!(
        "UPDATE events SET state = $1, outcome = COALESCE($2, outcome), closed_at = $3 \
         WHERE id = $4 RETURNING {EVENT_COLUMNS}"
    ))
    .bind(state)
    .bind(outcome)
    .bind(closed_at)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| event_not_found(id))
    .and_then(|r| event_row(&r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_days() {
        assert_eq!(day_key(0), "19700101");
        assert_eq!(day_key(MS_PER_DAY - 1), "19700101");
        assert_eq!(day_key(-1), "19691231");
        // 2026-11-26T23:59:59.999Z and the next millisecond.
        assert_eq!(day_key(1_795_737_599_999), "20261126");
        assert_eq!(day_key(1_795_737_600_000), "20261127");
        // A leap day.
        assert_eq!(day_label(19_417), "2023-03-01");
        assert_eq!(day_label(19_782), "2024-02-29");
    }
}
