//! Rules and their outbox, alarms, events, workflows and tasks, the message center and
//! notifications against both back ends (SQLite file and PostgreSQL), like `store.rs`: every
//! case runs on each.

use std::collections::HashSet;

use lotus_storage::{
    ACTION_DEAD, ACTION_DONE, ACTION_PENDING, ALARM_ACKNOWLEDGED, ALARM_ACTIVE, ALARM_CLEARED,
    AlarmFilter, DELIVERY_DEAD, DELIVERY_FAILED, DELIVERY_PENDING, DELIVERY_SENT, DeliveryFilter,
    EVENT_CLOSED, EVENT_NEW, EVENT_PROCESSING, EventFilter, EventGroup, EventRow, MESSAGE_MESSAGE,
    MESSAGE_NOTIFICATION, NewAlarm, NewChannel, NewDelivery, NewEvent, NewMessage, NewRule,
    NewTask, NewTimelineEntry, RuleStatsDelta, RuleUpdate, Scope, StorageError, Store,
    TASK_APPROVED, TASK_OPEN, TASK_REJECTED, TaskAssigneeFilter, WORKFLOW_COMPLETED,
    WORKFLOW_RUNNING,
};
use serde_json::{Value, json};
use sqlx::Row;

#[macro_use]
mod backends;

on_both_backends!(
    rules_versions_and_rollback,
    rule_stats_accumulate,
    action_outbox_transitions,
    alarms_fold_acknowledge_and_clear,
    concurrent_raises_make_one_alarm,
    alarm_listing_filters,
    event_types_crud,
    events_numbers_timeline_and_merge,
    concurrent_events_get_unique_numbers,
    event_writes_commit_together,
    event_search_and_statistics,
    workflow_definitions_versions,
    workflow_instances_optimistic_concurrency,
    tasks_close_and_assignee_filter,
    message_center_ownership,
    channels_seal_their_secret,
    templates_and_preferences,
    delivery_transitions,
);

/// 2026-11-26T08:00:00Z.
const T0: i64 = 1_795_680_000_000;
const DAY: i64 = 86_400_000;

fn expect_conflict<T: std::fmt::Debug>(r: Result<T, StorageError>, needle: &str) {
    match r {
        Err(StorageError::Conflict(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected a conflict mentioning '{needle}', got {other:?}"),
    }
}

fn expect_not_found<T: std::fmt::Debug>(r: Result<T, StorageError>, needle: &str) {
    match r {
        Err(StorageError::NotFound(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected not found mentioning '{needle}', got {other:?}"),
    }
}

fn rule<'a>(id: &'a str, definition: &'a Value) -> NewRule<'a> {
    NewRule {
        id,
        name: "Water level",
        description: "Underpass water above 30 cm",
        enabled: true,
        definition,
        org: "water",
        region: "/hz/xihu",
        created_by: "alice",
    }
}

async fn rules_versions_and_rollback(s: &Store, _url: &str) {
    let v1 = json!({"when": "level > 30", "then": [{"kind": "alarm"}]});
    let r = s.create_rule(&rule("water-level", &v1)).await.unwrap();
    assert_eq!(r.version, 1);
    assert!(r.enabled);
    assert_eq!(r.definition, v1);
    assert_eq!(r.region, "/hz/xihu");
    expect_conflict(
        s.create_rule(&rule("water-level", &v1)).await,
        "water-level",
    );

    let v2 = json!({"when": "level > 40", "then": []});
    let r = s
        .update_rule(
            "water-level",
            &RuleUpdate {
                name: "Water level (high)",
                description: "above 40 cm",
                definition: &v2,
                updated_by: "bob",
            },
        )
        .await
        .unwrap();
    assert_eq!(r.version, 2);
    assert_eq!(r.name, "Water level (high)");
    assert_eq!(r.definition, v2);
    assert_eq!(r.created_by, "alice", "the creator stays");
    expect_not_found(
        s.update_rule(
            "nope",
            &RuleUpdate {
                name: "",
                description: "",
                definition: &v2,
                updated_by: "bob",
            },
        )
        .await,
        "nope",
    );

    let r = s.set_rule_enabled("water-level", false).await.unwrap();
    assert!(!r.enabled);
    assert_eq!(r.version, 2, "enabling is not a new version");
    expect_not_found(s.set_rule_enabled("nope", true).await, "nope");

    let r = s.rollback_rule("water-level", 1, "carol").await.unwrap();
    assert_eq!(r.version, 3);
    assert_eq!(r.definition, v1);
    assert_eq!(
        r.name, "Water level (high)",
        "a rollback restores the definition only"
    );
    expect_not_found(
        s.rollback_rule("water-level", 9, "carol").await,
        "version 9",
    );

    let versions = s.rule_versions("water-level").await.unwrap();
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.created_by.as_str(), v.definition.clone()))
            .collect::<Vec<_>>(),
        [
            (1, "alice", v1.clone()),
            (2, "bob", v2),
            (3, "carol", v1.clone())
        ]
    );

    s.create_rule(&rule("another", &v1)).await.unwrap();
    let ids: Vec<String> = s
        .list_rules()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["another", "water-level"]);
    assert_eq!(s.get_rule("water-level").await.unwrap().unwrap().version, 3);

    assert!(s.delete_rule("water-level").await.unwrap());
    assert!(!s.delete_rule("water-level").await.unwrap());
    assert!(s.get_rule("water-level").await.unwrap().is_none());
    assert!(s.rule_versions("water-level").await.unwrap().is_empty());
    // The id is free again, with a fresh history.
    let r = s.create_rule(&rule("water-level", &v1)).await.unwrap();
    assert_eq!(r.version, 1);
}

async fn rule_stats_accumulate(s: &Store, _url: &str) {
    let def = json!({});
    s.create_rule(&rule("r1", &def)).await.unwrap();
    let zero = s.rule_stats("r1").await.unwrap();
    assert_eq!(
        (zero.matched, zero.actions_ok, zero.last_error),
        (0, 0, None)
    );

    let delta = |matched, ok, failed, err, at| RuleStatsDelta {
        matched,
        actions_ok: ok,
        actions_failed: failed,
        last_error: err,
        at,
    };
    s.add_rule_stats("r1", &delta(3, 2, 1, Some("webhook 503"), T0))
        .await
        .unwrap();
    s.add_rule_stats("r1", &delta(2, 2, 0, None, T0 + 10))
        .await
        .unwrap();
    s.add_rule_stats("r1", &delta(0, 0, 0, None, T0 + 20))
        .await
        .unwrap();
    let st = s.rule_stats("r1").await.unwrap();
    assert_eq!((st.matched, st.actions_ok, st.actions_failed), (5, 4, 1));
    assert_eq!(
        st.last_error.as_deref(),
        Some("webhook 503"),
        "kept when None"
    );
    assert_eq!(st.last_error_at, Some(T0));
    assert_eq!(
        st.last_matched_at,
        Some(T0 + 10),
        "a batch without matches keeps it"
    );

    s.add_rule_stats("r1", &delta(0, 0, 1, Some("timeout"), T0 + 30))
        .await
        .unwrap();
    let st = s.rule_stats("r1").await.unwrap();
    assert_eq!(st.last_error.as_deref(), Some("timeout"));
    assert_eq!(st.last_error_at, Some(T0 + 30));

    expect_not_found(
        s.add_rule_stats("ghost", &delta(1, 0, 0, None, T0)).await,
        "ghost",
    );
    // Counters go with their rule.
    s.delete_rule("r1").await.unwrap();
    assert_eq!(s.rule_stats("r1").await.unwrap().matched, 0);
}

async fn action_outbox_transitions(s: &Store, _url: &str) {
    let action = json!({"kind": "webhook", "url": "http://hooks.example/flood"});
    let a = s
        .enqueue_action("r1", &action, &json!({"level": 42}), T0)
        .await
        .unwrap();
    let b = s
        .enqueue_action("r1", &action, &json!({"level": 43}), T0 + 5)
        .await
        .unwrap();
    let c = s
        .enqueue_action("r2", &action, &json!({}), T0 + 100)
        .await
        .unwrap();

    let due = s.due_actions(T0 + 10, 10).await.unwrap();
    assert_eq!(due.iter().map(|o| o.id).collect::<Vec<_>>(), [a, b]);
    assert_eq!(due[0].payload, json!({"level": 42}));
    assert_eq!(due[0].action, action);
    assert_eq!(
        (due[0].state.as_str(), due[0].attempts),
        (ACTION_PENDING, 0)
    );
    assert_eq!(s.due_actions(T0 + 10, 1).await.unwrap().len(), 1);

    s.action_retry(a, T0 + 1_000, "connection refused")
        .await
        .unwrap();
    let due = s.due_actions(T0 + 10, 10).await.unwrap();
    assert_eq!(due.iter().map(|o| o.id).collect::<Vec<_>>(), [b]);
    let due = s.due_actions(T0 + 1_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|o| o.id).collect::<Vec<_>>(), [b, c, a]);
    let retried = due.iter().find(|o| o.id == a).unwrap();
    assert_eq!(retried.attempts, 1);
    assert_eq!(retried.last_error.as_deref(), Some("connection refused"));

    s.action_done(b).await.unwrap();
    expect_conflict(s.action_done(b).await, ACTION_DONE);
    s.action_dead(a, "HTTP 500").await.unwrap();
    expect_conflict(s.action_retry(a, T0, "x").await, ACTION_DEAD);
    expect_not_found(s.action_done(999_999).await, "999999");
    s.action_dead(c, "HTTP 404").await.unwrap();

    let dead = s.list_dead_actions(None, 10, 0).await.unwrap();
    assert_eq!(dead.len(), 2);
    let dead = s.list_dead_actions(Some("r1"), 10, 0).await.unwrap();
    assert_eq!(dead.iter().map(|o| o.id).collect::<Vec<_>>(), [a]);
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(s.list_dead_actions(None, 10, 2).await.unwrap().len(), 0);

    expect_conflict(s.requeue_action(b, T0).await, "done");
    s.requeue_action(a, T0 + 2_000).await.unwrap();
    let due = s.due_actions(T0 + 2_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|o| o.id).collect::<Vec<_>>(), [a]);
    assert_eq!(due[0].attempts, 0);
    assert_eq!(due[0].next_attempt_at, T0 + 2_000);
    assert_eq!(
        s.list_dead_actions(Some("r1"), 10, 0).await.unwrap().len(),
        0
    );
    expect_not_found(s.requeue_action(424_242, T0).await, "424242");
}

fn alarm<'a>(device: &'a str, alarm_type: &'a str, details: &'a Value, at: i64) -> NewAlarm<'a> {
    NewAlarm {
        product_key: "pk1",
        device_name: device,
        alarm_type,
        rule_id: Some("water-level"),
        level: 2,
        message: "water above 30 cm",
        details,
        region: "/hz/xihu",
        org: "water",
        at,
    }
}

async fn alarms_fold_acknowledge_and_clear(s: &Store, _url: &str) {
    let details = json!({"level": 31});
    let (a, new) = s
        .raise_alarm(&alarm("d1", "high-water", &details, T0))
        .await
        .unwrap();
    assert!(new);
    assert_eq!((a.state.as_str(), a.occurrences), (ALARM_ACTIVE, 1));
    assert_eq!((a.raised_at, a.last_at), (T0, T0));
    assert_eq!(a.details, details);

    let other = json!({"level": 50});
    let mut again = alarm("d1", "high-water", &other, T0 + 60_000);
    again.level = 1;
    again.message = "changed";
    let (b, new) = s.raise_alarm(&again).await.unwrap();
    assert!(!new);
    assert_eq!(b.id, a.id);
    assert_eq!(b.occurrences, 2);
    assert_eq!(b.last_at, T0 + 60_000);
    assert_eq!(b.raised_at, T0);
    assert_eq!(
        (b.level, b.message.as_str(), &b.details),
        (2, "water above 30 cm", &details),
        "a folded raise keeps the rest"
    );
    // A raise that arrives late does not move last_at back.
    let (b, _) = s
        .raise_alarm(&alarm("d1", "high-water", &details, T0 + 1))
        .await
        .unwrap();
    assert_eq!((b.occurrences, b.last_at), (3, T0 + 60_000));

    // Another type or device is another alarm.
    let (c, new) = s
        .raise_alarm(&alarm("d1", "offline", &details, T0))
        .await
        .unwrap();
    assert!(new);
    assert_ne!(c.id, a.id);

    let mut bad = alarm("d1", "x", &details, T0);
    bad.level = 5;
    assert!(matches!(
        s.raise_alarm(&bad).await,
        Err(StorageError::Invalid(_))
    ));

    let acked = s.acknowledge_alarm(a.id, "alice", T0 + 100).await.unwrap();
    assert_eq!(acked.state, ALARM_ACKNOWLEDGED);
    assert_eq!(acked.acknowledged_by.as_deref(), Some("alice"));
    let acked = s.acknowledge_alarm(a.id, "bob", T0 + 200).await.unwrap();
    assert_eq!(
        (acked.acknowledged_by.as_deref(), acked.acknowledged_at),
        (Some("alice"), Some(T0 + 100)),
        "the first acknowledgement stays"
    );
    // Raising while acknowledged still folds into it.
    let (d, new) = s
        .raise_alarm(&alarm("d1", "high-water", &details, T0 + 300))
        .await
        .unwrap();
    assert!(!new);
    assert_eq!((d.id, d.state.as_str()), (a.id, ALARM_ACKNOWLEDGED));

    let cleared = s.clear_alarm(a.id, "bob", T0 + 400).await.unwrap();
    assert_eq!(cleared.state, ALARM_CLEARED);
    assert_eq!(
        (cleared.cleared_by.as_deref(), cleared.cleared_at),
        (Some("bob"), Some(T0 + 400))
    );
    expect_conflict(s.acknowledge_alarm(a.id, "x", T0).await, "cleared");
    expect_conflict(s.clear_alarm(a.id, "x", T0).await, "cleared");
    expect_not_found(s.acknowledge_alarm(777_777, "x", T0).await, "777777");
    expect_not_found(s.clear_alarm(777_777, "x", T0).await, "777777");

    // After clearing, the next raise opens a new alarm.
    let (e, new) = s
        .raise_alarm(&alarm("d1", "high-water", &details, T0 + 500))
        .await
        .unwrap();
    assert!(new);
    assert_ne!(e.id, a.id);
    assert_eq!(e.occurrences, 1);

    let closed = s
        .clear_open_alarm("pk1", "d1", "high-water", "rule:water-level", T0 + 600)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed.id, e.id);
    assert!(
        s.clear_open_alarm("pk1", "d1", "high-water", "rule", T0)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.get_alarm(a.id).await.unwrap().unwrap().state,
        ALARM_CLEARED
    );
    assert!(s.get_alarm(777_777).await.unwrap().is_none());
}

async fn concurrent_raises_make_one_alarm(s: &Store, _url: &str) {
    let details = json!({"level": 31});
    let raises = (0..20).map(|i| {
        let s = s.clone();
        let details = details.clone();
        tokio::spawn(async move {
            s.raise_alarm(&alarm("d9", "high-water", &details, T0 + i))
                .await
                .unwrap()
        })
    });
    let mut new = 0;
    let mut ids = HashSet::new();
    for r in raises.collect::<Vec<_>>() {
        let (a, is_new) = r.await.unwrap();
        ids.insert(a.id);
        new += usize::from(is_new);
    }
    assert_eq!(ids.len(), 1, "one alarm for all raises");
    assert_eq!(new, 1, "exactly one raise opened it");
    let (rows, total) = s
        .list_alarms(&AlarmFilter {
            device_name: Some("d9"),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(total, 1);
    assert_eq!(rows[0].occurrences, 20);
    assert_eq!(rows[0].last_at, T0 + 19);
}

async fn alarm_listing_filters(s: &Store, _url: &str) {
    let details = json!({});
    let regions = ["/hz", "/hz/xihu", "/hz/xihu/lingyin", "/hzx", "/sh"];
    for (i, region) in regions.iter().enumerate() {
        let mut a = alarm("dev", "t", &details, T0 + i as i64 * 1000);
        let device = format!("d{i}");
        a.device_name = &device;
        a.region = region;
        a.org = if i == 4 { "other" } else { "water" };
        s.raise_alarm(&a).await.unwrap();
    }
    let all = AlarmFilter {
        limit: 100,
        ..Default::default()
    };
    let (rows, total) = alarm_devices(s, all.clone()).await;
    assert_eq!(total, 5);
    assert_eq!(rows, ["d4", "d3", "d2", "d1", "d0"], "newest first");

    let (rows, total) = alarm_devices(
        s,
        AlarmFilter {
            region_prefix: Some("/hz/xihu"),
            ..all.clone()
        },
    )
    .await;
    assert_eq!((rows, total), (vec!["d2".into(), "d1".into()], 2));
    let (rows, _) = alarm_devices(
        s,
        AlarmFilter {
            region_prefix: Some("/hz"),
            ..all.clone()
        },
    )
    .await;
    assert_eq!(rows, ["d2", "d1", "d0"], "/hzx is not below /hz");
    let (_, total) = alarm_devices(
        s,
        AlarmFilter {
            region_prefix: Some("/"),
            ..all.clone()
        },
    )
    .await;
    assert_eq!(total, 5);

    let scope = Scope {
        org: "other".into(),
        region: "/".into(),
    };
    let (rows, _) = alarm_devices(
        s,
        AlarmFilter {
            within: Some(&scope),
            ..all.clone()
        },
    )
    .await;
    assert_eq!(rows, ["d4"]);

    let (rows, total) = alarm_devices(
        s,
        AlarmFilter {
            from: Some(T0 + 1000),
            to: Some(T0 + 3000),
            limit: 1,
            offset: 1,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        (rows, total),
        (vec!["d1".into()], 2),
        "paged within the range"
    );

    let (a, _) = s
        .list_alarms(&AlarmFilter {
            device_name: Some("d0"),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    s.clear_alarm(a[0].id, "x", T0).await.unwrap();
    let (rows, total) = alarm_devices(
        s,
        AlarmFilter {
            state: Some(ALARM_CLEARED),
            ..all.clone()
        },
    )
    .await;
    assert_eq!((rows, total), (vec!["d0".into()], 1));
    let (_, total) = alarm_devices(
        s,
        AlarmFilter {
            state: Some(ALARM_ACTIVE),
            product_key: Some("pk1"),
            alarm_type: Some("t"),
            ..all.clone()
        },
    )
    .await;
    assert_eq!(total, 4);
    assert!(matches!(
        s.list_alarms(&AlarmFilter {
            state: Some("open"),
            ..Default::default()
        })
        .await,
        Err(StorageError::Invalid(_))
    ));
}

/// The device names of the alarms a filter lists, and the total.
async fn alarm_devices(s: &Store, f: AlarmFilter<'_>) -> (Vec<String>, i64) {
    let (rows, total) = s.list_alarms(&f).await.unwrap();
    (rows.into_iter().map(|a| a.device_name).collect(), total)
}

async fn event_types_crud(s: &Store, _url: &str) {
    assert!(s.get_event_type("flood").await.unwrap().is_none());
    s.put_event_type("flood", &json!({"name": "Flood", "fields": []}))
        .await
        .unwrap();
    s.put_event_type("fire", &json!({"name": "Fire"}))
        .await
        .unwrap();
    s.put_event_type("flood", &json!({"name": "Flooding"}))
        .await
        .unwrap();
    assert_eq!(
        s.get_event_type("flood").await.unwrap(),
        Some(json!({"name": "Flooding"}))
    );
    let types = s.list_event_types().await.unwrap();
    assert_eq!(
        types,
        [
            ("fire".to_string(), json!({"name": "Fire"})),
            ("flood".to_string(), json!({"name": "Flooding"}))
        ]
    );
    assert!(s.delete_event_type("fire").await.unwrap());
    assert!(!s.delete_event_type("fire").await.unwrap());
    assert_eq!(s.list_event_types().await.unwrap().len(), 1);
}

fn event<'a>(type_code: &'a str, title: &'a str, at: i64, empty: &'a Value) -> NewEvent<'a> {
    NewEvent {
        type_code,
        title,
        level: 2,
        state: EVENT_NEW,
        outcome: None,
        region: "/hz/xihu",
        org: "water",
        lat: Some(30.259_244),
        lon: Some(120.130_102),
        fields: empty,
        source: empty,
        rule_id: None,
        alarm_id: None,
        at,
    }
}

async fn events_numbers_timeline_and_merge(s: &Store, _url: &str) {
    let fields = json!({"depth_cm": 35});
    let source = json!({"rule": "water-level", "device": "pk1/d1"});
    let mut e = event("flood", "Underpass flooded", T0, &fields);
    e.source = &source;
    e.rule_id = Some("water-level");
    e.alarm_id = Some(7);
    let first = s.create_event(&e).await.unwrap();
    assert_eq!(first.number, "E20261126-000001");
    assert_eq!(first.fields, fields);
    assert_eq!(first.source, source);
    assert_eq!(
        (first.lat, first.lon),
        (Some(30.259_244), Some(120.130_102))
    );
    assert_eq!(
        (first.rule_id.as_deref(), first.alarm_id),
        (Some("water-level"), Some(7))
    );
    assert_eq!((first.merged_count, first.closed_at), (0, None));

    let empty = json!({});
    let second = s
        .create_event(&event("flood", "Again", T0 + 1, &empty))
        .await
        .unwrap();
    assert_eq!(second.number, "E20261126-000002");
    // The next UTC day starts again at 1; the previous day's counter is untouched.
    let next_day = s
        .create_event(&event("flood", "Tomorrow", T0 + DAY, &empty))
        .await
        .unwrap();
    assert_eq!(next_day.number, "E20261127-000001");
    let mut no_place = event("fire", "Smoke", T0 + 2, &empty);
    no_place.lat = None;
    no_place.lon = None;
    let third = s.create_event(&no_place).await.unwrap();
    assert_eq!(third.number, "E20261126-000003");
    assert_eq!((third.lat, third.lon), (None, None));

    assert_eq!(s.get_event(first.id).await.unwrap().unwrap(), first);
    assert_eq!(
        s.get_event_by_number("E20261126-000002")
            .await
            .unwrap()
            .unwrap()
            .id,
        second.id
    );
    assert!(
        s.get_event_by_number("E19990101-000001")
            .await
            .unwrap()
            .is_none()
    );

    let merged = s
        .merge_into_event(first.id, T0 + 5_000, &json!({"device": "pk1/d2"}))
        .await
        .unwrap();
    assert_eq!((merged.merged_count, merged.last_at), (1, T0 + 5_000));
    let merged = s
        .merge_into_event(first.id, T0 + 4_000, &json!({"device": "pk1/d3"}))
        .await
        .unwrap();
    assert_eq!(
        (merged.merged_count, merged.last_at),
        (2, T0 + 5_000),
        "a late report does not move last_at back"
    );
    expect_not_found(s.merge_into_event(999_999, T0, &empty).await, "999999");

    s.append_timeline(
        first.id,
        T0 + 6_000,
        Some("alice"),
        "assigned",
        &json!({"to": "drainage"}),
    )
    .await
    .unwrap();
    expect_not_found(
        s.append_timeline(999_999, T0, None, "x", &empty).await,
        "999999",
    );
    let processing = s
        .set_event_state(first.id, EVENT_PROCESSING, None, T0 + 7_000)
        .await
        .unwrap();
    assert_eq!(
        (processing.state.as_str(), processing.closed_at),
        (EVENT_PROCESSING, None)
    );
    let closed = s
        .set_event_state(first.id, EVENT_CLOSED, Some("drained"), T0 + 8_000)
        .await
        .unwrap();
    assert_eq!(closed.closed_at, Some(T0 + 8_000));
    assert_eq!(closed.outcome.as_deref(), Some("drained"));
    let reopened = s
        .set_event_state(first.id, EVENT_PROCESSING, None, T0 + 9_000)
        .await
        .unwrap();
    assert_eq!(reopened.closed_at, None);
    assert_eq!(
        reopened.outcome.as_deref(),
        Some("drained"),
        "None keeps it"
    );
    assert!(matches!(
        s.set_event_state(first.id, "done", None, T0).await,
        Err(StorageError::Invalid(_))
    ));
    expect_not_found(
        s.set_event_state(999_999, EVENT_CLOSED, None, T0).await,
        "999999",
    );

    let timeline = s.event_timeline(first.id).await.unwrap();
    assert_eq!(
        timeline
            .iter()
            .map(|t| (t.seq, t.action.as_str(), t.actor.as_deref()))
            .collect::<Vec<_>>(),
        [
            (1, "created", None),
            (2, "merged", None),
            (3, "merged", None),
            (4, "assigned", Some("alice")),
        ]
    );
    assert_eq!(timeline[0].detail, source);
    assert_eq!(timeline[1].detail, json!({"device": "pk1/d2"}));
    assert_eq!(timeline[3].at, T0 + 6_000);

    // Concurrent appends get consecutive entries.
    let appends: Vec<_> = (0..10)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.append_timeline(second.id, T0 + i, None, "note", &json!({ "i": i }))
                    .await
                    .unwrap()
            })
        })
        .collect();
    for a in appends {
        a.await.unwrap();
    }
    let seqs: Vec<i64> = s
        .event_timeline(second.id)
        .await
        .unwrap()
        .iter()
        .map(|t| t.seq)
        .collect();
    assert_eq!(seqs, (1..=11).collect::<Vec<_>>());

    // Created closed: closed at once.
    let mut auto = event("flood", "Auto-closed", T0 + 3, &empty);
    auto.state = EVENT_CLOSED;
    auto.outcome = Some("auto-closed");
    let auto = s.create_event(&auto).await.unwrap();
    assert_eq!(auto.closed_at, Some(T0 + 3));

    let open = s.open_events_of_type("flood", T0 + 1).await.unwrap();
    assert_eq!(
        open.iter().map(|e| e.id).collect::<Vec<_>>(),
        [next_day.id, first.id, second.id],
        "open ones reported since, most recent first"
    );
}

async fn concurrent_events_get_unique_numbers(s: &Store, _url: &str) {
    let creations: Vec<_> = (0..30)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let empty = json!({});
                s.create_event(&event("flood", "Concurrent", T0 + i, &empty))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for c in creations {
        numbers.push(c.await.unwrap().number);
    }
    numbers.sort();
    let expected: Vec<String> = (1..=30).map(|i| format!("E20261126-{i:06}")).collect();
    assert_eq!(numbers, expected, "unique and without gaps");
}

/// Many events with their timelines, workflows, tasks and messages in one transaction: none
/// visible before commit, all after; numbers consecutive across transactions, with no gap
/// left by one rolled back or failed.
async fn event_writes_commit_together(s: &Store, _url: &str) {
    let empty = json!({});
    let detail = json!({"workflow": "dispatch"});
    let instance = json!({"step": "dispatch"});
    let mut w = s.begin_event_writes().await.unwrap();
    assert_eq!(w.next_event_number(T0).await.unwrap(), "E20261126-000001");
    let mut ids = Vec::new();
    for i in 0..3 {
        let e = w
            .create_event(
                &NewEvent {
                    state: EVENT_PROCESSING,
                    ..event("flood", "Batched", T0 + i, &empty)
                },
                &[NewTimelineEntry {
                    at: T0 + i,
                    actor: None,
                    action: "workflow_started",
                    detail: &detail,
                }],
            )
            .await
            .unwrap();
        assert_eq!(e.number, format!("E20261126-{:06}", i + 1));
        assert_eq!(e.state, EVENT_PROCESSING);
        w.add_workflow_instance(e.id, "dispatch", 1, &instance, Some(T0 + 3_600_000));
        let task_id = format!("{}-t1", e.number);
        w.add_task(&task(&task_id, e.id, T0 + i)).unwrap();
        w.add_message(&message("dana", &format!("New task {task_id}"), T0 + i))
            .unwrap();
        ids.push(e.id);
    }
    // Seen by this transaction (a later report merges into its own new event) …
    let open = w.open_events_of_type("flood", T0).await.unwrap();
    assert_eq!(open.len(), 3);
    let merged = w
        .merge_into_event(ids[0], T0 + 10, &json!({"title": "again"}))
        .await
        .unwrap();
    assert_eq!(merged.merged_count, 1);
    // … and by no one else before commit.
    let (_, visible) = s.list_events(&EventFilter::default()).await.unwrap();
    assert_eq!(visible, 0);
    assert!(s.get_task("E20261126-000001-t1").await.unwrap().is_none());
    w.commit().await.unwrap();

    let (_, visible) = s.list_events(&EventFilter::default()).await.unwrap();
    assert_eq!(visible, 3);
    for id in &ids {
        assert_eq!(s.tasks_of_event(*id).await.unwrap().len(), 1);
        let wf = s.workflow_instance(*id).await.unwrap().unwrap();
        assert_eq!(wf.state, WORKFLOW_RUNNING);
        assert_eq!(wf.revision, 1);
    }
    let timeline = s.event_timeline(ids[0]).await.unwrap();
    let actions: Vec<(i64, &str)> = timeline
        .iter()
        .map(|t| (t.seq, t.action.as_str()))
        .collect();
    assert_eq!(
        actions,
        [(1, "created"), (2, "workflow_started"), (3, "merged")]
    );
    s.append_timeline(ids[0], T0 + 20, Some("op"), "note", &empty)
        .await
        .unwrap();
    assert_eq!(s.event_timeline(ids[0]).await.unwrap()[3].seq, 4);
    let (_, messages, _) = s.list_messages("dana", false, 10, 0).await.unwrap();
    assert_eq!(messages, 3);

    // Rolled back: its number is drawn again.
    let mut w = s.begin_event_writes().await.unwrap();
    let e = w
        .create_event(&event("flood", "Dropped", T0, &empty), &[])
        .await
        .unwrap();
    assert_eq!(e.number, "E20261126-000004");
    drop(w);
    // Failed at commit (a task id taken): nothing of it stays, its number neither.
    let mut w = s.begin_event_writes().await.unwrap();
    let e = w
        .create_event(&event("flood", "Refused", T0, &empty), &[])
        .await
        .unwrap();
    assert_eq!(e.number, "E20261126-000004");
    w.add_task(&task("E20261126-000001-t1", e.id, T0)).unwrap();
    w.add_message(&message("dana", "Refused", T0)).unwrap();
    expect_conflict(w.commit().await, "E20261126-000001-t1");
    let (_, visible) = s.list_events(&EventFilter::default()).await.unwrap();
    assert_eq!(visible, 3);
    let (_, messages, _) = s.list_messages("dana", false, 10, 0).await.unwrap();
    assert_eq!(messages, 3);
    let next = s
        .create_event(&event("flood", "Next", T0, &empty))
        .await
        .unwrap();
    assert_eq!(next.number, "E20261126-000004", "no gap");
}

async fn event_search_and_statistics(s: &Store, _url: &str) {
    let empty = json!({});
    let specs = [
        // (type, title, level, region, created at, closed after)
        (
            "flood",
            "Underpass flooded at Lingyin",
            1,
            "/hz/xihu",
            T0,
            Some(60_000),
        ),
        (
            "flood",
            "Street flooding",
            2,
            "/hz/xihu/lingyin",
            T0 + 1_000,
            Some(30_000),
        ),
        (
            "fire",
            "Smoke in a warehouse",
            1,
            "/hz/binjiang",
            T0 + DAY,
            None,
        ),
        (
            "flood",
            "Flooded_basement 100%",
            3,
            "/hzx",
            T0 + DAY + 1,
            Some(90_000),
        ),
    ];
    let mut created: Vec<EventRow> = Vec::new();
    for (type_code, title, level, region, at, closed_after) in specs {
        let mut e = event(type_code, title, at, &empty);
        e.level = level;
        e.region = region;
        let row = s.create_event(&e).await.unwrap();
        if let Some(after) = closed_after {
            s.set_event_state(row.id, EVENT_CLOSED, Some("done"), at + after)
                .await
                .unwrap();
        }
        created.push(row);
    }
    let titles = |rows: Vec<EventRow>| rows.into_iter().map(|e| e.title).collect::<Vec<_>>();
    let all = EventFilter {
        limit: 100,
        ..Default::default()
    };

    let (rows, total) = s.list_events(&all).await.unwrap();
    assert_eq!(total, 4);
    assert_eq!(rows[0].title, "Flooded_basement 100%", "newest first");

    let f = EventFilter {
        title_contains: Some("FLOOD"),
        ..all.clone()
    };
    let (rows, total) = s.list_events(&f).await.unwrap();
    assert_eq!(total, 3, "case-insensitive");
    assert_eq!(
        titles(rows),
        [
            "Flooded_basement 100%",
            "Street flooding",
            "Underpass flooded at Lingyin"
        ]
    );
    // LIKE wildcards in the needle are taken literally.
    let f = EventFilter {
        title_contains: Some("d_"),
        ..all.clone()
    };
    assert_eq!(s.list_events(&f).await.unwrap().1, 1);
    let f = EventFilter {
        title_contains: Some("100%"),
        ..all.clone()
    };
    assert_eq!(s.list_events(&f).await.unwrap().1, 1);

    let f = EventFilter {
        region_prefix: Some("/hz/xihu"),
        ..all.clone()
    };
    assert_eq!(s.list_events(&f).await.unwrap().1, 2);
    let f = EventFilter {
        region_prefix: Some("/hz"),
        level: Some(1),
        ..all.clone()
    };
    assert_eq!(
        titles(s.list_events(&f).await.unwrap().0),
        ["Smoke in a warehouse", "Underpass flooded at Lingyin"]
    );
    let f = EventFilter {
        number: Some(&created[1].number),
        ..all.clone()
    };
    assert_eq!(
        titles(s.list_events(&f).await.unwrap().0),
        ["Street flooding"]
    );
    let f = EventFilter {
        type_code: Some("flood"),
        state: Some(EVENT_CLOSED),
        from: Some(T0 + 1),
        to: Some(T0 + 2 * DAY),
        ..all.clone()
    };
    assert_eq!(s.list_events(&f).await.unwrap().1, 2);
    let f = EventFilter {
        limit: 2,
        offset: 3,
        ..Default::default()
    };
    let (rows, total) = s.list_events(&f).await.unwrap();
    assert_eq!((rows.len(), total), (1, 4));
    assert_eq!(rows[0].title, "Underpass flooded at Lingyin");

    let counts = |g| s.event_counts(&all, g);
    let pairs = |v: &[(&str, i64)]| {
        v.iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counts(EventGroup::Type).await.unwrap(),
        pairs(&[("fire", 1), ("flood", 3)])
    );
    assert_eq!(
        counts(EventGroup::Level).await.unwrap(),
        pairs(&[("1", 2), ("2", 1), ("3", 1)])
    );
    assert_eq!(
        counts(EventGroup::State).await.unwrap(),
        pairs(&[("closed", 3), ("new", 1)])
    );
    assert_eq!(
        counts(EventGroup::Day).await.unwrap(),
        pairs(&[("2026-11-26", 2), ("2026-11-27", 2)])
    );
    assert_eq!(
        counts(EventGroup::Region).await.unwrap(),
        pairs(&[
            ("/hz/binjiang", 1),
            ("/hz/xihu", 1),
            ("/hz/xihu/lingyin", 1),
            ("/hzx", 1)
        ])
    );
    let flood = EventFilter {
        type_code: Some("flood"),
        ..Default::default()
    };
    assert_eq!(
        s.event_counts(&flood, EventGroup::Day).await.unwrap(),
        pairs(&[("2026-11-26", 2), ("2026-11-27", 1)])
    );

    assert_eq!(
        s.time_to_close_ms(&all).await.unwrap(),
        [30_000, 60_000, 90_000]
    );
    let f = EventFilter {
        region_prefix: Some("/hz"),
        ..Default::default()
    };
    assert_eq!(s.time_to_close_ms(&f).await.unwrap(), [30_000, 60_000]);
}

async fn workflow_definitions_versions(s: &Store, _url: &str) {
    let d1 = json!({"steps": ["dispatch"]});
    let d2 = json!({"steps": ["dispatch", "review"]});
    assert_eq!(
        s.put_workflow_definition("flood-std", "flood", &d1, "alice")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.put_workflow_definition("flood-std", "flood", &d2, "bob")
            .await
            .unwrap(),
        2
    );
    s.put_workflow_definition("fire-std", "fire", &d1, "alice")
        .await
        .unwrap();
    s.put_workflow_definition("flood-night", "flood", &d1, "alice")
        .await
        .unwrap();

    let latest = s.latest_workflow_definitions().await.unwrap();
    assert_eq!(
        latest
            .iter()
            .map(|d| (d.id.as_str(), d.version))
            .collect::<Vec<_>>(),
        [("fire-std", 1), ("flood-night", 1), ("flood-std", 2)]
    );
    let v1 = s
        .workflow_definition("flood-std", Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (v1.definition, v1.created_by.as_str()),
        (d1.clone(), "alice")
    );
    let latest = s
        .workflow_definition("flood-std", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((latest.version, latest.definition), (2, d2.clone()));
    assert!(
        s.workflow_definition("flood-std", Some(3))
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.workflow_definition("nope", None).await.unwrap().is_none());

    let for_flood = |s: &Store| {
        let s = s.clone();
        async move {
            s.workflow_definitions_for("flood")
                .await
                .unwrap()
                .into_iter()
                .map(|d| (d.id, d.version))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        for_flood(s).await,
        [("flood-night".to_string(), 1), ("flood-std".to_string(), 2)]
    );
    s.set_workflow_enabled("flood-night", false).await.unwrap();
    assert_eq!(for_flood(s).await, [("flood-std".to_string(), 2)]);
    // A new version of a disabled workflow stays disabled.
    assert_eq!(
        s.put_workflow_definition("flood-night", "flood", &d2, "bob")
            .await
            .unwrap(),
        2
    );
    assert_eq!(for_flood(s).await, [("flood-std".to_string(), 2)]);
    s.set_workflow_enabled("flood-night", true).await.unwrap();
    assert_eq!(
        for_flood(s).await,
        [("flood-night".to_string(), 2), ("flood-std".to_string(), 2)]
    );
    expect_not_found(s.set_workflow_enabled("nope", true).await, "nope");
}

async fn workflow_instances_optimistic_concurrency(s: &Store, _url: &str) {
    let empty = json!({});
    let e1 = s
        .create_event(&event("flood", "One", T0, &empty))
        .await
        .unwrap();
    let e2 = s
        .create_event(&event("flood", "Two", T0, &empty))
        .await
        .unwrap();
    s.create_workflow_instance(
        e1.id,
        "flood-std",
        2,
        &json!({"at": "dispatch"}),
        Some(T0 + 100),
    )
    .await
    .unwrap();
    s.create_workflow_instance(e2.id, "flood-std", 2, &json!({"at": "dispatch"}), None)
        .await
        .unwrap();
    expect_conflict(
        s.create_workflow_instance(e1.id, "flood-std", 2, &empty, None)
            .await,
        "already",
    );
    expect_not_found(
        s.create_workflow_instance(999_999, "flood-std", 2, &empty, None)
            .await,
        "999999",
    );

    let inst = s.workflow_instance(e1.id).await.unwrap().unwrap();
    assert_eq!(
        (
            inst.state.as_str(),
            inst.revision,
            inst.definition_id.as_str(),
            inst.definition_version
        ),
        (WORKFLOW_RUNNING, 1, "flood-std", 2)
    );
    assert_eq!(inst.instance, json!({"at": "dispatch"}));
    assert!(s.workflow_instance(999_999).await.unwrap().is_none());

    // Two approvers read revision 1 and decide at once: exactly one wins.
    let decisions: Vec<_> = ["approve", "reject"]
        .into_iter()
        .map(|decision| {
            let s = s.clone();
            tokio::spawn(async move {
                s.update_workflow_instance(
                    e1.id,
                    1,
                    WORKFLOW_RUNNING,
                    &json!({ "decision": decision }),
                    Some(T0 + 200),
                )
                .await
            })
        })
        .collect();
    let mut won = Vec::new();
    for (d, h) in ["approve", "reject"].into_iter().zip(decisions) {
        match h.await.unwrap() {
            Ok(()) => won.push(d),
            Err(StorageError::Conflict(m)) => assert!(m.contains("revision 2"), "{m}"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(won.len(), 1, "one approver wins");
    let inst = s.workflow_instance(e1.id).await.unwrap().unwrap();
    assert_eq!(inst.revision, 2);
    assert_eq!(inst.instance, json!({ "decision": won[0] }));
    expect_not_found(
        s.update_workflow_instance(999_999, 1, WORKFLOW_RUNNING, &empty, None)
            .await,
        "999999",
    );
    assert!(matches!(
        s.update_workflow_instance(e1.id, 2, "paused", &empty, None)
            .await,
        Err(StorageError::Invalid(_))
    ));

    let due = s.due_workflow_instances(T0 + 200, 10).await.unwrap();
    assert_eq!(due.iter().map(|i| i.event_id).collect::<Vec<_>>(), [e1.id]);
    assert!(
        s.due_workflow_instances(T0 + 199, 10)
            .await
            .unwrap()
            .is_empty()
    );
    s.update_workflow_instance(e1.id, 2, WORKFLOW_COMPLETED, &empty, Some(T0))
        .await
        .unwrap();
    assert!(
        s.due_workflow_instances(T0 + 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "completed instances have no deadlines"
    );
}

fn task<'a>(id: &'a str, event_id: i64, at: i64) -> NewTask<'a> {
    NewTask {
        id,
        event_id,
        kind: "disposal",
        step_id: "dispatch",
        step_name: "Dispatch a crew",
        title: "Drain the underpass",
        assignee_kind: "role",
        assignee_role: Some("drainage"),
        assignee_org: None,
        assignee_region: None,
        assignee_user: None,
        due_at: Some(at + 3_600_000),
        at,
    }
}

async fn tasks_close_and_assignee_filter(s: &Store, _url: &str) {
    let empty = json!({});
    let e = s
        .create_event(&event("flood", "Tasks", T0, &empty))
        .await
        .unwrap();
    let mut specs: Vec<NewTask> = Vec::new();
    // t1: user alice by name.
    let mut t = task("t1", e.id, T0 + 1);
    t.assignee_kind = "user";
    t.assignee_role = None;
    t.assignee_user = Some("alice");
    t.kind = "approval";
    specs.push(t);
    // t2: role drainage, whole city, any org.
    specs.push(task("t2", e.id, T0 + 2));
    // t3: role drainage in /hz/xihu, org water.
    let mut t = task("t3", e.id, T0 + 3);
    t.assignee_org = Some("water");
    t.assignee_region = Some("/hz/xihu");
    specs.push(t);
    // t4: role drainage in /hz/xihu/lingyin, org ''.
    let mut t = task("t4", e.id, T0 + 4);
    t.assignee_org = Some("");
    t.assignee_region = Some("/hz/xihu/lingyin");
    specs.push(t);
    // t5: role drainage in /hz/xihux (not below /hz/xihu).
    let mut t = task("t5", e.id, T0 + 5);
    t.assignee_region = Some("/hz/xihux");
    specs.push(t);
    // t6: role drainage in /hz/xihu, org fire (another organisation).
    let mut t = task("t6", e.id, T0 + 6);
    t.assignee_org = Some("fire");
    t.assignee_region = Some("/hz/xihu");
    specs.push(t);
    // t7: role inspector in /hz/xihu.
    let mut t = task("t7", e.id, T0 + 7);
    t.assignee_role = Some("inspector");
    t.assignee_region = Some("/hz/xihu");
    specs.push(t);
    // t8: user bob.
    let mut t = task("t8", e.id, T0 + 8);
    t.assignee_kind = "user";
    t.assignee_role = None;
    t.assignee_user = Some("bob");
    specs.push(t);
    for t in &specs {
        s.create_task(t).await.unwrap();
    }
    expect_conflict(s.create_task(&specs[0]).await, "t1");
    expect_not_found(s.create_task(&task("tx", 999_999, T0)).await, "999999");
    let mut bad = task("ty", e.id, T0);
    bad.assignee_role = None;
    assert!(matches!(
        s.create_task(&bad).await,
        Err(StorageError::Invalid(m)) if m.contains("assignee_role")
    ));
    let mut bad = task("tz", e.id, T0);
    bad.kind = "review";
    assert!(matches!(
        s.create_task(&bad).await,
        Err(StorageError::Invalid(_))
    ));

    let t1 = s.get_task("t1").await.unwrap().unwrap();
    assert_eq!(
        (t1.state.as_str(), t1.overdue, t1.due_at, t1.kind.as_str()),
        (TASK_OPEN, false, Some(T0 + 1 + 3_600_000), "approval")
    );
    assert!(s.get_task("nope").await.unwrap().is_none());

    let roles = vec!["drainage".to_string()];
    let alice = TaskAssigneeFilter {
        username: "alice",
        roles: &roles,
        org: "water",
        region: "/hz/xihu",
        state: None,
        limit: 100,
        offset: 0,
    };
    let (got, total) = task_ids(s, alice.clone()).await;
    assert_eq!(got, ["t4", "t3", "t1"], "newest first");
    assert_eq!(total, 3);
    // The whole city sees every region, still only its org's (or no org's) role tasks.
    let (got, _) = task_ids(
        s,
        TaskAssigneeFilter {
            region: "/",
            ..alice.clone()
        },
    )
    .await;
    assert_eq!(got, ["t5", "t4", "t3", "t2", "t1"]);
    let (got, _) = task_ids(
        s,
        TaskAssigneeFilter {
            region: "/",
            org: "fire",
            ..alice.clone()
        },
    )
    .await;
    assert_eq!(got, ["t6", "t5", "t4", "t2", "t1"]);
    // No roles: only the user's own.
    let (got, _) = task_ids(
        s,
        TaskAssigneeFilter {
            roles: &[],
            ..alice.clone()
        },
    )
    .await;
    assert_eq!(got, ["t1"]);
    let (got, total) = task_ids(
        s,
        TaskAssigneeFilter {
            limit: 1,
            offset: 1,
            ..alice.clone()
        },
    )
    .await;
    assert_eq!((got, total), (vec!["t3".to_string()], 3));

    let closed = s
        .close_task(
            "t3",
            TASK_APPROVED,
            Some("alice"),
            Some("drained"),
            T0 + 100,
        )
        .await
        .unwrap();
    assert_eq!(closed.state, TASK_APPROVED);
    assert_eq!(
        (
            closed.closed_by.as_deref(),
            closed.comment.as_deref(),
            closed.closed_at
        ),
        (Some("alice"), Some("drained"), Some(T0 + 100))
    );
    expect_conflict(
        s.close_task("t3", TASK_REJECTED, Some("bob"), None, T0 + 200)
            .await,
        "approved",
    );
    expect_not_found(
        s.close_task("nope", TASK_REJECTED, None, None, T0).await,
        "nope",
    );
    assert!(matches!(
        s.close_task("t4", TASK_OPEN, None, None, T0).await,
        Err(StorageError::Invalid(_))
    ));
    let (got, total) = task_ids(
        s,
        TaskAssigneeFilter {
            state: Some(TASK_OPEN),
            ..alice.clone()
        },
    )
    .await;
    assert_eq!((got, total), (vec!["t4".to_string(), "t1".to_string()], 2));

    s.mark_task_overdue("t4").await.unwrap();
    assert!(s.get_task("t4").await.unwrap().unwrap().overdue);
    expect_not_found(s.mark_task_overdue("nope").await, "nope");

    let all = s.tasks_of_event(e.id).await.unwrap();
    assert_eq!(
        all.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"]
    );
}

/// The ids of the tasks a filter lists, and the total.
async fn task_ids(s: &Store, f: TaskAssigneeFilter<'_>) -> (Vec<String>, i64) {
    let (rows, total) = s.list_tasks_for(&f).await.unwrap();
    (rows.into_iter().map(|t| t.id).collect(), total)
}

fn message<'a>(username: &'a str, title: &'a str, at: i64) -> NewMessage<'a> {
    NewMessage {
        username,
        kind: MESSAGE_NOTIFICATION,
        title,
        body: "A task is waiting for you",
        level: Some(2),
        link: Some("task:E20261126-000001-t1"),
        sender: None,
        at,
    }
}

async fn message_center_ownership(s: &Store, _url: &str) {
    let a1 = s.insert_message(&message("alice", "a1", T0)).await.unwrap();
    let a2 = s
        .insert_message(&message("alice", "a2", T0 + 1))
        .await
        .unwrap();
    let mut m = message("alice", "a3", T0 + 2);
    m.kind = MESSAGE_MESSAGE;
    m.sender = Some("bob");
    m.level = None;
    m.link = None;
    let a3 = s.insert_message(&m).await.unwrap();
    let b1 = s.insert_message(&message("bob", "b1", T0)).await.unwrap();
    let mut bad = message("alice", "x", T0);
    bad.kind = "sms";
    assert!(matches!(
        s.insert_message(&bad).await,
        Err(StorageError::Invalid(_))
    ));

    let (rows, total, unread) = s.list_messages("alice", false, 10, 0).await.unwrap();
    assert_eq!(
        rows.iter().map(|m| m.id).collect::<Vec<_>>(),
        [a3, a2, a1],
        "newest first"
    );
    assert_eq!((total, unread), (3, 3));
    assert_eq!(rows[0].sender.as_deref(), Some("bob"));
    assert_eq!(rows[0].kind, MESSAGE_MESSAGE);
    assert_eq!(rows[1].link.as_deref(), Some("task:E20261126-000001-t1"));
    assert_eq!(rows[1].level, Some(2));

    // Bob's id in Alice's request is left alone.
    assert_eq!(
        s.mark_messages_read("alice", &[a1, b1], T0 + 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.mark_messages_read("alice", &[a1], T0 + 20).await.unwrap(),
        0,
        "already read"
    );
    assert_eq!(s.mark_messages_read("alice", &[], T0).await.unwrap(), 0);
    let (rows, _, bob_unread) = s.list_messages("bob", false, 10, 0).await.unwrap();
    assert_eq!((rows[0].read_at, bob_unread), (None, 1));

    let (rows, total, unread) = s.list_messages("alice", true, 10, 0).await.unwrap();
    assert_eq!(rows.iter().map(|m| m.id).collect::<Vec<_>>(), [a3, a2]);
    assert_eq!((total, unread), (2, 2));
    let (rows, total, _) = s.list_messages("alice", false, 1, 2).await.unwrap();
    assert_eq!((rows[0].id, rows[0].read_at, total), (a1, Some(T0 + 10), 3));

    assert_eq!(s.delete_messages("alice", &[a2, b1]).await.unwrap(), 1);
    assert_eq!(s.list_messages("bob", false, 10, 0).await.unwrap().1, 1);
    assert_eq!(s.mark_all_read("alice", T0 + 30).await.unwrap(), 1);
    let (_, total, unread) = s.list_messages("alice", false, 10, 0).await.unwrap();
    assert_eq!((total, unread), (2, 0));
    assert_eq!(s.list_messages("bob", false, 10, 0).await.unwrap().2, 1);
}

async fn channels_seal_their_secret(s: &Store, url: &str) {
    let config = json!({"host": "smtp.city.example", "port": 587, "from": "noc@city.example"});
    let c = s
        .put_channel(&NewChannel {
            id: "mail",
            kind: "email",
            config: &config,
            secret: Some("smtp-p4ssw0rd"),
            plugin_id: None,
            enabled: true,
        })
        .await
        .unwrap();
    assert_eq!(
        (c.kind.as_str(), c.has_secret, c.enabled, &c.config),
        ("email", true, true, &config)
    );
    assert_eq!(
        s.channel_secret("mail").await.unwrap().unwrap().expose(),
        "smtp-p4ssw0rd"
    );

    // The stored column holds no clear text.
    let raw = raw_channel_secret(url, "mail").await;
    assert!(!raw.contains("smtp-p4ssw0rd"), "{raw}");
    assert!(!raw.is_empty());

    // Replacing without a secret keeps the stored one.
    let c = s
        .put_channel(&NewChannel {
            id: "mail",
            kind: "email",
            config: &json!({"host": "smtp2.city.example"}),
            secret: None,
            plugin_id: Some("mailer"),
            enabled: false,
        })
        .await
        .unwrap();
    assert!(c.has_secret);
    assert!(!c.enabled);
    assert_eq!(c.plugin_id.as_deref(), Some("mailer"));
    assert_eq!(
        s.channel_secret("mail").await.unwrap().unwrap().expose(),
        "smtp-p4ssw0rd"
    );
    assert_eq!(raw_channel_secret(url, "mail").await, raw);

    s.put_channel(&NewChannel {
        id: "inbox",
        kind: "inapp",
        config: &json!({}),
        secret: None,
        plugin_id: None,
        enabled: true,
    })
    .await
    .unwrap();
    let inbox = s.get_channel("inbox").await.unwrap().unwrap();
    assert!(!inbox.has_secret);
    assert!(s.channel_secret("inbox").await.unwrap().is_none());
    assert!(s.channel_secret("nope").await.unwrap().is_none());
    assert!(matches!(
        s.put_channel(&NewChannel {
            id: "pager",
            kind: "pager",
            config: &json!({}),
            secret: None,
            plugin_id: None,
            enabled: true,
        })
        .await,
        Err(StorageError::Invalid(_))
    ));
    assert_eq!(
        s.list_channels()
            .await
            .unwrap()
            .iter()
            .map(|c| c.id.as_str())
            .collect::<Vec<_>>(),
        ["inbox", "mail"]
    );
    assert!(s.delete_channel("inbox").await.unwrap());
    assert!(!s.delete_channel("inbox").await.unwrap());
    assert!(s.get_channel("inbox").await.unwrap().is_none());
}

/// The channel's secret column as stored, read past the store.
async fn raw_channel_secret(url: &str, id: &str) -> String {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    let row = sqlx::query("SELECT secret_enc FROM notification_channels WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let raw: String = row.try_get("secret_enc").unwrap();
    pool.close().await;
    raw
}

async fn templates_and_preferences(s: &Store, _url: &str) {
    let t = s
        .put_template(
            "task-assigned",
            "New task {{title}}",
            "Please handle {{event}}",
        )
        .await
        .unwrap();
    assert_eq!(t.subject, "New task {{title}}");
    s.put_template("task-assigned", "Task: {{title}}", "Body")
        .await
        .unwrap();
    s.put_template("event-closed", "Closed", "Done")
        .await
        .unwrap();
    let got = s.get_template("task-assigned").await.unwrap().unwrap();
    assert_eq!(
        (got.subject.as_str(), got.body.as_str()),
        ("Task: {{title}}", "Body")
    );
    assert_eq!(
        s.list_templates()
            .await
            .unwrap()
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>(),
        ["event-closed", "task-assigned"]
    );
    assert!(s.delete_template("event-closed").await.unwrap());
    assert!(!s.delete_template("event-closed").await.unwrap());
    assert!(s.get_template("event-closed").await.unwrap().is_none());

    assert!(s.preferences("alice").await.unwrap().is_none());
    let p = json!({"channels": ["email", "inapp"], "quiet_hours": [22, 7]});
    s.put_preferences("alice", &p).await.unwrap();
    assert_eq!(s.preferences("alice").await.unwrap(), Some(p));
    s.put_preferences("alice", &json!({"channels": []}))
        .await
        .unwrap();
    assert_eq!(
        s.preferences("alice").await.unwrap(),
        Some(json!({"channels": []}))
    );
    assert!(s.preferences("bob").await.unwrap().is_none());
}

fn delivery<'a>(recipient: &'a str, reference: Option<&'a str>, at: i64) -> NewDelivery<'a> {
    NewDelivery {
        channel_id: "mail",
        recipient,
        subject: "Flood at Lingyin",
        body: "Event E20261126-000001 needs a crew",
        reference,
        at,
    }
}

async fn delivery_transitions(s: &Store, _url: &str) {
    let a = s
        .enqueue_delivery(&delivery("alice@city.example", Some("event:1"), T0))
        .await
        .unwrap();
    let b = s
        .enqueue_delivery(&delivery("bob@city.example", Some("event:1"), T0 + 1))
        .await
        .unwrap();
    let c = s
        .enqueue_delivery(&delivery("carol@city.example", None, T0 + 2))
        .await
        .unwrap();

    let due = s.due_deliveries(T0 + 1, 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), [a, b]);
    assert_eq!(
        (due[0].state.as_str(), due[0].attempts),
        (DELIVERY_PENDING, 0)
    );

    s.delivery_sent(a, Some("smtp-queue-17"), T0 + 10)
        .await
        .unwrap();
    expect_conflict(s.delivery_sent(a, None, T0 + 11).await, DELIVERY_SENT);
    s.delivery_retry(b, T0 + 1_000, "421 try later", T0 + 10)
        .await
        .unwrap();
    let due = s.due_deliveries(T0 + 100, 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), [c]);
    let due = s.due_deliveries(T0 + 1_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), [c, b]);
    let retried = &due[1];
    assert_eq!(
        (
            retried.state.as_str(),
            retried.attempts,
            retried.last_error.as_deref()
        ),
        (DELIVERY_FAILED, 1, Some("421 try later"))
    );
    s.delivery_retry(b, T0 + 2_000, "421 again", T0 + 1_000)
        .await
        .unwrap();
    s.delivery_dead(b, "550 mailbox unavailable", T0 + 2_000)
        .await
        .unwrap();
    expect_conflict(s.delivery_retry(b, T0, "x", T0).await, DELIVERY_DEAD);
    expect_not_found(s.delivery_dead(999_999, "x", T0).await, "999999");

    let (rows, total) = s
        .list_deliveries(&DeliveryFilter {
            reference: Some("event:1"),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(
        rows.iter().map(|d| d.id).collect::<Vec<_>>(),
        [b, a],
        "newest first"
    );
    assert_eq!(
        (
            rows[0].state.as_str(),
            rows[0].attempts,
            rows[0].last_error.as_deref(),
            rows[0].updated_at
        ),
        (
            DELIVERY_DEAD,
            3,
            Some("550 mailbox unavailable"),
            T0 + 2_000
        )
    );
    assert_eq!(
        (rows[1].state.as_str(), rows[1].message_id.as_deref()),
        (DELIVERY_SENT, Some("smtp-queue-17"))
    );
    let (rows, total) = s
        .list_deliveries(&DeliveryFilter {
            state: Some(DELIVERY_PENDING),
            channel_id: Some("mail"),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((rows.len(), total, rows[0].id), (1, 1, c));
    let (rows, total) = s
        .list_deliveries(&DeliveryFilter {
            limit: 1,
            offset: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((rows[0].id, total), (a, 3));
    assert!(matches!(
        s.list_deliveries(&DeliveryFilter {
            state: Some("queued"),
            ..Default::default()
        })
        .await,
        Err(StorageError::Invalid(_))
    ));
}
