//! The seam to the device plane: what CoAP needs from it, as a trait so that the protocol side
//! is tested without storage. [`DevicePlane`] is the implementation a node uses.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use lotus_device::DevicePlane;
use lotus_model::authz::DeviceId;
use serde_json::Value;

pub use lotus_device::access::{AccessError, DeviceToken, TokenRequest};

/// What the CoAP endpoints ask of the device plane.
pub trait DeviceAccess: Send + Sync + 'static {
    /// Checks an Alink `/auth` request and issues a token.
    fn issue_token(
        &self,
        req: &TokenRequest,
        transport: &'static str,
    ) -> impl Future<Output = Result<DeviceToken, AccessError>> + Send;

    /// The device a token was issued to; `Unauthorized` when unknown or expired.
    fn token_device(&self, token: &str) -> Result<DeviceId, AccessError>;

    /// ACL check and the MQTT uplink pipeline; resolves after commit, with the Alink reply.
    fn publish(
        &self,
        device: &DeviceId,
        topic: &str,
        payload: Bytes,
    ) -> impl Future<Output = Result<Option<Value>, AccessError>> + Send;

    /// The device secret, for PSK and key derivation; `Unauthorized` if unknown or disabled.
    fn device_secret(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> impl Future<Output = Result<String, AccessError>> + Send;
}

/// The node's device plane, shared with the MQTT broker and the API.
pub struct Plane(pub Arc<DevicePlane>);

impl DeviceAccess for Plane {
    async fn issue_token(
        &self,
        req: &TokenRequest,
        transport: &'static str,
    ) -> Result<DeviceToken, AccessError> {
        self.0.issue_token(req, transport).await
    }

    fn token_device(&self, token: &str) -> Result<DeviceId, AccessError> {
        self.0.token_device(token)
    }

    async fn publish(
        &self,
        device: &DeviceId,
        topic: &str,
        payload: Bytes,
    ) -> Result<Option<Value>, AccessError> {
        self.0.publish_from_device(device, topic, payload).await
    }

    async fn device_secret(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<String, AccessError> {
        self.0.device_secret(product_key, device_name).await
    }
}
