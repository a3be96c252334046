# Tests of lotus.device.topic. Run: lotus policy test policies/
#
# The host marks the classes a topic falls in (`matches`); its matching of templates, `+`, `#`
# and placeholders is tested in Rust (lotus-model and lotus-policy's topic tests). These tests
# cover what the policy decides from those facts.
package lotus.device.topic

classes := [
	{"id": "sys.property.post", "template": "/sys/${productKey}/${deviceName}/thing/event/property/post", "operation": "pub", "system": true},
	{"id": "sys.property.set", "template": "/sys/${productKey}/${deviceName}/thing/service/property/set", "operation": "sub", "system": true},
	{"id": "1", "template": "/${productKey}/${deviceName}/user/update", "operation": "pub", "system": false},
	{"id": "2", "template": "/${productKey}/${deviceName}/user/get", "operation": "sub", "system": false},
	{"id": "3", "template": "/${productKey}/${deviceName}/user/all/#", "operation": "all", "system": false},
]

# The classes with `matches` set on those whose id is in `ids`.
matching(ids) := [object.union(c, {"matches": c.id in ids}) | some c in classes]

device := {"kind": "device", "product_key": "a1"}

dev(action, ids) := {"principal": device, "action": action, "relation": "self", "product_key": "a1", "classes": matching(ids)}

sub_dev(action, ids, online) := {
	"principal": device, "action": action, "relation": "sub_device", "sub_device_online": online,
	"product_key": "s1", "classes": matching(ids),
}

other(action) := {"principal": device, "action": action, "relation": "other", "product_key": "a1", "classes": matching(set())}

test_device_publishes_in_a_pub_class if {
	allow with input as dev("publish", {"sys.property.post"})
	allow with input as dev("publish", {"1"})
}

test_device_cannot_subscribe_to_a_pub_class if {
	not allow with input as dev("subscribe", {"sys.property.post"})
	reason == "no topic class of the product lets this device subscribe to this filter" with input as dev("subscribe", {"sys.property.post"})
}

test_device_subscribes_to_a_sub_class if {
	allow with input as dev("subscribe", {"sys.property.set"})
	allow with input as dev("subscribe", {"2"})
}

test_deliver_follows_sub_classes if {
	allow with input as dev("deliver", {"sys.property.set"})
	not allow with input as dev("deliver", {"1"})
	reason == "the device may no longer receive this topic" with input as dev("deliver", {"1"})
}

test_device_cannot_publish_to_a_sub_class if {
	not allow with input as dev("publish", {"sys.property.set"})
	reason == "no topic class of the product lets this device publish here" with input as dev("publish", {"sys.property.set"})
}

test_all_class_allows_every_action if {
	allow with input as dev("publish", {"3"})
	allow with input as dev("subscribe", {"3"})
	allow with input as dev("deliver", {"3"})
}

test_topic_in_no_class_denied if {
	# `#`, `/sys/a1/d1/#`, `/+/+/user/get`: filters no class covers match nothing.
	not allow with input as dev("subscribe", set())
	reason == "no topic class of the product lets this device subscribe to this filter" with input as dev("subscribe", set())
	not allow with input as dev("publish", set())
}

test_one_matching_class_is_enough if {
	allow with input as dev("subscribe", {"sys.property.post", "2"})
}

test_cross_device_publish_denied if {
	not allow with input as other("publish")
	reason == "devices publish only to their own topics (or, for a gateway, its sub-devices')" with input as other("publish")
}

test_cross_device_denied_even_if_a_class_would_match if {
	inp := object.union(other("publish"), {"classes": matching({"sys.property.post"})})
	not allow with input as inp
}

test_cross_device_subscribe_denied if {
	not allow with input as other("subscribe")
	reason == "devices subscribe only to their own topics (or, for a gateway, its sub-devices')" with input as other("subscribe")
}

test_cross_device_deliver_denied if {
	not allow with input as other("deliver")
	reason == "the device may no longer receive this topic" with input as other("deliver")
}

test_online_sub_device_publishes if {
	allow with input as sub_dev("publish", {"sys.property.post"}, true)
}

test_offline_sub_device_cannot_publish if {
	inp := sub_dev("publish", {"sys.property.post"}, false)
	not allow with input as inp
	reason == "the sub-device is not logged in: publish combine/login on the gateway's session topic first" with input as inp
}

test_offline_sub_device_still_subscribes if {
	allow with input as sub_dev("subscribe", {"sys.property.set"}, false)
}

test_sub_device_limited_to_classes if {
	not allow with input as sub_dev("publish", {"sys.property.set"}, true)
}

test_product_gone if {
	inp := object.union(dev("publish", {"sys.property.post"}), {"classes": null})
	not allow with input as inp
	reason == "the device's product no longer exists" with input as inp
}

test_unknown_action if {
	not allow with input as dev("connect", {"3"})
	startswith(reason, "unknown action") with input as dev("connect", {"3"})
}

app(action, facts) := {"principal": {"kind": "application", "id": "app-1"}, "action": action, "topic": "/a1/d1/user/get", "facts": facts}

test_application_subscribe_needs_grant if {
	allow with input as app("subscribe", {"grant": true})
	not allow with input as app("subscribe", {"grant": false})
	reason == "no subscribe grant of the application credential covers this filter" with input as app("subscribe", {"grant": false})
}

test_application_deliver_needs_grant if {
	allow with input as app("deliver", {"grant": true})
	reason == "the application may no longer receive this topic" with input as app("deliver", {})
}

test_application_publish_downlink if {
	allow with input as app("publish", {"grant": true, "downlink_class": true, "dollar": false, "device_namespace": false})
}

test_application_publish_denials if {
	reason == "topics starting with '$' are reserved for the broker" with input as app("publish", {"grant": true, "downlink_class": true, "dollar": true})
	reason == "applications do not publish into device namespaces: use the API" with input as app("publish", {"grant": true, "downlink_class": true, "device_namespace": true})
	reason == "no publish grant of the application credential matches this topic" with input as app("publish", {"grant": false, "downlink_class": true})
	reason == "applications publish only to topics the product's devices receive (a sub or all topic class), never as a device" with input as app("publish", {"grant": true, "downlink_class": false})
	not allow with input as app("publish", {"grant": true, "downlink_class": false})
	not allow with input as app("publish", {"grant": true, "downlink_class": true, "device_namespace": true})
}

# A registered app logs in with its client id: the same rules, refusals that name it.
reg_app(action, facts) := {"principal": {"kind": "application", "id": "app_j5kx2qmzrtw7vhbn3dpa", "registered_app": true}, "action": action, "topic": "/a1/d1/user/get", "facts": facts}

test_registered_app_follows_the_application_rules if {
	allow with input as reg_app("subscribe", {"grant": true})
	allow with input as reg_app("deliver", {"grant": true})
	allow with input as reg_app("publish", {"grant": true, "downlink_class": true, "dollar": false, "device_namespace": false})
	not allow with input as reg_app("subscribe", {"grant": false})
	not allow with input as reg_app("publish", {"grant": true, "downlink_class": false})
}

test_registered_app_refusals_name_the_app if {
	reason == "no subscribe grant of app app_j5kx2qmzrtw7vhbn3dpa covers this filter (its resources.topics)" with input as reg_app("subscribe", {"grant": false})
	reason == "app app_j5kx2qmzrtw7vhbn3dpa may no longer receive this topic" with input as reg_app("deliver", {})
	reason == "topics starting with '$' are reserved for the broker" with input as reg_app("publish", {"grant": true, "downlink_class": true, "dollar": true})
	reason == "app app_j5kx2qmzrtw7vhbn3dpa may not publish into device namespaces: use the API" with input as reg_app("publish", {"grant": true, "downlink_class": true, "device_namespace": true})
	reason == "no publish grant of app app_j5kx2qmzrtw7vhbn3dpa matches this topic (its resources.topics)" with input as reg_app("publish", {"grant": false, "downlink_class": true})
	reason == "app app_j5kx2qmzrtw7vhbn3dpa publishes only to topics the product's devices receive (a sub or all topic class), never as a device" with input as reg_app("publish", {"grant": true, "downlink_class": false})
}

test_application_credential_refusals_do_not_say_app if {
	inp := object.union(app("subscribe", {"grant": false}), {"principal": {"kind": "application", "id": "7", "registered_app": false}})
	reason == "no subscribe grant of the application credential covers this filter" with input as inp
}

anon(action, facts) := {"principal": {"kind": "anonymous", "client_id": "c"}, "action": action, "topic": "t", "facts": facts}

test_anonymous_open_topics if {
	allow with input as anon("publish", {})
	allow with input as anon("subscribe", {})
	allow with input as anon("deliver", {})
}

test_anonymous_device_topics_denied if {
	not allow with input as anon("publish", {"device_topic": true})
	not allow with input as anon("subscribe", {"device_topic": true})
	not allow with input as anon("deliver", {"device_topic": true})
	reason == "device topics are not open to anonymous clients" with input as anon("deliver", {"device_topic": true})
}

test_anonymous_dollar_publish_denied if {
	not allow with input as anon("publish", {"dollar": true})
	reason == "topics starting with '$' are reserved for the broker" with input as anon("publish", {"dollar": true})
	allow with input as anon("subscribe", {"dollar": true})
}

test_anonymous_wildcard_subscribe_allowed if {
	allow with input as anon("subscribe", {"wildcard_first_level": true, "device_topic": true})
	not allow with input as anon("publish", {"wildcard_first_level": true, "device_topic": true})
}

test_unknown_principal_denied if {
	not allow with input as {"principal": {"kind": "martian"}, "action": "publish", "topic": "t"}
	reason == "unknown principal kind martian" with input as {"principal": {"kind": "martian"}, "action": "publish", "topic": "t"}
}
