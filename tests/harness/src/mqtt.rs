//! Real MQTT clients (rumqttc) for tests: connect, wait for packets with time bounds.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// An MQTT 3.1.1 client whose event loop runs in the background.
pub struct Client {
    pub client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, String>>,
    task: tokio::task::JoinHandle<()>,
}

/// Why a connection ended or was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    Code(ConnectReturnCode),
    Closed(String),
}

impl Client {
    /// Connects and waits for CONNACK. `Err(Refused)` when the broker refuses.
    pub async fn connect(options: MqttOptions) -> anyhow::Result<Result<Client, Refused>> {
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let (tx, mut events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(ev) => {
                        if tx.send(Ok(ev)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(match e {
                            rumqttc::ConnectionError::ConnectionRefused(code) => {
                                format!("refused:{code:?}")
                            }
                            other => other.to_string(),
                        }));
                        return;
                    }
                }
            }
        });
        let outcome = tokio::time::timeout(WAIT, async {
            while let Some(ev) = events.recv().await {
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        return if ack.code == ConnectReturnCode::Success {
                            Ok(())
                        } else {
                            Err(Refused::Code(ack.code))
                        };
                    }
                    Ok(_) => continue,
                    Err(e) => return Err(parse_refusal(&e)),
                }
            }
            Err(Refused::Closed("event loop ended".into()))
        })
        .await
        .context("no CONNACK within the wait")?;
        match outcome {
            Ok(()) => Ok(Ok(Client {
                client,
                events,
                task,
            })),
            Err(r) => {
                task.abort();
                Ok(Err(r))
            }
        }
    }

    /// Connects and fails the test if refused.
    pub async fn connected(options: MqttOptions) -> anyhow::Result<Client> {
        match Self::connect(options).await? {
            Ok(c) => Ok(c),
            Err(r) => bail!("connection refused: {r:?}"),
        }
    }

    /// Subscribes and returns the granted code (0x80 = refused).
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: QoS,
    ) -> anyhow::Result<rumqttc::SubscribeReasonCode> {
        self.client.subscribe(filter, qos).await?;
        let ack = self
            .next_matching(|p| matches!(p, Packet::SubAck(_)))
            .await?;
        let Packet::SubAck(ack) = ack else {
            unreachable!()
        };
        ack.return_codes.first().copied().context("empty SUBACK")
    }

    pub async fn publish(
        &self,
        topic: &str,
        qos: QoS,
        payload: impl Into<Vec<u8>>,
    ) -> anyhow::Result<()> {
        self.client
            .publish(topic, qos, false, payload.into())
            .await?;
        Ok(())
    }

    /// The next incoming PUBLISH on `topic`.
    pub async fn expect_publish(&mut self, topic: &str) -> anyhow::Result<Bytes> {
        let t = topic.to_string();
        let p = self
            .next_matching(move |p| matches!(p, Packet::Publish(x) if x.topic == t))
            .await
            .with_context(|| format!("waiting for a message on {topic}"))?;
        let Packet::Publish(p) = p else {
            unreachable!()
        };
        Ok(p.payload)
    }

    /// The next incoming PUBLISH on `topic`, parsed as JSON.
    pub async fn expect_json(&mut self, topic: &str) -> anyhow::Result<serde_json::Value> {
        let b = self.expect_publish(topic).await?;
        serde_json::from_slice(&b).with_context(|| format!("payload on {topic} is not JSON"))
    }

    /// The next incoming PUBLISH whose topic starts with `prefix`: `(topic, JSON payload)`.
    pub async fn expect_publish_prefix(
        &mut self,
        prefix: &str,
    ) -> anyhow::Result<(String, serde_json::Value)> {
        let pre = prefix.to_string();
        let p = self
            .next_matching(move |p| matches!(p, Packet::Publish(x) if x.topic.starts_with(&pre)))
            .await
            .with_context(|| format!("waiting for a message under {prefix}"))?;
        let Packet::Publish(p) = p else {
            unreachable!()
        };
        Ok((p.topic, serde_json::from_slice(&p.payload)?))
    }

    /// Waits up to `within` and fails if any PUBLISH arrives.
    pub async fn expect_no_publish(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Err(_) => return Ok(()),
                Ok(None) => return Ok(()),
                Ok(Some(Ok(Event::Incoming(Packet::Publish(p))))) => {
                    bail!("unexpected message on {}: {:?}", p.topic, p.payload)
                }
                Ok(Some(_)) => continue,
            }
        }
    }

    /// Waits until the broker closes the connection; returns the reason text.
    pub async fn expect_closed(&mut self) -> anyhow::Result<String> {
        tokio::time::timeout(WAIT, async {
            while let Some(ev) = self.events.recv().await {
                if let Err(e) = ev {
                    return e;
                }
                if let Ok(Event::Incoming(Packet::Disconnect)) = ev {
                    return "disconnect".to_string();
                }
            }
            "event loop ended".to_string()
        })
        .await
        .context("the broker did not close the connection")
    }

    async fn next_matching(&mut self, f: impl Fn(&Packet) -> bool) -> anyhow::Result<Packet> {
        tokio::time::timeout(WAIT, async {
            while let Some(ev) = self.events.recv().await {
                match ev {
                    Ok(Event::Incoming(p)) if f(&p) => return Ok(p),
                    Ok(_) => continue,
                    Err(e) => bail!("connection ended: {e}"),
                }
            }
            bail!("event loop ended")
        })
        .await
        .context("timed out")?
    }

    /// Waits until the broker acknowledged `n` QoS 1 publishes (PUBACKs).
    pub async fn wait_pubacks(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            self.next_matching(|p| matches!(p, Packet::PubAck(_)))
                .await?;
        }
        Ok(())
    }

    /// Sends DISCONNECT and stops the event loop.
    pub async fn disconnect(self) {
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.task.abort();
    }

    /// Drops the TCP connection without DISCONNECT.
    pub fn abort(self) {
        self.task.abort();
    }
}

fn parse_refusal(e: &str) -> Refused {
    let code = match e {
        "refused:BadUserNamePassword" => Some(ConnectReturnCode::BadUserNamePassword),
        "refused:NotAuthorized" => Some(ConnectReturnCode::NotAuthorized),
        "refused:BadClientId" => Some(ConnectReturnCode::BadClientId),
        "refused:ServiceUnavailable" => Some(ConnectReturnCode::ServiceUnavailable),
        "refused:RefusedProtocolVersion" => Some(ConnectReturnCode::RefusedProtocolVersion),
        _ => None,
    };
    code.map(Refused::Code)
        .unwrap_or_else(|| Refused::Closed(e.to_string()))
}
