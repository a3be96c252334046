//! The SMTP channel against a real SMTP server (Python's aiosmtpd, Debian
//! package `python3-aiosmtpd`) running on a loopback port.
//!
//! The server parses every received message with Python's `email` package
//! and stores it as JSON, so the assertions check what a mail client would
//! see (decoded subject, decoded bodies, envelope), not the raw wire format.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lotus_notify::{Email, NotifyError, Security, SmtpChannel, SmtpConfig};
use serde_json::Value;

const SERVER_SCRIPT: &str = r#"
import asyncio, email, json, os, sys
from email import policy
from aiosmtpd.smtp import SMTP, AuthResult

out_dir = sys.argv[1]
reject = os.environ.get("SMTP_REJECT")
defer = os.environ.get("SMTP_DEFER")
auth = os.environ.get("SMTP_AUTH")


class Handler:
    def __init__(self):
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if reject and reject in address:
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        if defer and defer in address:
            return "451 4.3.0 <%s>: try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=policy.default)
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        self.count += 1
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": session.login_data.decode() if isinstance(session.login_data, bytes) else None,
            "subject": str(msg["subject"]),
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "message_id": str(msg["message-id"]),
            "content_type": msg.get_content_type(),
            "text": text.get_content() if text is not None else None,
            "text_charset": text.get_content_charset() if text is not None else None,
            "html": html.get_content() if html is not None else None,
        }
        path = os.path.join(out_dir, "%d.json" % self.count)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 Ok: queued as Q%d" % self.count


def authenticator(server, session, envelope, mechanism, auth_data):
    user, password = auth.split(":", 1)
    ok = auth_data.login.decode() == user and auth_data.password.decode() == password
    # handled=False makes aiosmtpd answer a failure with 535 itself.
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


async def main():
    handler = Handler()
    options = {}
    if auth:
        options = dict(authenticator=authenticator, auth_required=True, auth_require_tls=False)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, enable_SMTPUTF8=True, **options), "127.0.0.1", 0
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


asyncio.run(main())
"#;

/// A running aiosmtpd process; killed when dropped.
struct SmtpServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first Python interpreter that can import aiosmtpd. `python3` on PATH
/// may be a separate installation (pyenv, venv) without Debian's packages.
fn python() -> String {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("LOTUS_TEST_PYTHON") {
        candidates.push(p);
    }
    candidates.extend(["python3".to_owned(), "/usr/bin/python3".to_owned()]);
    for candidate in &candidates {
        let ok = Command::new(candidate)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return candidate.clone();
        }
    }
    panic!(
        "no Python interpreter with aiosmtpd found (tried {candidates:?}); \
         install it with `apt-get install -y python3-aiosmtpd` or set LOTUS_TEST_PYTHON"
    );
}

impl SmtpServer {
    fn start(env: &[(&str, &str)]) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("server.py");
        std::fs::write(&script, SERVER_SCRIPT).unwrap();
        let mail_dir = dir.path().join("mail");
        std::fs::create_dir(&mail_dir).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut child = Command::new(python())
            .arg(&script)
            .arg(&mail_dir)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start aiosmtpd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let mut server = SmtpServer {
            child,
            port: 0,
            dir,
        };
        server.port = match line.trim().parse() {
            Ok(port) => port,
            Err(_) => panic!(
                "aiosmtpd did not report its port; stderr:\n{}",
                std::fs::read_to_string(server.dir.path().join("stderr.log")).unwrap_or_default()
            ),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", server.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd does not accept connections"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }

    /// The `n`-th message the server received (1-based).
    fn message(&self, n: usize) -> Value {
        read_json(&self.mail_dir().join(format!("{n}.json")))
    }

    fn message_count(&self) -> usize {
        std::fs::read_dir(self.mail_dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "json")
            })
            .count()
    }

    fn config(&self) -> SmtpConfig {
        local_config(self.port)
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not delivered: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A decoded body with the CRLF line ends that mail uses on the wire turned
/// back into the LF the sender wrote.
fn text_lines(body: &Value) -> String {
    body.as_str().expect("body missing").replace("\r\n", "\n")
}

fn local_config(port: u16) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        username: None,
        password: None,
        from: "Lotus 告警中心 <alerts@lotus.example.org>".into(),
        timeout_secs: 5,
    }
}

fn alarm_mail(to: &[&str]) -> Email {
    Email {
        to: to.iter().map(|s| s.to_string()).collect(),
        subject: "[L1] 泵站压力低 - 东湖 3 号泵站".into(),
        body_text: "泵站压力低\n出水压力 0.12 MPa，低于阈值 0.20 MPa。\n请值班人员立即处理。\n"
            .into(),
        body_html: None,
    }
}

#[tokio::test]
async fn delivers_utf8_text_mail_to_all_recipients() {
    let server = SmtpServer::start(&[]);
    let channel = SmtpChannel::new(server.config()).unwrap();
    let mail = alarm_mail(&[
        "值班员 <duty.officer@city.example.org>",
        "dispatch@district7.example.org",
    ]);

    let delivery = channel.send(&mail).await.unwrap();

    assert_eq!(
        delivery.accepted,
        [
            "duty.officer@city.example.org",
            "dispatch@district7.example.org"
        ]
    );
    assert!(
        delivery.server_reply.starts_with("250"),
        "{}",
        delivery.server_reply
    );
    assert!(
        delivery.server_reply.contains("queued as Q1"),
        "{}",
        delivery.server_reply
    );

    let got = server.message(1);
    assert_eq!(got["mail_from"], "alerts@lotus.example.org");
    assert_eq!(
        got["rcpt_tos"],
        serde_json::json!([
            "duty.officer@city.example.org",
            "dispatch@district7.example.org"
        ])
    );
    assert_eq!(got["subject"], "[L1] 泵站压力低 - 东湖 3 号泵站");
    assert_eq!(got["from"], "Lotus 告警中心 <alerts@lotus.example.org>");
    assert!(
        got["to"]
            .as_str()
            .unwrap()
            .contains("值班员 <duty.officer@city.example.org>"),
        "{got}"
    );
    assert_eq!(got["message_id"], delivery.message_id.as_str());
    assert_eq!(got["content_type"], "text/plain");
    assert_eq!(got["text_charset"], "utf-8");
    assert_eq!(text_lines(&got["text"]), mail.body_text);
    assert_eq!(got["html"], Value::Null);
}

#[tokio::test]
async fn delivers_text_and_html_alternatives() {
    let server = SmtpServer::start(&[]);
    let channel = SmtpChannel::new(server.config()).unwrap();
    let mut mail = alarm_mail(&["duty@city.example.org"]);
    mail.body_html = Some("<p><b>泵站压力低</b>：出水压力 0.12&nbsp;MPa</p>".into());

    let first = channel.send(&mail).await.unwrap();
    let second = channel.send(&mail).await.unwrap();
    assert_ne!(first.message_id, second.message_id);
    assert_eq!(server.message_count(), 2);

    let got = server.message(2);
    assert_eq!(got["content_type"], "multipart/alternative");
    assert_eq!(got["subject"], "[L1] 泵站压力低 - 东湖 3 号泵站");
    assert_eq!(text_lines(&got["text"]), mail.body_text);
    assert_eq!(
        got["html"].as_str().unwrap().trim_end(),
        mail.body_html.as_deref().unwrap()
    );
    assert_eq!(got["message_id"], second.message_id.as_str());
}

#[tokio::test]
async fn rejected_recipient_is_permanent_and_nothing_is_delivered() {
    let server = SmtpServer::start(&[("SMTP_REJECT", "nobody")]);
    let channel = SmtpChannel::new(server.config()).unwrap();
    let err = channel
        .send(&alarm_mail(&[
            "duty@city.example.org",
            "nobody@city.example.org",
        ]))
        .await
        .unwrap_err();
    match &err {
        NotifyError::Rejected { code, reply, .. } => {
            assert_eq!(*code, 550);
            assert!(reply.contains("nobody@city.example.org"), "{reply}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("rejected the message: 550"), "{text}");
    assert!(text.contains("check the recipient addresses"), "{text}");
    assert_eq!(server.message_count(), 0);
}

#[tokio::test]
async fn temporarily_refused_recipient_is_transient() {
    let server = SmtpServer::start(&[("SMTP_DEFER", "busy")]);
    let channel = SmtpChannel::new(server.config()).unwrap();
    let err = channel
        .send(&alarm_mail(&["busy@city.example.org"]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, NotifyError::Rejected { code: 451, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(err.to_string().contains("temporarily refused"), "{err}");
}

#[tokio::test]
async fn login_with_wrong_password_is_an_auth_error() {
    let server = SmtpServer::start(&[("SMTP_AUTH", "lotus:correct horse")]);

    let wrong = SmtpChannel::new(SmtpConfig {
        username: Some("lotus".into()),
        password: Some("battery staple".into()),
        ..server.config()
    })
    .unwrap();
    let err = wrong
        .send(&alarm_mail(&["duty@city.example.org"]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            NotifyError::Auth {
                code: Some(535),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(
        err.to_string().contains("check `username` and `password`"),
        "{err}"
    );
    assert!(wrong.check().await.is_err());

    // Without credentials the server demands a login before MAIL FROM.
    let anonymous = SmtpChannel::new(server.config()).unwrap();
    let err = anonymous
        .send(&alarm_mail(&["duty@city.example.org"]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            NotifyError::Auth {
                code: Some(530),
                ..
            }
        ),
        "{err:?}"
    );

    let right = SmtpChannel::new(SmtpConfig {
        username: Some("lotus".into()),
        password: Some("correct horse".into()),
        ..server.config()
    })
    .unwrap();
    right.check().await.unwrap();
    right
        .send(&alarm_mail(&["duty@city.example.org"]))
        .await
        .unwrap();
    assert_eq!(server.message_count(), 1);
    assert_eq!(server.message(1)["login"], "lotus");
}

#[tokio::test]
async fn refused_connection_is_transient() {
    // Bind and release a port so that nothing listens on it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let channel = SmtpChannel::new(local_config(port)).unwrap();
    let err = channel
        .send(&alarm_mail(&["duty@city.example.org"]))
        .await
        .unwrap_err();
    match &err {
        NotifyError::Connect { server, reason } => {
            assert_eq!(server, &format!("127.0.0.1:{port}"));
            assert!(reason.contains("connection refused"), "{reason}");
        }
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(err.is_transient());
    assert!(err.to_string().contains("check `host` and `port`"), "{err}");
}

#[tokio::test]
async fn invalid_address_is_refused_before_connecting() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let channel = SmtpChannel::new(local_config(port)).unwrap();

    let err = channel
        .send(&alarm_mail(&[
            "duty@city.example.org",
            "dispatcher at district 7",
        ]))
        .await
        .unwrap_err();
    match &err {
        NotifyError::InvalidAddress { address, .. } => {
            assert_eq!(address, "dispatcher at district 7")
        }
        other => panic!("expected InvalidAddress, got {other:?}"),
    }
    assert!(!err.is_transient());
    assert!(
        err.to_string()
            .starts_with("`dispatcher at district 7` is not a valid e-mail address")
    );

    let err = channel.send(&alarm_mail(&[])).await.unwrap_err();
    assert!(matches!(err, NotifyError::NoRecipients), "{err:?}");

    let connected = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(
        connected.is_err(),
        "the channel connected although it had nothing valid to send"
    );
}

#[tokio::test]
async fn silent_server_times_out_as_transient() {
    // Accepts connections but never sends the SMTP greeting.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    let channel = SmtpChannel::new(SmtpConfig {
        timeout_secs: 1,
        ..local_config(port)
    })
    .unwrap();
    let started = Instant::now();
    let err = channel
        .send(&alarm_mail(&["duty@city.example.org"]))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(err, NotifyError::Timeout { seconds: 1, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    hold.abort();
}

#[tokio::test]
async fn tls_against_a_plain_server_is_a_permanent_tls_error() {
    let server = SmtpServer::start(&[]);

    let implicit = SmtpChannel::new(SmtpConfig {
        security: Security::Tls,
        ..server.config()
    })
    .unwrap();
    let err = implicit
        .send(&alarm_mail(&["duty@city.example.org"]))
        .await
        .unwrap_err();
    assert!(matches!(err, NotifyError::Tls { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(
        err.to_string()
            .contains("check that `security` matches the port"),
        "{err}"
    );
    assert!(!err.to_string().contains("Connection error"), "{err}");

    // aiosmtpd without a certificate does not offer STARTTLS.
    let starttls = SmtpChannel::new(SmtpConfig {
        security: Security::StartTls,
        ..server.config()
    })
    .unwrap();
    let err = starttls
        .send(&alarm_mail(&["duty@city.example.org"]))
        .await
        .unwrap_err();
    match &err {
        NotifyError::Tls { reason, .. } => assert!(reason.contains("STARTTLS"), "{reason}"),
        other => panic!("expected Tls, got {other:?}"),
    }
    assert_eq!(server.message_count(), 0);
}
