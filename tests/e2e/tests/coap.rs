//! CoAP device access against the real binary: libcoap's `coap-client` (plain and DTLS with the
//! derived PSK), and a minimal in-test client for the encrypted channel and block-wise transfer.

use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use hmac::{Hmac, Mac};
use lotus_e2e::{Fixture, sys};
use lotus_model::alink::{SignMethod, connect_sign_content};
use lotus_test_harness::device::DeviceCredentials;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::UdpSocket;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn auth_body(creds: &DeviceCredentials) -> Value {
    let client_id = format!("{}.{}", creds.product_key, creds.device_name);
    let timestamp = now_ms().to_string();
    let sign = SignMethod::HmacSha256.sign(
        creds.device_secret.as_bytes(),
        &connect_sign_content(
            &client_id,
            &creds.device_name,
            &creds.product_key,
            Some(&timestamp),
        ),
    );
    json!({
        "productKey": creds.product_key, "deviceName": creds.device_name,
        "clientId": client_id, "timestamp": timestamp, "signmethod": "hmacsha256", "sign": sign,
    })
}

fn property_post(id: &str, brightness: i64) -> Value {
    json!({"id": id, "version": "1.0", "params": {"Brightness": brightness}, "method": "thing.event.property.post"})
}

/// libcoap's client with DTLS support (Debian package libcoap3-bin).
fn coap_client() -> &'static str {
    for name in ["coap-client-openssl", "coap-client-gnutls", "coap-client"] {
        if Command::new(name).arg("-h").output().is_ok() {
            return name;
        }
    }
    panic!("libcoap's coap-client is not installed: apt-get install libcoap3-bin");
}

/// Runs coap-client; returns (stdout, stderr).
fn run_coap_client(args: &[&std::ffi::OsStr]) -> (String, String) {
    let out = Command::new(coap_client())
        .args(["-B", "10"])
        .args(args)
        .output()
        .expect("coap-client runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

async fn brightness(f: &Fixture, i: usize) -> anyhow::Result<Value> {
    let latest = f.latest_properties(i).await?;
    Ok(latest
        .as_array()
        .and_then(|a| a.iter().find(|p| p["identifier"] == "Brightness"))
        .map(|p| p["value"].clone())
        .unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_client_authenticates_and_posts_a_property() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let d = &f.devices[0];
    let addr = f.node.coap.expect("the node serves CoAP");
    let base = format!("coap://{addr}");

    let auth = auth_body(d).to_string();
    let (out, err) = run_coap_client(&[
        os("-m"),
        os("post"),
        os("-t"),
        os("50"),
        os("-e"),
        os(&auth),
        os(&format!("{base}/auth")),
    ]);
    let token: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("auth answer {out:?} ({e}); stderr: {err}"));
    let token = token["token"].as_str().expect("a token").to_string();

    let topic = sys(d, "thing/event/property/post");
    let body = property_post("1", 42).to_string();
    let (out, err) = run_coap_client(&[
        os("-m"),
        os("post"),
        os("-t"),
        os("50"),
        os("-O"),
        os(&format!("2088,{token}")),
        os("-e"),
        os(&body),
        os(&format!("{base}/topic{topic}")),
    ]);
    let reply: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("topic answer {out:?} ({e}); stderr: {err}"));
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(reply["id"], "1");
    assert_eq!(brightness(&f, 0).await?, 42);

    // Without the token: 4.01 telling the device what to do.
    let (out, err) = run_coap_client(&[
        os("-m"),
        os("post"),
        os("-e"),
        os(&body),
        os(&format!("{base}/topic{topic}")),
    ]);
    let all = format!("{out}{err}");
    assert!(all.contains("4.01"), "{all}");
    assert!(all.contains("/auth"), "{all}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_client_posts_over_dtls_with_the_derived_psk() -> anyhow::Result<()> {
    let f = Fixture::start(4).await?;
    let addr = f.node.coap_dtls.expect("the node serves CoAP over DTLS");
    // coap-client takes the key as a C string: pick a device whose 16-byte PSK has no zero byte.
    let (i, d, psk) = f
        .devices
        .iter()
        .enumerate()
        .find_map(|(i, d)| {
            let identity = format!("{}&{}", d.product_key, d.device_name);
            let mut mac =
                <Hmac<Sha256> as Mac>::new_from_slice(d.device_secret.as_bytes()).unwrap();
            mac.update(identity.as_bytes());
            let psk: Vec<u8> = mac.finalize().into_bytes()[..16].to_vec();
            (!psk.contains(&0)).then_some((i, d, psk))
        })
        .expect("one of four PSKs has no zero byte");
    let identity = format!("{}&{}", d.product_key, d.device_name);
    let topic = sys(d, "thing/event/property/post");
    let body = property_post("7", 77).to_string();
    let (out, err) = run_coap_client(&[
        os("-m"),
        os("post"),
        os("-t"),
        os("50"),
        os("-u"),
        os(&identity),
        os("-k"),
        std::ffi::OsStr::from_bytes(&psk),
        os("-e"),
        os(&body),
        os(&format!("coaps://{addr}/topic{topic}")),
    ]);
    let reply: Value = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("DTLS answer {out:?} ({e}); stderr: {err}"));
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(brightness(&f, i).await?, 77);

    // A wrong key fails the handshake: nothing is stored.
    let (out, _) = run_coap_client(&[
        os("-m"),
        os("post"),
        os("-u"),
        os(&identity),
        os("-k"),
        os("not-the-key"),
        os("-B"),
        os("3"),
        os("-e"),
        os(&property_post("8", 5).to_string()),
        os(&format!("coaps://{addr}/topic{topic}")),
    ]);
    assert!(!out.contains("\"code\":200"), "{out}");
    assert_eq!(brightness(&f, i).await?, 77);
    Ok(())
}

/// A tiny confirmable-request client for what coap-client cannot do (encryption, replays).
struct Client {
    socket: UdpSocket,
    mid: u16,
}

impl Client {
    async fn new(server: SocketAddr) -> anyhow::Result<Client> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        socket.connect(server).await?;
        Ok(Client { socket, mid: 100 })
    }

    async fn send(&mut self, request: &Packet) -> anyhow::Result<Packet> {
        self.socket
            .send(&request.to_bytes_unlimited().unwrap())
            .await?;
        let mut buf = vec![0u8; 65_536];
        let n = tokio::time::timeout(Duration::from_secs(10), self.socket.recv(&mut buf)).await??;
        Packet::from_bytes(&buf[..n]).map_err(|e| anyhow::anyhow!("{e:?}"))
    }

    fn request(&mut self, path: &str, payload: Vec<u8>) -> Packet {
        let mut p = Packet::new();
        p.header.set_type(MessageType::Confirmable);
        p.header.code = MessageClass::Request(RequestType::Post);
        self.mid = self.mid.wrapping_add(1);
        p.header.message_id = self.mid;
        p.set_token(vec![1, 2, 3, 4]);
        for seg in path.trim_start_matches('/').split('/') {
            p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
        }
        p.payload = payload;
        p
    }
}

fn uint(v: u64) -> Vec<u8> {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

fn gcm(key: &[u8], seq: u64, token: &str, data: &[u8], seal: bool) -> Option<Vec<u8>> {
    let cipher = Aes128Gcm::new_from_slice(key).unwrap();
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&seq.to_be_bytes());
    let payload = Payload {
        msg: data,
        aad: token.as_bytes(),
    };
    if seal {
        cipher.encrypt(Nonce::from_slice(&nonce), payload).ok()
    } else {
        cipher.decrypt(Nonce::from_slice(&nonce), payload).ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_channel_posts_and_refuses_replays() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let d = &f.devices[0];
    let mut c = Client::new(f.node.coap_encrypted.expect("encrypted channel")).await?;

    let mut auth = c.request("/auth", auth_body(d).to_string().into_bytes());
    auth.add_option(CoapOption::ContentFormat, vec![50]);
    let r = c.send(&auth).await?;
    assert_eq!(r.header.code, MessageClass::Response(ResponseType::Content));
    let grant: Value = serde_json::from_slice(&r.payload)?;
    let token = grant["token"].as_str().unwrap().to_string();
    let random = grant["random"].as_str().unwrap();
    let seq_offset = grant["seqOffset"].as_u64().unwrap();
    let key = Sha256::new()
        .chain_update(d.device_secret.as_bytes())
        .chain_update(random.as_bytes())
        .finalize()[..16]
        .to_vec();

    let topic = sys(d, "thing/event/property/post");
    let seq = seq_offset + 1;
    let body = property_post("e1", 33).to_string();
    let mut post = c.request(
        &format!("/topic{topic}"),
        gcm(&key, seq, &token, body.as_bytes(), true).unwrap(),
    );
    post.add_option(CoapOption::Unknown(2088), token.as_bytes().to_vec());
    post.add_option(CoapOption::Unknown(2089), uint(seq));
    let r = c.send(&post).await?;
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::Changed),
        "{}",
        String::from_utf8_lossy(&r.payload)
    );
    let reply: Value =
        serde_json::from_slice(&gcm(&key, seq, &token, &r.payload, false).expect("sealed reply"))?;
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(brightness(&f, 0).await?, 33);

    // The same seq again, in a new message: a replay.
    let mut replay = c.request(&format!("/topic{topic}"), post.payload.clone());
    replay.add_option(CoapOption::Unknown(2088), token.as_bytes().to_vec());
    replay.add_option(CoapOption::Unknown(2089), uint(seq));
    let r = c.send(&replay).await?;
    assert_eq!(
        r.header.code,
        MessageClass::Response(ResponseType::BadRequest)
    );
    assert!(
        String::from_utf8_lossy(&r.payload).contains("replayed sequence number"),
        "{}",
        String::from_utf8_lossy(&r.payload)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_wise_upload_and_retransmissions() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let d = &f.devices[0];
    let mut c = Client::new(f.node.coap.expect("CoAP")).await?;
    let auth = c.request("/auth", auth_body(d).to_string().into_bytes());
    let r = c.send(&auth).await?;
    let token = serde_json::from_slice::<Value>(&r.payload)?["token"]
        .as_str()
        .unwrap()
        .to_string();

    // A property post padded past one block, sent in 64-byte Block1 fragments.
    let mut body = property_post("b1", 64);
    body["padding"] = json!("x".repeat(300));
    let body = body.to_string().into_bytes();
    let topic = format!("/topic{}", sys(d, "thing/event/property/post"));
    let chunks: Vec<&[u8]> = body.chunks(64).collect();
    let mut last = None;
    for (num, chunk) in chunks.iter().enumerate() {
        let more = num + 1 < chunks.len();
        let mut p = c.request(&topic, chunk.to_vec());
        p.add_option(CoapOption::Unknown(2088), token.as_bytes().to_vec());
        p.add_option(
            CoapOption::Block1,
            uint(((num as u64) << 4) | (u64::from(more) << 3) | 2),
        );
        let r = c.send(&p).await?;
        let expected = if more {
            ResponseType::Continue
        } else {
            ResponseType::Changed
        };
        assert_eq!(r.header.code, MessageClass::Response(expected));
        last = Some((p, r));
    }
    let (request, answer) = last.unwrap();
    let reply: Value = serde_json::from_slice(&answer.payload)?;
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(brightness(&f, 0).await?, 64);

    // A retransmission of the last CON gets the same answer, without a second store.
    let again = c.send(&request).await?;
    assert_eq!(again.header.message_id, request.header.message_id);
    assert_eq!(again.payload, answer.payload);
    Ok(())
}
