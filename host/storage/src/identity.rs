//! The city's administrative regions and organisations (two trees) and the custom roles
//! administrators define, with what the API needs to keep them consistent: how many users,
//! products and devices still sit in a region or organisation before it may go, and who holds
//! a role before it may go. Scopes keep holding region paths and organisation ids as plain
//! text, so these tables name and arrange them rather than being referenced by foreign keys.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Result, StorageError};
use crate::sql::{
    Sql, contains_pattern, json, page_bounds, push_org_subtree, push_scope_condition, to_json,
};
use crate::users::HOLDS_ADMIN;
use crate::{Page, Store, UserRow, now_ms};

/// An administrative region; its parent is its path without the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionRow {
    /// `/hz/xihu`: what scopes hold.
    pub path: String,
    /// What people call it (`西湖区`).
    pub name: String,
    /// The national administrative division code (`330106`), when known.
    pub code: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An organisation; `parent` is another organisation's id, `None` at the top of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRow {
    /// What users' and products' `org` holds.
    pub id: String,
    pub parent: Option<String>,
    pub name: String,
    /// The region it works in, when given.
    pub region: Option<String>,
    /// Who to call: a person, a phone number, an address.
    pub contact: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A custom role: a name users hold, and the `<kind>.<verb>` actions it permits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRow {
    pub name: String,
    pub description: String,
    pub permissions: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What still sits in a region or organisation: while any of it is non-zero it is in use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// Regions or organisations directly below it.
    pub children: i64,
    pub users: i64,
    pub products: i64,
    /// Devices placed in the region themselves (devices of an organisation are its products').
    pub devices: i64,
}

impl Occupancy {
    pub fn is_empty(&self) -> bool {
        *self == Occupancy::default()
    }
}

/// Is `path` directly below `parent` (`/` being the whole city)?
pub fn region_is_child(parent: &str, path: &str) -> bool {
    let prefix = if parent == "/" {
        "/".to_string()
    } else {
        format!("{parent}/")
    };
    path.strip_prefix(&prefix)
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

fn region_row(r: &AnyRow) -> Result<RegionRow> {
    Ok(RegionRow {
        path: r.try_get("path")?,
        name: r.try_get("name")?,
        code: r.try_get("code")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn org_row(r: &AnyRow) -> Result<OrgRow> {
    Ok(OrgRow {
        id: r.try_get("id")?,
        parent: r.try_get("parent")?,
        name: r.try_get("name")?,
        region: r.try_get("region")?,
        contact: r.try_get("contact")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn role_row(r: &AnyRow) -> Result<RoleRow> {
    Ok(RoleRow {
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        permissions: json(r, "permissions")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// `LIKE … ESCAPE '\'` pattern matching a JSON array of names that holds `name`.
fn holds_pattern(name: &str) -> String {
    contains_pattern(&to_json(&name))
}

/// The users who hold `role`, by name, read through `db` (the pool, or a transaction that
/// must see the same state it then changes).
async fn holders_of<'e, E>(db: E, role: &str) -> Result<Vec<String>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    Ok(sqlx::query_scalar(
        "SELECT username FROM users WHERE roles LIKE $1 ESCAPE '\\' ORDER BY username",
    )
    .bind(holds_pattern(role))
    .fetch_all(db)
    .await?)
}

impl Store {
    // --- regions ---------------------------------------------------------------------------

    /// Every region, by path (so a parent comes before its children).
    pub async fn regions(&self) -> Result<Vec<RegionRow>> {
        sqlx::query("SELECT path, name, code, created_at, updated_at FROM regions ORDER BY path")
            .fetch_all(self.read())
            .await?
            .iter()
            .map(region_row)
            .collect()
    }

    /// How many regions are defined (none: any well-formed region path is accepted).
    pub async fn region_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM regions")
            .fetch_one(self.read())
            .await?)
    }

    pub async fn region(&self, path: &str) -> Result<Option<RegionRow>> {
        sqlx::query("SELECT path, name, code, created_at, updated_at FROM regions WHERE path = $1")
            .bind(path)
            .fetch_optional(self.read())
            .await?
            .as_ref()
            .map(region_row)
            .transpose()
    }

    /// Adds a region; `Conflict` when the path exists. The caller checks the parent: the path
    /// is the whole relation.
    pub async fn create_region(
        &self,
        path: &str,
        name: &str,
        code: Option<&str>,
    ) -> Result<RegionRow> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO regions (path, name, code, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(path)
        .bind(name)
        .bind(code)
        .bind(now)
        .execute(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_unique_violation(&e) {
                StorageError::Conflict(format!("region '{path}' already exists"))
            } else {
                e.into()
            }
        })?;
        Ok(RegionRow {
            path: path.into(),
            name: name.into(),
            code: code.map(str::to_string),
            created_at: now,
            updated_at: now,
        })
    }

    /// Renames a region or changes its code (`Some(None)` clears it); `NotFound` when it does
    /// not exist.
    pub async fn update_region(
        &self,
        path: &str,
        name: Option<&str>,
        code: Option<Option<&str>>,
    ) -> Result<RegionRow> {
        let mut sql = Sql::new(self.backend(), "UPDATE regions SET updated_at = ");
        sql.push_arg(now_ms());
        if let Some(name) = name {
            sql.push(", name = ").push_arg(name.to_string());
        }
        if let Some(code) = code {
            sql.push(", code = ").push_arg(code.map(str::to_string));
        }
        sql.push(" WHERE path = ").push_arg(path.to_string());
        let (text, args) = sql.finish()?;
        let done = sqlx::query_with(&text, args).execute(self.write()).await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!("region '{path}' not found")));
        }
        self.region(path)
            .await?
            .ok_or_else(|| StorageError::NotFound(format!("region '{path}' not found")))
    }

    /// What is in a region: the regions directly below it, and the users, products and devices
    /// whose region is exactly this one.
    pub async fn region_occupancy(&self, path: &str) -> Result<Occupancy> {
        let children = self
            .regions()
            .await?
            .iter()
            .filter(|r| region_is_child(path, &r.path))
            .count() as i64;
        let count = |table: &'static str| async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table} WHERE region = $1"))
                .bind(path)
                .fetch_one(self.read())
                .await
        };
        Ok(Occupancy {
            children,
            users: count("users").await?,
            products: count("products").await?,
            devices: count("devices").await?,
        })
    }

    /// Removes a region; `false` when there was none. The caller refuses a region in use
    /// ([`Store::region_occupancy`]) first.
    pub async fn delete_region(&self, path: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM regions WHERE path = $1")
            .bind(path)
            .execute(self.write())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // --- organisations ---------------------------------------------------------------------

    /// Every organisation, by id.
    pub async fn orgs(&self) -> Result<Vec<OrgRow>> {
        sqlx::query(
            "SELECT id, parent, name, region, contact, created_at, updated_at FROM orgs \
             ORDER BY id",
        )
        .fetch_all(self.read())
        .await?
        .iter()
        .map(org_row)
        .collect()
    }

    pub async fn org(&self, id: &str) -> Result<Option<OrgRow>> {
        sqlx::query(
            "SELECT id, parent, name, region, contact, created_at, updated_at FROM orgs \
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(org_row)
        .transpose()
    }

    /// An organisation's id and the ids of every organisation below it in the tree: what a
    /// member of `org` has in scope. An organisation not (or not yet) in the tree is its own
    /// subtree; no organisation (`""`) has none.
    pub async fn org_subtree(&self, org: &str) -> Result<Vec<String>> {
        if org.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new(self.backend(), "");
        push_org_subtree(&mut sql, org);
        sql.push(" ORDER BY id");
        let (text, args) = sql.finish()?;
        Ok(sqlx::query_scalar_with(&text, args)
            .fetch_all(self.read())
            .await?)
    }

    /// Adds an organisation; `Conflict` when the id exists, `NotFound` when the parent does
    /// not.
    pub async fn create_org(&self, org: &OrgRow) -> Result<OrgRow> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO orgs (id, parent, name, region, contact, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(&org.id)
        .bind(org.parent.as_deref())
        .bind(&org.name)
        .bind(org.region.as_deref())
        .bind(org.contact.as_deref())
        .bind(now)
        .execute(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_unique_violation(&e) {
                StorageError::Conflict(format!("organisation '{}' already exists", org.id))
            } else if StorageError::is_foreign_key_violation(&e) {
                StorageError::NotFound(format!(
                    "parent organisation '{}' not found",
                    org.parent.as_deref().unwrap_or_default()
                ))
            } else {
                e.into()
            }
        })?;
        Ok(OrgRow {
            created_at: now,
            updated_at: now,
            ..org.clone()
        })
    }

    /// Changes an organisation's name, region and contact (`Some(None)` clears the last two);
    /// `NotFound` when it does not exist. Its place in the tree stays.
    pub async fn update_org(
        &self,
        id: &str,
        name: Option<&str>,
        region: Option<Option<&str>>,
        contact: Option<Option<&str>>,
    ) -> Result<OrgRow> {
        let mut sql = Sql::new(self.backend(), "UPDATE orgs SET updated_at = ");
        sql.push_arg(now_ms());
        if let Some(name) = name {
            sql.push(", name = ").push_arg(name.to_string());
        }
        if let Some(region) = region {
            sql.push(", region = ").push_arg(region.map(str::to_string));
        }
        if let Some(contact) = contact {
            sql.push(", contact = ")
                .push_arg(contact.map(str::to_string));
        }
        sql.push(" WHERE id = ").push_arg(id.to_string());
        let (text, args) = sql.finish()?;
        let done = sqlx::query_with(&text, args).execute(self.write()).await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!(
                "organisation '{id}' not found"
            )));
        }
        self.org(id)
            .await?
            .ok_or_else(|| StorageError::NotFound(format!("organisation '{id}' not found")))
    }

    /// What belongs to an organisation: the organisations directly below it, its users and
    /// its products (devices belong to their product's organisation).
    pub async fn org_occupancy(&self, id: &str) -> Result<Occupancy> {
        let count = |sql: &'static str| async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(id)
                .fetch_one(self.read())
                .await
        };
        Ok(Occupancy {
            children: count("SELECT COUNT(*) FROM orgs WHERE parent = $1").await?,
            users: count("SELECT COUNT(*) FROM users WHERE org = $1").await?,
            products: count("SELECT COUNT(*) FROM products WHERE org = $1").await?,
            devices: 0,
        })
    }

    /// Removes an organisation; `false` when there was none. The caller refuses one in use
    /// ([`Store::org_occupancy`]) first.
    pub async fn delete_org(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM orgs WHERE id = $1")
            .bind(id)
            .execute(self.write())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    // --- custom roles ----------------------------------------------------------------------

    /// Every custom role, by name.
    pub async fn roles(&self) -> Result<Vec<RoleRow>> {
        sqlx::query(
            "SELECT name, description, permissions, created_at, updated_at FROM roles \
             ORDER BY name",
        )
        .fetch_all(self.read())
        .await?
        .iter()
        .map(role_row)
        .collect()
    }

    pub async fn role(&self, name: &str) -> Result<Option<RoleRow>> {
        sqlx::query(
            "SELECT name, description, permissions, created_at, updated_at FROM roles \
             WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.read())
        .await?
        .as_ref()
        .map(role_row)
        .transpose()
    }

    /// Adds a custom role; `Conflict` when the name exists.
    pub async fn create_role(
        &self,
        name: &str,
        description: &str,
        permissions: &[String],
    ) -> Result<RoleRow> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO roles (name, description, permissions, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(name)
        .bind(description)
        .bind(to_json(&permissions))
        .bind(now)
        .execute(self.write())
        .await
        .map_err(|e| {
            if StorageError::is_unique_violation(&e) {
                StorageError::Conflict(format!("role '{name}' already exists"))
            } else {
                e.into()
            }
        })?;
        Ok(RoleRow {
            name: name.into(),
            description: description.into(),
            permissions: permissions.to_vec(),
            created_at: now,
            updated_at: now,
        })
    }

    /// Changes a custom role's description and/or permissions; `NotFound` when it does not
    /// exist. Holders get the new permissions with their next request.
    pub async fn update_role(
        &self,
        name: &str,
        description: Option<&str>,
        permissions: Option<&[String]>,
    ) -> Result<RoleRow> {
        let mut sql = Sql::new(self.backend(), "UPDATE roles SET updated_at = ");
        sql.push_arg(now_ms());
        if let Some(d) = description {
            sql.push(", description = ").push_arg(d.to_string());
        }
        if let Some(p) = permissions {
            sql.push(", permissions = ").push_arg(to_json(&p));
        }
        sql.push(" WHERE name = ").push_arg(name.to_string());
        let (text, args) = sql.finish()?;
        let done = sqlx::query_with(&text, args).execute(self.write()).await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!("role '{name}' not found")));
        }
        self.role(name)
            .await?
            .ok_or_else(|| StorageError::NotFound(format!("role '{name}' not found")))
    }

    /// The users who hold a role (built-in or custom), by name.
    pub async fn role_holders(&self, role: &str) -> Result<Vec<String>> {
        holders_of(self.read(), role).await
    }

    /// Removes a custom role unless someone holds it (`Conflict` naming how many and who
    /// first); `false` when there was none. Checked and deleted in one transaction, so a role
    /// given to someone meanwhile is not lost under them.
    pub async fn delete_role(&self, name: &str) -> Result<bool> {
        let mut tx = self.write().begin().await?;
        let holders = holders_of(&mut *tx, name).await?;
        if !holders.is_empty() {
            let shown: Vec<&str> = holders.iter().take(5).map(String::as_str).collect();
            return Err(StorageError::Conflict(format!(
                "role '{name}' is held by {} user(s) ({}{}): take it from them first",
                holders.len(),
                shown.join(", "),
                if holders.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            )));
        }
        let done = sqlx::query("DELETE FROM roles WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// The actions the custom roles among `roles` permit, sorted and without repeats (names
    /// that are not custom roles, such as the built-in ones, add nothing).
    pub async fn role_permissions(&self, roles: &[String]) -> Result<Vec<String>> {
        if roles.is_empty() {
            return Ok(Vec::new());
        }
        // Asked on every request: read only the roles held (none for built-in roles alone).
        let mut sql = Sql::new(
            self.backend(),
            "SELECT permissions FROM roles WHERE name IN (",
        );
        for (i, role) in roles.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push_arg(role.clone());
        }
        sql.push(")");
        let (text, args) = sql.finish()?;
        let mut out = Vec::new();
        for held in sqlx::query_with(&text, args).fetch_all(self.read()).await? {
            out.extend(json::<Vec<String>>(&held, "permissions")?);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    // --- users' roles and pages ------------------------------------------------------------

    /// Replaces the roles a user holds; `NotFound` for an unknown user. Their sessions carry
    /// the new roles from their next request.
    /// `Conflict` when it would take `admin` from the last active administrator, who would
    /// then be unable to give it back.
    pub async fn set_user_roles(&self, username: &str, roles: &[String]) -> Result<()> {
        let mut tx = self.write().begin().await?;
        self.lock_admin_changes(&mut tx).await?;
        let keeps_admin = roles.iter().any(|r| r == "admin");
        let done = sqlx::query(&format!(
            "UPDATE users SET roles = $1 WHERE username = $2 AND ($3 OR NOT ({HOLDS_ADMIN}) \
             OR disabled_at IS NOT NULL OR EXISTS (SELECT 1 FROM users o WHERE \
             o.username <> $2 AND o.disabled_at IS NULL AND o.{HOLDS_ADMIN}))"
        ))
        .bind(to_json(&roles))
        .bind(username)
        .bind(keeps_admin)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT id FROM users WHERE username = $1")
                    .bind(username)
                    .fetch_optional(&mut *tx)
                    .await?;
            return Err(match exists {
                None => StorageError::NotFound(format!("user '{username}' not found")),
                Some(_) => StorageError::Conflict(format!(
                    "'{username}' is the last active administrator: give another account the \
                     admin role first, or nobody could manage accounts any more"
                )),
            });
        }
        tx.commit().await?;
        Ok(())
    }

    /// A page of the users `filter` lets through, by name, with the total that matched.
    pub async fn list_users_matching(
        &self,
        page: Page,
        filter: &crate::UserFilter<'_>,
    ) -> Result<(Vec<UserRow>, i64)> {
        let (offset, limit) = page_bounds(page);
        let build = |head: &str| {
            let mut sql = Sql::new(self.backend(), head);
            sql.push(" WHERE 1 = 1");
            if let Some(scope) = filter.within {
                push_scope_condition(&mut sql, "u.org", "u.region", scope);
            }
            match filter.disabled {
                Some(true) => {
                    sql.push(" AND u.disabled_at IS NOT NULL");
                }
                Some(false) => {
                    sql.push(" AND u.disabled_at IS NULL");
                }
                None => {}
            }
            if let Some(s) = filter.search.map(str::trim).filter(|s| !s.is_empty()) {
                let pattern = contains_pattern(&s.to_lowercase());
                sql.push(" AND (");
                for (i, column) in [
                    "u.username",
                    "u.display_name",
                    "u.org",
                    "u.region",
                    "u.roles",
                ]
                .iter()
                .enumerate()
                {
                    if i > 0 {
                        sql.push(" OR ");
                    }
                    sql.push(&format!("LOWER({column}) LIKE "))
                        .push_arg(pattern.clone())
                        .push(" ESCAPE '\\'");
                }
                sql.push(")");
            }
            sql
        };
        let mut sql = build(&format!(
            "SELECT {} FROM users u",
            crate::users::USER_COLUMNS
        ));
        sql.push(" ORDER BY u.username LIMIT ")
            .push_arg(limit)
            .push(" OFFSET ")
            .push_arg(offset);
        let (text, args) = sql.finish()?;
        let rows = sqlx::query_with(&text, args).fetch_all(self.read()).await?;
        let (text, args) = build("SELECT COUNT(*) FROM users u").finish()?;
        let total: i64 = sqlx::query_scalar_with(&text, args)
            .fetch_one(self.read())
            .await?;
        let rows = rows
            .iter()
            .map(crate::users::user_row)
            .collect::<Result<_>>()?;
        Ok((rows, total))
    }
}

#[cfg(test)]
mod tests {
    use super::region_is_child;

    #[test]
    fn children_are_one_segment_below() {
        assert!(region_is_child("/", "/hz"));
        assert!(!region_is_child("/", "/hz/xihu"));
        assert!(region_is_child("/hz", "/hz/xihu"));
        assert!(!region_is_child("/hz", "/hzx"));
        assert!(!region_is_child("/hz", "/hz"));
        assert!(!region_is_child("/hz", "/hz/xihu/lingyin"));
    }
}
