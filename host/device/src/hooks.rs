//! The device plane as seen by the MQTT broker.

use std::sync::Arc;

use lotus_model::authz::{Decision, Principal, TopicAction};
use lotus_mqtt::{
    AuthOutcome, BrokerHooks, ClientContext, ConnectRequest, DisconnectReason, InboundPublish,
    PublishVerdict,
};

use crate::DevicePlane;

/// Hands every broker decision to the [`DevicePlane`].
pub struct PlaneHooks(pub Arc<DevicePlane>);

impl BrokerHooks for PlaneHooks {
    async fn authenticate(&self, req: &ConnectRequest<'_>) -> AuthOutcome {
        self.0.authenticate(req).await
    }

    fn authorize(&self, client: &ClientContext, action: TopicAction, topic: &str) -> Decision {
        self.0
            .authorizer
            .authorize_topic(&client.principal, action, topic)
    }

    async fn on_publish(&self, client: &ClientContext, publish: &InboundPublish) -> PublishVerdict {
        match &client.principal {
            Principal::Device(device) => self.0.uplink(device, client.connection_id, publish).await,
            _ => PublishVerdict::Route { ack: None },
        }
    }

    fn on_connected(&self, client: &ClientContext) {
        if let Principal::Device(device) = &client.principal {
            self.0.status.connected(device, client.connection_id);
        }
    }

    fn on_subscribed(&self, client: &ClientContext, filter: &str) {
        if let Principal::Device(device) = &client.principal
            && filter
                == lotus_model::alink::downlink_topic::shadow_get(
                    &device.product_key,
                    &device.device_name,
                )
        {
            let plane = self.0.clone();
            let device = device.clone();
            tokio::spawn(async move { plane.send_shadow_delta(&device).await });
        }
    }

    fn on_disconnected(&self, client: &ClientContext, reason: &DisconnectReason) {
        if let Principal::Device(device) = &client.principal {
            self.0
                .status
                .disconnected(device, client.connection_id, reason.as_str());
            self.0.gateway_disconnected(device, client.connection_id);
        }
    }
}
