# Tests of lotus.approval. Run: lotus policy test policies/
package lotus.approval

ops := {"kind": "user", "id": "7", "roles": ["operator"]}

test_ota_plan_needs_admin if {
	required with input as {"principal": ops, "action": "ota.plan.create", "resource": {"kind": "ota_plan"}}
	approvers == ["admin"] with input as {"principal": ops, "action": "ota.plan.create", "resource": {}}
}

test_data_access_needs_data_admin if {
	required with input as {"principal": ops, "action": "data.access.request", "resource": {"kind": "model", "id": "a1"}}
	"data_admin" in approvers with input as {"principal": ops, "action": "data.access.request", "resource": {}}
}

test_http_plugin_needs_security_admin if {
	inp := {"principal": ops, "action": "plugin.install", "resource": {"kind": "plugin", "capabilities": ["log", "http"]}}
	required with input as inp
	approvers == ["security_admin"] with input as inp
	reason == "plugins that call out over http are approved by a security admin" with input as inp
}

test_plain_plugin_needs_none if {
	not required with input as {"principal": ops, "action": "plugin.install", "resource": {"kind": "plugin", "capabilities": ["log", "kv"]}}
	approvers == [] with input as {"principal": ops, "action": "plugin.install", "resource": {"capabilities": []}}
}

test_other_actions_need_none if {
	not required with input as {"principal": ops, "action": "device.write", "resource": {}}
	reason == "device.write needs no approval" with input as {"principal": ops, "action": "device.write", "resource": {}}
}
