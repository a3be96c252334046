//! The same device API over CoAP (plain UDP) against the real `lotus` binary.

mod common;

use std::time::Duration;

use common::Fixture;
use lotus_device_sdk::{Device, DeviceConfig, Error, Posted};
use serde_json::json;

fn coap_config(f: &Fixture, i: usize) -> anyhow::Result<DeviceConfig> {
    let addr = f
        .node
        .coap
        .ok_or_else(|| anyhow::anyhow!("this lotus build has no CoAP listener"))?;
    Ok(DeviceConfig::coap(f.devices[i].clone(), addr.to_string())
        .reply_timeout(Duration::from_secs(10)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_over_coap_with_typed_rejections() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let device = Device::connect(coap_config(&f, 0)?).await?;
    assert_eq!(device.transport(), "CoAP");

    let r = device
        .post_properties(json!({"Brightness": 64, "Power": 1}))
        .await?;
    assert!(matches!(r, Posted::Accepted(_)), "{r:?}");
    assert_eq!(f.latest(0, "Brightness").await?, 64);

    let e = device
        .post_properties(json!({"Brightness": 300}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(460), "{e}");
    assert!(e.to_string().contains("Brightness"), "{e}");

    assert!(matches!(
        device
            .post_event("LampFault", json!({"ErrorCode": 1}))
            .await?,
        Posted::Accepted(_)
    ));

    // A post larger than one CoAP block goes up in Block1 fragments and is stored whole.
    let note: String = (0..3000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let r = device
        .post_properties(json!({"MaintenanceNote": note}))
        .await?;
    assert!(matches!(r, Posted::Accepted(_)), "{r:?}");
    assert_eq!(f.latest(0, "MaintenanceNote").await?, note);

    // Downlink needs a standing connection: refused at registration, clearly.
    let e = device
        .on_service("SetLight", |_| Ok(json!({})))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Unsupported {
                transport: "CoAP",
                ..
            }
        ),
        "{e}"
    );
    assert!(device.on_property_set(|_| Ok(())).is_err());
    assert!(device.on_shadow_delta(|_| {}).is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_auth_with_a_wrong_secret_is_refused() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let mut cfg = coap_config(&f, 0)?;
    cfg.credentials.device_secret = "wrong".into();
    let e = Device::connect(cfg).await.err().expect("refused");
    assert!(matches!(e, Error::Refused(_)), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_over_dtls_with_the_derived_psk() -> anyhow::Result<()> {
    let f = Fixture::start(1).await?;
    let addr = f
        .node
        .coap_dtls
        .ok_or_else(|| anyhow::anyhow!("this lotus build has no CoAP/DTLS listener"))?;
    let device = match Device::connect(DeviceConfig::coap_dtls(
        f.devices[0].clone(),
        addr.to_string(),
    ))
    .await
    {
        Ok(d) => d,
        Err(e) => anyhow::bail!("DTLS connect failed: {e}; node log:\n{}", f.node.log()),
    };
    let r = device
        .post_properties(json!({"Brightness": 21, "Power": 0}))
        .await?;
    assert!(matches!(r, Posted::Accepted(_)), "{r:?}");
    assert_eq!(f.latest(0, "Brightness").await?, 21);
    let e = device
        .post_properties(json!({"Brightness": -1}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(460), "{e}");

    // A wrong secret means a wrong PSK: the handshake fails.
    let mut creds = f.devices[0].clone();
    creds.device_secret = "wrong".into();
    let mut cfg = DeviceConfig::coap_dtls(creds, addr.to_string());
    if let lotus_device_sdk::Transport::Coap(c) = &mut cfg.transport {
        c.ack_timeout = Duration::from_millis(200);
    }
    let e = tokio::time::timeout(Duration::from_secs(40), Device::connect(cfg))
        .await?
        .err()
        .expect("refused");
    assert!(matches!(e, Error::Refused(_) | Error::NotConnected), "{e}");
    Ok(())
}
