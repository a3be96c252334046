//! `lotus event …` and `lotus task …`: search, report and inspect events, their statistics, and
//! act on your disposal tasks.

use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

use super::{Client, Connection, enc, print};

#[derive(Subcommand)]
pub enum EventCommand {
    /// Search events, the most recent first.
    List {
        #[command(flatten)]
        conn: Connection,
        /// new, processing, closed or isolated.
        #[arg(long)]
        state: Option<String>,
        /// An event type code.
        #[arg(long = "type")]
        type_code: Option<String>,
        /// 1 (critical) to 4 (general).
        #[arg(long)]
        level: Option<u8>,
        /// Events in this region or below it.
        #[arg(long)]
        region: Option<String>,
        /// A part of the title.
        #[arg(long)]
        title: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: i64,
        #[arg(long, default_value_t = 50)]
        page_size: i64,
    },
    /// An event (by id or number) with its timeline, tasks and workflow trail.
    Get {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Report an event; prints what became of it (created, merged, auto-closed, isolated).
    Create {
        #[command(flatten)]
        conn: Connection,
        /// The event type code.
        #[arg(long = "type")]
        type_code: String,
        #[arg(long)]
        title: String,
        /// 1 (critical) to 4 (general) [default: the type's].
        #[arg(long)]
        level: Option<u8>,
        /// Where it happened [default: your region].
        #[arg(long)]
        region: Option<String>,
        /// Latitude and longitude, e.g. `--location 30.25,120.15`.
        #[arg(long, value_parser = parse_location)]
        location: Option<(f64, f64)>,
        /// A field value, `name=value` (value as JSON when it parses, else text); repeatable.
        #[arg(long = "field", value_parser = parse_field)]
        fields: Vec<(String, Value)>,
    },
    /// Count events by type, level, region, state or day, and the time they took to close.
    Stats {
        #[command(flatten)]
        conn: Connection,
        #[arg(long, value_enum, default_value_t = GroupBy::Type)]
        group_by: GroupBy,
        #[arg(long)]
        state: Option<String>,
        #[arg(long = "type")]
        type_code: Option<String>,
        #[arg(long)]
        region: Option<String>,
    },
}

/// What `lotus event stats` groups by.
#[derive(Clone, Copy, ValueEnum)]
pub enum GroupBy {
    Type,
    Level,
    Region,
    State,
    Day,
}

impl GroupBy {
    fn name(self) -> &'static str {
        match self {
            GroupBy::Type => "type",
            GroupBy::Level => "level",
            GroupBy::Region => "region",
            GroupBy::State => "state",
            GroupBy::Day => "day",
        }
    }
}

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Your tasks: assigned to you, or to a role you hold in your region.
    List {
        #[command(flatten)]
        conn: Connection,
        /// open, approved, rejected, transferred or cancelled; all when `all`.
        #[arg(long, default_value = "open")]
        state: String,
        #[arg(long, default_value_t = 1)]
        page: i64,
        #[arg(long, default_value_t = 50)]
        page_size: i64,
    },
    /// Approve, reject or report progress on a task (reject and feedback need --comment).
    Act {
        #[command(flatten)]
        conn: Connection,
        id: String,
        #[arg(value_enum)]
        action: TaskVerb,
        #[arg(long)]
        comment: Option<String>,
    },
}

/// What `lotus task act` does.
#[derive(Clone, Copy, ValueEnum)]
pub enum TaskVerb {
    Approve,
    Reject,
    Feedback,
}

impl TaskVerb {
    fn name(self) -> &'static str {
        match self {
            TaskVerb::Approve => "approve",
            TaskVerb::Reject => "reject",
            TaskVerb::Feedback => "feedback",
        }
    }
}

fn parse_location(s: &str) -> Result<(f64, f64), String> {
    let (lat, lon) = s
        .split_once(',')
        .ok_or_else(|| format!("`{s}`: write latitude,longitude, e.g. 30.25,120.15"))?;
    let num = |v: &str, what: &str| {
        v.trim()
            .parse::<f64>()
            .map_err(|_| format!("`{v}` is not a {what} in degrees"))
    };
    Ok((num(lat, "latitude")?, num(lon, "longitude")?))
}

fn parse_field(s: &str) -> Result<(String, Value), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: write name=value"))?;
    if name.is_empty() {
        return Err(format!("`{s}`: the field name is missing before '='"));
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_string()));
    Ok((name.to_string(), value))
}

/// `?a=1&b=2` from the parameters that are set.
fn query(params: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref().map(|v| {
                format!(
                    "{k}={}",
                    enc(v)
                        .replace('&', "%26")
                        .replace('+', "%2B")
                        .replace(' ', "%20")
                )
            })
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

pub async fn run_event(cmd: EventCommand) -> anyhow::Result<()> {
    match cmd {
        EventCommand::List {
            conn,
            state,
            type_code,
            level,
            region,
            title,
            page,
            page_size,
        } => {
            let q = query(&[
                ("state", state),
                ("type", type_code),
                ("level", level.map(|l| l.to_string())),
                ("region", region),
                ("title", title),
                ("page", Some(page.to_string())),
                ("pageSize", Some(page_size.to_string())),
            ]);
            print(
                &Client::new(&conn)
                    .call(Method::GET, &format!("/api/v1/events{q}"), None)
                    .await?,
            )
        }
        EventCommand::Get { conn, id } => print(
            &Client::new(&conn)
                .call(Method::GET, &format!("/api/v1/events/{}", enc(&id)), None)
                .await?,
        ),
        EventCommand::Create {
            conn,
            type_code,
            title,
            level,
            region,
            location,
            fields,
        } => {
            let mut body = json!({"type": type_code, "title": title});
            if let Some(l) = level {
                body["level"] = json!(l);
            }
            if let Some(r) = region {
                body["region"] = json!(r);
            }
            if let Some((lat, lon)) = location {
                body["location"] = json!({"lat": lat, "lon": lon});
            }
            if !fields.is_empty() {
                body["fields"] = Value::Object(fields.into_iter().collect());
            }
            print(
                &Client::new(&conn)
                    .call(Method::POST, "/api/v1/events", Some(body))
                    .await?,
            )
        }
        EventCommand::Stats {
            conn,
            group_by,
            state,
            type_code,
            region,
        } => {
            let q = query(&[
                ("groupBy", Some(group_by.name().to_string())),
                ("state", state),
                ("type", type_code),
                ("region", region),
            ]);
            print(
                &Client::new(&conn)
                    .call(Method::GET, &format!("/api/v1/events/stats{q}"), None)
                    .await?,
            )
        }
    }
    Ok(())
}

pub async fn run_task(cmd: TaskCommand) -> anyhow::Result<()> {
    match cmd {
        TaskCommand::List {
            conn,
            state,
            page,
            page_size,
        } => {
            let state = (state != "all").then_some(state);
            let q = query(&[
                ("state", state),
                ("page", Some(page.to_string())),
                ("pageSize", Some(page_size.to_string())),
            ]);
            print(
                &Client::new(&conn)
                    .call(Method::GET, &format!("/api/v1/tasks{q}"), None)
                    .await?,
            )
        }
        TaskCommand::Act {
            conn,
            id,
            action,
            comment,
        } => {
            if !matches!(action, TaskVerb::Approve) && comment.is_none() {
                anyhow::bail!(
                    "{} needs --comment (the reason or the progress report)",
                    action.name()
                );
            }
            let mut body = json!({"action": action.name()});
            if let Some(c) = comment {
                body["comment"] = json!(c);
            }
            print(
                &Client::new(&conn)
                    .call(
                        Method::POST,
                        &format!("/api/v1/tasks/{}/actions", enc(&id)),
                        Some(body),
                    )
                    .await?,
            )
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_fields_parse() {
        assert_eq!(parse_location("30.25, 120.15"), Ok((30.25, 120.15)));
        assert!(parse_location("30.25").is_err());
        assert_eq!(parse_field("depth=3"), Ok(("depth".into(), json!(3))));
        assert_eq!(
            parse_field("road=Wensan Rd"),
            Ok(("road".into(), json!("Wensan Rd")))
        );
        assert!(parse_field("=1").is_err());
    }

    #[test]
    fn queries_skip_what_is_unset() {
        assert_eq!(query(&[("state", None)]), "");
        assert_eq!(
            query(&[
                ("state", Some("open".into())),
                ("title", Some("a&b c".into()))
            ]),
            "?state=open&title=a%26b%20c"
        );
    }
}
