//! Test support: a small platform (`TestHooks`), a broker on 127.0.0.1, and real clients
//! (rumqttc v3.1.1 and v5, plus a raw v3.1.1 client for byte-level checks).
//!
//! Every wait is bounded by [`WAIT`]; nothing sleeps to make an assertion true.

#![allow(dead_code, clippy::new_without_default)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lotus_model::authz::{Decision, DeviceId, Principal, TopicAction};
use lotus_mqtt::{
    AuthOutcome, Broker, BrokerConfig, BrokerHooks, ClientContext, ConnectRejection,
    ConnectRequest, DisconnectReason, InboundPublish, PublishVerdict, bind_tcp,
};
use parking_lot::Mutex;
use rumqttc::mqttbytes::v4;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

/// Upper bound of every wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// What the broker told the platform.
#[derive(Debug, Clone, PartialEq)]
pub enum HookEvent {
    Connected {
        client_id: String,
    },
    Disconnected {
        client_id: String,
        reason: DisconnectReason,
    },
    Published {
        client_id: String,
        topic: String,
    },
}

/// The test platform: users `alice` and `bob` (password `pw`) are let in; `register` gets a
/// reply-and-close; everyone else is refused. `private/{user}/…` belongs to that user alone.
/// `slow/…` is acknowledged 200 ms after it arrives; `held/…` waits until the test releases
/// it; `refuse/…` is refused with 0x99.
#[derive(Default)]
pub struct TestHooks {
    events: Mutex<Vec<HookEvent>>,
    changed: Notify,
    held: Mutex<Vec<oneshot::Sender<Result<(), String>>>>,
}

pub fn user_principal(user: &str) -> Principal {
    Principal::Device(DeviceId::new("users", user))
}

impl TestHooks {
    fn record(&self, e: HookEvent) {
        self.events.lock().push(e);
        self.changed.notify_waiters();
    }

    pub fn events(&self) -> Vec<HookEvent> {
        self.events.lock().clone()
    }

    /// Waits until the events so far satisfy `pred`.
    pub async fn wait_until(&self, what: &str, pred: impl Fn(&[HookEvent]) -> bool) {
        let done = tokio::time::timeout(WAIT, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if pred(&self.events.lock()) {
                    return;
                }
                changed.await;
            }
        })
        .await;
        if done.is_err() {
            panic!("timed out waiting for {what}; events: {:?}", self.events());
        }
    }

    /// Waits for the first event (past or future) that `pred` accepts.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&HookEvent) -> bool) -> HookEvent {
        self.wait_until(what, |events| events.iter().any(&pred))
            .await;
        self.events()
            .into_iter()
            .find(|e| pred(e))
            .expect("just seen")
    }

    /// Waits until `client_id` has disconnected `n` times.
    pub async fn disconnections(&self, client_id: &str, n: usize) {
        self.wait_until(&format!("{n} disconnections of {client_id}"), |events| {
            events
                .iter()
                .filter(
                    |e| matches!(e, HookEvent::Disconnected { client_id: c, .. } if c == client_id),
                )
                .count()
                >= n
        })
        .await;
    }

    pub async fn connected(&self, client_id: &str) {
        self.wait_for(
            &format!("{client_id} connected"),
            |e| matches!(e, HookEvent::Connected { client_id: c } if c == client_id),
        )
        .await;
    }

    /// The reason of the first disconnection of `client_id`.
    pub async fn disconnected(&self, client_id: &str) -> DisconnectReason {
        let e = self
            .wait_for(
                &format!("{client_id} disconnected"),
                |e| matches!(e, HookEvent::Disconnected { client_id: c, .. } if c == client_id),
            )
            .await;
        let HookEvent::Disconnected { reason, .. } = e else {
            unreachable!()
        };
        reason
    }

    /// Waits until a `held/…` publish is with the platform and takes its acknowledgement.
    pub async fn take_held(&self) -> oneshot::Sender<Result<(), String>> {
        let taken = tokio::time::timeout(WAIT, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                if let Some(tx) = self.held.lock().pop() {
                    return tx;
                }
                changed.await;
            }
        })
        .await;
        taken.expect("a held publish")
    }
}

fn user_of(client: &ClientContext) -> &str {
    match &client.principal {
        Principal::Device(d) => &d.device_name,
        _ => "",
    }
}

impl BrokerHooks for TestHooks {
    async fn authenticate(&self, req: &ConnectRequest<'_>) -> AuthOutcome {
        match (req.username, req.password) {
            (Some(user @ ("alice" | "bob")), Some(b"pw")) => AuthOutcome::Accept {
                principal: user_principal(user),
                session_key: format!("{user}:{}", req.client_id).into(),
            },
            (Some("register"), _) => AuthOutcome::ReplyAndClose {
                topic: "/ext/register".into(),
                payload: Bytes::from_static(b"{\"deviceSecret\":\"s3cret\"}"),
            },
            (None, _) => AuthOutcome::Reject {
                code: ConnectRejection::NotAuthorized,
                reason: "anonymous clients are not admitted".into(),
            },
            _ => AuthOutcome::Reject {
                code: ConnectRejection::BadCredentials,
                reason: "wrong user name or password".into(),
            },
        }
    }

    fn authorize(&self, client: &ClientContext, _action: TopicAction, topic: &str) -> Decision {
        let mut levels = topic.split('/');
        if levels.next() == Some("private")
            && let Some(owner) = levels.next()
            && owner != "+"
            && owner != "#"
            && owner != user_of(client)
        {
            return Decision::Deny(format!("private/{owner} belongs to someone else").into());
        }
        Decision::Allow
    }

    async fn on_publish(&self, client: &ClientContext, publish: &InboundPublish) -> PublishVerdict {
        self.record(HookEvent::Published {
            client_id: client.client_id.to_string(),
            topic: publish.topic.to_string(),
        });
        if publish.topic.starts_with("slow/") {
            let (tx, rx) = oneshot::channel();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = tx.send(Ok(()));
            });
            return PublishVerdict::Route { ack: Some(rx) };
        }
        if publish.topic.starts_with("held/") {
            let (tx, rx) = oneshot::channel();
            self.held.lock().push(tx);
            self.changed.notify_waiters();
            return PublishVerdict::Route { ack: Some(rx) };
        }
        if publish.topic.starts_with("refuse/") {
            return PublishVerdict::Refuse {
                code: 0x99,
                reason: "payload format invalid".into(),
            };
        }
        PublishVerdict::Route { ack: None }
    }

    fn on_connected(&self, client: &ClientContext) {
        self.record(HookEvent::Connected {
            client_id: client.client_id.to_string(),
        });
    }

    fn on_disconnected(&self, client: &ClientContext, reason: &DisconnectReason) {
        self.record(HookEvent::Disconnected {
            client_id: client.client_id.to_string(),
            reason: reason.clone(),
        });
    }
}

pub struct TestBroker {
    pub broker: Broker<TestHooks>,
    pub hooks: Arc<TestHooks>,
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
}

pub async fn start() -> TestBroker {
    start_with(BrokerConfig::default()).await
}

pub async fn start_with(config: BrokerConfig) -> TestBroker {
    let hooks = Arc::new(TestHooks::default());
    let broker = Broker::new(config, hooks.clone());
    let localhost: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let tcp = bind_tcp(localhost).unwrap();
    let ws = bind_tcp(localhost).unwrap();
    let (tcp_addr, ws_addr) = (tcp.local_addr().unwrap(), ws.local_addr().unwrap());
    broker.serve_tcp(tcp);
    broker.serve_websocket(ws);
    TestBroker {
        broker,
        hooks,
        tcp: tcp_addr,
        ws: ws_addr,
    }
}

// ---------------------------------------------------------------------------------------------
// rumqttc MQTT 3.1.1

pub fn v4_options(client_id: &str, user: Option<&str>, addr: SocketAddr) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    if let Some(u) = user {
        o.set_credentials(u, "pw");
    }
    o.set_keep_alive(Duration::from_secs(30));
    o
}

type V4Event = Result<rumqttc::Event, rumqttc::ConnectionError>;

/// A rumqttc v3.1.1 client whose event loop runs in a task. Dropping it drops the socket
/// without DISCONNECT.
pub struct V4 {
    pub client: rumqttc::AsyncClient,
    events: mpsc::UnboundedReceiver<V4Event>,
    task: JoinHandle<()>,
}

impl Drop for V4 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl V4 {
    /// Connects; `Err` carries the connection error (for example a refusal).
    pub async fn connect(
        options: rumqttc::MqttOptions,
    ) -> Result<(V4, v4::ConnAck), rumqttc::ConnectionError> {
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1024);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let stop = ev.is_err();
                if tx.send(ev).is_err() || stop {
                    return;
                }
            }
        });
        let mut c = V4 {
            client,
            events,
            task,
        };
        loop {
            match c.next().await {
                Ok(rumqttc::Event::Incoming(v4::Packet::ConnAck(ack))) => return Ok((c, ack)),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn connected(options: rumqttc::MqttOptions) -> V4 {
        match Self::connect(options).await {
            Ok((c, _)) => c,
            Err(e) => panic!("connection failed: {e:?}"),
        }
    }

    pub async fn next(&mut self) -> V4Event {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("timed out waiting for an MQTT event")
            .expect("the event loop ended")
    }

    /// The next incoming packet that `f` picks; panics on a connection error.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&v4::Packet) -> Option<T>,
    ) -> T {
        loop {
            match self.next().await {
                Ok(rumqttc::Event::Incoming(p)) => {
                    if let Some(t) = f(&p) {
                        return t;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("connection error while waiting for {what}: {e:?}"),
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) -> v4::SubscribeReasonCode {
        self.client.subscribe(filter, qos).await.unwrap();
        self.expect("SUBACK", |p| match p {
            v4::Packet::SubAck(a) => Some(a.return_codes[0]),
            _ => None,
        })
        .await
    }

    pub async fn publish(&self, topic: &str, qos: rumqttc::QoS, payload: &[u8]) {
        self.client
            .publish(topic, qos, false, payload.to_vec())
            .await
            .unwrap();
    }

    pub async fn publish_retained(&self, topic: &str, payload: &[u8]) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, true, payload.to_vec())
            .await
            .unwrap();
    }

    /// Publishes and waits for the end of its acknowledgement flow.
    pub async fn publish_acked(&mut self, topic: &str, qos: rumqttc::QoS, payload: &[u8]) {
        self.publish(topic, qos, payload).await;
        match qos {
            rumqttc::QoS::AtMostOnce => {}
            rumqttc::QoS::AtLeastOnce => {
                self.expect("PUBACK", |p| {
                    matches!(p, v4::Packet::PubAck(_)).then_some(())
                })
                .await
            }
            rumqttc::QoS::ExactlyOnce => {
                self.expect("PUBCOMP", |p| {
                    matches!(p, v4::Packet::PubComp(_)).then_some(())
                })
                .await
            }
        }
    }

    pub async fn expect_publish(&mut self) -> v4::Publish {
        self.expect("PUBLISH", |p| match p {
            v4::Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the connection to end; returns the error that ended it.
    pub async fn closed(&mut self) -> rumqttc::ConnectionError {
        loop {
            if let Err(e) = self.next().await {
                return e;
            }
        }
    }

    /// Sends DISCONNECT and waits until it is on the wire.
    pub async fn disconnect(&mut self) {
        self.client.disconnect().await.unwrap();
        loop {
            match self.next().await {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// rumqttc MQTT 5

/// The rumqttc v5 names the tests use (not every test file uses all of them).
#[allow(unused_imports)]
pub mod v5c {
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::mqttbytes::v5::{
        ConnAck, Filter, Packet, PubAck, PubAckReason, Publish, PublishProperties,
        SubscribeReasonCode,
    };
    pub use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
}

pub fn v5_options(client_id: &str, user: Option<&str>, addr: SocketAddr) -> v5c::MqttOptions {
    let mut o = v5c::MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    if let Some(u) = user {
        o.set_credentials(u, "pw");
    }
    o.set_keep_alive(Duration::from_secs(30));
    o
}

type V5Event = Result<v5c::Event, v5c::ConnectionError>;

pub struct V5 {
    pub client: v5c::AsyncClient,
    events: mpsc::UnboundedReceiver<V5Event>,
    task: JoinHandle<()>,
}

impl Drop for V5 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl V5 {
    pub async fn connect(
        options: v5c::MqttOptions,
    ) -> Result<(V5, v5c::ConnAck), v5c::ConnectionError> {
        let (client, mut eventloop) = v5c::AsyncClient::new(options, 1024);
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await;
                let stop = ev.is_err();
                if tx.send(ev).is_err() || stop {
                    return;
                }
            }
        });
        let mut c = V5 {
            client,
            events,
            task,
        };
        loop {
            match c.next().await {
                Ok(v5c::Event::Incoming(v5c::Packet::ConnAck(ack))) => return Ok((c, ack)),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn connected(options: v5c::MqttOptions) -> V5 {
        match Self::connect(options).await {
            Ok((c, _)) => c,
            Err(e) => panic!("connection failed: {e:?}"),
        }
    }

    pub async fn next(&mut self) -> V5Event {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .expect("timed out waiting for an MQTT event")
            .expect("the event loop ended")
    }

    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&v5c::Packet) -> Option<T>,
    ) -> T {
        loop {
            match self.next().await {
                Ok(v5c::Event::Incoming(p)) => {
                    if let Some(t) = f(&p) {
                        return t;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("connection error while waiting for {what}: {e:?}"),
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: v5c::QoS) -> v5c::SubscribeReasonCode {
        self.client.subscribe(filter, qos).await.unwrap();
        self.expect_suback().await
    }

    pub async fn expect_suback(&mut self) -> v5c::SubscribeReasonCode {
        self.expect("SUBACK", |p| match p {
            v5c::Packet::SubAck(a) => Some(a.return_codes[0]),
            _ => None,
        })
        .await
    }

    pub async fn publish(&self, topic: &str, qos: v5c::QoS, payload: &[u8]) {
        self.client
            .publish(topic, qos, false, payload.to_vec())
            .await
            .unwrap();
    }

    pub async fn expect_puback(&mut self) -> v5c::PubAck {
        self.expect("PUBACK", |p| match p {
            v5c::Packet::PubAck(a) => Some(a.clone()),
            _ => None,
        })
        .await
    }

    pub async fn expect_publish(&mut self) -> v5c::Publish {
        self.expect("PUBLISH", |p| match p {
            v5c::Packet::Publish(p) => Some(p.clone()),
            _ => None,
        })
        .await
    }

    pub async fn closed(&mut self) -> v5c::ConnectionError {
        loop {
            if let Err(e) = self.next().await {
                return e;
            }
        }
    }

    /// The reason code of the server's DISCONNECT that ended the connection.
    pub async fn server_disconnect(&mut self) -> rumqttc::v5::mqttbytes::v5::DisconnectReasonCode {
        match self.closed().await {
            v5c::ConnectionError::MqttState(v5c::StateError::ServerDisconnect {
                reason_code,
                ..
            }) => reason_code,
            other => panic!("expected a server DISCONNECT, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A raw MQTT 3.1.1 client: exact control over bytes and packet order.

pub struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

pub fn raw_connect(client_id: &str, user: &str, keep_alive: u16) -> v4::Connect {
    let mut c = v4::Connect::new(client_id);
    c.keep_alive = keep_alive;
    c.set_login(user, "pw");
    c
}

impl Raw {
    pub async fn open(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// Connects and expects a successful CONNACK.
    pub async fn connect(addr: SocketAddr, connect: v4::Connect) -> Raw {
        let mut raw = Raw::open(addr).await;
        raw.send(v4::Packet::Connect(connect)).await;
        match raw.recv().await {
            Some(v4::Packet::ConnAck(a)) if a.code == v4::ConnectReturnCode::Success => raw,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, p: v4::Packet) {
        let mut b = BytesMut::new();
        p.write(&mut b, usize::MAX).unwrap();
        self.send_bytes(&b).await;
    }

    pub async fn send_bytes(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.unwrap();
    }

    /// The next packet, or `None` once the broker closed the connection.
    pub async fn recv(&mut self) -> Option<v4::Packet> {
        let read = tokio::time::timeout(WAIT, async {
            loop {
                match v4::Packet::read(&mut self.buf, usize::MAX) {
                    Ok(p) => return Some(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("broker sent garbage: {e}"),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await;
        read.expect("timed out waiting for a packet from the broker")
    }

    /// Waits for the broker to close; returns the packets received before.
    pub async fn closed(&mut self) -> Vec<v4::Packet> {
        let mut got = Vec::new();
        while let Some(p) = self.recv().await {
            got.push(p);
        }
        got
    }
}

pub fn publish_packet(
    topic: &str,
    qos: rumqttc::QoS,
    pkid: u16,
    payload: &'static [u8],
) -> v4::Packet {
    let mut p = v4::Publish::new(topic, qos, payload);
    p.pkid = pkid;
    v4::Packet::Publish(p)
}
