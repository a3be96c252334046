//! In-app messages: the message center of each user a notification is for.

use lotus_model::scope::region_covers;
use lotus_storage::{NewMessage, Store, UserRow};

use crate::recipient::Recipient;

/// The usernames a recipient stands for: the user, or every holder of the role whose own
/// region contains the recipient's region (a district dispatcher sees the streets' events).
pub async fn resolve(store: &Store, recipient: &Recipient) -> Result<Vec<String>, String> {
    match recipient {
        Recipient::User(u) => Ok(vec![u.clone()]),
        // An address has no message center.
        Recipient::Address(_) => Ok(Vec::new()),
        Recipient::Role { role, region } => {
            let users = store.list_users().await.map_err(|e| e.to_string())?;
            Ok(role_holders(&users, role, region))
        }
    }
}

/// The users among `users` who hold `role` with a region that contains `region`.
pub(crate) fn role_holders(users: &[UserRow], role: &str, region: &str) -> Vec<String> {
    users
        .iter()
        .filter(|u| u.roles.iter().any(|r| r == role) && region_covers(&u.scope.region, region))
        .map(|u| u.username.clone())
        .collect()
}

/// Puts a message in each recipient's message center; returns how many were written.
pub async fn deliver(
    store: &Store,
    recipients: &[Recipient],
    title: &str,
    body: &str,
    level: Option<i64>,
    link: Option<&str>,
    at: i64,
) -> Result<usize, String> {
    let mut names: Vec<String> = Vec::new();
    for r in recipients {
        for u in resolve(store, r).await? {
            if !names.contains(&u) {
                names.push(u);
            }
        }
    }
    for username in &names {
        store
            .insert_message(&NewMessage {
                username,
                kind: "notification",
                title,
                body,
                level,
                link,
                sender: None,
                at,
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(names.len())
}
