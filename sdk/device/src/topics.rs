//! The Alink topics of one device.

/// Every topic the SDK publishes to or listens on, computed once.
#[derive(Debug, Clone)]
pub(crate) struct Topics {
    /// `/sys/{pk}/{dn}/`
    pub sys_prefix: String,
    pub property_post: String,
    pub up_raw: String,
    pub up_raw_reply: String,
    pub shadow_update: String,
    pub shadow_get: String,
}

impl Topics {
    pub fn new(pk: &str, dn: &str) -> Self {
        let sys_prefix = format!("/sys/{pk}/{dn}/");
        Topics {
            property_post: format!("{sys_prefix}thing/event/property/post"),
            up_raw: format!("{sys_prefix}thing/model/up_raw"),
            up_raw_reply: format!("{sys_prefix}thing/model/up_raw_reply"),
            shadow_update: format!("/shadow/update/{pk}/{dn}"),
            shadow_get: format!("/shadow/get/{pk}/{dn}"),
            sys_prefix,
        }
    }

    pub fn event_post(&self, identifier: &str) -> String {
        format!("{}thing/event/{identifier}/post", self.sys_prefix)
    }

    /// What an MQTT device subscribes to: replies to its uplink and every downlink.
    pub fn subscriptions(&self) -> Vec<String> {
        let p = &self.sys_prefix;
        vec![
            format!("{p}thing/event/property/post_reply"),
            format!("{p}thing/event/+/post_reply"),
            format!("{p}thing/service/property/set"),
            format!("{p}thing/service/+"),
            format!("{p}rrpc/request/+"),
            format!("{p}thing/model/down_raw"),
            self.up_raw_reply.clone(),
            self.shadow_get.clone(),
        ]
    }
}
