# Decision point lotus.approval: does this action need an approval, and from whom?
# Asked by the API before it carries out a request that may need sign-off.
#
# The host passes: principal (the requester), action ("ota.plan.create", "data.access.request",
# "plugin.install", ...), resource (e.g. {"kind": "plugin", "id", "capabilities": [...]}).
# It returns required (default false), approvers (role names, any one of which may approve;
# the host never lets the requester approve their own request) and reason.
#
# To require approval for another action, add an `else := [...] if {...}` branch to
# `needed_approvers` and a test in approval_test.rego, run `lotus policy test policies/`, then
# save (hot reload) or PUT /api/v1/policies/approval.rego.
package lotus.approval

default required := false

default approvers := []

needed_approvers := ["admin"] if {
	input.action == "ota.plan.create"
} else := ["data_admin", "model_admin"] if {
	input.action == "data.access.request"
} else := ["security_admin"] if {
	input.action == "plugin.install"
	"http" in input.resource.capabilities
}

required if needed_approvers

approvers := needed_approvers

reasons := {
	"ota.plan.create": "OTA plans change device firmware: an admin approves them before they run",
	"data.access.request": "data permission requests are granted by a data admin or the model admin",
	"plugin.install": "plugins that call out over http are approved by a security admin",
}

reason := reasons[input.action] if required

reason := sprintf("%v needs no approval", [object.get(input, "action", null)]) if not required
