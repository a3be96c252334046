# Decision point lotus.device.topic: may this MQTT client publish to, subscribe to, or receive
# (deliver) this topic? Asked by the broker on every PUBLISH, SUBSCRIBE and delivery.
#
# The host classifies, this policy decides. The host passes (see docs/policies.md):
#   principal  {"kind": "device", "product_key"}
#              | {"kind": "application", "id", "registered_app"} (registered_app: true for an
#                app of the app registry, id = its client id; false for an application
#                credential, id = its number)
#              | {"kind": "anonymous"}
#   action     "publish" | "subscribe" | "deliver"
#   devices:   relation ("self" | "sub_device" | "other": whose topic it is, relative to the
#              device; sub_device = a sub-device behind this gateway), sub_device_online,
#              product_key (the topic's product), classes (that product's topic classes, each
#              {id, template, operation, system, matches}; `matches` says whether the topic, or
#              for subscribe the whole filter, falls in the class; null when the product is gone)
#   others:    facts {dollar, device_namespace, grant, downlink_class, device_topic,
#              wildcard_first_level}, computed by the host
# It returns allow (default false) and reason (a string when denied).
#
# The host caches each decision per (product, relation, action, matching classes), for every
# device of the product: a rule must decide from the input alone. The device's name and the
# topic itself go to the decision log, not into the input.
#
# To change the rules, edit this file and topic_test.rego together, run
# `lotus policy test policies/`, then save the file (the server reloads it) or
# PUT /api/v1/policies/lotus.device.topic. A change that breaks a test is refused and the
# previous version keeps serving.
package lotus.device.topic

default allow := false

actions := {"publish", "subscribe", "deliver"}

# --- devices -------------------------------------------------------------------------------

allow if {
	input.principal.kind == "device"
	input.relation == "self"
	device_permits
}

allow if {
	input.principal.kind == "device"
	input.relation == "sub_device"
	not sub_device_offline_publish
	device_permits
}

sub_device_offline_publish if {
	input.action == "publish"
	not input.sub_device_online == true
}

# Some topic class of the product that the topic falls in lets the device do this.
device_permits if {
	is_array(input.classes)
	some class in input.classes
	class.matches == true
	operation_allows(class.operation, input.action)
}

operation_allows(op, action) if {
	op == "all"
	action in actions
}

operation_allows(op, action) if {
	op == "pub"
	action == "publish"
}

operation_allows(op, action) if {
	op == "sub"
	action in {"subscribe", "deliver"}
}

other_device_reasons := {
	"publish": "devices publish only to their own topics (or, for a gateway, its sub-devices')",
	"subscribe": "devices subscribe only to their own topics (or, for a gateway, its sub-devices')",
	"deliver": "the device may no longer receive this topic",
}

no_class_reasons := {
	"publish": "no topic class of the product lets this device publish here",
	"subscribe": "no topic class of the product lets this device subscribe to this filter",
	"deliver": "the device may no longer receive this topic",
}

device_reason := msg if {
	not input.relation in {"self", "sub_device"}
	msg := other_device_reasons[input.action]
} else := msg if {
	input.relation == "sub_device"
	sub_device_offline_publish
	msg := "the sub-device is not logged in: publish combine/login on the gateway's session topic first"
} else := "the device's product no longer exists" if {
	not is_array(input.classes)
} else := msg if {
	not device_permits
	msg := no_class_reasons[input.action]
}

# --- applications ----------------------------------------------------------------------------

allow if {
	input.principal.kind == "application"
	input.action in {"subscribe", "deliver"}
	input.facts.grant == true
}

allow if {
	input.principal.kind == "application"
	input.action == "publish"
	not input.facts.dollar == true
	not input.facts.device_namespace == true
	input.facts.grant == true
	input.facts.downlink_class == true
}

# Why an application is refused, as a code; the words depend on who it is (below).
application_denial := "subscribe" if {
	input.action == "subscribe"
	not input.facts.grant == true
} else := "deliver" if {
	input.action == "deliver"
	not input.facts.grant == true
} else := "dollar" if {
	input.action == "publish"
	input.facts.dollar == true
} else := "device_namespace" if {
	input.action == "publish"
	input.facts.device_namespace == true
} else := "publish" if {
	input.action == "publish"
	not input.facts.grant == true
} else := "downlink_class" if {
	input.action == "publish"
	not input.facts.downlink_class == true
}

application_reason := application_reasons[application_denial]

# A registered app (logged in with its client id) is named, so that its operator finds it in the
# app registry; an application credential's grants are those of the credential.
application_reasons := {
	"subscribe": sprintf("no subscribe grant of %s covers this filter (its resources.topics)", [app]),
	"deliver": sprintf("%s may no longer receive this topic", [app]),
	"dollar": "topics starting with '$' are reserved for the broker",
	"device_namespace": sprintf("%s may not publish into device namespaces: use the API", [app]),
	"publish": sprintf("no publish grant of %s matches this topic (its resources.topics)", [app]),
	"downlink_class": sprintf("%s publishes only to topics the product's devices receive (a sub or all topic class), never as a device", [app]),
} if {
	input.principal.registered_app == true
	app := sprintf("app %v", [input.principal.id])
} else := {
	"subscribe": "no subscribe grant of the application credential covers this filter",
	"deliver": "the application may no longer receive this topic",
	"dollar": "topics starting with '$' are reserved for the broker",
	"device_namespace": "applications do not publish into device namespaces: use the API",
	"publish": "no publish grant of the application credential matches this topic",
	"downlink_class": "applications publish only to topics the product's devices receive (a sub or all topic class), never as a device",
}

# --- anonymous clients -----------------------------------------------------------------------

allow if {
	input.principal.kind == "anonymous"
	input.action in actions
	not anonymous_reason
}

anonymous_reason := "topics starting with '$' are reserved for the broker" if {
	input.action == "publish"
	input.facts.dollar == true
} else := "device topics are not open to anonymous clients" if {
	not anonymous_wildcard_subscribe
	input.facts.device_topic == true
}

# Deliveries are checked one by one, so a wildcard subscription never leaks device topics.
anonymous_wildcard_subscribe if {
	input.action == "subscribe"
	input.facts.wildcard_first_level == true
}

# --- reason ----------------------------------------------------------------------------------

reason := msg if {
	not allow
	msg := deny_reason
}

deny_reason := sprintf("unknown action %v: use publish, subscribe or deliver", [input.action]) if {
	not input.action in actions
} else := device_reason if {
	input.principal.kind == "device"
} else := application_reason if {
	input.principal.kind == "application"
} else := anonymous_reason if {
	input.principal.kind == "anonymous"
} else := sprintf("unknown principal kind %v", [object.get(input, ["principal", "kind"], null)])
