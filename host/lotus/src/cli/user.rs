//! `lotus user …`: operator accounts — create, list, show, change, disable and enable them,
//! and reset a forgotten password; each command one call to the node's REST API.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Client, Connection, enc, print};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create an operator scoped to an organisation and a region.
    Create {
        #[command(flatten)]
        conn: Connection,
        username: String,
        /// Or set LOTUS_NEW_PASSWORD.
        #[arg(long, env = "LOTUS_NEW_PASSWORD", hide_env_values = true)]
        password: String,
        /// Repeatable: admin, operator, viewer, security_admin, auditor.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        #[arg(long, default_value = "")]
        org: String,
        #[arg(long, default_value = "/")]
        region: String,
    },
    /// Accounts, by name (never their passwords).
    List {
        #[command(flatten)]
        conn: Connection,
        /// Only disabled accounts.
        #[arg(long, conflicts_with = "active")]
        disabled: bool,
        /// Only active accounts.
        #[arg(long)]
        active: bool,
    },
    /// One account: roles, organisation, region, contact details, whether it is disabled or
    /// locked.
    Get {
        #[command(flatten)]
        conn: Connection,
        username: String,
    },
    /// Move a user to another organisation or region, or change their name or contact details.
    ///
    /// E.g. `lotus user update alice --region /hz/binjiang`. An empty value (`--email ""`)
    /// removes a contact detail.
    Update {
        #[command(flatten)]
        conn: Connection,
        username: String,
        /// The organisation's id; "" for none.
        #[arg(long)]
        org: Option<String>,
        /// A region path; / is the whole city.
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// + and 6 to 20 digits, e.g. +8613812345678.
        #[arg(long)]
        phone: Option<String>,
    },
    /// Disable an account: its sessions end at once and it cannot log in until enabled.
    Disable {
        #[command(flatten)]
        conn: Connection,
        username: String,
    },
    /// Enable a disabled account again.
    Enable {
        #[command(flatten)]
        conn: Connection,
        username: String,
    },
    /// Set a new password for a user who forgot theirs; their sessions end.
    ///
    /// They are asked to choose their own at the next log-in. The password is read from
    /// standard input (its first line), or asked for twice, without echo, on a terminal; never
    /// from the command line, where other users of the machine could see it.
    ResetPassword {
        #[command(flatten)]
        conn: Connection,
        username: String,
    },
}

pub(crate) async fn run(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create { conn, username, password, roles, org, region } => print(
            &Client::new(&conn)
                .call(
                    Method::POST,
                    "/api/v1/users",
                    Some(json!({"username": username, "password": password, "roles": roles, "org": org, "region": region})),
                )
                .await?,
        ),
        UserCommand::List { conn, disabled, active } => {
            let path = match (disabled, active) {
                (true, _) => "/api/v1/users?disabled=true",
                (_, true) => "/api/v1/users?disabled=false",
                _ => "/api/v1/users",
            };
            print(&Client::new(&conn).call(Method::GET, path, None).await?)
        }
        UserCommand::Get { conn, username } => print(
            &Client::new(&conn)
                .call(Method::GET, &format!("/api/v1/users/{}", enc(&username)), None)
                .await?,
        ),
        UserCommand::Update { conn, username, org, region, display_name, email, phone } => {
            let mut body = Map::new();
            for (field, value) in [
                ("org", org),
                ("region", region),
                ("displayName", display_name),
                ("email", email),
                ("phone", phone),
            ] {
                if let Some(v) = value {
                    body.insert(field.into(), json!(v));
                }
            }
            if body.is_empty() {
                bail!("nothing to change: give --org, --region, --display-name, --email and/or --phone");
            }
            print(&patch(&conn, &username, Value::Object(body)).await?);
        }
        UserCommand::Disable { conn, username } => {
            patch(&conn, &username, json!({"disabled": true})).await?;
            println!("user {username} disabled: their sessions have ended");
        }
        UserCommand::Enable { conn, username } => {
            patch(&conn, &username, json!({"disabled": false})).await?;
            println!("user {username} enabled");
        }
        UserCommand::ResetPassword { conn, username } => {
            let password = new_password(&username)?;
            Client::new(&conn)
                .call(
                    Method::POST,
                    &format!("/api/v1/users/{}/password", enc(&username)),
                    Some(json!({"password": password})),
                )
                .await?;
            println!(
                "password of {username} reset: their sessions have ended; they will be asked to choose their own at the next log-in"
            );
        }
    }
    Ok(())
}

async fn patch(conn: &Connection, username: &str, body: Value) -> anyhow::Result<Value> {
    Client::new(conn)
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", enc(username)),
            Some(body),
        )
        .await
}

/// The new password: the first line of standard input, or typed twice on a terminal.
fn new_password(username: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the new password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        if password.is_empty() {
            bail!(
                "no password on standard input: pipe it in, e.g. `lotus user reset-password {username} < file`"
            );
        }
        return Ok(password);
    }
    let first = prompt_hidden(&format!("new password for {username}: "))?;
    let second = prompt_hidden("again: ")?;
    if first != second {
        bail!("the two passwords differ: nothing was changed");
    }
    if first.is_empty() {
        bail!("an empty password: nothing was changed");
    }
    Ok(first)
}

/// Reads a line from the terminal with echo off (through `stty`, so no terminal library is
/// needed); echo comes back even when reading fails.
fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let hidden = stty("-echo");
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if hidden {
        stty("echo");
    }
    eprintln!();
    read.context("reading the new password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}
