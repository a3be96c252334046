# Decision point lotus.data.fields: may this user read this model's data, and what happens to
# each field (keep, mask, hash, remove)? Asked by the data-opening API before it returns records;
# the host applies `fields` with lotus_policy::mask::apply_field_actions (fields not listed are
# removed).
#
# The host passes:
#   principal  the user, with "roles" and "data_levels": {"<model>": {"level":
#              "model_admin" | "data_admin" | "read_write" | "read_only" | "none",
#              "expires_at": <unix ms> | null}}
#   now        unix ms
#   model      the model (product key)
#   fields     [{"name", "sensitivity": "public" | "internal" | "personal" | "secret"}]
#              (missing = public)
# It returns allow (default false), reason (when denied), level and fields (name → action).
#
# To change the masking table, edit `actions` below and fields_test.rego, run
# `lotus policy test policies/`, then save (hot reload) or PUT /api/v1/policies/lotus.data.fields.
#
# Operators and viewers without a grant on a model read it at read_only: they run the devices,
# so they see the readings, with personal data masked and secrets removed.
package lotus.data.fields

default allow := false

default fields := {}

levels := {"model_admin", "data_admin", "read_write", "read_only", "none"}

actions := {
	"model_admin": {"public": "keep", "internal": "keep", "personal": "keep", "secret": "keep"},
	"data_admin": {"public": "keep", "internal": "keep", "personal": "keep", "secret": "keep"},
	"read_write": {"public": "keep", "internal": "keep", "personal": "mask", "secret": "hash"},
	"read_only": {"public": "keep", "internal": "keep", "personal": "mask", "secret": "remove"},
}

grant := input.principal.data_levels[input.model]

expired if {
	is_number(grant.expires_at)
	grant.expires_at <= input.now
}

# The effective level: admins are model admins; otherwise the unexpired grant.
level := "model_admin" if {
	"admin" in input.principal.roles
} else := grant.level if {
	grant.level in levels
	not expired
} else := "read_only" if {
	not input.principal.data_levels[input.model]
	some role in input.principal.roles
	role in {"operator", "viewer"}
}

allow if {
	level
	level != "none"
}

sensitivity(f) := s if {
	s := f.sensitivity
	is_string(s)
} else := "public"

# Unknown sensitivities are removed (deny by default).
fields := {f.name: action |
	some f in input.fields
	action := object.get(actions[level], sensitivity(f), "remove")
} if allow

reason := msg if {
	not allow
	msg := deny_reason
}

deny_reason := sprintf("your %s permission on model %s expired at %v: apply again", [grant.level, input.model, grant.expires_at]) if {
	expired
} else := sprintf("your permission level on model %s is none: apply for one", [input.model]) if {
	level == "none"
} else := sprintf("unknown permission level %v on model %s", [grant.level, input.model]) if {
	not grant.level in levels
} else := sprintf("you have no data permission on model %v: apply for one", [object.get(input, "model", null)])
