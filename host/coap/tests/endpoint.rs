//! The message layer against a fake device plane: garbage, duplicates, codes, blocks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use coap_lite::{CoapOption, MessageClass, MessageType, Packet, RequestType, ResponseType};
use lotus_coap::{AccessError, DeviceAccess, DeviceToken, Endpoint, Limits, Mode, TokenRequest};
use lotus_model::authz::DeviceId;
use serde_json::{Value, json};

#[derive(Default)]
struct Fake {
    published: AtomicUsize,
}

impl DeviceAccess for Fake {
    async fn issue_token(
        &self,
        req: &TokenRequest,
        _transport: &'static str,
    ) -> Result<DeviceToken, AccessError> {
        if req.sign != "good" {
            return Err(AccessError::Unauthorized("sign does not match".into()));
        }
        Ok(DeviceToken {
            token: "tok".into(),
            device: DeviceId::new(req.product_key.as_str(), req.device_name.as_str()),
            expires_at_ms: i64::MAX,
        })
    }

    fn token_device(&self, token: &str) -> Result<DeviceId, AccessError> {
        (token == "tok")
            .then(|| DeviceId::new("pk", "dn"))
            .ok_or_else(|| AccessError::Unauthorized("unknown token".into()))
    }

    async fn publish(
        &self,
        _device: &DeviceId,
        topic: &str,
        payload: Bytes,
    ) -> Result<Option<Value>, AccessError> {
        if topic.starts_with("/other/") {
            return Err(AccessError::Forbidden("not your topic".into()));
        }
        self.published.fetch_add(1, Ordering::SeqCst);
        if payload.len() > 2000 {
            // Echo the size back so that the answer needs Block2.
            return Ok(Some(
                json!({"code": 200, "data": "y".repeat(payload.len())}),
            ));
        }
        Ok(Some(json!({"code": 200, "id": "1"})))
    }

    async fn device_secret(&self, _pk: &str, _dn: &str) -> Result<String, AccessError> {
        Ok("secret".into())
    }
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

fn endpoint() -> (Arc<Endpoint<Fake>>, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let limits = Limits {
        max_body: 4096,
        ..Limits::default()
    };
    (Endpoint::new(Mode::Plain, fake.clone(), limits), fake)
}

fn request(mid: u16, path: &str, token: Option<&str>, payload: &[u8]) -> Packet {
    let mut p = Packet::new();
    p.header.set_type(MessageType::Confirmable);
    p.header.code = MessageClass::Request(RequestType::Post);
    p.header.message_id = mid;
    p.set_token(vec![9, 9]);
    for seg in path.trim_start_matches('/').split('/') {
        p.add_option(CoapOption::UriPath, seg.as_bytes().to_vec());
    }
    if let Some(t) = token {
        p.add_option(CoapOption::Unknown(2088), t.as_bytes().to_vec());
    }
    p.payload = payload.to_vec();
    p
}

async fn exchange(ep: &Endpoint<Fake>, p: &Packet) -> Packet {
    let out = ep
        .handle(peer(), None, &p.to_bytes_unlimited().unwrap())
        .await
        .expect("an answer");
    Packet::from_bytes(&out).unwrap()
}

fn code(p: &Packet) -> ResponseType {
    match p.header.code {
        MessageClass::Response(r) => r,
        other => panic!("not a response: {other:?}"),
    }
}

#[tokio::test]
async fn garbage_never_panics_and_confirmable_garbage_gets_a_reset() {
    let (ep, _) = endpoint();
    let mut seed = 0x1234_5678u32;
    for len in 0..300 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) as u8
            })
            .collect();
        let _ = ep.handle(peer(), None, &bytes).await;
    }
    // Version 1, CON, token length 15 (invalid): a Reset with the same message id.
    let out = ep
        .handle(peer(), None, &[0x4f, 0x02, 0xab, 0xcd])
        .await
        .unwrap();
    assert_eq!(out, vec![0x70, 0x00, 0xab, 0xcd]);
    // A CoAP ping (empty CON) is answered with a Reset too.
    let out = ep
        .handle(peer(), None, &[0x40, 0x00, 0x00, 0x07])
        .await
        .unwrap();
    assert_eq!(out, vec![0x70, 0x00, 0x00, 0x07]);
    // Too short to have a header: silence.
    assert!(ep.handle(peer(), None, &[0x40]).await.is_none());
}

#[tokio::test]
async fn auth_then_post_with_piggy_backed_acks() {
    let (ep, fake) = endpoint();
    let auth =
        json!({"productKey":"pk","deviceName":"dn","clientId":"c","sign":"good"}).to_string();
    let r = exchange(&ep, &request(1, "/auth", None, auth.as_bytes())).await;
    assert_eq!(r.header.get_type(), MessageType::Acknowledgement);
    assert_eq!(r.header.message_id, 1);
    assert_eq!(r.get_token(), &[9, 9]);
    assert_eq!(code(&r), ResponseType::Content);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.payload).unwrap()["token"],
        "tok"
    );

    let post = request(
        2,
        "/topic/sys/pk/dn/thing/event/property/post",
        Some("tok"),
        b"{}",
    );
    let r = exchange(&ep, &post).await;
    assert_eq!(code(&r), ResponseType::Changed);
    assert_eq!(fake.published.load(Ordering::SeqCst), 1);

    // The retransmission is answered from the cache, not published again.
    let again = exchange(&ep, &post).await;
    assert_eq!(again.payload, r.payload);
    assert_eq!(fake.published.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refusals_map_to_codes_that_say_what_to_do() {
    let (ep, _) = endpoint();
    let cases: Vec<(Packet, ResponseType, &str)> = vec![
        (
            request(10, "/nowhere", None, b""),
            ResponseType::NotFound,
            "/auth",
        ),
        (
            request(11, "/auth", None, b"not json"),
            ResponseType::BadRequest,
            "productKey",
        ),
        (
            request(
                12,
                "/auth",
                None,
                br#"{"productKey":"pk","deviceName":"dn","clientId":"c","sign":"bad"}"#,
            ),
            ResponseType::Unauthorized,
            "sign",
        ),
        (
            request(13, "/topic/sys/pk/dn/x", None, b"{}"),
            ResponseType::Unauthorized,
            "POST /auth",
        ),
        (
            request(14, "/topic/sys/pk/dn/x", Some("old"), b"{}"),
            ResponseType::Unauthorized,
            "POST /auth",
        ),
        (
            request(15, "/topic/other/x", Some("tok"), b"{}"),
            ResponseType::Forbidden,
            "not your topic",
        ),
        (
            request(16, "/topic/x", Some("tok"), &[b'a'; 5000]),
            ResponseType::RequestEntityTooLarge,
            "4096",
        ),
    ];
    for (req, expected, hint) in cases {
        let r = exchange(&ep, &req).await;
        let text = String::from_utf8_lossy(&r.payload).into_owned();
        assert_eq!(code(&r), expected, "{text}");
        assert!(text.contains(hint), "{expected:?}: {text}");
    }
    let mut get = request(17, "/auth", None, b"");
    get.header.code = MessageClass::Request(RequestType::Get);
    assert_eq!(
        code(&exchange(&ep, &get).await),
        ResponseType::MethodNotAllowed
    );
    let mut xml = request(18, "/auth", None, b"<a/>");
    xml.add_option(CoapOption::ContentFormat, vec![41]);
    assert_eq!(
        code(&exchange(&ep, &xml).await),
        ResponseType::UnsupportedContentFormat
    );
}

#[tokio::test]
async fn block1_upload_and_block2_answer() {
    let (ep, fake) = endpoint();
    let body = vec![b'x'; 2500];
    let topic = "/topic/sys/pk/dn/thing/event/property/post";
    let mut mid = 100;
    let mut last = None;
    for (num, chunk) in body.chunks(1024).enumerate() {
        let more = (num + 1) * 1024 < body.len();
        let mut p = request(mid, topic, Some("tok"), chunk);
        mid += 1;
        let v = ((num as u32) << 4) | (u32::from(more) << 3) | 6;
        p.add_option(CoapOption::Block1, v.to_be_bytes()[1..].to_vec());
        let r = exchange(&ep, &p).await;
        let expected = if more {
            ResponseType::Continue
        } else {
            ResponseType::Changed
        };
        assert_eq!(code(&r), expected);
        last = Some(r);
    }
    assert_eq!(fake.published.load(Ordering::SeqCst), 1);
    // The answer (about 2.5 KB) comes in 1024-byte Block2 pieces.
    let first = last.unwrap();
    let mut answer = first.payload.clone();
    assert_eq!(answer.len(), 1024);
    let mut num = 1u32;
    loop {
        let mut p = request(mid, topic, Some("tok"), b"");
        mid += 1;
        p.add_option(CoapOption::Block2, vec![((num << 4) | 6) as u8]);
        let r = exchange(&ep, &p).await;
        assert_eq!(code(&r), ResponseType::Content);
        answer.extend_from_slice(&r.payload);
        let b2 = r.get_first_option(CoapOption::Block2).unwrap();
        if b2.last().unwrap() & 0x8 == 0 {
            break;
        }
        num += 1;
    }
    let v: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(v["data"].as_str().unwrap().len(), 2500);
    assert_eq!(
        fake.published.load(Ordering::SeqCst),
        1,
        "blocks are not re-processed"
    );

    // A block out of order is refused with 4.08.
    let mut p = request(mid, topic, Some("tok"), &[0; 16]);
    p.add_option(CoapOption::Block1, vec![(3 << 4) | 0x8]);
    assert_eq!(
        code(&exchange(&ep, &p).await),
        ResponseType::RequestEntityIncomplete
    );
}
