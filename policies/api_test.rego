# Tests of lotus.api. Run: lotus policy test policies/
package lotus.api

user(roles) := {"kind": "user", "id": "7", "username": "ops", "org": "city", "region": "/hz/xihu", "roles": roles}

dev(region) := {"kind": "device", "id": "pk/dn", "org": "city", "region": region}

req(roles, action, resource) := {"principal": user(roles), "action": action, "resource": resource}

test_operator_reads_device_in_region if {
	allow with input as req(["operator"], "device.read", dev("/hz/xihu/lingyin"))
	allow with input as req(["operator"], "device.read", dev("/hz/xihu"))
}

test_operator_writes_deletes_invokes_in_region if {
	allow with input as req(["operator"], "device.write", dev("/hz/xihu/lingyin"))
	allow with input as req(["operator"], "device.delete", dev("/hz/xihu/lingyin"))
	allow with input as req(["operator"], "device.invoke", dev("/hz/xihu/lingyin"))
	allow with input as req(["operator"], "topic_class.write", dev("/hz/xihu"))
}

test_operator_cannot_admin if {
	not allow with input as req(["operator"], "device.admin", dev("/hz/xihu"))
}

test_cross_region_read_denied if {
	inp := req(["operator"], "device.read", dev("/hz/binjiang"))
	not allow with input as inp
	reason == "device pk/dn is in region /hz/binjiang, outside your region /hz/xihu" with input as inp
}

test_cross_region_write_denied if {
	not allow with input as req(["operator"], "device.write", dev("/hz/binjiang/x"))
	not allow with input as req(["operator"], "device.write", dev("/"))
	not allow with input as req(["operator"], "device.write", dev("/hz"))
}

test_sibling_prefix_trap if {
	not allow with input as req(["operator"], "device.read", dev("/hz/xihuan"))
	not allow with input as req(["viewer"], "device.read", dev("/hz/xihuan/a"))
}

test_org_mismatch_denied if {
	inp := req(["operator"], "device.read", {"kind": "device", "id": "pk/dn", "org": "other", "region": "/hz/xihu"})
	not allow with input as inp
	reason == "device pk/dn belongs to organisation other, not yours (city)" with input as inp
}

# "city" has the sub-organisation "city.water"; "city.water" has none.
dept_user(org, orgs) := {"kind": "user", "id": "7", "username": "ops", "org": org, "orgs": orgs, "region": "/", "roles": ["operator"]}

test_parent_org_sees_its_sub_organisations if {
	allow with input as {"principal": dept_user("city", ["city", "city.water"]), "action": "device.write", "resource": {"kind": "device", "id": "pk/dn", "org": "city.water", "region": "/hz"}}
	allow with input as {"principal": dept_user("city", ["city", "city.water"]), "action": "product.read", "resource": {"kind": "product", "id": "pk", "org": "city", "region": "/hz"}}
}

test_sub_organisation_does_not_see_its_parent if {
	inp := {"principal": dept_user("city.water", ["city.water"]), "action": "device.read", "resource": {"kind": "device", "id": "pk/dn", "org": "city", "region": "/hz"}}
	not allow with input as inp
	reason == "device pk/dn belongs to organisation city, not yours (city.water)" with input as inp
}

test_sibling_organisations_do_not_see_each_other if {
	not allow with input as {"principal": dept_user("city.water", ["city.water"]), "action": "device.read", "resource": {"kind": "device", "id": "pk/dn", "org": "city.power", "region": "/hz"}}
}

test_app_of_a_parent_org_reaches_sub_organisations if {
	principal := object.union(app(["device.read"], "/"), {"orgs": ["city", "city.water"]})
	allow with input as {"principal": principal, "action": "device.read", "resource": {"kind": "device", "id": "pk/lamp-9", "org": "city.water", "region": "/hz/xihu"}}
}

test_collection_is_in_scope if {
	allow with input as req(["viewer"], "device.read", {"kind": "device"})
	allow with input as req(["operator"], "product.read", {})
}

test_viewer_reads_but_cannot_write if {
	allow with input as req(["viewer"], "device.read", dev("/hz/xihu/lingyin"))
	not allow with input as req(["viewer"], "device.write", dev("/hz/xihu/lingyin"))
	reason == "none of your roles (viewer) permits device.write" with input as req(["viewer"], "device.write", dev("/hz/xihu/lingyin"))
	not allow with input as req(["viewer"], "device.delete", dev("/hz/xihu"))
	not allow with input as req(["viewer"], "device.invoke", dev("/hz/xihu"))
}

test_plugins_are_read_only_for_operators if {
	allow with input as req(["operator"], "plugin.read", {"kind": "plugin", "id": "water-meter"})
	not allow with input as req(["operator"], "plugin.write", {"kind": "plugin", "id": "water-meter"})
}

test_admin_does_everything if {
	allow with input as req(["admin"], "device.delete", dev("/sh/pudong"))
	allow with input as req(["admin"], "policy.write", {"kind": "policy", "id": "api.rego"})
	allow with input as req(["admin"], "user.admin", {"kind": "user", "id": "8", "org": "other"})
}

test_unknown_role_gets_nothing if {
	not allow with input as req(["janitor"], "device.read", dev("/hz/xihu"))
	not allow with input as req([], "device.read", dev("/hz/xihu"))
	reason == "none of your roles () permits device.read" with input as req([], "device.read", dev("/hz/xihu"))
}

test_security_admin_manages_policies_everywhere if {
	allow with input as req(["security_admin"], "policy.write", {"kind": "policy", "id": "api.rego", "region": "/sh"})
	allow with input as req(["security_admin"], "decision.read", {})
	not allow with input as req(["security_admin"], "device.read", dev("/hz/xihu"))
}

test_auditor_reads_decisions_and_audit if {
	allow with input as req(["auditor"], "decision.read", {"kind": "decision"})
	allow with input as req(["auditor"], "audit.read", {"kind": "audit"})
	not allow with input as req(["auditor"], "policy.write", {"kind": "policy"})
	not allow with input as req(["auditor"], "device.read", dev("/hz/xihu"))
}

test_region_root_covers_all if {
	allow with input as {"principal": object.union(user(["operator"]), {"region": "/"}), "action": "device.read", "resource": dev("/sh/pudong")}
}

# --- apps ---------------------------------------------------------------------------------------

app_grants := {"products": ["pk"], "devices": ["pk2/pump"], "regions": ["/hz/binjiang"], "eventTypes": ["flood"], "dataModels": ["pk3"]}

app(apis, region) := {"kind": "app", "id": "app-1", "org": "city", "region": region, "apis": apis, "resources": app_grants}

app_req(apis, action, resource) := {"principal": app(apis, "/"), "action": action, "resource": resource}

test_app_needs_the_api if {
	allow with input as app_req(["device.read"], "device.read", dev("/hz/xihu"))
	inp := app_req(["device.read"], "device.write", dev("/hz/xihu"))
	not allow with input as inp
	reason == "app app-1 is not granted the API device.write" with input as inp
}

test_app_limited_to_scope if {
	not allow with input as {"principal": app(["device.read"], "/hz/xihu"), "action": "device.read", "resource": dev("/hz/binjiang")}
	not allow with input as app_req(["device.read"], "device.read", {"kind": "device", "id": "pk/x", "org": "other"})
}

test_app_device_of_granted_product if {
	allow with input as app_req(["device.read", "shadow.read"], "device.read", {"kind": "device", "id": "pk/lamp-9", "org": "city", "region": "/hz/xihu"})
	allow with input as app_req(["device.read", "shadow.read"], "shadow.read", {"kind": "shadow", "id": "pk/lamp-9", "org": "city", "region": "/hz/xihu"})
	# Creating devices of a product: `{pk}/*`.
	allow with input as app_req(["device.write"], "device.write", {"kind": "device", "id": "pk/*", "org": "city", "region": "/hz/xihu"})
}

test_app_single_granted_device if {
	allow with input as app_req(["device.read"], "device.read", {"kind": "device", "id": "pk2/pump", "org": "city", "region": "/hz/xihu"})
	inp := app_req(["device.read"], "device.read", {"kind": "device", "id": "pk2/other", "org": "city", "region": "/hz/xihu"})
	not allow with input as inp
	reason == "app app-1 is not granted product pk2 nor device pk2/other, nor region /hz/xihu" with input as inp
}

test_app_ungranted_product_denied_with_reason if {
	inp := app_req(["product.read"], "product.read", {"kind": "product", "id": "other", "org": "city", "region": "/hz/xihu"})
	not allow with input as inp
	reason == "app app-1 is not granted product other, nor region /hz/xihu" with input as inp
	allow with input as app_req(["product.read"], "product.read", {"kind": "product", "id": "pk", "org": "city", "region": "/hz/xihu"})
}

test_app_granted_region_subtree if {
	allow with input as app_req(["device.read"], "device.read", {"kind": "device", "id": "x/y", "org": "city", "region": "/hz/binjiang/riverside"})
	allow with input as app_req(["alarm.read"], "alarm.read", {"kind": "alarm", "id": "12", "org": "city", "region": "/hz/binjiang"})
	inp := app_req(["alarm.read"], "alarm.read", {"kind": "alarm", "id": "13", "org": "city", "region": "/hz/binjiangx"})
	not allow with input as inp
	reason == "app app-1 is not granted alarm 13, nor region /hz/binjiangx" with input as inp
}

test_app_events_by_type if {
	allow with input as app_req(["event.read"], "event.read", {"kind": "event", "id": "5", "org": "city", "region": "/hz/xihu", "eventType": "flood"})
	inp := app_req(["event.read"], "event.read", {"kind": "event", "id": "6", "org": "city", "region": "/hz/xihu", "eventType": "fire"})
	not allow with input as inp
	reason == "app app-1 is not granted event type fire, nor region /hz/xihu" with input as inp
	allow with input as app_req(["event_type.read"], "event_type.read", {"kind": "event_type", "id": "flood"})
	reason == "app app-1 is not granted event type fire" with input as app_req(["event_type.read"], "event_type.read", {"kind": "event_type", "id": "fire"})
}

test_app_data_models if {
	allow with input as app_req(["thing_model.read"], "thing_model.read", {"kind": "thing_model", "id": "pk3", "org": "city", "region": "/hz/xihu"})
	not allow with input as app_req(["product.read"], "product.read", {"kind": "product", "id": "pk3", "org": "city", "region": "/hz/xihu"})
}

test_app_collections_need_only_the_api if {
	allow with input as app_req(["device.read"], "device.read", {"kind": "device"})
	allow with input as app_req(["event.read"], "event.read", {"kind": "event", "id": "*"})
	not allow with input as app_req([], "device.read", {"kind": "device"})
}

test_app_never_administers_or_has_a_personal_center if {
	actions := {"app.write", "policy.write", "user.write", "audit.read", "plugin.write", "message.read", "task.read", "profile.read", "application.write"}
	refused := {a |
		some a in actions
		inp := app_req([a], a, {"kind": "x"})
		not allow with input as inp
		startswith(reason, sprintf("apps are never granted %s", [a])) with input as inp
	}
	refused == actions
}

test_admins_manage_apps if {
	allow with input as req(["admin"], "app.write", {"kind": "app", "id": "app_x", "org": "other", "region": "/sh"})
	allow with input as req(["admin"], "app.delete", {"kind": "app", "id": "app_x"})
	not allow with input as req(["operator"], "app.read", {"kind": "app", "id": "app_x", "org": "city", "region": "/hz/xihu"})
	not allow with input as req(["security_admin"], "app.write", {"kind": "app"})
}

test_malformed_action_denied if {
	not allow with input as req(["admin"], "device", dev("/hz/xihu"))
	reason == "action device is not <kind>.<verb>" with input as req(["admin"], "device", dev("/hz/xihu"))
	not allow with input as req(["admin"], "device.read.x", dev("/hz/xihu"))
}

test_unknown_principal_kind_denied if {
	not allow with input as {"principal": {"kind": "device"}, "action": "device.read", "resource": {}}
	reason == "unknown principal kind device" with input as {"principal": {"kind": "device"}, "action": "device.read", "resource": {}}
}

test_resource_without_org_is_in_every_org if {
	allow with input as {
		"principal": {"kind": "user", "id": "7", "org": "water", "region": "/hz", "roles": ["operator"]},
		"action": "device.read",
		"resource": {"kind": "device", "id": "a1/d1", "org": "", "region": "/hz/xihu"},
	}
}

test_operator_binds_codecs_in_scope if {
	allow with input as {
		"principal": {"kind": "user", "id": "7", "org": "", "region": "/hz/xihu", "roles": ["operator"]},
		"action": "codec.write",
		"resource": {"kind": "codec", "id": "a1", "org": "", "region": "/hz/xihu"},
	}
	not allow with input as {
		"principal": {"kind": "user", "id": "7", "org": "", "region": "/hz/xihu", "roles": ["operator"]},
		"action": "codec.write",
		"resource": {"kind": "codec", "id": "a1", "org": "", "region": "/hz/binjiang"},
	}
}

test_list_scope_confines_scoped_roles if {
	list_scope == {"org": "water", "region": "/hz/xihu"} with input as {
		"principal": {"kind": "user", "id": "7", "org": "water", "region": "/hz/xihu", "roles": ["operator"]},
		"kind": "device",
	}
}

test_list_scope_undefined_for_admins if {
	not list_scope with input as {
		"principal": {"kind": "user", "id": "1", "org": "", "region": "/", "roles": ["admin"]},
		"kind": "device",
	}
}

test_users_are_managed_by_admins_only if {
	not allow with input as {
		"principal": {"kind": "user", "id": "7", "org": "", "region": "/", "roles": ["operator"]},
		"action": "user.write",
		"resource": {"kind": "user", "id": "eve", "org": "", "region": "/"},
	}
	allow with input as {
		"principal": {"kind": "user", "id": "1", "org": "", "region": "/", "roles": ["admin"]},
		"action": "user.write",
		"resource": {"kind": "user", "id": "eve", "org": "", "region": "/"},
	}
}

test_data_admins_grant_data_levels_in_scope if {
	allow with input as {
		"principal": {"kind": "user", "id": "9", "org": "", "region": "/hz", "roles": ["data_admin"]},
		"action": "data_grant.write",
		"resource": {"kind": "data_grant", "id": "a1", "org": "", "region": "/hz/xihu"},
	}
	not allow with input as {
		"principal": {"kind": "user", "id": "9", "org": "", "region": "/hz", "roles": ["data_admin"]},
		"action": "data_grant.write",
		"resource": {"kind": "data_grant", "id": "a1", "org": "", "region": "/sh"},
	}
	not allow with input as {
		"principal": {"kind": "user", "id": "7", "org": "", "region": "/", "roles": ["operator"]},
		"action": "data_grant.write",
		"resource": {"kind": "data_grant", "id": "a1", "org": "", "region": "/"},
	}
}

# --- event operations center -----------------------------------------------------------------

ev(region) := {"kind": "event", "id": "42", "org": "city", "region": region}

task_for(assignee, region) := {"kind": "task", "id": "E1-t1", "org": "city", "region": region, "assignee": assignee}

test_operator_manages_rules_alarms_events_in_region if {
	allow with input as req(["operator"], "rule.write", {"kind": "rule", "id": "r", "org": "city", "region": "/hz/xihu"})
	allow with input as req(["operator"], "alarm.write", {"kind": "alarm", "id": "1", "org": "city", "region": "/hz/xihu/lingyin"})
	allow with input as req(["operator"], "event.read", ev("/hz/xihu/lingyin"))
	not allow with input as req(["operator"], "event.read", ev("/hz/binjiang"))
	not allow with input as req(["operator"], "workflow.write", {"kind": "workflow", "id": "w"})
	allow with input as req(["operator"], "workflow.read", {"kind": "workflow", "id": "w"})
}

test_viewer_reads_events_only if {
	allow with input as req(["viewer"], "event.read", ev("/hz/xihu"))
	not allow with input as req(["viewer"], "event.write", ev("/hz/xihu"))
}

test_dispatcher_disposes_events_in_region_only if {
	allow with input as req(["dispatcher"], "event.write", ev("/hz/xihu"))
	not allow with input as req(["dispatcher"], "event.write", ev("/hz/binjiang"))
	not allow with input as req(["dispatcher"], "rule.write", {"kind": "rule", "id": "r"})
}

test_task_assignee_by_name_acts if {
	allow with input as req([], "task.write", task_for({"user": "ops"}, null))
	not allow with input as req([], "task.write", task_for({"user": "someone-else"}, null))
}

test_task_role_holder_acts_in_region_only if {
	allow with input as req(["dispatcher"], "task.write", task_for({"role": "dispatcher"}, "/hz/xihu/lingyin"))
	inp := req(["dispatcher"], "task.write", task_for({"role": "dispatcher"}, "/hz/binjiang"))
	not allow with input as inp
	reason == "task E1-t1 is in region /hz/binjiang, outside your region /hz/xihu" with input as inp
	not allow with input as req(["viewer"], "task.write", task_for({"role": "dispatcher"}, "/hz/xihu"))
}

test_everyone_lists_own_tasks_and_messages if {
	allow with input as req([], "task.read", {"kind": "task"})
	allow with input as req([], "message.read", {"kind": "message"})
	allow with input as req([], "message.delete", {"kind": "message"})
	not allow with input as {"principal": {"kind": "app", "id": "a", "apis": []}, "action": "message.read", "resource": {"kind": "message"}}
}

# --- the portal ---------------------------------------------------------------------------------

profile(username) := {"kind": "profile", "id": username}

test_everyone_reads_and_changes_their_own_profile if {
	allow with input as req([], "profile.read", profile("ops"))
	allow with input as req(["viewer"], "profile.write", profile("ops"))
}

test_nobody_but_admins_touches_another_profile if {
	inp := req(["operator", "security_admin"], "profile.write", profile("eve"))
	not allow with input as inp
	reason == "none of your roles (operator, security_admin) permits profile.write" with input as inp
	not allow with input as req(["viewer"], "profile.read", profile("eve"))
	not allow with input as req(["operator"], "profile.delete", profile("ops"))
	not allow with input as {"principal": {"kind": "app", "id": "ops", "apis": []}, "action": "profile.read", "resource": profile("ops")}
}

test_only_admins_change_the_platform_style if {
	allow with input as req(["admin"], "style.write", {"kind": "style", "id": "platform"})
	inp := req(["operator", "data_admin", "security_admin"], "style.write", {"kind": "style", "id": "platform"})
	not allow with input as inp
	reason == "none of your roles (operator, data_admin, security_admin) permits style.write" with input as inp
}

account(roles) := {"kind": "user", "id": "new-admin", "org": "", "region": "/", "roles": roles}

test_admin_duties_are_held_by_different_people if {
	admin := {"kind": "user", "id": "1", "username": "admin", "org": "", "region": "/", "roles": ["admin"]}
	allow with input as {"principal": admin, "action": "user.write", "resource": account(["auditor"])}
	allow with input as {"principal": admin, "action": "user.write", "resource": account(["security_admin", "operator"])}
	inp := {"principal": admin, "action": "user.write", "resource": account(["admin", "auditor"])}
	not allow with input as inp
	reason == "one account may not hold admin and auditor: the system administrator, the security administrator and the auditor are different people" with input as inp
	not allow with input as {"principal": admin, "action": "user.write", "resource": account(["security_admin", "auditor", "admin"])}
}

# --- regions, organisations and roles --------------------------------------------------------

region(path) := {"kind": "region", "id": path, "region": path}

custom(permissions) := {"kind": "user", "id": "8", "username": "inspector", "org": "city", "region": "/hz/xihu", "roles": ["inspector"], "permissions": permissions}

test_admins_manage_regions_orgs_and_roles if {
	allow with input as req(["admin"], "region.write", region("/hz"))
	allow with input as req(["admin"], "region.delete", region("/hz/xihu"))
	allow with input as req(["admin"], "org.write", {"kind": "org", "id": "water", "org": "water"})
	allow with input as req(["admin"], "role.write", {"kind": "role", "id": "inspector", "permissions": ["device.read", "device.invoke"]})
	allow with input as req(["admin"], "role.delete", {"kind": "role", "id": "inspector"})
}

test_operators_read_regions_and_orgs_in_scope_only if {
	allow with input as req(["operator"], "region.read", region("/hz/xihu/lingyin"))
	allow with input as req(["viewer"], "region.read", region("/hz/xihu"))
	not allow with input as req(["operator"], "region.read", region("/hz/binjiang"))
	not allow with input as req(["operator"], "region.write", region("/hz/xihu/lingyin"))
	not allow with input as req(["operator"], "region.delete", region("/hz/xihu/lingyin"))
	allow with input as req(["viewer"], "org.read", {"kind": "org", "id": "city", "org": "city", "region": "/hz/xihu"})
	not allow with input as req(["viewer"], "org.read", {"kind": "org", "id": "water", "org": "water"})
	not allow with input as req(["operator"], "org.write", {"kind": "org", "id": "city", "org": "city"})
}

test_roles_are_read_by_reviewers_and_written_by_admins if {
	allow with input as req(["security_admin"], "role.read", {"kind": "role", "id": "*"})
	allow with input as req(["auditor"], "role.read", {"kind": "role", "id": "*"})
	not allow with input as req(["operator"], "role.read", {"kind": "role", "id": "*"})
	not allow with input as req(["security_admin"], "role.write", {"kind": "role", "id": "inspector", "permissions": ["device.read"]})
}

test_custom_role_grants_its_permissions_within_scope if {
	p := custom(["device.read", "device.invoke"])
	allow with input as {"principal": p, "action": "device.read", "resource": dev("/hz/xihu/lingyin")}
	allow with input as {"principal": p, "action": "device.invoke", "resource": dev("/hz/xihu")}
	not allow with input as {"principal": p, "action": "device.write", "resource": dev("/hz/xihu")}
	not allow with input as {"principal": p, "action": "device.delete", "resource": dev("/hz/xihu")}
	not allow with input as {"principal": p, "action": "device.read", "resource": dev("/hz/binjiang")}
	not allow with input as {"principal": p, "action": "device.read", "resource": {"kind": "device", "id": "pk/dn", "org": "water", "region": "/hz/xihu"}}
}

test_custom_role_permissions_never_reach_reserved_actions if {
	p := custom(["policy.write", "audit.read", "decision.read", "user.write", "role.write"])
	not allow with input as {"principal": p, "action": "policy.write", "resource": {"kind": "policy", "id": "lotus.api"}}
	not allow with input as {"principal": p, "action": "audit.read", "resource": {"kind": "audit", "id": "*"}}
	not allow with input as {"principal": p, "action": "decision.read", "resource": {"kind": "decision", "id": "*"}}
	not allow with input as {"principal": p, "action": "user.write", "resource": {"kind": "user", "id": "x", "org": "city", "region": "/hz/xihu"}}
	not allow with input as {"principal": p, "action": "role.write", "resource": {"kind": "role", "id": "x", "permissions": []}}
}

test_no_one_writes_a_custom_role_with_reserved_actions if {
	inp := req(["admin"], "role.write", {"kind": "role", "id": "inspector", "permissions": ["device.read", "policy.write"]})
	not allow with input as inp
	reason == "a custom role may not grant policy.write: those actions stay with the security administrator, the auditor and the system administrator" with input as inp
	not allow with input as req(["admin"], "role.write", {"kind": "role", "id": "x", "permissions": ["audit.read"]})
	not allow with input as req(["admin"], "role.write", {"kind": "role", "id": "x", "permissions": ["user.write"]})
	not allow with input as req(["admin"], "role.write", {"kind": "role", "id": "x", "permissions": ["role.delete"]})
	not allow with input as req(["admin"], "role.write", {"kind": "role", "id": "x", "permissions": ["decision.read"]})
}

# --- the app center: who may open an app ------------------------------------------------------

open_app(org, region, roles) := {"kind": "app", "id": "app_x", "org": org, "region": region, "openRoles": roles}

test_user_with_an_open_role_opens_the_app if {
	allow with input as req(["viewer"], "app.open", open_app("city", "/hz/xihu", ["viewer", "dispatcher"]))
	allow with input as req(["operator", "dispatcher"], "app.open", open_app("", "/", ["dispatcher"]))
}

test_app_region_does_not_narrow_its_open_roles if {
	allow with input as req(["viewer"], "app.open", open_app("city", "/hz/binjiang", ["viewer"]))
}

test_user_without_an_open_role_is_refused_with_reason if {
	inp := req(["operator"], "app.open", open_app("city", "/hz/xihu", ["viewer"]))
	not allow with input as inp
	reason == "app app_x is opened by the roles viewer; yours are operator: ask an administrator" with input as inp
	not allow with input as req(["operator"], "app.open", open_app("city", "/", []))
}

test_app_of_another_org_is_not_opened if {
	inp := req(["viewer"], "app.open", open_app("other", "/", ["viewer"]))
	not allow with input as inp
	reason == "app app_x belongs to organisation other, not yours (city)" with input as inp
}

test_admin_opens_every_app if {
	allow with input as req(["admin"], "app.open", open_app("other", "/sh", []))
}

test_apps_do_not_open_apps if {
	not allow with input as {"principal": {"kind": "app", "id": "app_y", "org": "", "region": "/", "apis": ["app.open"]}, "action": "app.open", "resource": open_app("", "/", [])}
}

test_only_admins_rotate_the_signing_key if {
	allow with input as req(["admin"], "oidc_key.write", {"kind": "oidc_key", "id": "signing"})
	not allow with input as req(["security_admin"], "oidc_key.write", {"kind": "oidc_key", "id": "signing"})
	not allow with input as req(["operator"], "oidc_key.write", {"kind": "oidc_key", "id": "signing"})
}
