//! Products, their versioned thing models and their custom topic classes.

use lotus_model::product::{DataFormat, NodeType};
use lotus_model::topic::TopicOperation;
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StorageError};
use crate::sql::{Sql, contains_pattern, flag, json, page_bounds, push_scope_condition, to_json};
use crate::{
    NewProduct, Page, ProductRow, ProductUpdate, Scope, Secret, Store, TopicClassRow, now_ms,
};

/// The product columns plus the two derived ones the console shows with every product.
const PRODUCT_SELECT: &str = "SELECT p.product_key, p.name, p.node_type, p.data_format, \
     p.dynamic_registration, p.allow_unregistered, p.replay_window_secs, p.description, \
     p.created_at, p.updated_at, p.org, p.region, \
     (SELECT MAX(t.version) FROM thing_models t WHERE t.product_key = p.product_key) \
         AS thing_model_version, \
     (SELECT COUNT(*) FROM devices d WHERE d.product_key = p.product_key) AS device_count \
     FROM products p";

const TOPIC_CLASS_COLUMNS: &str = "id, product_key, template, operation, description";

/// How many times a thing-model upload retries when a concurrent upload took its version.
const VERSION_RETRIES: usize = 5;

/// The associated data that binds a product secret to its row.
pub(crate) fn product_secret_context(product_key: &str) -> String {
    format!("product:{product_key}")
}

fn product_row(row: &AnyRow) -> Result<ProductRow> {
    let node_type: String = row.try_get("node_type")?;
    let data_format: String = row.try_get("data_format")?;
    Ok(ProductRow {
        product_key: row.try_get("product_key")?,
        name: row.try_get("name")?,
        node_type: NodeType::parse(&node_type)
            .ok_or_else(|| StorageError::Corrupt(format!("unknown node type '{node_type}'")))?,
        data_format: DataFormat::parse(&data_format)
            .ok_or_else(|| StorageError::Corrupt(format!("unknown data format '{data_format}'")))?,
        dynamic_registration: flag(row, "dynamic_registration")?,
        allow_unregistered: flag(row, "allow_unregistered")?,
        replay_window_secs: row.try_get("replay_window_secs")?,
        description: row.try_get("description")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        thing_model_version: row.try_get("thing_model_version")?,
        device_count: row.try_get("device_count")?,
        scope: Scope {
            org: row.try_get("org")?,
            region: row.try_get("region")?,
        },
    })
}

fn topic_class_row(row: &AnyRow) -> Result<TopicClassRow> {
    let operation: String = row.try_get("operation")?;
    Ok(TopicClassRow {
        id: row.try_get("id")?,
        product_key: row.try_get("product_key")?,
        template: row.try_get("template")?,
        operation: TopicOperation::parse(&operation).ok_or_else(|| {
            StorageError::Corrupt(format!("unknown topic operation '{operation}'"))
        })?,
        description: row.try_get("description")?,
    })
}

fn product_not_found(product_key: &str) -> StorageError {
    StorageError::NotFound(format!("product '{product_key}' not found"))
}

fn template_taken(product_key: &str, template: &str) -> StorageError {
    StorageError::Conflict(format!(
        "product '{product_key}' already has a topic class with the template '{template}'"
    ))
}

impl Store {
    /// Creates a product; `Conflict` when the key is taken. The secret is stored encrypted.
    pub async fn create_product(&self, p: &NewProduct) -> Result<ProductRow> {
        let now = now_ms();
        let secret_enc = self
            .secrets()
            .seal(&product_secret_context(&p.product_key), &p.product_secret)?;
        sqlx::query(
            "INSERT INTO products (product_key, name, node_type, data_format, \
             dynamic_registration, allow_unregistered, replay_window_secs, description, \
             secret_enc, created_at, updated_at, org, region) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12)",
        )
        .bind(&p.product_key)
        .bind(&p.name)
        .bind(p.node_type.as_str())
        .bind(p.data_format.as_str())
        .bind(i64::from(p.dynamic_registration))
        .bind(i64::from(p.allow_unregistered))
        .bind(p.replay_window_secs)
        .bind(&p.description)
        .bind(secret_enc)
        .bind(now)
        .bind(&p.scope.org)
        .bind(&p.scope.region)
        .execute(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_unique_violation(&e) {
                StorageError::Conflict(format!("product '{}' already exists", p.product_key))
            } else {
                e.into()
            }
        })?;
        Ok(ProductRow {
            product_key: p.product_key.clone(),
            name: p.name.clone(),
            node_type: p.node_type,
            data_format: p.data_format,
            dynamic_registration: p.dynamic_registration,
            allow_unregistered: p.allow_unregistered,
            replay_window_secs: p.replay_window_secs,
            description: p.description.clone(),
            created_at: now,
            updated_at: now,
            thing_model_version: None,
            device_count: 0,
            scope: p.scope.clone(),
        })
    }

    pub async fn get_product(&self, product_key: &str) -> Result<Option<ProductRow>> {
        sqlx::query(&format!("{PRODUCT_SELECT} WHERE p.product_key = $1"))
            .bind(product_key)
            .fetch_optional(self.read())
            .await?
            .as_ref()
            .map(product_row)
            .transpose()
    }

    /// The product secret in plain (for dynamic-registration signatures).
    pub async fn product_secret(&self, product_key: &str) -> Result<Option<Secret>> {
        let sealed: Option<String> =
            sqlx::query_scalar("SELECT secret_enc FROM products WHERE product_key = $1")
                .bind(product_key)
                .fetch_optional(self.read())
                .await?;
        sealed
            .map(|s| {
                self.secrets()
                    .open(&product_secret_context(product_key), &s)
            })
            .transpose()
    }

    /// One page of products, oldest first, and the total count that matched. Confined to
    /// `within` when given (see [`crate::Scope`]); with `search`, only products whose name or
    /// product key contains it, ignoring case and taking `%` and `_` literally.
    pub async fn list_products(
        &self,
        page: Page,
        within: Option<&Scope>,
        search: Option<&str>,
    ) -> Result<(Vec<ProductRow>, i64)> {
        let (offset, limit) = page_bounds(page);
        let search = search.map(str::trim).filter(|s| !s.is_empty());
        let pattern = search.map(|s| contains_pattern(&s.to_lowercase()));
        // SQLite's LOWER folds ASCII only, so a name with a non-ASCII capital ("Écran") would
        // never equal the lowered search; matching it as typed too finds it at least then.
        let as_typed = search
            .filter(|s| s.to_lowercase() != *s)
            .map(contains_pattern);
        let build = |head: &str| {
            let mut sql = Sql::new(self.backend(), head);
            sql.push(" WHERE 1 = 1");
            if let Some(scope) = within {
                push_scope_condition(&mut sql, "p.org", "p.region", scope);
            }
            if let Some(pattern) = &pattern {
                sql.push(" AND (LOWER(p.name) LIKE ")
                    .push_arg(pattern.clone())
                    .push(" ESCAPE '\\' OR LOWER(p.product_key) LIKE ")
                    .push_arg(pattern.clone())
                    .push(" ESCAPE '\\'");
                if let Some(as_typed) = &as_typed {
                    sql.push(" OR p.name LIKE ")
                        .push_arg(as_typed.clone())
                        .push(" ESCAPE '\\'");
                }
                sql.push(")");
            }
            sql
        };
        let mut sql = build(PRODUCT_SELECT);
        sql.push(" ORDER BY p.created_at, p.product_key LIMIT ")
            .push_arg(limit)
            .push(" OFFSET ")
            .push_arg(offset);
        let (text, args) = sql.finish()?;
        let rows = sqlx::query_with(&text, args).fetch_all(self.read()).await?;
        let (text, args) = build("SELECT COUNT(*) FROM products p").finish()?;
        let total: i64 = sqlx::query_scalar_with(&text, args)
            .fetch_one(self.read())
            .await?;
        let rows = rows.iter().map(product_row).collect::<Result<_>>()?;
        Ok((rows, total))
    }

    /// Changes the given fields; `NotFound` when the product does not exist.
    pub async fn update_product(&self, product_key: &str, u: &ProductUpdate) -> Result<ProductRow> {
        let mut sql = Sql::new(self.backend(), "UPDATE products SET updated_at = ");
        sql.push_arg(now_ms());
        if let Some(name) = &u.name {
            sql.push(", name = ").push_arg(name.as_str());
        }
        if let Some(format) = u.data_format {
            sql.push(", data_format = ").push_arg(format.as_str());
        }
        if let Some(dynamic) = u.dynamic_registration {
            sql.push(", dynamic_registration = ")
                .push_arg(i64::from(dynamic));
        }
        if let Some(allow) = u.allow_unregistered {
            sql.push(", allow_unregistered = ")
                .push_arg(i64::from(allow));
        }
        if let Some(window) = u.replay_window_secs {
            sql.push(", replay_window_secs = ").push_arg(window);
        }
        if let Some(description) = &u.description {
            sql.push(", description = ").push_arg(description.as_str());
        }
        if let Some(org) = &u.org {
            sql.push(", org = ").push_arg(org.as_str());
        }
        if let Some(region) = &u.region {
            sql.push(", region = ").push_arg(region.as_str());
        }
        sql.push(" WHERE product_key = ").push_arg(product_key);
        let (text, args) = sql.finish()?;
        let done = sqlx::query_with(&text, args).execute(self.write()).await?;
        if done.rows_affected() == 0 {
            return Err(product_not_found(product_key));
        }
        self.get_product(product_key)
            .await?
            .ok_or_else(|| product_not_found(product_key))
    }

    /// Deletes a product with its thing models and topic classes. `Conflict` while it still
    /// has devices: deleting them is a decision the caller must make explicitly.
    pub async fn delete_product(&self, product_key: &str) -> Result<()> {
        let in_use = |n: i64| {
            StorageError::Conflict(format!(
                "product '{product_key}' still has {n} device(s): delete them first"
            ))
        };
        let mut tx = self.write().begin().await?;
        let devices: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE product_key = $1")
                .bind(product_key)
                .fetch_one(&mut *tx)
                .await?;
        if devices > 0 {
            return Err(in_use(devices));
        }
        let done = sqlx::query("DELETE FROM products WHERE product_key = $1")
            .bind(product_key)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                // A device registered concurrently (PostgreSQL): the foreign key refuses.
                if StorageError::is_foreign_key_violation(&e) {
                    in_use(1)
                } else {
                    e.into()
                }
            })?;
        if done.rows_affected() == 0 {
            return Err(product_not_found(product_key));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stores a new version of the product's thing model and returns its number (1, 2, …).
    pub async fn put_thing_model(&self, product_key: &str, tsl: &Value) -> Result<i64> {
        let text = to_json(tsl);
        for _ in 0..VERSION_RETRIES {
            let mut tx = self.write().begin().await?;
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM products WHERE product_key = $1")
                    .bind(product_key)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Err(product_not_found(product_key));
            }
            let inserted = sqlx::query_scalar(
                "INSERT INTO thing_models (product_key, version, tsl, created_at) \
                 SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3 \
                 FROM thing_models WHERE product_key = $1 RETURNING version",
            )
            .bind(product_key)
            .bind(text.as_str())
            .bind(now_ms())
            .fetch_one(&mut *tx)
            .await;
            match inserted {
                Ok(version) => {
                    tx.commit().await?;
                    return Ok(version);
                }
                // Two uploads computed the same next version (PostgreSQL); try again.
                Err(e) if StorageError::is_unique_violation(&e) => continue,
                Err(e) if StorageError::is_foreign_key_violation(&e) => {
                    return Err(product_not_found(product_key));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StorageError::Conflict(format!(
            "the thing model of product '{product_key}' is being changed concurrently; retry"
        )))
    }

    /// A version of the thing model (the latest when `version` is `None`), with its creation
    /// time.
    pub async fn thing_model(
        &self,
        product_key: &str,
        version: Option<i64>,
    ) -> Result<Option<(i64, Value, i64)>> {
        let query = match version {
            Some(v) => sqlx::query(
                "SELECT version, tsl, created_at FROM thing_models \
                 WHERE product_key = $1 AND version = $2",
            )
            .bind(product_key)
            .bind(v),
            None => sqlx::query(
                "SELECT version, tsl, created_at FROM thing_models \
                 WHERE product_key = $1 ORDER BY version DESC LIMIT 1",
            )
            .bind(product_key),
        };
        query
            .fetch_optional(self.read())
            .await?
            .map(|row| {
                Ok((
                    row.try_get("version")?,
                    json(&row, "tsl")?,
                    row.try_get("created_at")?,
                ))
            })
            .transpose()
    }

    /// Every stored version with its creation time, oldest first.
    pub async fn thing_model_versions(&self, product_key: &str) -> Result<Vec<(i64, i64)>> {
        Ok(sqlx::query_as(
            "SELECT version, created_at FROM thing_models WHERE product_key = $1 \
             ORDER BY version",
        )
        .bind(product_key)
        .fetch_all(self.read())
        .await?)
    }

    /// The product's custom topic classes, in creation order.
    pub async fn list_topic_classes(&self, product_key: &str) -> Result<Vec<TopicClassRow>> {
        sqlx::query(&format!(
            "SELECT {TOPIC_CLASS_COLUMNS} FROM topic_classes WHERE product_key = $1 ORDER BY id"
        ))
        .bind(product_key)
        .fetch_all(self.read())
        .await?
        .iter()
        .map(topic_class_row)
        .collect()
    }

    /// Every custom topic class of every product, to fill the caches at start.
    pub async fn all_topic_classes(&self) -> Result<Vec<TopicClassRow>> {
        sqlx::query(&format!(
            "SELECT {TOPIC_CLASS_COLUMNS} FROM topic_classes ORDER BY product_key, id"
        ))
        .fetch_all(self.read())
        .await?
        .iter()
        .map(topic_class_row)
        .collect()
    }

    /// Adds a custom topic class; `Conflict` when the product already has the template.
    pub async fn create_topic_class(
        &self,
        product_key: &str,
        template: &str,
        operation: TopicOperation,
        description: &str,
    ) -> Result<TopicClassRow> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO topic_classes (product_key, template, operation, description, \
             created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(product_key)
        .bind(template)
        .bind(operation.as_str())
        .bind(description)
        .bind(now_ms())
        .fetch_one(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_unique_violation(&e) {
                template_taken(product_key, template)
            } else if StorageError::is_foreign_key_violation(&e) {
                product_not_found(product_key)
            } else {
                e.into()
            }
        })?;
        Ok(TopicClassRow {
            id,
            product_key: product_key.to_string(),
            template: template.to_string(),
            operation,
            description: description.to_string(),
        })
    }

    /// Changes the given fields of a custom topic class.
    pub async fn update_topic_class(
        &self,
        product_key: &str,
        id: i64,
        template: Option<&str>,
        operation: Option<TopicOperation>,
        description: Option<&str>,
    ) -> Result<TopicClassRow> {
        let not_found = || {
            StorageError::NotFound(format!(
                "topic class {id} of product '{product_key}' not found"
            ))
        };
        // `id = id` keeps the statement valid when nothing is to change.
        let mut sql = Sql::new(self.backend(), "UPDATE topic_classes SET id = id");
        if let Some(t) = template {
            sql.push(", template = ").push_arg(t);
        }
        if let Some(op) = operation {
            sql.push(", operation = ").push_arg(op.as_str());
        }
        if let Some(d) = description {
            sql.push(", description = ").push_arg(d);
        }
        sql.push(" WHERE product_key = ").push_arg(product_key);
        sql.push(" AND id = ").push_arg(id);
        sql.push(&format!(" RETURNING {TOPIC_CLASS_COLUMNS}"));
        let (text, args) = sql.finish()?;
        let row = sqlx::query_with(&text, args)
            .fetch_optional(self.write())
            .await
            .map_err(|e| {
                if StorageError::is_unique_violation(&e) {
                    template_taken(product_key, template.unwrap_or_default())
                } else {
                    e.into()
                }
            })?
            .ok_or_else(not_found)?;
        topic_class_row(&row)
    }

    pub async fn delete_topic_class(&self, product_key: &str, id: i64) -> Result<()> {
        let done = sqlx::query("DELETE FROM topic_classes WHERE product_key = $1 AND id = $2")
            .bind(product_key)
            .bind(id)
            .execute(self.write())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!(
                "topic class {id} of product '{product_key}' not found"
            )));
        }
        Ok(())
    }
}
