//! The event center's writer: submitted events are created with group commit.
//!
//! Callers of [`crate::EventCenter::submit`] check their event and pick its workflow
//! concurrently, then hand it to a bounded queue. One task takes whatever has accumulated (up
//! to [`MAX_UNITS`]), classifies and writes each event in turn — merged into an open event,
//! or created with its number, workflow instance, tasks, in-app messages and timeline — all in
//! one transaction, and answers each caller only after the commit. A burst of events thus
//! costs one commit, one sync of the SQLite log, instead of about ten per event, and a reader
//! sees an event with its workflow, tasks and messages or not at all.
//!
//! Writing in one task also makes classification exact: an event sees every event created
//! before it, in its own batch as well, when it looks for an open event to merge into, and the
//! day's numbers are drawn in order without gaps.
//!
//! Failures: an event refused for what it is (its workflow cannot start) is answered with its
//! error and the batch goes on; nothing of it was written. A storage error rolls the batch
//! back, and its events are then written one per transaction, so that the one that fails
//! fails alone and the others are stored. Every caller gets its own result, and a rule action
//! whose event could not be stored goes to the outbox and is retried.

use lotus_storage::{
    EVENT_CLOSED, EVENT_ISOLATED, EVENT_NEW, EVENT_PROCESSING, EventRow, EventWrites, NewEvent,
    NewTimelineEntry, StorageError, Store,
};
use lotus_workflow::{
    AUTO_CLOSED, Classification, Effect, EventFacts, EventType, Instance, Level,
    WorkflowDefinition, classify,
};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::center::{
    CenterError, Recipients, Submission, Submitted, announce_event, apply_to_others, open_event,
    timeline_action,
};
use crate::platform::Announcer;

/// Events waiting for the writer. When full, submitters wait (back-pressure on the rule
/// engine's action workers and the API) rather than queueing without bound.
const QUEUE: usize = 4_096;

/// Events per transaction. Enough that a burst is written with few commits; few enough that
/// the shared writer connection is soon free for other writes.
pub(crate) const MAX_UNITS: usize = 256;

/// The workflow a dispatched event starts: its stored id and version, and its definition.
pub(crate) struct StartingWorkflow {
    pub id: String,
    pub version: i64,
    pub definition: WorkflowDefinition,
}

/// A submission checked against its type, ready to be classified and written.
pub(crate) struct Prepared {
    pub submission: Submission,
    pub ty: EventType,
    pub level: Level,
    /// How far back open events are merge candidates (0 without merging).
    pub merge_window_ms: i64,
    /// The workflow to start if the event is dispatched.
    pub workflow: Option<StartingWorkflow>,
}

struct Unit {
    prepared: Prepared,
    reply: oneshot::Sender<Result<Submitted, CenterError>>,
}

/// What writing one event did, for its caller and the plugins.
struct Written {
    submitted: Submitted,
    /// `event.created` / `event.closed` to announce after commit.
    announce: Vec<(&'static str, EventRow)>,
    at: i64,
}

/// The handle submitters use; the writer task is started on first use (and again should it
/// ever have stopped), so that a center can be made outside a runtime.
pub(crate) struct Writer {
    store: Store,
    platform: Option<Announcer>,
    queue: Mutex<Option<mpsc::Sender<Unit>>>,
}

impl Writer {
    pub(crate) fn new(store: Store, platform: Option<Announcer>) -> Writer {
        Writer {
            store,
            platform,
            queue: Mutex::new(None),
        }
    }

    /// Writes the event with the next batch; returns once it is committed.
    pub(crate) async fn submit(&self, prepared: Prepared) -> Result<Submitted, CenterError> {
        let (reply, answer) = oneshot::channel();
        self.queue()
            .send(Unit { prepared, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    fn queue(&self) -> mpsc::Sender<Unit> {
        let mut queue = self.queue.lock();
        match &*queue {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(run(self.store.clone(), self.platform.clone(), rx));
                *queue = Some(tx.clone());
                tx
            }
        }
    }
}

/// The writer stopped with the event in hand (it only does if it failed unexpectedly): the
/// event may not be stored, and the caller should try again.
fn stopped() -> CenterError {
    CenterError::Storage(StorageError::Io {
        context: "the event center's writer stopped before answering".into(),
        source: std::io::Error::from(std::io::ErrorKind::BrokenPipe),
    })
}

async fn run(store: Store, platform: Option<Announcer>, mut rx: mpsc::Receiver<Unit>) {
    let mut units = Vec::new();
    while let Some(first) = rx.recv().await {
        units.push(first);
        while units.len() < MAX_UNITS {
            match rx.try_recv() {
                Ok(unit) => units.push(unit),
                Err(_) => break,
            }
        }
        metrics::histogram!("lotus_event_batch_units").record(units.len() as f64);
        let prepared: Vec<&Prepared> = units.iter().map(|u| &u.prepared).collect();
        let results = write_batch(&store, &prepared).await;
        for (unit, result) in units.drain(..).zip(results) {
            let answer = result.map(|written| {
                for (kind, row) in &written.announce {
                    announce_event(platform.as_ref(), kind, row, written.at);
                }
                written.submitted
            });
            // A caller that gave up (a closed HTTP request) still has its event stored.
            let _ = unit.reply.send(answer);
        }
    }
}

/// Writes the events in one transaction; if that fails, each in its own, so that only the
/// events that cannot be written fail. One result per event, in order.
async fn write_batch(store: &Store, units: &[&Prepared]) -> Vec<Result<Written, CenterError>> {
    let first = match attempt(store, units).await {
        Ok(results) => return results,
        Err(e) => e,
    };
    if units.len() == 1 {
        return vec![Err(first)];
    }
    tracing::warn!(events = units.len(), error = %first, "event batch failed; writing its events one by one");
    let mut results = Vec::with_capacity(units.len());
    for unit in units {
        results.push(match attempt(store, std::slice::from_ref(unit)).await {
            Ok(mut one) => one.pop().unwrap_or_else(|| Err(stopped())),
            Err(e) => Err(e),
        });
    }
    results
}

/// One transaction for the events. `Err` when a write or the commit failed: then nothing is
/// stored. Events refused before anything of theirs was written get their error inside `Ok`.
async fn attempt(
    store: &Store,
    units: &[&Prepared],
) -> Result<Vec<Result<Written, CenterError>>, CenterError> {
    let mut recipients = Recipients::new(store);
    if units.iter().any(|u| u.workflow.is_some()) {
        recipients.load().await?;
    }
    let mut w = store.begin_event_writes().await?;
    let mut results = Vec::with_capacity(units.len());
    for unit in units {
        match write(&mut w, &mut recipients, unit).await {
            Err(CenterError::Storage(e)) => return Err(CenterError::Storage(e)),
            result => results.push(result),
        }
    }
    w.commit().await?;
    Ok(results)
}

/// Classifies one event and writes it with `w`. Errors other than `Storage` are raised
/// before anything of the event is written.
async fn write(
    w: &mut EventWrites,
    recipients: &mut Recipients<'_>,
    p: &Prepared,
) -> Result<Written, CenterError> {
    let (s, ty) = (&p.submission, &p.ty);
    let draft = &s.draft;
    let at = draft.at_ms;
    let open: Vec<_> = if ty.merge.is_some() {
        w.open_events_of_type(&ty.code, at - p.merge_window_ms)
            .await?
            .iter()
            .map(open_event)
            .collect()
    } else {
        Vec::new()
    };
    let classification = classify(ty, draft, &open);
    if let Classification::Merge { into } = &classification {
        let id: i64 = into.parse().unwrap_or_default();
        let detail = json!({"title": draft.title, "fields": draft.fields, "source": s.actor});
        let row = w.merge_into_event(id, at, &detail).await?;
        return Ok(Written {
            submitted: Submitted::Merged {
                event: row.id,
                number: row.number,
            },
            announce: Vec::new(),
            at,
        });
    }
    let (mut state, mut outcome) = match classification {
        Classification::AutoClose => (EVENT_CLOSED, Some(AUTO_CLOSED.to_string())),
        Classification::Isolate => (EVENT_ISOLATED, None),
        _ => (EVENT_NEW, None),
    };
    // The workflow starts before the event is written (it only needs the event's number), so
    // that the event's row is written once, in the state the workflow's first effects leave it.
    let workflow = match (&classification, &p.workflow) {
        (Classification::Dispatch, Some(workflow)) => {
            let facts = EventFacts {
                id: w.next_event_number(at).await?,
                type_code: ty.code.clone(),
                level: p.level,
                region: draft.region.clone(),
                fields: draft.fields.clone(),
            };
            let (instance, effects) = Instance::start(&workflow.definition, &facts, at)
                .map_err(|e| CenterError::Invalid(e.to_string()))?;
            Some((workflow, instance, effects))
        }
        _ => None,
    };
    let mut entries: Vec<(&'static str, Value)> = Vec::new();
    if let Some((workflow, _, effects)) = &workflow {
        entries.push((
            "workflow_started",
            json!({"workflow": workflow.id, "version": workflow.version}),
        ));
        for effect in effects {
            match effect {
                Effect::EventProcessing => state = EVENT_PROCESSING,
                Effect::EventClosed { outcome: o } => {
                    state = EVENT_CLOSED;
                    outcome = Some(o.clone());
                }
                _ => {}
            }
            entries.push((
                timeline_action(effect),
                serde_json::to_value(effect).unwrap_or(Value::Null),
            ));
        }
    }
    let more: Vec<NewTimelineEntry> = entries
        .iter()
        .map(|(action, detail)| NewTimelineEntry {
            at,
            actor: None,
            action,
            detail,
        })
        .collect();
    let (lat, lon) = draft
        .location
        .map(|g| (Some(g.lat), Some(g.lon)))
        .unwrap_or((None, None));
    let row = w
        .create_event(
            &NewEvent {
                type_code: &ty.code,
                title: &draft.title,
                level: p.level.number() as i64,
                state,
                outcome: outcome.as_deref(),
                region: &draft.region,
                org: &s.org,
                lat,
                lon,
                fields: &Value::Object(draft.fields.clone()),
                source: &draft.source,
                rule_id: s.rule_id.as_deref(),
                alarm_id: s.alarm_id,
                at,
            },
            &more,
        )
        .await?;
    let mut announce = vec![("event.created", row.clone())];
    let submitted = match classification {
        Classification::AutoClose => Submitted::AutoClosed {
            event: row.id,
            number: row.number.clone(),
        },
        Classification::Isolate => Submitted::Isolated {
            event: row.id,
            number: row.number.clone(),
        },
        _ => Submitted::Created {
            event: row.id,
            number: row.number.clone(),
            workflow: workflow.as_ref().map(|(wf, _, _)| wf.id.clone()),
        },
    };
    if let Some((workflow, instance, effects)) = &workflow {
        w.add_workflow_instance(
            row.id,
            &workflow.id,
            workflow.version,
            &serde_json::to_value(instance).unwrap_or(Value::Null),
            instance.next_deadline(),
        );
        for effect in effects {
            apply_to_others(w, recipients, &row, effect, None, at).await?;
        }
        if row.state == EVENT_CLOSED {
            announce.push(("event.closed", row.clone()));
        }
    }
    Ok(Written {
        submitted,
        announce,
        at,
    })
}

#[cfg(test)]
mod tests {
    use lotus_storage::{
        EventFilter, NewEvent, NewTask, Scope, SecretBox, Store, TaskAssigneeFilter,
    };
    use lotus_workflow::{EventDraft, GeoPoint};
    use serde_json::{Map, json};

    use super::*;
    use crate::EventCenter;

    /// 2026-11-26T08:00:00Z.
    const T0: i64 = 1_795_680_000_000;
    const DAY: i64 = 86_400_000;

    /// A store with an event type (merging reports within 10 minutes and 100 m when `merge`),
    /// its one-step workflow assigned to `dispatcher`, and a dispatcher.
    async fn store(merge: bool) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/lotus.db", dir.path().display());
        let store = Store::open(&url, SecretBox::random()).await.unwrap();
        let mut ty = json!({"code": "water.pressure_low", "name": "Low water pressure",
            "defaultLevel": 2, "fields": []});
        if merge {
            ty["merge"] = json!({"windowSecs": 600, "radiusMeters": 100.0});
        }
        store
            .put_event_type("water.pressure_low", &ty)
            .await
            .unwrap();
        let workflow = json!({"id": "dispatch", "name": "Dispatch", "version": 1,
            "appliesTo": {"eventType": "water.pressure_low"}, "start": "dispatch",
            "steps": [{"id": "dispatch", "name": "Send a crew", "assignee": {"role": "dispatcher"},
                       "deadlineSecs": 3600, "next": "end"}]});
        store
            .put_workflow_definition("dispatch", "water.pressure_low", &workflow, "test")
            .await
            .unwrap();
        store
            .create_user(
                "dana",
                "not-a-password-hash",
                &["dispatcher".to_string()],
                &Scope {
                    org: String::new(),
                    region: "/".into(),
                },
            )
            .await
            .unwrap();
        (dir, store)
    }

    fn submission(title: &str, at: i64, location: Option<GeoPoint>) -> Submission {
        Submission {
            draft: EventDraft {
                type_code: "water.pressure_low".into(),
                title: title.into(),
                level: None,
                location,
                region: "/hz".into(),
                fields: Map::new(),
                source: json!({"kind": "operator", "username": "op"}),
                at_ms: at,
            },
            org: String::new(),
            rule_id: None,
            alarm_id: None,
            actor: "op".into(),
        }
    }

    async fn batch(
        center: &EventCenter,
        subs: Vec<Submission>,
    ) -> Vec<Result<Written, CenterError>> {
        let mut prepared = Vec::new();
        for s in subs {
            prepared.push(center.prepare(s).await.unwrap());
        }
        let units: Vec<&Prepared> = prepared.iter().collect();
        write_batch(center.store(), &units).await
    }

    fn created(r: &Result<Written, CenterError>) -> (i64, String) {
        match r {
            Ok(Written {
                submitted:
                    Submitted::Created {
                        event,
                        number,
                        workflow,
                    },
                ..
            }) => {
                assert_eq!(workflow.as_deref(), Some("dispatch"));
                (*event, number.clone())
            }
            other => panic!(
                "expected a created event, got {:?}",
                other.as_ref().map(|w| &w.submitted)
            ),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_submissions_are_numbered_in_order_with_all_their_writes() {
        let (_dir, store) = store(false).await;
        let (center, mut platform) = EventCenter::announcing(store.clone());
        let n = 300;
        let submits: Vec<_> = (0..n)
            .map(|i| {
                let center = center.clone();
                tokio::spawn(async move {
                    center
                        .submit(submission(&format!("Low pressure {i}"), T0 + i, None))
                        .await
                })
            })
            .collect();
        let mut numbers = Vec::new();
        for s in submits {
            match s.await.unwrap().unwrap() {
                Submitted::Created {
                    number, workflow, ..
                } => {
                    assert_eq!(workflow.as_deref(), Some("dispatch"));
                    numbers.push(number);
                }
                other => panic!("expected a created event, got {other:?}"),
            }
        }
        numbers.sort();
        let expected: Vec<String> = (1..=n).map(|i| format!("E20261126-{i:06}")).collect();
        assert_eq!(numbers, expected, "distinct and without gaps");

        let (events, total) = store
            .list_events(&EventFilter {
                limit: 1000,
                ..EventFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(total, n);
        for e in &events {
            assert_eq!(e.state, "processing", "{}", e.number);
            let tasks = store.tasks_of_event(e.id).await.unwrap();
            assert_eq!(tasks.len(), 1, "{}", e.number);
            assert_eq!(tasks[0].id, format!("{}-t1", e.number));
            let instance = store.workflow_instance(e.id).await.unwrap().unwrap();
            assert_eq!(instance.state, "running");
            assert_eq!(instance.next_deadline, Some(e.created_at + 3_600_000));
            let actions: Vec<String> = store
                .event_timeline(e.id)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.action)
                .collect();
            assert_eq!(
                actions,
                ["created", "workflow_started", "processing", "task_created"],
                "{}",
                e.number
            );
        }
        let (messages, total, _) = store.list_messages("dana", false, 1000, 0).await.unwrap();
        assert_eq!(total, n, "one message per task");
        assert!(messages.iter().all(|m| {
            m.link
                .as_deref()
                .is_some_and(|l| l.starts_with("task:E20261126-"))
        }));
        let (_, tasks) = store
            .list_tasks_for(&TaskAssigneeFilter {
                username: "dana",
                roles: &["dispatcher".to_string()],
                org: "",
                region: "/",
                state: None,
                limit: 1,
                offset: 0,
            })
            .await
            .unwrap();
        assert_eq!(tasks, n);
        let mut announced = 0;
        while let Ok(event) = platform.try_recv() {
            assert_eq!(event.kind, "event.created");
            announced += 1;
        }
        assert_eq!(announced, n, "every created event announced once");
    }

    #[tokio::test]
    async fn reports_merge_within_a_batch_and_across_batches() {
        let (_dir, store) = store(true).await;
        let center = EventCenter::new(store.clone());
        let here = Some(GeoPoint {
            lat: 30.25,
            lon: 120.15,
        });
        let far = Some(GeoPoint {
            lat: 30.35,
            lon: 120.15,
        });
        let first = batch(
            &center,
            vec![
                submission("Burst", T0, here),
                submission("Burst again", T0 + 1_000, here),
                submission("Elsewhere", T0 + 2_000, far),
            ],
        )
        .await;
        let (burst, number) = created(&first[0]);
        assert_eq!(number, "E20261126-000001");
        match &first[1] {
            Ok(Written {
                submitted: Submitted::Merged { event, .. },
                ..
            }) => assert_eq!(*event, burst),
            other => panic!(
                "expected a merge, got {:?}",
                other.as_ref().map(|w| &w.submitted)
            ),
        }
        let (_, elsewhere) = created(&first[2]);
        assert_eq!(
            elsewhere, "E20261126-000002",
            "a merged report takes no number"
        );

        let second = batch(
            &center,
            vec![submission("Still bursting", T0 + 300_000, here)],
        )
        .await;
        match &second[0] {
            Ok(Written {
                submitted: Submitted::Merged { event, .. },
                ..
            }) => assert_eq!(*event, burst),
            other => panic!(
                "expected a merge, got {:?}",
                other.as_ref().map(|w| &w.submitted)
            ),
        }
        let event = store.get_event(burst).await.unwrap().unwrap();
        assert_eq!(event.merged_count, 2);
        assert_eq!(event.last_at, T0 + 300_000);
        let timeline = store.event_timeline(burst).await.unwrap();
        let actions: Vec<(i64, &str)> = timeline
            .iter()
            .map(|t| (t.seq, t.action.as_str()))
            .collect();
        assert_eq!(
            actions,
            [
                (1, "created"),
                (2, "workflow_started"),
                (3, "processing"),
                (4, "task_created"),
                (5, "merged"),
                (6, "merged")
            ]
        );
        assert_eq!(store.tasks_of_event(burst).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_event_that_cannot_be_written_fails_alone() {
        let (_dir, store) = store(false).await;
        let center = EventCenter::new(store.clone());
        // The first event of the next day would open task `E20261127-000001-t1`: take that id
        // first, so its task cannot be inserted.
        let empty = json!({});
        let other = store
            .create_event(&NewEvent {
                type_code: "water.pressure_low",
                title: "Older",
                level: 2,
                state: "new",
                outcome: None,
                region: "/hz",
                org: "",
                lat: None,
                lon: None,
                fields: &empty,
                source: &empty,
                rule_id: None,
                alarm_id: None,
                at: T0 - 2 * DAY,
            })
            .await
            .unwrap();
        store
            .create_task(&NewTask {
                id: "E20261127-000001-t1",
                event_id: other.id,
                kind: "disposal",
                step_id: "s",
                step_name: "s",
                title: "in the way",
                assignee_kind: "user",
                assignee_role: None,
                assignee_org: None,
                assignee_region: None,
                assignee_user: Some("dana"),
                due_at: None,
                at: T0,
            })
            .await
            .unwrap();
        let results = batch(
            &center,
            vec![
                submission("Today", T0, None),
                submission("Tomorrow", T0 + DAY, None),
                submission("Today again", T0 + 1, None),
            ],
        )
        .await;
        assert_eq!(created(&results[0]).1, "E20261126-000001");
        match &results[1] {
            Err(CenterError::Storage(StorageError::Conflict(m))) => {
                assert!(m.contains("E20261127-000001-t1"), "{m}")
            }
            other => panic!(
                "expected a conflict, got {:?}",
                other.as_ref().map(|w| &w.submitted)
            ),
        }
        assert_eq!(created(&results[2]).1, "E20261126-000002");

        let tomorrow = store
            .list_events(&EventFilter {
                from: Some(T0 + DAY - 1),
                limit: 10,
                ..EventFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(tomorrow.1, 0, "nothing of the failed event is stored");
        for r in [&results[0], &results[2]] {
            let (id, _) = created(r);
            assert_eq!(store.tasks_of_event(id).await.unwrap().len(), 1);
        }
        let (_, messages, _) = store.list_messages("dana", false, 10, 0).await.unwrap();
        assert_eq!(messages, 2, "messages of the stored events only");

        // The failed event is retried (as the rule outbox does) once its obstacle is gone: a
        // new day's number is still the first.
        assert_eq!(
            store
                .begin_event_writes()
                .await
                .unwrap()
                .next_event_number(T0 + DAY)
                .await
                .unwrap(),
            "E20261127-000001",
            "the failed event left no gap"
        );
    }

    /// The paths that change a stored event (deadlines, decisions) write in one transaction
    /// too: escalation opens the new task, marks the old one overdue and notifies; the
    /// decision closes both tasks and the event.
    #[tokio::test]
    async fn an_overdue_step_is_escalated_and_the_decision_closes_the_event() {
        let (_dir, store) = store(false).await;
        let workflow = json!({"id": "escalating", "name": "Escalating", "version": 1,
            "appliesTo": {"eventType": "water.pressure_low"}, "start": "dispatch",
            "steps": [{"id": "dispatch", "name": "Send a crew",
                       "assignee": {"role": "dispatcher", "region": "event"}, "deadlineSecs": 1,
                       "escalation": {"to": {"user": "chief"}, "notify": true}, "next": "end"}]});
        store.set_workflow_enabled("dispatch", false).await.unwrap();
        store
            .put_workflow_definition("escalating", "water.pressure_low", &workflow, "test")
            .await
            .unwrap();
        let (center, mut platform) = EventCenter::announcing(store.clone());
        let Submitted::Created {
            event, workflow, ..
        } = center.submit(submission("Late", T0, None)).await.unwrap()
        else {
            panic!("expected a created event");
        };
        assert_eq!(workflow.as_deref(), Some("escalating"));
        assert!(center.tick(T0 + 500).await.unwrap() == 0, "not due yet");
        assert!(center.tick(T0 + 2_000).await.unwrap() > 0);
        let tasks = store.tasks_of_event(event).await.unwrap();
        assert_eq!(tasks.len(), 2, "{tasks:?}");
        assert!(tasks[0].overdue, "the late task is marked overdue");
        assert_eq!(tasks[1].assignee_user.as_deref(), Some("chief"));
        let (_, chief_messages, _) = store.list_messages("chief", false, 10, 0).await.unwrap();
        assert!(chief_messages >= 1, "the chief is told");
        let actions: Vec<String> = store
            .event_timeline(event)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.action)
            .collect();
        assert!(actions.contains(&"escalated".to_string()), "{actions:?}");

        center
            .act(
                &tasks[1].id,
                "chief",
                lotus_workflow::Action::Approve {
                    comment: Some("sent the night patrol".into()),
                },
                T0 + 3_000,
            )
            .await
            .unwrap();
        let closed = store.get_event(event).await.unwrap().unwrap();
        assert_eq!(closed.state, "closed");
        assert_eq!(closed.closed_at, Some(T0 + 3_000));
        let tasks = store.tasks_of_event(event).await.unwrap();
        assert!(tasks.iter().all(|t| t.state != "open"), "{tasks:?}");
        let kinds: Vec<String> = std::iter::from_fn(|| platform.try_recv().ok())
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["event.created", "event.closed"]);
    }
}
