# Decision point lotus.api: may this user or app perform this API action on this resource?
# Asked by the REST API for every operation.
#
# The host passes:
#   principal  {"kind": "user", "id", "username", "org", "orgs", "region", "roles": [...]}
#              | {"kind": "app", "id", "org", "orgs", "region", "apis": ["device.read", ...],
#                 "resources": {"products", "devices", "regions", "dataModels", "eventTypes",
#                 "topics"}} (a registered app calling with a signed request)
#              "orgs" is "org" and every organisation below it in the organisation tree
#   action     "<kind>.<verb>", verb one of read, write, delete, invoke (service call, property
#              set), admin; e.g. "device.read", "policy.write", "decision.read"
#   resource   {"kind", "id", "org", "region"}; org / region absent for collections (lists);
#              org "" is a resource of no organisation
# It returns allow (default false) and reason (a string when denied). For lists the host also
# asks list_scope with input {"principal", "kind"}: the organisation and region the query is
# confined to (undefined: no limit); each listed row is then still checked with allow.
#
# Roles: admin (everything), data_admin (data permission levels in scope), operator (read/write/delete/invoke on the device-plane kinds below,
# plugin read only, within scope; rules, alarms and events too; event types and workflows read
# only), viewer (read on those kinds within scope), dispatcher (events and alarms: read and
# dispose, within scope), security_admin (policy.* and decision.read everywhere), auditor
# (decision.read and audit.read everywhere). Any user reads their own messages, and reads and
# acts on the tasks assigned to them: by name, or to a role they hold in a region they cover.
# Any user reads and changes their own profile (profile.read / profile.write, resource id = their
# username: name, contact details, password). The platform style (style.write: title, logo,
# theme colour) is the administrators' alone; anyone may read it without logging in.
# Scope: the resource's org is the principal's or one below it in the organisation tree (or the
# resource has no org), and the resource's region at or below the principal's region ("/" covers
# all; a resource without region is in scope).
#
# To change who may do what, edit this file and api_test.rego, run `lotus policy test policies/`,
# then save (hot reload) or PUT /api/v1/policies/lotus.api. Failing tests refuse the change.
package lotus.api

default allow := false

managed_kinds := {
	"device", "product", "thing_model", "topic_class", "shadow", "codec",
	"gateway", "application", "dead_letter", "plugin",
}

operator_verbs := {"read", "write", "delete", "invoke"}

# The event operations center: what rules raise and people dispose.
operations_kinds := {"rule", "alarm", "event"}

# Its configuration, set by administrators and read by operators.
operations_config_kinds := {"event_type", "workflow", "channel", "template", "delivery"}

action_parts := parts if {
	parts := split(input.action, ".")
	count(parts) == 2
	parts[0] != ""
	parts[1] != ""
}

kind := action_parts[0]

verb := action_parts[1]

is_user if input.principal.kind == "user"

is_app if input.principal.kind == "app"

has_role(role) if {
	is_user
	role in input.principal.roles
}

# --- what a role permits, before scope --------------------------------------------------------

# Permitted everywhere, whatever the scope.
unscoped if has_role("admin")

unscoped if {
	has_role("security_admin")
	kind == "policy"
}

unscoped if {
	has_role("security_admin")
	input.action == "decision.read"
}

unscoped if {
	has_role("auditor")
	input.action in {"decision.read", "audit.read"}
}

# Permitted within the principal's scope.
scoped if {
	has_role("operator")
	kind in managed_kinds
	kind != "plugin"
	verb in operator_verbs
}

scoped if {
	has_role("operator")
	kind == "plugin"
	verb == "read"
}

scoped if {
	has_role("viewer")
	kind in managed_kinds
	verb == "read"
}

scoped if {
	has_role("operator")
	kind in operations_kinds
	verb in operator_verbs
}

scoped if {
	has_role("operator")
	kind in operations_config_kinds
	verb == "read"
}

scoped if {
	has_role("viewer")
	kind in operations_kinds
	verb == "read"
}

scoped if {
	has_role("dispatcher")
	kind in {"alarm", "event"}
	verb in {"read", "write"}
}

# Everyone has a message center; the host only ever shows a user their own messages.
scoped if {
	is_user
	kind == "message"
	verb in {"read", "write", "delete"}
}

# The personal center: a user's own profile, never anyone else's.
scoped if {
	is_user
	kind == "profile"
	verb in {"read", "write"}
	input.resource.id == input.principal.username
}

# A task may be read and acted on (task.write) by whoever it is assigned to; the task's region
# is the resource region, so holding the role elsewhere is not enough.
scoped if {
	is_user
	kind == "task"
	verb in {"read", "write"}
	task_assigned_to_principal
}

# The collection of "my tasks": the host lists only tasks assigned to the user.
scoped if {
	is_user
	input.action == "task.read"
	not input.resource.id
}

task_assigned_to_principal if input.resource.assignee.user == input.principal.username

task_assigned_to_principal if input.resource.assignee.role in input.principal.roles

# Data administrators hand out data permission levels on the products in their scope.
scoped if {
	has_role("data_admin")
	kind == "data_grant"
}

# --- apps (APP-1, APP-4) ------------------------------------------------------------------------

# An app may call an action only if it is among its APIs (principal.apis) AND the resource is
# granted to it (principal.resources) AND, like a user's, the resource is in its organisation
# and region. Collections (resources without an id: lists, creation) need only the API; the
# host checks each listed row. Kinds that administer the platform or belong to a person are
# never an app's, whatever it holds. The registry itself (app.read/write/delete) is the
# administrators' alone: admin is unscoped and no other role is given `app`.
app_never_kinds := {
	"app", "application", "audit", "data_grant", "decision", "org", "plugin", "policy",
	"profile", "message", "role", "task", "user",
}

# Kinds of a product (resource id = product key) and of a device (id = productKey/deviceName).
app_product_kinds := {"product", "thing_model", "topic_class", "codec"}

app_device_kinds := {"device", "shadow", "gateway"}

app_api_granted if {
	is_app
	input.action in input.principal.apis
	not kind in app_never_kinds
}

scoped if {
	app_api_granted
	app_resource_granted
}

app_grant(name) := object.get(input, ["principal", "resources", name], [])

resource_id := object.get(input, ["resource", "id"], "")

app_resource_granted if resource_id in {"", "*"}

app_resource_granted if {
	is_string(resource_region)
	some granted in app_grant("regions")
	region_covers(granted, resource_region)
}

app_resource_granted if {
	kind in app_product_kinds
	resource_id in app_grant("products")
}

app_resource_granted if {
	kind == "thing_model"
	resource_id in app_grant("dataModels")
}

app_resource_granted if {
	kind in app_device_kinds
	resource_id in app_grant("devices")
}

app_resource_granted if {
	kind in app_device_kinds
	split(resource_id, "/")[0] in app_grant("products")
}

app_resource_granted if {
	kind == "event_type"
	resource_id in app_grant("eventTypes")
}

app_resource_granted if {
	kind == "event"
	input.resource.eventType in app_grant("eventTypes")
}

app_nor_region := sprintf(", nor region %v", [resource_region]) if is_string(resource_region)

else := ""

# What an app lacks, in the words of its grants.
app_denial := sprintf("app %v is not granted product %v nor device %v%s", [input.principal.id, split(resource_id, "/")[0], resource_id, app_nor_region]) if {
	kind in app_device_kinds
} else := sprintf("app %v is not granted product %v%s", [input.principal.id, resource_id, app_nor_region]) if {
	kind in app_product_kinds
} else := sprintf("app %v is not granted event type %v%s", [input.principal.id, object.get(input, ["resource", "eventType"], null), app_nor_region]) if {
	kind == "event"
} else := sprintf("app %v is not granted event type %v", [input.principal.id, resource_id]) if {
	kind == "event_type"
} else := sprintf("app %v is not granted %s%s", [input.principal.id, resource_name, app_nor_region])

# --- the app center (POR-4) --------------------------------------------------------------------

# A user may open an app (see it in the app center and sign in to it through Lotus) when they
# hold one of its open roles (resource.openRoles); administrators open every app. The open roles
# are the app's grant to people, so the app's region does not narrow it, but its organisation
# does: an app of one organisation is not opened by another's people.
app_open_role if {
	input.action == "app.open"
	some role in object.get(input, ["resource", "openRoles"], [])
	has_role(role)
}

unscoped if {
	app_open_role
	org_in_scope
}

app_open_denial := sprintf("app %v belongs to organisation %v, not yours (%v)", [resource_id, resource_org, object.get(input, ["principal", "org"], null)]) if {
	app_open_role
} else := sprintf("app %v is opened by the roles %s; yours are %s: ask an administrator", [resource_id, concat(", ", object.get(input, ["resource", "openRoles"], [])), concat(", ", object.get(input, ["principal", "roles"], []))])

# --- regions, organisations and roles (CFG-2) ---------------------------------------------------

# Administrators manage the region and organisation trees and the roles (admin is unscoped).
# Anyone logged in reads the regions and organisations within their scope: the resource of a
# region is in the region itself, an organisation's in its id and the region it works in.
scoped if {
	is_user
	input.action in {"region.read", "org.read"}
}

# Security administrators and auditors review who may do what.
unscoped if {
	has_role("security_admin")
	input.action == "role.read"
}

unscoped if {
	has_role("auditor")
	input.action == "role.read"
}

# Custom roles: the actions an administrator granted (the host passes the permissions of the
# custom roles a user holds as principal.permissions), within the holder's scope. What belongs
# to the separated administrator roles can never be granted this way.
reserved_kinds := {"policy", "audit", "decision", "user", "role"}

scoped if {
	is_user
	input.action in object.get(input, ["principal", "permissions"], [])
	not kind in reserved_kinds
}

# A custom role being written carries its permissions as resource.permissions; one that would
# hand out a reserved action is refused whoever asks.
reserved_permissions := {p |
	some p in object.get(input, ["resource", "permissions"], [])
	split(sprintf("%v", [p]), ".")[0] in reserved_kinds
}

role_reserved if {
	kind == "role"
	verb == "write"
	count(reserved_permissions) > 0
}

# --- scope ------------------------------------------------------------------------------------

resource_org := object.get(input, ["resource", "org"], null)

resource_region := object.get(input, ["resource", "region"], null)

principal_region := object.get(input, ["principal", "region"], null)

org_in_scope if resource_org == null

org_in_scope if resource_org == ""

org_in_scope if {
	resource_org != null
	resource_org == input.principal.org
}

# A department sees what its sub-units own ("orgs" holds the principal's subtree).
org_in_scope if {
	resource_org != null
	resource_org in object.get(input, ["principal", "orgs"], [])
}

region_in_scope if resource_region == null

region_in_scope if principal_region == "/"

region_in_scope if {
	is_string(resource_region)
	is_string(principal_region)
	region_covers(principal_region, resource_region)
}

# "/hz/xihu" covers "/hz/xihu" and "/hz/xihu/lingyin", not "/hz/xihuan".
region_covers(mine, theirs) if trim_suffix(mine, "/") == trim_suffix(theirs, "/")

region_covers(mine, theirs) if startswith(theirs, concat("", [trim_suffix(mine, "/"), "/"]))

in_scope if {
	org_in_scope
	region_in_scope
}

# --- lists ------------------------------------------------------------------------------------

# A list is confined to the principal's organisation (with the organisations below it) and
# region unless its roles reach everywhere for that kind.
list_unscoped if has_role("admin")

list_unscoped if {
	has_role("security_admin")
	input.kind in {"policy", "decision", "user"}
}

list_scope := {"org": object.get(input, ["principal", "org"], ""), "region": object.get(input, ["principal", "region"], "/")} if {
	input.principal.kind in {"user", "app"}
	not list_unscoped
}

# --- separation of duties ----------------------------------------------------------------------

# MLPS level 3: the system administrator (admin), the security administrator (security_admin)
# and the auditor (auditor) are different people, so no account may be given two of these
# roles, whoever asks. The host passes the roles an account would get as resource.roles.
separated_roles := {"admin", "security_admin", "auditor"}

combined_duties := {r | some r in object.get(input, ["resource", "roles"], []); r in separated_roles}

duties_combined if {
	kind == "user"
	verb == "write"
	count(combined_duties) > 1
}

# --- decision ---------------------------------------------------------------------------------

allow if {
	action_parts
	unscoped
	not duties_combined
	not role_reserved
}

allow if {
	action_parts
	scoped
	in_scope
	not duties_combined
	not role_reserved
}

resource_name := sprintf("%s %s", [object.get(input, ["resource", "kind"], kind), object.get(input, ["resource", "id"], "(collection)")])

reason := msg if {
	not allow
	msg := deny_reason
}

deny_reason := sprintf("unknown principal kind %v", [object.get(input, ["principal", "kind"], null)]) if {
	not is_user
	not is_app
} else := sprintf("action %v is not <kind>.<verb>", [object.get(input, "action", null)]) if {
	not action_parts
} else := sprintf("one account may not hold %s: the system administrator, the security administrator and the auditor are different people", [concat(" and ", sort(combined_duties))]) if {
	duties_combined
} else := sprintf("a custom role may not grant %s: those actions stay with the security administrator, the auditor and the system administrator", [concat(", ", sort(reserved_permissions))]) if {
	role_reserved
} else := sprintf("apps are never granted %s: %s actions stay with people", [input.action, kind]) if {
	is_app
	kind in app_never_kinds
} else := sprintf("app %v is not granted the API %s", [input.principal.id, input.action]) if {
	is_app
	not app_api_granted
} else := app_denial if {
	is_app
	not scoped
} else := app_open_denial if {
	is_user
	input.action == "app.open"
} else := sprintf("none of your roles (%s) permits %s", [concat(", ", object.get(input, ["principal", "roles"], [])), input.action]) if {
	is_user
	not scoped
} else := sprintf("%s belongs to organisation %v, not yours (%v)", [resource_name, resource_org, object.get(input, ["principal", "org"], null)]) if {
	not org_in_scope
} else := sprintf("%s is in region %v, outside your region %v", [resource_name, resource_region, principal_region]) if {
	not region_in_scope
}
