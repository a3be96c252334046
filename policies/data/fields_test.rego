# Tests of lotus.data.fields. Run: lotus policy test policies/
package lotus.data.fields

now := 1700000000000

model_fields := [
	{"name": "flow", "sensitivity": "public"},
	{"name": "owner_phone", "sensitivity": "personal"},
	{"name": "valve_key", "sensitivity": "secret"},
	{"name": "pressure"},
	{"name": "odd", "sensitivity": "classified"},
]

ask(roles, data_levels) := {
	"principal": {"kind": "user", "id": "7", "roles": roles, "data_levels": data_levels},
	"now": now, "model": "a1", "fields": model_fields,
}

lvl(level, expires) := {"a1": {"level": level, "expires_at": expires}}

test_model_admin_keeps_everything if {
	allow with input as ask([], lvl("model_admin", null))
	fields == {"flow": "keep", "owner_phone": "keep", "valve_key": "keep", "pressure": "keep", "odd": "remove"} with input as ask([], lvl("model_admin", null))
}

test_data_admin_keeps_everything if {
	fields.valve_key == "keep" with input as ask([], lvl("data_admin", now + 1))
}

test_read_write_masks_and_hashes if {
	allow with input as ask([], lvl("read_write", null))
	fields == {"flow": "keep", "owner_phone": "mask", "valve_key": "hash", "pressure": "keep", "odd": "remove"} with input as ask([], lvl("read_write", null))
}

test_read_only_removes_secrets if {
	fields == {"flow": "keep", "owner_phone": "mask", "valve_key": "remove", "pressure": "keep", "odd": "remove"} with input as ask([], lvl("read_only", now + 1000))
}

test_none_denied if {
	not allow with input as ask([], lvl("none", null))
	fields == {} with input as ask([], lvl("none", null))
	reason == "your permission level on model a1 is none: apply for one" with input as ask([], lvl("none", null))
}

test_expired_denied if {
	not allow with input as ask([], lvl("read_write", now))
	not allow with input as ask([], lvl("model_admin", now - 1))
	reason == "your read_write permission on model a1 expired at 1700000000000: apply again" with input as ask([], lvl("read_write", now))
}

test_no_grant_denied if {
	not allow with input as ask(["auditor"], {})
	not allow with input as ask([], {"b2": {"level": "model_admin", "expires_at": null}})
	reason == "you have no data permission on model a1: apply for one" with input as ask([], {})
}

test_unknown_level_denied if {
	not allow with input as ask([], lvl("owner", null))
}

test_admin_role_is_model_admin if {
	allow with input as ask(["admin"], {})
	level == "model_admin" with input as ask(["admin"], lvl("none", null))
	fields.valve_key == "keep" with input as ask(["admin"], {})
}

test_operators_without_a_grant_read_masked if {
	inp := {
		"principal": {"kind": "user", "roles": ["operator"], "data_levels": {}},
		"now": 1000, "model": "a1",
		"fields": [{"name": "flow"}, {"name": "zone", "sensitivity": "internal"}, {"name": "phone", "sensitivity": "personal"}, {"name": "key", "sensitivity": "secret"}],
	}
	allow with input as inp
	fields == {"flow": "keep", "zone": "keep", "phone": "mask", "key": "remove"} with input as inp
}

test_an_explicit_none_beats_the_operator_default if {
	inp := {
		"principal": {"kind": "user", "roles": ["operator"], "data_levels": {"a1": {"level": "none", "expires_at": null}}},
		"now": 1000, "model": "a1", "fields": [{"name": "flow"}],
	}
	not allow with input as inp
}

test_an_expired_grant_does_not_fall_back_to_the_default if {
	inp := {
		"principal": {"kind": "user", "roles": ["operator"], "data_levels": {"a1": {"level": "data_admin", "expires_at": 999}}},
		"now": 1000, "model": "a1", "fields": [{"name": "flow"}],
	}
	not allow with input as inp
	contains(reason, "expired") with input as inp
}
