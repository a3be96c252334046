//! `lotus app …`: the app registry (register, search, take online or offline, grant, rotate
//! the secret, delete), each command one call to the node's REST API; and `lotus app call`, a
//! request signed as an app the way `docs/app-api.md` specifies, to try an app's grants.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::{Client, Connection, enc, print};

#[derive(Subcommand)]
pub enum AppCommand {
    /// Register an app; prints it with its secret, which is not shown again.
    Create {
        #[command(flatten)]
        conn: Connection,
        #[arg(long)]
        name: String,
        /// web, dashboard, mobile or service.
        #[arg(long = "type")]
        app_type: String,
        #[command(flatten)]
        details: Details,
        #[command(flatten)]
        grants: Grants,
    },
    /// Search apps by type, name and status.
    List {
        #[command(flatten)]
        conn: Connection,
        #[arg(long = "type")]
        app_type: Option<String>,
        /// A part of the name.
        #[arg(long)]
        name: Option<String>,
        /// online or offline.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 1)]
        page: i64,
        #[arg(long, default_value_t = 50)]
        page_size: i64,
    },
    /// An app, by number or client id.
    Get {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Change an app's name, type or details (an empty value clears a detail).
    Update {
        #[command(flatten)]
        conn: Connection,
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "type")]
        app_type: Option<String>,
        #[command(flatten)]
        details: Details,
    },
    /// Replace an app's API and resource grants with the ones given (none given: none held).
    Grant {
        #[command(flatten)]
        conn: Connection,
        id: String,
        #[command(flatten)]
        grants: Grants,
    },
    /// Let an app call the API and be signed in to.
    Online {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Refuse an app's calls and sign-ins from now on.
    Offline {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Give an app a new secret; the old one stops working at once. Prints the new one.
    RotateSecret {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Delete an app.
    Delete {
        #[command(flatten)]
        conn: Connection,
        id: String,
    },
    /// Call the API as an app, with a signed request: e.g. `lotus app call GET
    /// /api/v1/devices --client-id app_… --secret …`.
    Call {
        #[command(flatten)]
        conn: Connection,
        method: String,
        /// The path with its query, e.g. `/api/v1/devices?pageSize=10`.
        path: String,
        #[arg(long, env = "LOTUS_APP_ID")]
        client_id: String,
        /// Or set LOTUS_APP_SECRET.
        #[arg(long, env = "LOTUS_APP_SECRET", hide_env_values = true)]
        secret: String,
        /// A JSON body.
        #[arg(long)]
        body: Option<String>,
    },
}

/// What an app is and where it opens.
#[derive(Args)]
pub struct Details {
    /// An https:// URL or a data:image/… URI.
    #[arg(long)]
    icon: Option<String>,
    /// Where the app center opens it (`--url` is the node's address).
    #[arg(long = "app-url")]
    app_url: Option<String>,
    #[arg(long)]
    vendor: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// The organisation it acts for [default at creation: yours].
    #[arg(long)]
    org: Option<String>,
    /// The region it acts in [default at creation: yours].
    #[arg(long)]
    region: Option<String>,
    /// Where OpenID Connect may send users back to; repeatable.
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    /// Where OpenID Connect logout may send users back to (`post_logout_redirect_uri`);
    /// repeatable.
    #[arg(long = "post-logout-redirect-uri")]
    post_logout_redirect_uris: Vec<String>,
    /// A role whose users may open it from the app center; repeatable.
    #[arg(long = "open-role")]
    open_roles: Vec<String>,
}

/// What an app may call, and on what.
#[derive(Args)]
pub struct Grants {
    /// An API action, e.g. `device.read`; repeatable.
    #[arg(long = "api")]
    apis: Vec<String>,
    /// A product key: the product and its devices; repeatable.
    #[arg(long = "product")]
    products: Vec<String>,
    /// A device, `productKey/deviceName`; repeatable.
    #[arg(long = "device")]
    devices: Vec<String>,
    /// A region path: everything in it or below; repeatable.
    #[arg(long = "grant-region")]
    regions: Vec<String>,
    /// A product key whose data the app reads; repeatable.
    #[arg(long = "data-model")]
    data_models: Vec<String>,
    /// An event type code: that type and its events; repeatable.
    #[arg(long = "event-type")]
    event_types: Vec<String>,
    /// An MQTT topic filter the app may subscribe to, e.g. `/a1B2c3D4e5F/+/user/update`;
    /// repeatable.
    #[arg(long = "topic", value_name = "FILTER")]
    topics: Vec<String>,
    /// An MQTT topic filter the app may publish to: a topic the product's devices receive,
    /// e.g. `/a1B2c3D4e5F/+/user/get`; repeatable. Give the same filter to --topic too to let
    /// the app subscribe to it as well.
    #[arg(long = "publish-topic", value_name = "FILTER")]
    publish_topics: Vec<String>,
}

impl Grants {
    fn resources(&self) -> Value {
        json!({
            "products": self.products,
            "devices": self.devices,
            "regions": self.regions,
            "dataModels": self.data_models,
            "eventTypes": self.event_types,
            "topics": self.topic_grants(),
        })
    }

    /// `resources.topics`: one grant per filter (the --topic ones first), with the actions of
    /// every flag that named it; a subscribe-only grant is its bare filter (as the API answers).
    fn topic_grants(&self) -> Vec<Value> {
        let mut grants: Vec<(&str, bool, bool)> = Vec::new();
        let given = self
            .topics
            .iter()
            .map(|f| (f, true, false))
            .chain(self.publish_topics.iter().map(|f| (f, false, true)));
        for (filter, subscribe, publish) in given {
            match grants.iter_mut().find(|g| g.0 == filter) {
                Some(g) => {
                    g.1 |= subscribe;
                    g.2 |= publish;
                }
                None => grants.push((filter, subscribe, publish)),
            }
        }
        grants
            .into_iter()
            .map(|(filter, subscribe, publish)| match (subscribe, publish) {
                (true, false) => json!(filter),
                (true, true) => json!({"filter": filter, "actions": ["subscribe", "publish"]}),
                _ => json!({"filter": filter, "actions": ["publish"]}),
            })
            .collect()
    }
}

impl Details {
    fn into_body(self, body: &mut Map<String, Value>) {
        for (key, value) in [
            ("icon", self.icon),
            ("url", self.app_url),
            ("vendor", self.vendor),
            ("description", self.description),
            ("org", self.org),
            ("region", self.region),
        ] {
            if let Some(v) = value {
                body.insert(key.into(), v.into());
            }
        }
        if !self.redirect_uris.is_empty() {
            body.insert("redirectUris".into(), json!(self.redirect_uris));
        }
        if !self.post_logout_redirect_uris.is_empty() {
            body.insert(
                "postLogoutRedirectUris".into(),
                json!(self.post_logout_redirect_uris),
            );
        }
        if !self.open_roles.is_empty() {
            body.insert("openRoles".into(), json!(self.open_roles));
        }
    }
}

fn app_path(id: &str) -> String {
    format!("/api/v1/apps/{}", enc(id))
}

pub async fn run(cmd: AppCommand) -> anyhow::Result<()> {
    match cmd {
        AppCommand::Create {
            conn,
            name,
            app_type,
            details,
            grants,
        } => {
            let mut body = Map::new();
            body.insert("name".into(), name.into());
            body.insert("type".into(), app_type.into());
            details.into_body(&mut body);
            body.insert("scopes".into(), json!(grants.apis));
            body.insert("resources".into(), grants.resources());
            print(
                &Client::new(&conn)
                    .call(Method::POST, "/api/v1/apps", Some(Value::Object(body)))
                    .await?,
            )
        }
        AppCommand::List {
            conn,
            app_type,
            name,
            status,
            page,
            page_size,
        } => {
            let mut q = format!("?page={page}&pageSize={page_size}");
            for (k, v) in [("type", app_type), ("name", name), ("status", status)] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", query_value(&v)));
                }
            }
            print(
                &Client::new(&conn)
                    .call(Method::GET, &format!("/api/v1/apps{q}"), None)
                    .await?,
            )
        }
        AppCommand::Get { conn, id } => print(
            &Client::new(&conn)
                .call(Method::GET, &app_path(&id), None)
                .await?,
        ),
        AppCommand::Update {
            conn,
            id,
            name,
            app_type,
            details,
        } => {
            let mut body = Map::new();
            if let Some(n) = name {
                body.insert("name".into(), n.into());
            }
            if let Some(t) = app_type {
                body.insert("type".into(), t.into());
            }
            details.into_body(&mut body);
            if body.is_empty() {
                bail!("nothing to change: give --name, --type, --url, … (see --help)");
            }
            print(
                &Client::new(&conn)
                    .call(Method::PATCH, &app_path(&id), Some(Value::Object(body)))
                    .await?,
            )
        }
        AppCommand::Grant { conn, id, grants } => print(
            &Client::new(&conn)
                .call(
                    Method::PATCH,
                    &app_path(&id),
                    Some(json!({"scopes": grants.apis, "resources": grants.resources()})),
                )
                .await?,
        ),
        AppCommand::Online { conn, id } => print(
            &Client::new(&conn)
                .call(
                    Method::PATCH,
                    &app_path(&id),
                    Some(json!({"status": "online"})),
                )
                .await?,
        ),
        AppCommand::Offline { conn, id } => print(
            &Client::new(&conn)
                .call(
                    Method::PATCH,
                    &app_path(&id),
                    Some(json!({"status": "offline"})),
                )
                .await?,
        ),
        AppCommand::RotateSecret { conn, id } => print(
            &Client::new(&conn)
                .call(Method::POST, &format!("{}/secret", app_path(&id)), None)
                .await?,
        ),
        AppCommand::Delete { conn, id } => {
            Client::new(&conn)
                .call(Method::DELETE, &app_path(&id), None)
                .await?;
        }
        AppCommand::Call {
            conn,
            method,
            path,
            client_id,
            secret,
            body,
        } => {
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .with_context(|| format!("'{method}' is not an HTTP method"))?;
            let body = body.unwrap_or_default();
            if !body.is_empty() {
                serde_json::from_str::<Value>(&body).context("--body is not JSON")?;
            }
            let (bare, query) = match path.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (path.as_str(), None),
            };
            let timestamp = lotus_device::now_ms().to_string();
            let nonce = lotus_api::signature::new_nonce();
            let canonical = lotus_api::signature::canonical_request(
                method.as_str(),
                bare,
                query,
                &timestamp,
                &nonce,
                body.as_bytes(),
            );
            let signature = lotus_api::signature::sign(&secret, &canonical);
            let client = Client::new(&conn);
            let mut req = client
                .http
                .request(method, format!("{}{path}", client.url))
                .header("X-Lotus-App", &client_id)
                .header("X-Lotus-Timestamp", &timestamp)
                .header("X-Lotus-Nonce", &nonce)
                .header("X-Lotus-Signature", signature);
            if !body.is_empty() {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body);
            }
            let resp = req
                .send()
                .await
                .with_context(|| format!("cannot reach the Lotus node at {}", client.url))?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            if !status.is_success() {
                let detail = value
                    .get("detail")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| value.to_string());
                bail!(
                    "{} {}: {detail}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                );
            }
            print(&value)
        }
    }
    Ok(())
}

/// A query value with the characters that would end or change it percent-encoded.
fn query_value(v: &str) -> String {
    v.replace('%', "%25")
        .replace('&', "%26")
        .replace('+', "%2B")
        .replace(' ', "%20")
        .replace('#', "%23")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commands_are_well_formed() {
        use clap::CommandFactory;

        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            app: AppCommand,
        }
        Cli::command().debug_assert();
    }

    #[test]
    fn topic_flags_make_one_grant_per_filter() {
        use clap::Parser;

        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            grants: Grants,
        }
        let cli = Cli::parse_from([
            "lotus",
            "--topic",
            "/pk/+/user/update",
            "--publish-topic",
            "/pk/+/user/get",
            "--topic",
            "/pk/+/user/all/#",
            "--publish-topic",
            "/pk/+/user/all/#",
        ]);
        assert_eq!(
            json!(cli.grants.topic_grants()),
            json!([
                "/pk/+/user/update",
                {"filter": "/pk/+/user/all/#", "actions": ["subscribe", "publish"]},
                {"filter": "/pk/+/user/get", "actions": ["publish"]},
            ])
        );
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(query_value("a b&c"), "a%20b%26c");
        assert_eq!(query_value("x+y#z"), "x%2By%23z");
    }
}
