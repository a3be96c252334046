//! `lotus rule …` and `lotus alarm …`: rules of the event operations center and the alarms
//! they raise, each command one call to the node's REST API.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::{Client, Connection, enc, print};

#[derive(Subcommand)]
pub enum RuleCommand {
    /// The rules you may see, with their counters.
    List {
        #[command(flatten)]
        conn: Connection,
        #[arg(long, default_value_t = 1)]
        page: i64,
        #[arg(long, default_value_t = 50)]
        page_size: i64,
    },
    /// A rule with its definition and counters.
    Get {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Create a rule from a JSON file `{id, name, description, definition}` (also `enabled`,
    /// `region`); prints the stored rule. A rule that does not compile is refused with the
    /// part to fix.
    Create {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        file: PathBuf,
    },
    /// Replace a rule's name, description and definition from a JSON file (a new version).
    Update {
        #[command(flatten)]
        conn: Connection,
        id: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Start running a rule.
    Enable {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Stop running a rule (it is kept).
    Disable {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Delete a rule with its history and counters.
    Delete {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Every stored version of a rule's definition, oldest first.
    Versions {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Make an earlier version current again (as a new version).
    Rollback {
        #[command(flatten)]
        conn: Connection,
        id: String,
        #[arg(long)]
        version: i64,
    },
    /// Test a rule against a message from a JSON file `{topic, productKey, deviceName,
    /// payload}`: whether it matches and what its actions would send. No action runs.
    #[command(name = "dry-run")]
    DryRun {
        #[command(flatten)]
        conn: Connection,
        id: String,
        #[arg(long)]
        message: PathBuf,
    },
    /// A rule's counters: matches, actions that went through and failed, the last error.
    Stats {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
}

#[derive(Subcommand)]
pub enum AlarmCommand {
    /// Alarms you may see, the most recently raised first.
    List {
        #[command(flatten)]
        conn: Connection,
        /// active, acknowledged or cleared.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        product_key: Option<String>,
        #[arg(long)]
        device_name: Option<String>,
        #[arg(long)]
        alarm_type: Option<String>,
        /// Only alarms in this region or below it, e.g. /hz/xihu.
        #[arg(long)]
        region: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: i64,
        #[arg(long, default_value_t = 50)]
        page_size: i64,
    },
    /// Acknowledge an alarm: seen and being handled.
    Ack {
        #[command(flatten)]
        conn: Connection,
        id: i64,
    },
    /// Clear an alarm: it is over.
    Clear {
        #[command(flatten)]
        conn: Connection,
        id: i64,
    },
}

/// A JSON object from a file, with a message that says which file is wrong and how.
fn json_file(path: &Path, what: &str) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if !value.is_object() {
        bail!("{} must hold a JSON object ({what})", path.display());
    }
    Ok(value)
}

/// The body of `PUT /api/v1/rules/{id}` from a rule file; its `id`, when present, must be
/// the rule being updated so that a file is never applied to the wrong rule.
fn update_body(id: &str, file: &Value, path: &Path) -> anyhow::Result<Value> {
    if let Some(file_id) = file.get("id").and_then(Value::as_str)
        && file_id != id
    {
        bail!(
            "{} describes rule '{file_id}', not '{id}': fix the file or the command",
            path.display()
        );
    }
    let Some(definition) = file.get("definition") else {
        bail!(
            "{} has no \"definition\": a rule file is {{id, name, description, definition}}",
            path.display()
        );
    };
    Ok(json!({
        "name": file.get("name").cloned().unwrap_or(Value::Null),
        "description": file.get("description").cloned().unwrap_or_else(|| json!("")),
        "definition": definition,
    }))
}

/// The body of a dry run: the file is the message itself, or already `{message: …}`.
fn dry_run_body(file: Value) -> Value {
    if file.get("message").is_some() {
        file
    } else {
        json!({"message": file})
    }
}

fn rule_path(id: &str) -> String {
    format!("/api/v1/rules/{}", enc(id))
}

pub async fn run_rule(cmd: RuleCommand) -> anyhow::Result<()> {
    match cmd {
        RuleCommand::List {
            conn,
            page,
            page_size,
        } => print(
            &Client::new(&conn)
                .call(
                    Method::GET,
                    &format!("/api/v1/rules?page={page}&pageSize={page_size}"),
                    None,
                )
                .await?,
        ),
        RuleCommand::Get { conn, id } => print(
            &Client::new(&conn)
                .call(Method::GET, &rule_path(&id), None)
                .await?,
        ),
        RuleCommand::Create { conn, file } => {
            let body = json_file(&file, "rule")?;
            print(
                &Client::new(&conn)
                    .call(Method::POST, "/api/v1/rules", Some(body))
                    .await?,
            )
        }
        RuleCommand::Update { conn, id, file } => {
            let body = update_body(&id, &json_file(&file, "rule")?, &file)?;
            print(
                &Client::new(&conn)
                    .call(Method::PUT, &rule_path(&id), Some(body))
                    .await?,
            )
        }
        RuleCommand::Enable { conn, id } => print(
            &Client::new(&conn)
                .call(Method::POST, &format!("{}/enable", rule_path(&id)), None)
                .await?,
        ),
        RuleCommand::Disable { conn, id } => print(
            &Client::new(&conn)
                .call(Method::POST, &format!("{}/disable", rule_path(&id)), None)
                .await?,
        ),
        RuleCommand::Delete { conn, id } => {
            Client::new(&conn)
                .call(Method::DELETE, &rule_path(&id), None)
                .await?;
            println!("deleted rule {id} with its history and counters");
        }
        RuleCommand::Versions { conn, id } => print(
            &Client::new(&conn)
                .call(Method::GET, &format!("{}/versions", rule_path(&id)), None)
                .await?,
        ),
        RuleCommand::Rollback { conn, id, version } => print(
            &Client::new(&conn)
                .call(
                    Method::POST,
                    &format!("{}/rollback", rule_path(&id)),
                    Some(json!({"version": version})),
                )
                .await?,
        ),
        RuleCommand::DryRun { conn, id, message } => {
            let body = dry_run_body(json_file(&message, "message")?);
            print(
                &Client::new(&conn)
                    .call(
                        Method::POST,
                        &format!("{}/dry-run", rule_path(&id)),
                        Some(body),
                    )
                    .await?,
            )
        }
        RuleCommand::Stats { conn, id } => print(
            &Client::new(&conn)
                .call(Method::GET, &format!("{}/stats", rule_path(&id)), None)
                .await?,
        ),
    }
    Ok(())
}

pub async fn run_alarm(cmd: AlarmCommand) -> anyhow::Result<()> {
    match cmd {
        AlarmCommand::List {
            conn,
            state,
            product_key,
            device_name,
            alarm_type,
            region,
            page,
            page_size,
        } => {
            let mut path = format!("/api/v1/alarms?page={page}&pageSize={page_size}");
            for (name, value) in [
                ("state", state),
                ("productKey", product_key),
                ("deviceName", device_name),
                ("alarmType", alarm_type),
                ("region", region),
            ] {
                if let Some(v) = value {
                    path.push_str(&format!("&{name}={}", query_value(&v)));
                }
            }
            print(&Client::new(&conn).call(Method::GET, &path, None).await?)
        }
        AlarmCommand::Ack { conn, id } => print(
            &Client::new(&conn)
                .call(
                    Method::POST,
                    &format!("/api/v1/alarms/{id}/acknowledge"),
                    None,
                )
                .await?,
        ),
        AlarmCommand::Clear { conn, id } => print(
            &Client::new(&conn)
                .call(Method::POST, &format!("/api/v1/alarms/{id}/clear"), None)
                .await?,
        ),
    }
    Ok(())
}

/// A query-string value: regions keep their `/` (allowed in a query), everything a query
/// gives meaning to is escaped.
fn query_value(v: &str) -> String {
    v.replace('%', "%25")
        .replace('&', "%26")
        .replace('+', "%2B")
        .replace('#', "%23")
        .replace(' ', "%20")
        .replace('=', "%3D")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_bodies_come_from_rule_files() {
        let path = Path::new("rule.json");
        let file = json!({"id": "low-pressure", "name": "Low", "definition": {"trigger": {}}});
        let body = update_body("low-pressure", &file, path).unwrap();
        assert_eq!(
            body,
            json!({"name": "Low", "description": "", "definition": {"trigger": {}}})
        );
        let wrong = update_body("other", &file, path).unwrap_err().to_string();
        assert!(wrong.contains("'low-pressure', not 'other'"), "{wrong}");
        let bare = update_body("x", &json!({"name": "n"}), path)
            .unwrap_err()
            .to_string();
        assert!(bare.contains("no \"definition\""), "{bare}");
    }

    #[test]
    fn dry_run_files_are_the_message_or_the_body() {
        let msg = json!({"productKey": "pk", "deviceName": "d", "payload": {}});
        assert_eq!(dry_run_body(msg.clone()), json!({"message": msg}));
        let body = json!({"message": msg});
        assert_eq!(dry_run_body(body.clone()), body);
        assert_eq!(query_value("a b&c=/x"), "a%20b%26c%3D/x");
    }
}
