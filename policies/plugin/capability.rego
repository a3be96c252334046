# Decision point lotus.plugin.capability: may this plugin make this host call?
# Asked by the plugin runtime before every capability call (log, kv, clock, http, device,
# publish, event, secrets).
#
# The host passes:
#   plugin      the manifest: {"id", "world", "capabilities", "http_allow", "products",
#               "topics", "secrets"}
#   capability  "log" | "kv" | "clock" | "http" | "device" | "publish" | "event" | "secrets"
#   request     http {"host", "port", "method"} | device {"product_key", "device_name",
#               "operation"} | publish {"topic"} | secrets {"name"}
#               | event {"event_type", "device": {"product_key", "device_name"} | null, "update"}
# It returns allow (default false) and reason (a string when denied).
#
# These rules reproduce lotus_plugin::host::ManifestCapabilityCheck: a plugin gets exactly what
# its manifest requests, within the manifest's scopes. (Host names compare with lower(), which
# also folds non-ASCII letters; the Rust check folds ASCII only.) To tighten it (e.g. no http
# for codecs), edit this file and capability_test.rego, run `lotus policy test policies/`, then
# save (hot reload) or PUT /api/v1/policies/plugin/capability.rego.
package lotus.plugin.capability

default allow := false

capabilities := {"log", "kv", "clock", "http", "device", "publish", "event", "secrets"}

granted if input.capability in input.plugin.capabilities

allow if {
	input.capability in capabilities
	granted
	within_scope
}

within_scope if input.capability in {"log", "clock", "kv"}

within_scope if {
	input.capability == "event"
	input.request.update == true
}

within_scope if {
	input.capability == "event"
	not input.request.update == true
	object.get(input, ["request", "device"], null) == null
}

within_scope if {
	input.capability == "event"
	not input.request.update == true
	input.request.device.product_key in input.plugin.products
}

within_scope if {
	input.capability == "http"
	http_host_allowed
}

within_scope if {
	input.capability == "device"
	input.request.product_key in input.plugin.products
}

within_scope if {
	input.capability == "publish"
	some filter in input.plugin.topics
	topic_matches(filter, input.request.topic)
}

within_scope if {
	input.capability == "secrets"
	input.request.name in input.plugin.secrets
}

# --- http allow-list: `host` any port, `host:port` that port, `[v6]` / `[v6]:port` -------------

request_host := trim_right(trim_left(input.request.host, "["), "]")

http_host_allowed if {
	some entry in input.plugin.http_allow
	hp := split_host_port(entry)
	lower(hp[0]) == lower(request_host)
	port_matches(hp[1])
}

port_matches(p) if p == null

port_matches(p) if p == input.request.port

# [host, port or null], as split_host_port in host.rs.
split_host_port(entry) := [host, port] if {
	startswith(entry, "[")
	rest := substring(entry, 1, count(entry))
	end := indexof(rest, "]")
	end >= 0
	host := substring(rest, 0, end)
	port := bracket_port(substring(rest, end + 1, count(rest)))
} else := [substring(entry, 1, count(entry)), null] if {
	startswith(entry, "[")
} else := [parts[0], port] if {
	parts := split(entry, ":")
	count(parts) == 2
	port := parse_port(parts[1])
} else := [entry, null]

bracket_port(tail) := port if {
	startswith(tail, ":")
	port := parse_port(substring(tail, 1, count(tail)))
} else := null

# u16 parsing as Rust's str::parse::<u16>: optional '+', decimal digits, at most 65535.
parse_port(s) := n if {
	digits := trim_prefix(s, "+")
	digits != ""
	trim(digits, "0123456789") == ""
	n := to_number(digits)
	n <= 65535
}

# --- publish: MQTT-style filter, `+` one level, a final `#` the rest (including nothing) -------

topic_matches(filter, topic) if {
	f := split(filter, "/")
	t := split(topic, "/")
	not "#" in f
	count(t) == count(f)
	every i, part in f {
		part_matches(part, t[i])
	}
}

topic_matches(filter, topic) if {
	f := split(filter, "/")
	t := split(topic, "/")
	k := min({i | f[i] == "#"})
	count(t) >= k
	every i, part in array.slice(f, 0, k) {
		part_matches(part, t[i])
	}
}

part_matches(part, _) if part == "+"

part_matches(part, level) if part == level

# --- reason -----------------------------------------------------------------------------------

reason := msg if {
	not allow
	msg := deny_reason
}

plugin_id := object.get(input, ["plugin", "id"], "(unknown)")

deny_reason := sprintf("unknown capability %v", [object.get(input, "capability", null)]) if {
	not input.capability in capabilities
} else := sprintf("capability `%s` is not granted to plugin %s", [input.capability, plugin_id]) if {
	not granted
} else := sprintf("http to %v:%v is not on the allow-list of plugin %s", [input.request.host, input.request.port, plugin_id]) if {
	input.capability == "http"
} else := sprintf("product \"%v\" is outside the products of plugin %s", [input.request.product_key, plugin_id]) if {
	input.capability == "device"
} else := sprintf("product \"%v\" is outside the products of plugin %s", [input.request.device.product_key, plugin_id]) if {
	input.capability == "event"
} else := sprintf("publishing on \"%v\" is outside the topics of plugin %s", [input.request.topic, plugin_id]) if {
	input.capability == "publish"
} else := sprintf("secret \"%v\" is not listed for plugin %s", [input.request.name, plugin_id]) if {
	input.capability == "secrets"
}
