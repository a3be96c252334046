# Tests of lotus.plugin.capability. Run: lotus policy test policies/
package lotus.plugin.capability

plugin := {
	"id": "water-meter", "world": "codec",
	"capabilities": ["log", "kv", "http", "device", "publish", "event", "secrets"],
	"http_allow": ["api.example.com", "hooks.example.com:8443", "[::1]:9000", "127.0.0.1:8080", "[fe80::1]"],
	"products": ["a1"], "topics": ["/a1/+/user/#", "app/status"], "secrets": ["sms-key"],
}

call(capability, request) := {"plugin": plugin, "capability": capability, "request": request}

http(host, port) := call("http", {"host": host, "port": port, "method": "POST"})

test_log_kv_granted if {
	allow with input as call("log", {})
	allow with input as call("kv", {})
}

test_capability_not_requested_denied if {
	not allow with input as call("clock", {})
	reason == "capability `clock` is not granted to plugin water-meter" with input as call("clock", {})
}

test_unknown_capability_denied if {
	not allow with input as call("shell", {})
}

test_http_allowed_host_any_port if {
	allow with input as http("api.example.com", 443)
	allow with input as http("API.Example.COM", 8080)
}

test_http_host_not_on_allow_list_denied if {
	not allow with input as http("evil.example.com", 443)
	reason == "http to evil.example.com:443 is not on the allow-list of plugin water-meter" with input as http("evil.example.com", 443)
	not allow with input as http("example.com", 443)
	not allow with input as http("api.example.com.evil.net", 443)
}

test_http_port_pinned if {
	allow with input as http("hooks.example.com", 8443)
	not allow with input as http("hooks.example.com", 443)
	allow with input as http("127.0.0.1", 8080)
	not allow with input as http("127.0.0.1", 8081)
}

test_http_ipv6 if {
	allow with input as http("[::1]", 9000)
	allow with input as http("::1", 9000)
	not allow with input as http("[::1]", 9001)
	allow with input as http("[fe80::1]", 1)
}

test_split_host_port_like_rust if {
	split_host_port("a.com") == ["a.com", null]
	split_host_port("a.com:80") == ["a.com", 80]
	split_host_port("a.com:+80") == ["a.com", 80]
	split_host_port("a.com:x") == ["a.com:x", null]
	split_host_port("a.com:70000") == ["a.com:70000", null]
	split_host_port("[::1]:9000") == ["::1", 9000]
	split_host_port("[::1]") == ["::1", null]
	split_host_port("[::1]x") == ["::1", null]
	split_host_port("[::1") == ["::1", null]
	split_host_port("::1") == ["::1", null]
}

test_device_within_products if {
	allow with input as call("device", {"product_key": "a1", "device_name": "d1", "operation": "read"})
	inp := call("device", {"product_key": "b2", "device_name": "d1", "operation": "set"})
	not allow with input as inp
	reason == "product \"b2\" is outside the products of plugin water-meter" with input as inp
}

test_publish_topic_filters if {
	allow with input as call("publish", {"topic": "/a1/d1/user/x"})
	allow with input as call("publish", {"topic": "/a1/d1/user"})
	allow with input as call("publish", {"topic": "app/status"})
	not allow with input as call("publish", {"topic": "/a2/d1/user/x"})
	not allow with input as call("publish", {"topic": "/a1/d1/thing/x"})
	not allow with input as call("publish", {"topic": "app/status/x"})
	reason == "publishing on \"/a2/d1/user/x\" is outside the topics of plugin water-meter" with input as call("publish", {"topic": "/a2/d1/user/x"})
}

test_topic_matches_like_rust if {
	topic_matches("/pk/+/user/up", "/pk/dev1/user/up")
	not topic_matches("/pk/+/user/up", "/pk/dev1/user/down")
	topic_matches("app/#", "app/status/pk/dn")
	topic_matches("app/#", "app")
	not topic_matches("app/+", "app/a/b")
	not topic_matches("app/a/b", "app/a")
}

test_secrets_listed_only if {
	allow with input as call("secrets", {"name": "sms-key"})
	not allow with input as call("secrets", {"name": "db-password"})
	reason == "secret \"db-password\" is not listed for plugin water-meter" with input as call("secrets", {"name": "db-password"})
}

test_events if {
	allow with input as call("event", {"event_type": "leak", "device": null, "update": false})
	allow with input as call("event", {"event_type": "leak", "device": {"product_key": "a1", "device_name": "d1"}, "update": false})
	not allow with input as call("event", {"event_type": "leak", "device": {"product_key": "b2", "device_name": "d1"}, "update": false})
	allow with input as call("event", {"update": true})
}

test_codec_without_http_denied if {
	inp := {"plugin": object.union(plugin, {"capabilities": ["log"]}), "capability": "http", "request": {"host": "api.example.com", "port": 443, "method": "GET"}}
	not allow with input as inp
	reason == "capability `http` is not granted to plugin water-meter" with input as inp
}
