//! `lotus org …`: the organisation tree, each command one call to the node's REST API.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Client, Connection, enc, print};

#[derive(Subcommand)]
pub enum OrgCommand {
    /// Every organisation you may see, or those directly below one.
    List {
        #[command(flatten)]
        conn: Connection,
        /// Only those directly below this organisation (`''` for the top level).
        #[arg(long)]
        parent: Option<String>,
    },
    /// Add an organisation, e.g. `lotus org add water --name 市水务集团 --parent city`.
    Add {
        #[command(flatten)]
        conn: Connection,
        /// What users' and products' `--org` will hold.
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        parent: Option<String>,
        /// The region it works in.
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        contact: Option<String>,
    },
    /// Change an organisation's name, region or contact (`''` clears the last two).
    Update {
        #[command(flatten)]
        conn: Connection,
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        contact: Option<String>,
    },
    /// Delete an organisation nothing belongs to.
    Delete {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
}

pub(crate) async fn run(cmd: OrgCommand) -> anyhow::Result<()> {
    match cmd {
        OrgCommand::List { conn, parent } => {
            let path = match parent {
                Some(p) => format!("/api/v1/orgs?parent={}", enc(&p)),
                None => "/api/v1/orgs".into(),
            };
            print(&Client::new(&conn).call(Method::GET, &path, None).await?);
        }
        OrgCommand::Add {
            conn,
            id,
            name,
            parent,
            region,
            contact,
        } => {
            let body = json!({"id": id, "name": name, "parent": parent, "region": region,
                "contact": contact});
            print(
                &Client::new(&conn)
                    .call(Method::POST, "/api/v1/orgs", Some(body))
                    .await?,
            );
        }
        OrgCommand::Update {
            conn,
            id,
            name,
            region,
            contact,
        } => {
            let mut body = Map::new();
            for (key, value) in [("name", name), ("region", region), ("contact", contact)] {
                if let Some(v) = value {
                    body.insert(key.into(), json!(v));
                }
            }
            if body.is_empty() {
                anyhow::bail!("nothing to change: give --name, --region and/or --contact");
            }
            print(
                &Client::new(&conn)
                    .call(
                        Method::PATCH,
                        &format!("/api/v1/orgs/{}", enc(&id)),
                        Some(Value::Object(body)),
                    )
                    .await?,
            );
        }
        OrgCommand::Delete { conn, id } => {
            Client::new(&conn)
                .call(Method::DELETE, &format!("/api/v1/orgs/{}", enc(&id)), None)
                .await?;
            println!("organisation {id} deleted");
        }
    }
    Ok(())
}
