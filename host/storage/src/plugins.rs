//! Wasm plugins: installed versions (manifest and component), which version is active, the
//! plugins' private key-value state, the dead letters of messages a plugin failed on, and the
//! codec bound to each `dataFormat: custom` product.
//!
//! Storage does not understand manifests or components; the API validates them with the plugin
//! runtime before anything is stored, and the node reloads the active versions at start.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StorageError};
use crate::secret::Secret;
use crate::sql::{Sql, flag};
use crate::{Store, now_ms};

/// Plugin status while it runs; a suspended plugin is not called until an operator resumes it.
pub const PLUGIN_ACTIVE: &str = "active";
pub const PLUGIN_SUSPENDED: &str = "suspended";
/// Stored but not running: the approval policy (`lotus.approval`) wants someone's sign-off.
pub const PLUGIN_PENDING_APPROVAL: &str = "pending_approval";

/// A plugin as listed: its identity and which version runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRow {
    pub id: String,
    /// The WIT world (`codec`, `rule`, …); fixed at install, an upgrade cannot change it.
    pub world: String,
    pub active_version: String,
    pub enabled: bool,
    /// [`PLUGIN_ACTIVE`], [`PLUGIN_SUSPENDED`] or [`PLUGIN_PENDING_APPROVAL`].
    pub status: String,
    /// Why the plugin was suspended, or whose approval it waits for.
    pub status_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One installed version, without its component bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginVersionRow {
    pub plugin_id: String,
    pub version: String,
    pub sha256: String,
    pub size: i64,
    pub installed_at: i64,
    pub installed_by: String,
}

/// What a node needs to run a version: the manifest text and the component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginArtifact {
    pub plugin_id: String,
    pub version: String,
    pub manifest: String,
    pub wasm: Vec<u8>,
    pub sha256: String,
    /// The vendor script a script-runner codec runs (its kv key `script`), for versions
    /// installed from a script.
    pub script: Option<String>,
}

/// A version to store; the caller has validated the manifest and the component.
#[derive(Debug, Clone)]
pub struct NewPluginVersion<'a> {
    pub plugin_id: &'a str,
    pub version: &'a str,
    pub world: &'a str,
    pub manifest: &'a str,
    pub wasm: &'a [u8],
    /// Hex SHA-256 of `wasm`.
    pub sha256: &'a str,
    /// Who uploaded it (the operator's username).
    pub installed_by: &'a str,
    /// The vendor script, when the version was installed from one (see [`PluginArtifact::script`]).
    pub script: Option<&'a str>,
}

/// A plugin secret as listed: its name and who set it when, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSecretRow {
    pub name: String,
    pub updated_at: i64,
    pub updated_by: String,
}

/// The AAD of a sealed plugin secret: a value copied to another plugin or name does not open.
fn plugin_secret_context(plugin_id: &str, name: &str) -> String {
    format!("plugin_secret:{plugin_id}:{name}")
}

/// A message a plugin could not handle, kept with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRow {
    pub id: i64,
    pub at: i64,
    pub plugin_id: String,
    pub product_key: String,
    pub device_name: String,
    pub topic: String,
    pub payload: Vec<u8>,
    /// A short machine-readable code (`timeout`, `out-of-fuel`, `trap`, …).
    pub reason: String,
    pub detail: String,
}

/// A dead letter to record.
#[derive(Debug, Clone)]
pub struct NewDeadLetter<'a> {
    pub plugin_id: &'a str,
    pub product_key: &'a str,
    pub device_name: &'a str,
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub reason: &'a str,
    pub detail: &'a str,
}

/// Which dead letters to list: newest first, optionally only older than `before_id` (paging).
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub plugin_id: Option<String>,
    pub product_key: Option<String>,
    pub before_id: Option<i64>,
    pub limit: i64,
}

const PLUGIN_COLUMNS: &str =
    "id, world, active_version, enabled, status, status_reason, created_at, updated_at";
const VERSION_COLUMNS: &str = "plugin_id, version, sha256, size, installed_at, installed_by";
const DEAD_LETTER_COLUMNS: &str =
    "id, at, plugin_id, product_key, device_name, topic, payload, reason, detail";

fn plugin_row(r: &AnyRow) -> Result<PluginRow> {
    Ok(PluginRow {
        id: r.try_get("id")?,
        world: r.try_get("world")?,
        active_version: r.try_get("active_version")?,
        enabled: flag(r, "enabled")?,
        status: r.try_get("status")?,
        status_reason: r.try_get("status_reason")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn version_row(r: &AnyRow) -> Result<PluginVersionRow> {
    Ok(PluginVersionRow {
        plugin_id: r.try_get("plugin_id")?,
        version: r.try_get("version")?,
        sha256: r.try_get("sha256")?,
        size: r.try_get("size")?,
        installed_at: r.try_get("installed_at")?,
        installed_by: r.try_get("installed_by")?,
    })
}

fn dead_letter_row(r: &AnyRow) -> Result<DeadLetterRow> {
    Ok(DeadLetterRow {
        id: r.try_get("id")?,
        at: r.try_get("at")?,
        plugin_id: r.try_get("plugin_id")?,
        product_key: r.try_get("product_key")?,
        device_name: r.try_get("device_name")?,
        topic: r.try_get("topic")?,
        payload: r.try_get("payload")?,
        reason: r.try_get("reason")?,
        detail: r.try_get("detail")?,
    })
}

fn plugin_not_found(id: &str) -> StorageError {
    StorageError::NotFound(format!("plugin '{id}' not found"))
}

fn version_taken(id: &str, version: &str) -> StorageError {
    StorageError::Conflict(format!(
        "plugin '{id}' already has a version '{version}': give the new upload a new version"
    ))
}

impl Store {
    /// Stores the first version of a new plugin and makes it active; `Conflict` when a plugin
    /// with this id exists (upgrade it instead).
    pub async fn install_plugin(&self, v: &NewPluginVersion<'_>) -> Result<PluginRow> {
        let now = now_ms();
        let mut tx = self.write().begin().await?;
        sqlx::query(
            "INSERT INTO plugins (id, world, active_version, enabled, status, status_reason, \
             created_at, updated_at) VALUES ($1, $2, $3, 1, $4, NULL, $5, $5)",
        )
        .bind(v.plugin_id)
        .bind(v.world)
        .bind(v.version)
        .bind(PLUGIN_ACTIVE)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if StorageError::is_unique_violation(&e) {
                StorageError::Conflict(format!(
                    "plugin '{}' is already installed: upgrade it to a new version instead",
                    v.plugin_id
                ))
            } else {
                e.into()
            }
        })?;
        insert_version(&mut tx, v, now).await?;
        tx.commit().await?;
        Ok(PluginRow {
            id: v.plugin_id.to_string(),
            world: v.world.to_string(),
            active_version: v.version.to_string(),
            enabled: true,
            status: PLUGIN_ACTIVE.to_string(),
            status_reason: None,
            created_at: now,
            updated_at: now,
        })
    }

    /// Stores a new version of an installed plugin and makes it the active one; the plugin's
    /// status goes back to active (an upgrade is how a suspended plugin gets fixed).
    /// `NotFound` for an unknown plugin, `Conflict` for a version already stored or a
    /// different world.
    pub async fn upgrade_plugin(&self, v: &NewPluginVersion<'_>) -> Result<PluginRow> {
        let now = now_ms();
        let mut tx = self.write().begin().await?;
        let world: Option<String> = sqlx::query_scalar("SELECT world FROM plugins WHERE id = $1")
            .bind(v.plugin_id)
            .fetch_optional(&mut *tx)
            .await?;
        let world = world.ok_or_else(|| plugin_not_found(v.plugin_id))?;
        if world != v.world {
            return Err(StorageError::Conflict(format!(
                "plugin '{}' is a {world} plugin; a new version cannot change its world to {}",
                v.plugin_id, v.world
            )));
        }
        insert_version(&mut tx, v, now).await?;
        let r = sqlx::query(&format!(
            "UPDATE plugins SET active_version = $1, status = $2, status_reason = NULL, \
             updated_at = $3 WHERE id = $4 RETURNING {PLUGIN_COLUMNS}"
        ))
        .bind(v.version)
        .bind(PLUGIN_ACTIVE)
        .bind(now)
        .bind(v.plugin_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        plugin_row(&r)
    }

    pub async fn get_plugin(&self, id: &str) -> Result<Option<PluginRow>> {
        sqlx::query(&format!(
            "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(plugin_row)
        .transpose()
    }

    /// Every plugin, by id (a node runs tens, not thousands).
    pub async fn list_plugins(&self) -> Result<Vec<PluginRow>> {
        sqlx::query(&format!("SELECT {PLUGIN_COLUMNS} FROM plugins ORDER BY id"))
            .fetch_all(self.read())
            .await?
            .iter()
            .map(plugin_row)
            .collect()
    }

    /// A plugin's versions, oldest first.
    pub async fn plugin_versions(&self, id: &str) -> Result<Vec<PluginVersionRow>> {
        sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM plugin_versions WHERE plugin_id = $1 \
             ORDER BY installed_at, version"
        ))
        .bind(id)
        .fetch_all(self.read())
        .await?
        .iter()
        .map(version_row)
        .collect()
    }

    /// The manifest and component of one version.
    pub async fn plugin_artifact(&self, id: &str, version: &str) -> Result<PluginArtifact> {
        let r = sqlx::query(
            "SELECT plugin_id, version, manifest, wasm, sha256, script FROM plugin_versions \
             WHERE plugin_id = $1 AND version = $2",
        )
        .bind(id)
        .bind(version)
        .fetch_optional(self.read())
        .await?
        .ok_or_else(|| {
            StorageError::NotFound(format!("plugin '{id}' has no version '{version}'"))
        })?;
        Ok(PluginArtifact {
            plugin_id: r.try_get("plugin_id")?,
            version: r.try_get("version")?,
            manifest: r.try_get("manifest")?,
            wasm: r.try_get("wasm")?,
            sha256: r.try_get("sha256")?,
            script: r.try_get("script")?,
        })
    }

    /// The version installed just before the active one: what a rollback returns to.
    /// `Conflict` when the active version is the oldest.
    pub async fn previous_plugin_version(&self, id: &str) -> Result<PluginVersionRow> {
        let plugin = self
            .get_plugin(id)
            .await?
            .ok_or_else(|| plugin_not_found(id))?;
        let versions = self.plugin_versions(id).await?;
        let active = versions
            .iter()
            .position(|v| v.version == plugin.active_version)
            .ok_or_else(|| {
                StorageError::Corrupt(format!(
                    "plugin '{id}' names active version '{}' which is not stored",
                    plugin.active_version
                ))
            })?;
        if active == 0 {
            return Err(StorageError::Conflict(format!(
                "plugin '{id}' has no version older than '{}' to roll back to",
                plugin.active_version
            )));
        }
        Ok(versions[active - 1].clone())
    }

    /// Makes a stored version the active one (rollback) and clears a suspension.
    pub async fn set_active_plugin_version(&self, id: &str, version: &str) -> Result<PluginRow> {
        let r = sqlx::query(&format!(
            "UPDATE plugins SET active_version = $1, status = $2, status_reason = NULL, \
             updated_at = $3 WHERE id = $4 AND EXISTS (SELECT 1 FROM plugin_versions v \
             WHERE v.plugin_id = $4 AND v.version = $1) RETURNING {PLUGIN_COLUMNS}"
        ))
        .bind(version)
        .bind(PLUGIN_ACTIVE)
        .bind(now_ms())
        .bind(id)
        .fetch_optional(self.write())
        .await?
        .ok_or_else(|| {
            StorageError::NotFound(format!("plugin '{id}' has no version '{version}'"))
        })?;
        plugin_row(&r)
    }

    pub async fn set_plugin_enabled(&self, id: &str, enabled: bool) -> Result<PluginRow> {
        let r = sqlx::query(&format!(
            "UPDATE plugins SET enabled = $1, updated_at = $2 WHERE id = $3 \
             RETURNING {PLUGIN_COLUMNS}"
        ))
        .bind(i64::from(enabled))
        .bind(now_ms())
        .bind(id)
        .fetch_optional(self.write())
        .await?
        .ok_or_else(|| plugin_not_found(id))?;
        plugin_row(&r)
    }

    /// Records a plugin's status ([`PLUGIN_ACTIVE`], or [`PLUGIN_SUSPENDED`] or
    /// [`PLUGIN_PENDING_APPROVAL`] with a reason).
    pub async fn set_plugin_status(
        &self,
        id: &str,
        status: &str,
        reason: Option<&str>,
    ) -> Result<PluginRow> {
        if ![PLUGIN_ACTIVE, PLUGIN_SUSPENDED, PLUGIN_PENDING_APPROVAL].contains(&status) {
            return Err(StorageError::Invalid(format!(
                "unknown plugin status '{status}': use {PLUGIN_ACTIVE}, {PLUGIN_SUSPENDED} or \
                 {PLUGIN_PENDING_APPROVAL}"
            )));
        }
        let r = sqlx::query(&format!(
            "UPDATE plugins SET status = $1, status_reason = $2, updated_at = $3 WHERE id = $4 \
             RETURNING {PLUGIN_COLUMNS}"
        ))
        .bind(status)
        .bind(reason)
        .bind(now_ms())
        .bind(id)
        .fetch_optional(self.write())
        .await?
        .ok_or_else(|| plugin_not_found(id))?;
        plugin_row(&r)
    }

    /// Removes a plugin with its versions and state (dead letters stay as evidence).
    /// `Conflict` while a product uses it as its codec.
    pub async fn delete_plugin(&self, id: &str) -> Result<()> {
        let bound: Vec<String> = sqlx::query_scalar(
            "SELECT product_key FROM product_codecs WHERE plugin_id = $1 ORDER BY product_key",
        )
        .bind(id)
        .fetch_all(self.read())
        .await?;
        if !bound.is_empty() {
            return Err(StorageError::Conflict(format!(
                "plugin '{id}' is the codec of product(s) {}: bind those products to another \
                 codec or unbind them first",
                bound.join(", ")
            )));
        }
        let done = sqlx::query("DELETE FROM plugins WHERE id = $1")
            .bind(id)
            .execute(self.write())
            .await
            .map_err(|e| {
                // A binding added between the check and the delete.
                if StorageError::is_foreign_key_violation(&e) {
                    StorageError::Conflict(format!(
                        "plugin '{id}' is bound to a product as its codec; unbind it first"
                    ))
                } else {
                    e.into()
                }
            })?;
        if done.rows_affected() == 0 {
            return Err(plugin_not_found(id));
        }
        Ok(())
    }

    pub async fn plugin_kv_get(&self, plugin_id: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM plugin_kv WHERE plugin_id = $1 AND key = $2")
                .bind(plugin_id)
                .bind(key)
                .fetch_optional(self.read())
                .await?,
        )
    }

    pub async fn plugin_kv_set(&self, plugin_id: &str, key: &str, value: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO plugin_kv (plugin_id, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (plugin_id, key) DO UPDATE SET value = excluded.value",
        )
        .bind(plugin_id)
        .bind(key)
        .bind(value.to_vec())
        .execute(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_foreign_key_violation(&e) {
                plugin_not_found(plugin_id)
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    /// Sets (creates or replaces) a named secret of a plugin, encrypted under the master key.
    pub async fn set_plugin_secret(
        &self,
        plugin_id: &str,
        name: &str,
        value: &str,
        updated_by: &str,
    ) -> Result<PluginSecretRow> {
        let sealed = self
            .secrets()
            .seal(&plugin_secret_context(plugin_id, name), value)?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO plugin_secrets (plugin_id, name, value_enc, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (plugin_id, name) DO UPDATE SET \
             value_enc = excluded.value_enc, updated_at = excluded.updated_at, \
             updated_by = excluded.updated_by",
        )
        .bind(plugin_id)
        .bind(name)
        .bind(&sealed)
        .bind(now)
        .bind(updated_by)
        .execute(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_foreign_key_violation(&e) {
                plugin_not_found(plugin_id)
            } else {
                e.into()
            }
        })?;
        Ok(PluginSecretRow {
            name: name.to_string(),
            updated_at: now,
            updated_by: updated_by.to_string(),
        })
    }

    /// The decrypted value of a plugin's secret; `None` when the operator has not set it.
    pub async fn plugin_secret(&self, plugin_id: &str, name: &str) -> Result<Option<Secret>> {
        let sealed: Option<String> = sqlx::query_scalar(
            "SELECT value_enc FROM plugin_secrets WHERE plugin_id = $1 AND name = $2",
        )
        .bind(plugin_id)
        .bind(name)
        .fetch_optional(self.read())
        .await?;
        sealed
            .map(|s| {
                self.secrets()
                    .open(&plugin_secret_context(plugin_id, name), &s)
            })
            .transpose()
    }

    /// The names of a plugin's secrets (never their values), by name.
    pub async fn list_plugin_secrets(&self, plugin_id: &str) -> Result<Vec<PluginSecretRow>> {
        sqlx::query(
            "SELECT name, updated_at, updated_by FROM plugin_secrets WHERE plugin_id = $1 \
             ORDER BY name",
        )
        .bind(plugin_id)
        .fetch_all(self.read())
        .await?
        .iter()
        .map(|r| {
            Ok(PluginSecretRow {
                name: r.try_get("name")?,
                updated_at: r.try_get("updated_at")?,
                updated_by: r.try_get("updated_by")?,
            })
        })
        .collect()
    }

    /// `false` when the secret was not set.
    pub async fn delete_plugin_secret(&self, plugin_id: &str, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM plugin_secrets WHERE plugin_id = $1 AND name = $2")
            .bind(plugin_id)
            .bind(name)
            .execute(self.write())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes a key; deleting a missing key is not an error.
    pub async fn plugin_kv_delete(&self, plugin_id: &str, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM plugin_kv WHERE plugin_id = $1 AND key = $2")
            .bind(plugin_id)
            .bind(key)
            .execute(self.write())
            .await?;
        Ok(())
    }

    pub async fn insert_dead_letter(&self, d: &NewDeadLetter<'_>) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO dead_letters (at, plugin_id, product_key, device_name, topic, payload, \
             reason, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(now_ms())
        .bind(d.plugin_id)
        .bind(d.product_key)
        .bind(d.device_name)
        .bind(d.topic)
        .bind(d.payload.to_vec())
        .bind(d.reason)
        .bind(d.detail)
        .fetch_one(self.write())
        .await?)
    }

    /// Dead letters, newest first.
    pub async fn list_dead_letters(&self, f: &DeadLetterFilter) -> Result<Vec<DeadLetterRow>> {
        let mut sql = Sql::new(
            self.backend(),
            format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE 1 = 1"),
        );
        if let Some(plugin) = &f.plugin_id {
            sql.push(" AND plugin_id = ").push_arg(plugin.clone());
        }
        if let Some(pk) = &f.product_key {
            sql.push(" AND product_key = ").push_arg(pk.clone());
        }
        if let Some(before) = f.before_id {
            sql.push(" AND id < ").push_arg(before);
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .push_arg(f.limit.max(0));
        let (text, args) = sql.finish()?;
        sqlx::query_with(&text, args)
            .fetch_all(self.read())
            .await?
            .iter()
            .map(dead_letter_row)
            .collect()
    }

    /// Binds a product to the codec plugin that decodes its raw data. `NotFound` when the
    /// product or the plugin does not exist.
    pub async fn bind_product_codec(&self, product_key: &str, plugin_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO product_codecs (product_key, plugin_id, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (product_key) DO UPDATE SET plugin_id = excluded.plugin_id, \
             updated_at = excluded.updated_at",
        )
        .bind(product_key)
        .bind(plugin_id)
        .bind(now_ms())
        .execute(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_foreign_key_violation(&e) {
                StorageError::NotFound(format!(
                    "product '{product_key}' or plugin '{plugin_id}' not found"
                ))
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    /// Removes a product's codec binding; `true` when there was one.
    pub async fn unbind_product_codec(&self, product_key: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM product_codecs WHERE product_key = $1")
            .bind(product_key)
            .execute(self.write())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn product_codec(&self, product_key: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT plugin_id FROM product_codecs WHERE product_key = $1")
                .bind(product_key)
                .fetch_optional(self.read())
                .await?,
        )
    }

    /// Every binding as (product key, plugin id), for the device plane's cache.
    pub async fn all_product_codecs(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT product_key, plugin_id FROM product_codecs")
            .fetch_all(self.read())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("product_key")?, r.try_get("plugin_id")?)))
            .collect()
    }
}

async fn insert_version(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    v: &NewPluginVersion<'_>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO plugin_versions (plugin_id, version, manifest, wasm, sha256, size, \
         installed_at, installed_by, script) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(v.plugin_id)
    .bind(v.version)
    .bind(v.manifest)
    .bind(v.wasm.to_vec())
    .bind(v.sha256)
    .bind(v.wasm.len() as i64)
    .bind(now)
    .bind(v.installed_by)
    .bind(v.script)
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        if StorageError::is_unique_violation(&e) {
            version_taken(v.plugin_id, v.version)
        } else {
            e.into()
        }
    })?;
    Ok(())
}
