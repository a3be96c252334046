//! Small helpers for SQL that has to run unchanged on SQLite and PostgreSQL through sqlx's
//! `Any` driver: numbered placeholders built alongside their values, multi-row inserts
//! chunked under both back ends' bind limits, and decoding of the portable column types
//! (flags as BIGINT 0/1, JSON as TEXT).

use serde::de::DeserializeOwned;
use sqlx::AnyConnection;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::{Any, Arguments, Encode, Row, Type};

use crate::Backend;
use crate::error::{Result, StorageError};

/// SQLite's default limit on bound parameters per statement (PostgreSQL allows 65535).
const MAX_BINDS: usize = 32_766;

/// Rows per multi-row INSERT. Larger statements save little once past a few hundred rows and
/// cost parse time; this keeps every chunk far below [`MAX_BINDS`] for tables of any width.
const MAX_ROWS_PER_INSERT: usize = 1_000;

/// A statement under construction: text with placeholders and the matching arguments, added
/// in order.
///
/// PostgreSQL gets `$N`. SQLite gets anonymous `?`: it accepts `$N` too, but treats each as a
/// named parameter and looks names up by a linear scan, both when parsing and when sqlx binds,
/// which makes a statement with thousands of them quadratic (a 6,000-value INSERT took ~0.4 s
/// instead of a few ms). Fixed statements with a handful of `$N` are unaffected.
pub(crate) struct Sql<'q> {
    backend: Backend,
    text: String,
    args: AnyArguments<'q>,
    count: usize,
    error: Option<sqlx::error::BoxDynError>,
}

impl<'q> Sql<'q> {
    pub(crate) fn new(backend: Backend, text: impl Into<String>) -> Self {
        Self {
            backend,
            text: text.into(),
            args: AnyArguments::default(),
            count: 0,
            error: None,
        }
    }

    /// Appends raw SQL.
    pub(crate) fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    /// Adds a value and appends its placeholder. Placeholders are positional on SQLite, so
    /// values are only ever added where their placeholder goes.
    pub(crate) fn push_arg<T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + Encode<'q, Any> + Type<Any>,
    {
        if let Err(e) = self.args.add(value)
            && self.error.is_none()
        {
            self.error = Some(e);
        }
        self.count += 1;
        match self.backend {
            Backend::Sqlite => self.text.push('?'),
            Backend::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.count.to_string());
            }
        }
        self
    }

    /// The text and its arguments, ready for `sqlx::query_with`.
    pub(crate) fn finish(self) -> Result<(String, AnyArguments<'q>)> {
        match self.error {
            Some(e) => Err(StorageError::Database(sqlx::Error::Encode(e))),
            None => Ok((self.text, self.args)),
        }
    }
}

impl crate::Store {
    /// One page of a filtered list and how many rows match in all. `build(head)` returns `head`
    /// followed by the filter's WHERE clause, so the count and the page always filter alike;
    /// `order` is the ORDER BY list, then LIMIT and OFFSET.
    pub(crate) async fn page<'q, T>(
        &self,
        from: &str,
        columns: &str,
        order: &str,
        (limit, offset): (i64, i64),
        build: impl Fn(&str) -> Result<Sql<'q>>,
        row: impl Fn(&AnyRow) -> Result<T>,
    ) -> Result<(Vec<T>, i64)> {
        let (text, args) = build(&format!("SELECT COUNT(*) FROM {from}"))?.finish()?;
        let total: i64 = sqlx::query_scalar_with(&text, args)
            .fetch_one(self.read())
            .await?;
        let mut sql = build(&format!("SELECT {columns} FROM {from}"))?;
        sql.push(" ORDER BY ")
            .push(order)
            .push(" LIMIT ")
            .push_arg(limit.max(0))
            .push(" OFFSET ")
            .push_arg(offset.max(0));
        let (text, args) = sql.finish()?;
        let rows = sqlx::query_with(&text, args)
            .fetch_all(self.read())
            .await?
            .iter()
            .map(row)
            .collect::<Result<_>>()?;
        Ok((rows, total))
    }
}

/// Inserts `rows` with as few multi-row INSERT statements as the bind limits allow.
/// `head` is `INSERT INTO t (c1, …, cN) VALUES`, `tail` anything after the values (an
/// `ON CONFLICT` clause), and `bind` must add exactly `columns` values per row.
///
/// The statements are not kept prepared: their text varies with the chunk length, and caching
/// every variant would evict the statements that do repeat.
pub(crate) async fn insert_rows<'r, T>(
    conn: &mut AnyConnection,
    backend: Backend,
    head: &str,
    columns: usize,
    tail: &str,
    rows: &'r [T],
    mut bind: impl FnMut(&mut RowBinder<'_, 'r>, &'r T),
) -> Result<u64> {
    let per_chunk = (MAX_BINDS / columns).clamp(1, MAX_ROWS_PER_INSERT);
    let mut affected = 0;
    for chunk in rows.chunks(per_chunk) {
        let mut sql = Sql::new(backend, head);
        sql.text.reserve(chunk.len() * columns * 6 + tail.len());
        for (i, row) in chunk.iter().enumerate() {
            sql.push(if i == 0 { " (" } else { ", (" });
            let mut binder = RowBinder {
                sql: &mut sql,
                first: true,
            };
            bind(&mut binder, row);
            sql.push(")");
        }
        sql.push(" ").push(tail);
        let (text, args) = sql.finish()?;
        affected += sqlx::query_with(&text, args)
            .persistent(false)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(affected)
}

/// Adds the values of one row of a multi-row INSERT.
pub(crate) struct RowBinder<'s, 'q> {
    sql: &'s mut Sql<'q>,
    first: bool,
}

impl<'q> RowBinder<'_, 'q> {
    pub(crate) fn bind<T>(&mut self, value: T) -> &mut Self
    where
        T: 'q + Encode<'q, Any> + Type<Any>,
    {
        if !self.first {
            self.sql.push(", ");
        }
        self.first = false;
        self.sql.push_arg(value);
        self
    }
}

/// A BIGINT 0/1 column as a bool (the Any driver has no portable boolean).
pub(crate) fn flag(row: &AnyRow, column: &str) -> Result<bool> {
    Ok(row.try_get::<i64, _>(column)? != 0)
}

/// A TEXT column holding JSON.
pub(crate) fn json<T: DeserializeOwned>(row: &AnyRow, column: &str) -> Result<T> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| {
        StorageError::Corrupt(format!("column {column} does not hold valid JSON: {e}"))
    })
}

/// A nullable TEXT column holding JSON.
pub(crate) fn json_opt<T: DeserializeOwned>(row: &AnyRow, column: &str) -> Result<Option<T>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            StorageError::Corrupt(format!("column {column} does not hold valid JSON: {e}"))
        })
    })
    .transpose()
}

/// JSON text for a TEXT column. Serialising a `Value` cannot fail.
pub(crate) fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("JSON values always serialise")
}

/// A pattern for `LIKE … ESCAPE '\'` that matches `needle` anywhere, taken literally.
pub(crate) fn contains_pattern(needle: &str) -> String {
    let mut out = String::with_capacity(needle.len() + 2);
    out.push('%');
    for c in needle.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Offset and limit made safe for SQL (negative values would be errors on PostgreSQL).
pub(crate) fn page_bounds(page: crate::Page) -> (i64, i64) {
    (page.offset.max(0), page.limit.max(0))
}

/// Appends ` AND …` confining rows to a scope: the organisation column empty (a resource of no
/// organisation) or the scope's organisation or one below it in the tree, and the region
/// expression equal to the scope's region or below it. The whole city (`/`) adds no region
/// condition.
pub(crate) fn push_scope_condition(
    sql: &mut Sql,
    org_column: &str,
    region_expr: &str,
    scope: &crate::Scope,
) {
    sql.push(&format!(" AND ({org_column} = '' OR {org_column} IN ("));
    push_org_subtree(sql, &scope.org);
    sql.push("))");
    push_region_condition(sql, region_expr, &scope.region);
}

/// Appends a query of the id `org` and the ids of every organisation below it. The tree has no
/// cycles (a parent is fixed when an organisation is created), so the recursion ends.
pub(crate) fn push_org_subtree(sql: &mut Sql, org: &str) {
    sql.push("WITH RECURSIVE org_subtree(id) AS (SELECT ")
        .push_arg(org.to_string())
        .push(
            " UNION SELECT o.id FROM orgs o JOIN org_subtree t ON o.parent = t.id) \
             SELECT id FROM org_subtree",
        );
}

/// Appends ` AND …` confining the region expression to `region` or below it (`/hz` takes in
/// `/hz/xihu` but not `/hzx`). The whole city (`/`) adds no condition.
pub(crate) fn push_region_condition(sql: &mut Sql, region_expr: &str, region: &str) {
    if region != "/" {
        sql.push(&format!(" AND ({region_expr} = "))
            .push_arg(region.to_string())
            .push(&format!(" OR {region_expr} LIKE "))
            .push_arg(below_region_pattern(region))
            .push(" ESCAPE '\\')");
    }
}

/// A pattern for `LIKE … ESCAPE '\'` matching the regions strictly below `region`.
pub(crate) fn below_region_pattern(region: &str) -> String {
    format!(
        "{}/%",
        region
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}
