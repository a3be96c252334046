//! `lotus region …`: the administrative region tree, each command one call to the node's REST
//! API.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Client, Connection, print};

#[derive(Subcommand)]
pub enum RegionCommand {
    /// The region tree (parents before children), or the regions directly below one.
    List {
        #[command(flatten)]
        conn: Connection,
        /// Only the regions directly below this one (`/` for the top level).
        #[arg(long)]
        parent: Option<String>,
    },
    /// Add a region below an existing one, e.g. `lotus region add /hz/xihu --name 西湖区
    /// --code 330106`.
    Add {
        #[command(flatten)]
        conn: Connection,
        path: String,
        #[arg(long)]
        name: String,
        /// The national administrative division code.
        #[arg(long)]
        code: Option<String>,
    },
    /// Rename a region or change its code (`--code ''` clears it); its path stays.
    Update {
        #[command(flatten)]
        conn: Connection,
        path: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        code: Option<String>,
    },
    /// Delete a region nothing is in (no sub-regions, users, products or devices).
    Delete {
        #[command(flatten)]
        conn: Connection,
        path: String,
    },
}

/// `/hz/xihu` as the API's URL takes it: its segments, each percent-encoded.
fn url_path(path: &str) -> String {
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(super::enc)
        .collect();
    format!("/api/v1/regions/{}", segments.join("/"))
}

pub(crate) async fn run(cmd: RegionCommand) -> anyhow::Result<()> {
    match cmd {
        RegionCommand::List { conn, parent } => {
            let path = match parent {
                Some(p) => format!("/api/v1/regions?parent={}", super::enc(&p)),
                None => "/api/v1/regions".into(),
            };
            print(&Client::new(&conn).call(Method::GET, &path, None).await?);
        }
        RegionCommand::Add {
            conn,
            path,
            name,
            code,
        } => {
            let mut body = json!({"path": path, "name": name});
            if let Some(c) = code {
                body["code"] = json!(c);
            }
            print(
                &Client::new(&conn)
                    .call(Method::POST, "/api/v1/regions", Some(body))
                    .await?,
            );
        }
        RegionCommand::Update {
            conn,
            path,
            name,
            code,
        } => {
            let mut body = Map::new();
            if let Some(n) = name {
                body.insert("name".into(), json!(n));
            }
            if let Some(c) = code {
                body.insert("code".into(), json!(c));
            }
            if body.is_empty() {
                anyhow::bail!("nothing to change: give --name and/or --code");
            }
            print(
                &Client::new(&conn)
                    .call(Method::PATCH, &url_path(&path), Some(Value::Object(body)))
                    .await?,
            );
        }
        RegionCommand::Delete { conn, path } => {
            Client::new(&conn)
                .call(Method::DELETE, &url_path(&path), None)
                .await?;
            println!("region {path} deleted");
        }
    }
    Ok(())
}
