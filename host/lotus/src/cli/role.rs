//! `lotus role …`: built-in and custom roles, and which roles a user holds; each command one
//! call to the node's REST API.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Client, Connection, enc, print};

#[derive(Subcommand)]
pub enum RoleCommand {
    /// The built-in roles with what they may do, the custom roles with their permissions, and
    /// every action a custom role may be granted.
    List {
        #[command(flatten)]
        conn: Connection,
    },
    /// One role.
    Get {
        #[command(flatten)]
        conn: Connection,
        name: String,
    },
    /// Define a custom role, e.g. `lotus role create inspector --permission device.read
    /// --permission device.invoke`.
    Create {
        #[command(flatten)]
        conn: Connection,
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Repeatable: `<kind>.<verb>`, granted within the holder's organisation and region.
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
    },
    /// Change a custom role's description or replace its permissions.
    Update {
        #[command(flatten)]
        conn: Connection,
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Repeatable; replaces every permission the role has.
        #[arg(long = "permission")]
        permissions: Vec<String>,
    },
    /// Delete a custom role nobody holds.
    Delete {
        #[command(flatten)]
        conn: Connection,
        name: String,
    },
    /// Replace the roles a user holds, e.g. `lotus role assign alice --role operator --role
    /// inspector`.
    Assign {
        #[command(flatten)]
        conn: Connection,
        username: String,
        /// Repeatable: built-in or custom roles.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
}

pub(crate) async fn run(cmd: RoleCommand) -> anyhow::Result<()> {
    match cmd {
        RoleCommand::List { conn } => {
            print(&Client::new(&conn).call(Method::GET, "/api/v1/roles", None).await?)
        }
        RoleCommand::Get { conn, name } => print(
            &Client::new(&conn)
                .call(Method::GET, &format!("/api/v1/roles/{}", enc(&name)), None)
                .await?,
        ),
        RoleCommand::Create { conn, name, description, permissions } => print(
            &Client::new(&conn)
                .call(
                    Method::POST,
                    "/api/v1/roles",
                    Some(json!({"name": name, "description": description, "permissions": permissions})),
                )
                .await?,
        ),
        RoleCommand::Update { conn, name, description, permissions } => {
            let mut body = Map::new();
            if let Some(d) = description {
                body.insert("description".into(), json!(d));
            }
            if !permissions.is_empty() {
                body.insert("permissions".into(), json!(permissions));
            }
            if body.is_empty() {
                anyhow::bail!("nothing to change: give --description and/or --permission");
            }
            print(
                &Client::new(&conn)
                    .call(
                        Method::PATCH,
                        &format!("/api/v1/roles/{}", enc(&name)),
                        Some(Value::Object(body)),
                    )
                    .await?,
            );
        }
        RoleCommand::Delete { conn, name } => {
            Client::new(&conn)
                .call(Method::DELETE, &format!("/api/v1/roles/{}", enc(&name)), None)
                .await?;
            println!("role {name} deleted");
        }
        RoleCommand::Assign { conn, username, roles } => print(
            &Client::new(&conn)
                .call(
                    Method::PUT,
                    &format!("/api/v1/users/{}/roles", enc(&username)),
                    Some(json!({"roles": roles})),
                )
                .await?,
        ),
    }
    Ok(())
}
