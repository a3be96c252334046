use std::sync::Arc;

use serde_json::{Value, json};

use super::*;

/// A street light as a vendor would export it from Alibaba's console (simple form: specs as
/// strings, no generated elements).
fn street_light() -> Value {
    json!({
        "schema": TSL_SCHEMA_URL,
        "profile": {"productKey": "a1StreetLgt"},
        "properties": [
            {
                "identifier": "Power", "name": "Power switch", "accessMode": "rw", "required": true,
                "dataType": {"type": "bool", "specs": {"0": "off", "1": "on"}}
            },
            {
                "identifier": "Brightness", "name": "Brightness", "accessMode": "rw", "required": false,
                "desc": "Dimming level",
                "dataType": {"type": "int", "specs": {"min": "0", "max": "100", "step": "1", "unit": "%", "unitName": "percent"}}
            },
            {
                "identifier": "LightCurrent", "name": "Lamp current", "accessMode": "r", "required": false,
                "dataType": {"type": "float", "specs": {"min": "0", "max": "20", "step": "0.01", "unit": "A", "unitName": "ampere"}}
            },
            {
                "identifier": "Location", "name": "Location", "accessMode": "r", "required": false,
                "dataType": {"type": "struct", "specs": [
                    {"identifier": "longitude", "name": "Longitude",
                     "dataType": {"type": "double", "specs": {"min": "-180", "max": "180", "step": "0.000001", "unit": "°"}}},
                    {"identifier": "latitude", "name": "Latitude",
                     "dataType": {"type": "double", "specs": {"min": "-90", "max": "90", "step": "0.000001", "unit": "°"}}}
                ]}
            },
            {
                "identifier": "WorkMode", "name": "Work mode", "accessMode": "rw", "required": false,
                "dataType": {"type": "enum", "specs": {"0": "auto", "1": "manual", "2": "maintenance"}}
            },
            {
                "identifier": "Note", "name": "Note", "accessMode": "rw", "required": false,
                "dataType": {"type": "text", "specs": {"length": "64"}}
            },
            {
                "identifier": "LastMaintained", "name": "Last maintained", "accessMode": "r", "required": false,
                "dataType": {"type": "date", "specs": {}}
            },
            {
                "identifier": "Readings", "name": "Recent readings", "accessMode": "r", "required": false,
                "dataType": {"type": "array", "specs": {"size": "5", "item": {"type": "double"}}}
            }
        ],
        "events": [
            {
                "identifier": "FaultReport", "name": "Fault report", "type": "alert", "required": false,
                "desc": "The lamp driver reported a fault",
                "outputData": [
                    {"identifier": "ErrorCode", "name": "Error code",
                     "dataType": {"type": "int", "specs": {"min": "0", "max": "255", "step": "1"}}}
                ]
            }
        ],
        "services": [
            {
                "identifier": "SetSchedule", "name": "Set schedule", "callType": "async", "required": false,
                "inputData": [
                    {"identifier": "Schedule", "name": "Schedule", "dataType": {"type": "struct", "specs": [
                        {"identifier": "onMinute", "name": "On at (minute of day)",
                         "dataType": {"type": "int", "specs": {"min": "0", "max": "1439", "step": "1"}}},
                        {"identifier": "offMinute", "name": "Off at (minute of day)",
                         "dataType": {"type": "int", "specs": {"min": "0", "max": "1439", "step": "1"}}},
                        {"identifier": "level", "name": "Level",
                         "dataType": {"type": "int", "specs": {"min": "0", "max": "100", "step": "1", "unit": "%"}}}
                    ]}}
                ],
                "outputData": []
            },
            {
                "identifier": "Reboot", "name": "Reboot", "callType": "sync", "required": false,
                "inputData": [
                    {"identifier": "DelaySeconds", "name": "Delay",
                     "dataType": {"type": "int", "specs": {"min": "0", "max": "60", "step": "1", "unit": "s"}}}
                ],
                "outputData": [
                    {"identifier": "Accepted", "name": "Accepted", "dataType": {"type": "bool", "specs": {"0": "no", "1": "yes"}}}
                ]
            }
        ]
    })
}

fn model() -> ThingModel {
    ThingModel::parse(&street_light()).expect("the street light parses")
}

fn compiled() -> CompiledThingModel {
    model().compile()
}

/// Parses `doc` after `edit` and returns the error, failing the test if it parsed.
fn parse_error(edit: impl FnOnce(&mut Value)) -> ThingModelError {
    let mut doc = street_light();
    edit(&mut doc);
    match ThingModel::parse(&doc) {
        Ok(_) => panic!("expected the edited model to be refused"),
        Err(e) => e,
    }
}

/// The field a failing validation names, failing the test if it passed.
#[track_caller]
fn invalid(result: Result<(), ValidationError>) -> ValidationError {
    match result {
        Ok(()) => panic!("expected a validation error"),
        Err(e) => e,
    }
}

// --- parsing ---------------------------------------------------------------------------------

#[test]
fn parses_every_data_type_with_string_specs() {
    let m = model();
    assert_eq!(m.properties().len(), 8);
    assert_eq!(m.events().len(), 1);
    assert_eq!(m.services().len(), 2);

    let power = m.property("Power").unwrap();
    assert_eq!(power.access_mode, AccessMode::ReadWrite);
    assert!(power.required);
    assert_eq!(
        power.data_type,
        DataType::Bool {
            false_label: "off".into(),
            true_label: "on".into()
        }
    );

    let brightness = m.property("Brightness").unwrap();
    assert_eq!(brightness.description.as_deref(), Some("Dimming level"));
    assert_eq!(
        brightness.data_type,
        DataType::Int {
            min: Some(0),
            max: Some(100),
            step: Some(1),
            unit: Some("%".into()),
            unit_name: Some("percent".into()),
        }
    );

    let current = m.property("LightCurrent").unwrap();
    assert_eq!(current.access_mode, AccessMode::ReadOnly);
    assert!(matches!(
        current.data_type,
        DataType::Float {
            min: Some(0.0),
            max: Some(20.0),
            step: Some(0.01),
            ..
        }
    ));

    let DataType::Struct(members) = &m.property("Location").unwrap().data_type else {
        panic!("Location is a struct");
    };
    assert_eq!(members[1].identifier, "latitude");
    assert!(matches!(
        members[1].data_type,
        DataType::Double {
            min: Some(-90.0),
            max: Some(90.0),
            ..
        }
    ));

    let DataType::Enum { values } = &m.property("WorkMode").unwrap().data_type else {
        panic!("WorkMode is an enum");
    };
    assert_eq!(values.get(&2).map(String::as_str), Some("maintenance"));

    assert_eq!(
        m.property("Note").unwrap().data_type,
        DataType::Text { length: 64 }
    );
    assert_eq!(
        m.property("LastMaintained").unwrap().data_type,
        DataType::Date
    );
    assert!(matches!(
        &m.property("Readings").unwrap().data_type,
        DataType::Array { size: 5, item } if matches!(**item, DataType::Double { min: None, max: None, .. })
    ));

    let fault = m.event("FaultReport").unwrap();
    assert_eq!(fault.event_type, EventType::Alert);
    assert_eq!(fault.event_type.as_str(), "alert");
    assert_eq!(fault.output_data[0].identifier, "ErrorCode");

    assert_eq!(m.service("SetSchedule").unwrap().call_type, CallType::Async);
    assert_eq!(m.service("Reboot").unwrap().call_type, CallType::Sync);
    assert!(m.service("set").is_none() && m.event("post").is_none());
}

#[test]
fn accepts_numbers_where_alibaba_writes_strings_and_ignores_unknown_keys() {
    let mut doc = street_light();
    doc["properties"][1]["dataType"]["specs"] =
        json!({"min": 0, "max": 100, "step": 1, "unit": "%", "unitName": "percent"});
    doc["properties"][1]["extendConfig"] = json!({"vendor": "x"});
    doc["properties"][5]["dataType"]["specs"]["length"] = json!(64);
    doc["properties"][7]["dataType"]["specs"]["size"] = json!(5);
    doc["link"] = json!("/sys/a1StreetLgt/${deviceName}/thing/");
    assert_eq!(ThingModel::parse(&doc).unwrap(), model());
}

#[test]
fn every_list_is_optional_and_text_length_defaults_to_the_maximum() {
    let m = ThingModel::parse(&json!({})).unwrap();
    assert!(m.properties().is_empty() && m.events().is_empty() && m.services().is_empty());

    let m = ThingModel::parse(&json!({"properties": [
        {"identifier": "Label", "name": "Label", "accessMode": "rw", "dataType": {"type": "text"}}
    ]}))
    .unwrap();
    assert_eq!(
        m.property("Label").unwrap().data_type,
        DataType::Text {
            length: TEXT_MAX_LENGTH
        }
    );
    assert!(!m.property("Label").unwrap().required);
}

#[test]
fn full_export_contains_the_generated_elements() {
    let full = model().to_full_tsl("a1StreetLgt");
    assert_eq!(full["schema"], TSL_SCHEMA_URL);
    assert_eq!(
        full["profile"],
        json!({"version": "1.0", "productKey": "a1StreetLgt"})
    );
    assert_eq!(full["properties"].as_array().unwrap().len(), 8);
    // Alibaba writes numeric specs as strings; the SDKs expect that.
    assert_eq!(full["properties"][1]["dataType"]["specs"]["max"], "100");
    assert_eq!(full["properties"][2]["dataType"]["specs"]["step"], "0.01");

    let events = full["events"].as_array().unwrap();
    let post = events.iter().find(|e| e["identifier"] == "post").unwrap();
    assert_eq!(post["type"], "info");
    assert_eq!(post["method"], "thing.event.property.post");
    let posted: Vec<&str> = post["outputData"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(
        posted,
        [
            "Power",
            "Brightness",
            "LightCurrent",
            "Location",
            "WorkMode",
            "Note",
            "LastMaintained",
            "Readings"
        ]
    );
    let fault = events
        .iter()
        .find(|e| e["identifier"] == "FaultReport")
        .unwrap();
    assert_eq!(fault["method"], "thing.event.FaultReport.post");
    assert_eq!(fault["type"], "alert");

    let services = full["services"].as_array().unwrap();
    let set = services.iter().find(|s| s["identifier"] == "set").unwrap();
    assert_eq!(set["callType"], "async");
    assert_eq!(set["method"], "thing.service.property.set");
    assert_eq!(set["outputData"], json!([]));
    let settable: Vec<&str> = set["inputData"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["identifier"].as_str().unwrap())
        .collect();
    assert_eq!(settable, ["Power", "Brightness", "WorkMode", "Note"]);

    let get = services.iter().find(|s| s["identifier"] == "get").unwrap();
    assert_eq!(get["callType"], "async");
    assert_eq!(get["method"], "thing.service.property.get");
    assert_eq!(
        get["inputData"],
        json!([
            "Power",
            "Brightness",
            "LightCurrent",
            "Location",
            "WorkMode",
            "Note",
            "LastMaintained",
            "Readings"
        ])
    );
    assert_eq!(get["outputData"], post["outputData"]);
    assert_eq!(
        get["outputData"][3]["dataType"]["specs"][1]["identifier"],
        "latitude"
    );

    let reboot = services
        .iter()
        .find(|s| s["identifier"] == "Reboot")
        .unwrap();
    assert_eq!(reboot["method"], "thing.service.Reboot");
    assert_eq!(reboot["callType"], "sync");
    assert_eq!(reboot["inputData"][0]["dataType"]["specs"]["unit"], "s");
}

#[test]
fn the_full_export_parses_back_to_the_same_model_without_duplicates() {
    let m = model();
    let full = m.to_full_tsl("a1StreetLgt");
    let again = ThingModel::parse(&full).expect("the export parses");
    assert_eq!(again, m);
    assert_eq!(again.events().len(), 1);
    assert_eq!(again.services().len(), 2);
    // And exporting again is stable.
    assert_eq!(again.to_full_tsl("a1StreetLgt"), full);
}

#[test]
fn malformed_models_name_the_bad_element() {
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|d| {
                drop(
                    d["properties"][2]
                        .as_object_mut()
                        .unwrap()
                        .remove("identifier"),
                )
            }),
            "properties[2].identifier",
        ),
        (
            Box::new(|d| d["properties"][1]["dataType"]["specs"]["min"] = json!("500")),
            "properties[1].dataType.specs.min",
        ),
        (
            Box::new(|d| d["properties"][1]["dataType"]["type"] = json!("integer")),
            "properties[1].dataType.type",
        ),
        (
            Box::new(|d| d["properties"][3]["identifier"] = json!("Power")),
            "properties[3].identifier",
        ),
        (
            Box::new(|d| d["properties"][0]["identifier"] = json!("time")),
            "properties[0].identifier",
        ),
        (
            Box::new(|d| d["events"][0]["identifier"] = json!("post")),
            "events[0].identifier",
        ),
        (
            Box::new(|d| d["services"][1]["identifier"] = json!("set")),
            "services[1].identifier",
        ),
        (
            Box::new(|d| {
                d["properties"][4]["dataType"]["specs"] = json!({"0": "auto", "one": "manual"})
            }),
            "properties[4].dataType.specs.one",
        ),
        (
            Box::new(|d| d["properties"][7]["dataType"]["specs"]["size"] = json!("0")),
            "properties[7].dataType.specs.size",
        ),
        (
            Box::new(|d| d["properties"][7]["dataType"]["specs"]["size"] = json!("513")),
            "properties[7].dataType.specs.size",
        ),
        (
            Box::new(
                |d| d["properties"][3]["dataType"]["specs"][1]["dataType"] = json!({"type": "struct", "specs": [{"identifier": "x", "name": "x", "dataType": {"type": "int"}}]}),
            ),
            "properties[3].dataType.specs[1].dataType.type",
        ),
        (
            Box::new(|d| {
                d["properties"][7]["dataType"]["specs"]["item"] =
                    json!({"type": "array", "specs": {"size": "2", "item": {"type": "int"}}})
            }),
            "properties[7].dataType.specs.item.type",
        ),
        (
            Box::new(|d| d["properties"][7]["dataType"]["specs"]["item"] = json!({"type": "bool"})),
            "properties[7].dataType.specs.item.type",
        ),
        (
            Box::new(|d| d["events"][0]["outputData"][0]["identifier"] = json!("9lives")),
            "events[0].outputData[0].identifier",
        ),
        (
            Box::new(|d| {
                d["events"][0]["outputData"].as_array_mut().unwrap().push(json!({"identifier": "ErrorCode", "name": "again", "dataType": {"type": "int"}}))
            }),
            "events[0].outputData[1].identifier",
        ),
        (
            Box::new(|d| d["events"][0]["type"] = json!("warning")),
            "events[0].type",
        ),
        (
            Box::new(|d| d["services"][1]["callType"] = json!("later")),
            "services[1].callType",
        ),
        (
            Box::new(|d| {
                d["services"][0]["inputData"][0]["dataType"]["specs"][2]["dataType"]["specs"]["step"] =
                    json!("0")
            }),
            "services[0].inputData[0].dataType.specs[2].dataType.specs.step",
        ),
        (
            Box::new(|d| d["properties"][1]["dataType"]["specs"]["step"] = json!("101")),
            "properties[1].dataType.specs.step",
        ),
        (
            Box::new(|d| d["properties"][1]["dataType"]["specs"]["max"] = json!("99.5")),
            "properties[1].dataType.specs.max",
        ),
        (
            Box::new(|d| d["properties"][1]["dataType"]["specs"]["max"] = json!("3000000000")),
            "properties[1].dataType.specs.max",
        ),
        (
            Box::new(|d| d["properties"][2]["dataType"]["specs"]["min"] = json!("zero")),
            "properties[2].dataType.specs.min",
        ),
        (
            Box::new(|d| d["properties"][5]["dataType"]["specs"]["length"] = json!("10241")),
            "properties[5].dataType.specs.length",
        ),
        (
            Box::new(|d| d["properties"][0]["accessMode"] = json!("w")),
            "properties[0].accessMode",
        ),
        (
            Box::new(|d| {
                drop(
                    d["properties"][0]["dataType"]["specs"]
                        .as_object_mut()
                        .unwrap()
                        .remove("1"),
                )
            }),
            "properties[0].dataType.specs.1",
        ),
        (
            Box::new(|d| d["properties"][0]["identifier"] = json!("Power-1")),
            "properties[0].identifier",
        ),
        (
            Box::new(|d| d["properties"][0]["identifier"] = json!("P".repeat(51))),
            "properties[0].identifier",
        ),
        (
            Box::new(|d| d["properties"][6] = json!("LastMaintained")),
            "properties[6]",
        ),
        (Box::new(|d| d["properties"] = json!({})), "properties"),
        (
            Box::new(|d| {
                drop(
                    d["properties"][1]
                        .as_object_mut()
                        .unwrap()
                        .remove("dataType"),
                )
            }),
            "properties[1].dataType",
        ),
        (
            Box::new(|d| d["properties"][3]["dataType"]["specs"] = json!([])),
            "properties[3].dataType.specs",
        ),
    ];
    for (edit, path) in cases {
        let e = parse_error(edit);
        assert_eq!(e.path, path, "{e}");
        assert!(e.to_string().starts_with(path), "{e}");
        assert!(!e.message.is_empty());
    }
}

#[test]
fn error_messages_explain_the_problem() {
    let e = parse_error(|d| d["properties"][1]["dataType"]["specs"]["min"] = json!("500"));
    assert_eq!(e.message, "min (500) must be ≤ max (100)");
    let e = parse_error(|d| d["properties"][3]["identifier"] = json!("Power"));
    assert!(
        e.message.contains("duplicate identifier \"Power\"") && e.message.contains("properties[0]"),
        "{e}"
    );
    let e = parse_error(|d| d["properties"][0]["identifier"] = json!("value"));
    assert!(e.message.contains("reserved"), "{e}");
    let e = parse_error(|d| d["properties"][1]["dataType"]["type"] = json!("integer"));
    assert!(e.message.contains("unknown data type \"integer\""), "{e}");
    let e = parse_error(|d| {
        d["properties"][3]["dataType"]["specs"][0]["dataType"]["type"] = json!("struct")
    });
    assert_eq!(e.message, "a struct member cannot be a struct");
    assert_eq!(ThingModel::parse(&json!([])).unwrap_err().path, "document");
}

#[test]
fn a_user_element_named_like_a_generated_one_is_reserved_not_skipped() {
    // Only the exact generated shape (identifier and method) is skipped.
    let e = parse_error(|d| d["services"][0]["identifier"] = json!("get"));
    assert_eq!(e.path, "services[0].identifier");
    let e = parse_error(|d| {
        d["events"][0]["identifier"] = json!("post");
        d["events"][0]["method"] = json!("thing.event.post.post");
    });
    assert_eq!(e.path, "events[0].identifier");
}

#[test]
fn identifiers_may_repeat_across_lists_and_struct_members_may_use_reserved_words() {
    let mut doc = street_light();
    doc["events"][0]["identifier"] = json!("Power");
    doc["services"][1]["identifier"] = json!("Power");
    doc["events"][0]["outputData"][0]["identifier"] = json!("time");
    let m = ThingModel::parse(&doc).unwrap();
    assert!(m.event("Power").is_some() && m.service("Power").is_some());
}

// --- uplink validation -----------------------------------------------------------------------

#[test]
fn compiled_models_are_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CompiledThingModel>();
    let shared = Arc::new(compiled());
    let other = Arc::clone(&shared);
    std::thread::spawn(move || other.validate_property_post(&json!({"Power": 1})))
        .join()
        .unwrap()
        .unwrap();
}

#[test]
fn good_property_posts_pass_in_both_forms() {
    let c = compiled();
    let bare = json!({
        "Power": 1,
        "Brightness": 80,
        "LightCurrent": 1.25,
        "Location": {"longitude": 120.1551, "latitude": 30.2741},
        "WorkMode": 2,
        "Note": "pole 17, Lotus Road",
        "LastMaintained": "1538017700000",
        "Readings": [1.0, 2.5, 3]
    });
    c.validate_property_post(&bare).unwrap();

    let timed = json!({
        "Power": {"value": 0, "time": 1524448722000i64},
        "Brightness": {"value": 10, "time": 1524448722000i64},
        "Location": {"value": {"longitude": 0, "latitude": -90}, "time": 1524448722000i64},
        "LastMaintained": {"value": 1538017700000i64},
    });
    c.validate_property_post(&timed).unwrap();

    // Mixed, plus the leniencies: true/false for bool, ints for float/double, empty post.
    c.validate_property_post(&json!({"Power": true, "LightCurrent": {"value": 3, "time": "1524448722000"}, "Brightness": 100}))
        .unwrap();
    c.validate_property_post(&json!({})).unwrap();
    // Step is not enforced on uplink (Alibaba doesn't either).
    c.validate_property_post(&json!({"LightCurrent": 1.234567}))
        .unwrap();
}

#[test]
fn bad_property_posts_name_the_field() {
    let c = compiled();
    let cases = [
        (
            json!({"Brightness": 120}),
            "Brightness",
            "must be ≤ 100 (got 120)",
        ),
        (
            json!({"Brightness": -1}),
            "Brightness",
            "must be ≥ 0 (got -1)",
        ),
        (
            json!({"Brightness": {"value": 101, "time": 1}}),
            "Brightness",
            "must be ≤ 100 (got 101)",
        ),
        (
            json!({"Brightness": "bright"}),
            "Brightness",
            "expected int, got string \"bright\"",
        ),
        (
            json!({"Brightness": 50.5}),
            "Brightness",
            "expected int, got number 50.5",
        ),
        (
            json!({"LightCurrent": "1.2"}),
            "LightCurrent",
            "expected float, got string \"1.2\"",
        ),
        (json!({"Power": 2}), "Power", "must be 0 or 1 (got 2)"),
        (
            json!({"Colour": 1}),
            "Colour",
            "unknown property 'Colour' (not in the thing model)",
        ),
        (
            json!({"WorkMode": 7}),
            "WorkMode",
            "must be one of 0 (auto), 1 (manual), 2 (maintenance) (got 7)",
        ),
        (
            json!({"Note": "x".repeat(65)}),
            "Note",
            "must be at most 64 bytes of UTF-8 text (got 65 bytes)",
        ),
        (
            json!({"Location": {"longitude": 120.0, "latitude": 91}}),
            "Location.latitude",
            "must be ≤ 90 (got 91)",
        ),
        (
            json!({"Location": {"value": {"longitude": "east", "latitude": 0}, "time": 1}}),
            "Location.longitude",
            "expected double, got string \"east\"",
        ),
        (
            json!({"Location": {"longitude": 1, "altitude": 3}}),
            "Location.altitude",
            "unknown member 'altitude' (not in the struct)",
        ),
        (
            json!({"Location": [1, 2]}),
            "Location",
            "expected struct (an object), got array of 2 items",
        ),
        (
            json!({"Readings": [1, 2, 3, 4, 5, 6]}),
            "Readings",
            "must have at most 5 items (got 6)",
        ),
        (
            json!({"Readings": [1, 2, "three"]}),
            "Readings[2]",
            "expected double, got string \"three\"",
        ),
        (
            json!({"LastMaintained": "yesterday"}),
            "LastMaintained",
            "expected date as UTC milliseconds (digit string or integer), got string \"yesterday\"",
        ),
        (
            json!({"LastMaintained": -5}),
            "LastMaintained",
            "must be ≥ 0 (got -5)",
        ),
        (
            json!({"Power": {"value": 1, "time": "noon"}}),
            "Power.time",
            "expected time as UTC milliseconds (integer or digit string), got string \"noon\"",
        ),
        (
            json!([1, 2]),
            "params",
            "expected an object of property values, got array of 2 items",
        ),
    ];
    for (params, field, message) in cases {
        let e = invalid(c.validate_property_post(&params));
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            (field, message),
            "for {params}"
        );
        assert_eq!(e.to_string(), format!("{field}: {message}"));
    }
}

#[test]
fn text_length_counts_utf8_bytes() {
    let c = compiled();
    // 21 three-byte characters: 63 bytes fit, 22 (66 bytes) do not, although 22 chars < 64.
    c.validate_property_post(&json!({"Note": "路".repeat(21)}))
        .unwrap();
    let e = invalid(c.validate_property_post(&json!({"Note": "路".repeat(22)})));
    assert_eq!(e.field, "Note");
    assert!(e.message.contains("got 66 bytes"), "{e}");
}

#[test]
fn int_values_stay_within_32_bits_without_bounds() {
    let c = ThingModel::parse(&json!({"properties": [
        {"identifier": "Counter", "name": "Counter", "accessMode": "r", "dataType": {"type": "int", "specs": {}}}
    ]}))
    .unwrap()
    .compile();
    c.validate_property_post(&json!({"Counter": 2147483647}))
        .unwrap();
    let e = invalid(c.validate_property_post(&json!({"Counter": 2147483648i64})));
    assert_eq!(e.message, "must be ≤ 2147483647 (got 2147483648)");
}

#[test]
fn arrays_of_structs_name_the_element_and_member() {
    let c = ThingModel::parse(&json!({"properties": [
        {"identifier": "Zones", "name": "Zones", "accessMode": "rw", "dataType": {"type": "array", "specs": {"size": "3", "item": {
            "type": "struct", "specs": [{"identifier": "level", "name": "Level", "dataType": {"type": "int", "specs": {"min": "0", "max": "10"}}}]
        }}}}
    ]}))
    .unwrap()
    .compile();
    c.validate_property_post(&json!({"Zones": [{"level": 1}, {"level": 10}]}))
        .unwrap();
    let e = invalid(
        c.validate_property_post(&json!({"Zones": {"value": [{"level": 1}, {"level": 11}]}})),
    );
    assert_eq!(
        (e.field.as_str(), e.message.as_str()),
        ("Zones[1].level", "must be ≤ 10 (got 11)")
    );
}

#[test]
fn events_are_validated_against_their_output_data() {
    let c = compiled();
    c.validate_event_post("FaultReport", &json!({"ErrorCode": 17}))
        .unwrap();
    let e = invalid(c.validate_event_post("FaultReport", &json!({"ErrorCode": 999})));
    assert_eq!(
        (e.field.as_str(), e.message.as_str()),
        ("ErrorCode", "must be ≤ 255 (got 999)")
    );
    let e = invalid(c.validate_event_post("FaultReport", &json!({"Severity": 1})));
    assert_eq!(e.field, "Severity");
    assert!(
        e.message
            .contains("not in the output data of event 'FaultReport'"),
        "{e}"
    );
    let e = invalid(c.validate_event_post("Nope", &json!({})));
    assert_eq!(e.field, "Nope");
    assert!(e.message.contains("unknown event 'Nope'"), "{e}");
    // The generated `post` event is validated through validate_property_post, not here.
    assert!(c.validate_event_post("post", &json!({})).is_err());
}

#[test]
fn property_set_accepts_only_writable_properties() {
    let c = compiled();
    c.validate_property_set(&json!({"Power": 0, "Brightness": 30, "WorkMode": 1, "Note": "night"}))
        .unwrap();
    let e = invalid(c.validate_property_set(&json!({"Brightness": 30, "LightCurrent": 2.0})));
    assert_eq!(e.field, "LightCurrent");
    assert_eq!(
        e.message,
        "property 'LightCurrent' is read-only and cannot be set"
    );
    let e = invalid(c.validate_property_set(&json!({"Brightness": 300})));
    assert_eq!(e.field, "Brightness");
    let e = invalid(c.validate_property_set(&json!({"Dim": 1})));
    assert_eq!(e.message, "unknown property 'Dim' (not in the thing model)");
}

#[test]
fn service_input_and_output_are_validated() {
    let c = compiled();
    c.validate_service_input(
        "SetSchedule",
        &json!({"Schedule": {"onMinute": 1080, "offMinute": 360, "level": 70}}),
    )
    .unwrap();
    let e =
        invalid(c.validate_service_input("SetSchedule", &json!({"Schedule": {"onMinute": 1440}})));
    assert_eq!(
        (e.field.as_str(), e.message.as_str()),
        ("Schedule.onMinute", "must be ≤ 1439 (got 1440)")
    );
    let e = invalid(c.validate_service_input("Reboot", &json!({"DelaySeconds": "soon"})));
    assert_eq!(
        (e.field.as_str(), e.message.as_str()),
        ("DelaySeconds", "expected int, got string \"soon\"")
    );
    let e = invalid(c.validate_service_input("Reboot", &json!({"Force": true})));
    assert!(
        e.message
            .contains("not in the input data of service 'Reboot'"),
        "{e}"
    );
    let e = invalid(c.validate_service_input("Fly", &json!({})));
    assert_eq!(e.field, "Fly");

    c.validate_service_output("Reboot", &json!({"Accepted": 1}))
        .unwrap();
    let e = invalid(c.validate_service_output("Reboot", &json!({"Accepted": "yes"})));
    assert_eq!(e.field, "Accepted");
    c.validate_service_output("SetSchedule", &json!({}))
        .unwrap();
}

// --- helpers for storage ---------------------------------------------------------------------

#[test]
fn property_post_values_flattens_both_forms() {
    let params = json!({
        "Power": {"value": 1, "time": 1524448722000i64},
        "Brightness": 50,
        "Location": {"longitude": 1.5, "latitude": 2.5},
        "LightCurrent": {"value": 2.5, "time": "1524448722001"},
        "Note": {"value": "hi"}
    });
    let values = property_post_values(&params);
    assert_eq!(
        values,
        vec![
            ("Power".into(), json!(1), Some(1524448722000)),
            ("Brightness".into(), json!(50), None),
            (
                "Location".into(),
                json!({"longitude": 1.5, "latitude": 2.5}),
                None
            ),
            ("LightCurrent".into(), json!(2.5), Some(1524448722001)),
            ("Note".into(), json!("hi"), None),
        ]
    );
    assert!(property_post_values(&json!([1])).is_empty());
}

#[test]
fn numeric_values_for_history() {
    assert_eq!(numeric_value(&json!(42)), Some(42.0));
    assert_eq!(numeric_value(&json!(1.5)), Some(1.5));
    assert_eq!(numeric_value(&json!(true)), Some(1.0));
    assert_eq!(numeric_value(&json!(false)), Some(0.0));
    assert_eq!(
        numeric_value(&json!("1538017700000")),
        Some(1538017700000.0)
    );
    assert_eq!(numeric_value(&json!("on")), None);
    assert_eq!(numeric_value(&json!("")), None);
    assert_eq!(numeric_value(&json!({"longitude": 1})), None);
    assert_eq!(numeric_value(&json!([1, 2])), None);
    assert_eq!(numeric_value(&Value::Null), None);
}

#[test]
fn sensitivity_is_parsed_and_exported() {
    let tsl = serde_json::json!({
        "properties": [
            {"identifier": "flow", "name": "flow", "accessMode": "r",
             "dataType": {"type": "int", "specs": {"min": "0", "max": "10", "step": "1"}}},
            {"identifier": "owner_phone", "name": "owner phone", "accessMode": "r", "sensitivity": "personal",
             "dataType": {"type": "text", "specs": {"length": "20"}}},
        ]
    });
    let model = ThingModel::parse(&tsl).unwrap();
    assert_eq!(model.properties()[0].sensitivity, Sensitivity::Public);
    assert_eq!(model.properties()[1].sensitivity, Sensitivity::Personal);
    let exported = model.to_full_tsl("a1");
    assert_eq!(exported["properties"][1]["sensitivity"], "personal");
    assert!(exported["properties"][0].get("sensitivity").is_none());
    let mut bad = tsl.clone();
    bad["properties"][1]["sensitivity"] = "top-secret".into();
    let err = ThingModel::parse(&bad).unwrap_err().to_string();
    assert!(err.contains("sensitivity"), "{err}");
}
