//! [`ThingModel`] → full Alink TSL, as Alibaba's console exports it: numeric specs as strings,
//! the generated `post` event first among the events and `set`/`get` first among the services.

use serde_json::{Map, Value, json};

use super::{DataType, Event, Param, Property, Sensitivity, Service, TSL_SCHEMA_URL, ThingModel};

pub(super) fn full_tsl(model: &ThingModel, product_key: &str) -> Value {
    let properties: Vec<Value> = model.properties.iter().map(property).collect();
    let all_params: Vec<Value> = model.properties.iter().map(property_param).collect();

    let mut events = Vec::with_capacity(model.events.len() + 1);
    events.push(json!({
        "identifier": "post",
        "name": "post",
        "type": "info",
        "required": true,
        "desc": "Report properties",
        "method": "thing.event.property.post",
        "outputData": all_params,
    }));
    events.extend(model.events.iter().map(event));

    let mut services = Vec::with_capacity(model.services.len() + 2);
    services.push(json!({
        "identifier": "set",
        "name": "set",
        "required": true,
        "callType": "async",
        "desc": "Set properties",
        "method": "thing.service.property.set",
        "inputData": model
            .properties
            .iter()
            .filter(|p| p.is_writable())
            .map(property_param)
            .collect::<Vec<_>>(),
        "outputData": [],
    }));
    services.push(json!({
        "identifier": "get",
        "name": "get",
        "required": true,
        "callType": "async",
        "desc": "Get properties",
        "method": "thing.service.property.get",
        "inputData": model.properties.iter().map(|p| p.identifier.as_str()).collect::<Vec<_>>(),
        "outputData": all_params,
    }));
    services.extend(model.services.iter().map(service));

    json!({
        "schema": TSL_SCHEMA_URL,
        "profile": {"version": "1.0", "productKey": product_key},
        "properties": properties,
        "events": events,
        "services": services,
    })
}

fn property(p: &Property) -> Value {
    let mut o = Map::new();
    o.insert("identifier".into(), p.identifier.clone().into());
    o.insert("name".into(), p.name.clone().into());
    o.insert("accessMode".into(), p.access_mode.as_str().into());
    o.insert("required".into(), p.required.into());
    if let Some(desc) = &p.description {
        o.insert("desc".into(), desc.clone().into());
    }
    o.insert("dataType".into(), data_type(&p.data_type));
    if p.sensitivity != Sensitivity::Public {
        o.insert("sensitivity".into(), p.sensitivity.as_str().into());
    }
    Value::Object(o)
}

fn event(e: &Event) -> Value {
    let mut o = Map::new();
    o.insert("identifier".into(), e.identifier.clone().into());
    o.insert("name".into(), e.name.clone().into());
    o.insert("type".into(), e.event_type.as_str().into());
    o.insert("required".into(), e.required.into());
    if let Some(desc) = &e.description {
        o.insert("desc".into(), desc.clone().into());
    }
    o.insert("method".into(), e.method().into());
    o.insert("outputData".into(), params(&e.output_data));
    Value::Object(o)
}

fn service(s: &Service) -> Value {
    let mut o = Map::new();
    o.insert("identifier".into(), s.identifier.clone().into());
    o.insert("name".into(), s.name.clone().into());
    o.insert("required".into(), s.required.into());
    o.insert("callType".into(), s.call_type.as_str().into());
    if let Some(desc) = &s.description {
        o.insert("desc".into(), desc.clone().into());
    }
    o.insert("method".into(), s.method().into());
    o.insert("inputData".into(), params(&s.input_data));
    o.insert("outputData".into(), params(&s.output_data));
    Value::Object(o)
}

/// A property in the parameter shape the generated `post`/`set`/`get` elements list.
fn property_param(p: &Property) -> Value {
    json!({"identifier": p.identifier, "name": p.name, "dataType": data_type(&p.data_type)})
}

fn params(params: &[Param]) -> Value {
    params.iter().map(param).collect()
}

fn param(p: &Param) -> Value {
    json!({"identifier": p.identifier, "name": p.name, "dataType": data_type(&p.data_type)})
}

fn data_type(t: &DataType) -> Value {
    let specs = match t {
        DataType::Int {
            min,
            max,
            step,
            unit,
            unit_name,
        } => number_specs(
            [*min, *max, *step].map(|n| n.map(|n| n.to_string())),
            unit,
            unit_name,
        ),
        DataType::Float {
            min,
            max,
            step,
            unit,
            unit_name,
        }
        | DataType::Double {
            min,
            max,
            step,
            unit,
            unit_name,
        } => number_specs(
            [*min, *max, *step].map(|n| n.map(|n| n.to_string())),
            unit,
            unit_name,
        ),
        DataType::Bool {
            false_label,
            true_label,
        } => json!({"0": false_label, "1": true_label}),
        DataType::Enum { values } => values
            .iter()
            .map(|(k, label)| (k.to_string(), Value::from(label.as_str())))
            .collect::<Map<_, _>>()
            .into(),
        DataType::Text { length } => json!({"length": length.to_string()}),
        DataType::Date => json!({}),
        DataType::Struct(members) => params(members),
        DataType::Array { size, item } => {
            json!({"size": size.to_string(), "item": data_type(item)})
        }
    };
    json!({"type": t.type_name(), "specs": specs})
}

/// Alibaba writes numeric specs as strings; `f64`'s `Display` never uses exponent notation, so
/// the strings parse back to the same value.
fn number_specs(
    [min, max, step]: [Option<String>; 3],
    unit: &Option<String>,
    unit_name: &Option<String>,
) -> Value {
    let mut o = Map::new();
    for (key, value) in [
        ("min", min),
        ("max", max),
        ("step", step),
        ("unit", unit.clone()),
        ("unitName", unit_name.clone()),
    ] {
        if let Some(value) = value {
            o.insert(key.into(), value.into());
        }
    }
    Value::Object(o)
}
