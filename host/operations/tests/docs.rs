//! The examples in `docs/operations-center.md` are what an operator copies: each must be
//! accepted as written.

use serde_json::Value;

fn blocks(lang: &str) -> Vec<String> {
    let doc = include_str!("../../../docs/operations-center.md");
    let fence = format!("```{lang}\n");
    doc.split(fence.as_str())
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn the_rule_example_compiles() {
    let rule: Value = serde_json::from_str(&blocks("json")[0]).unwrap();
    lotus_operations::compile(
        rule["id"].as_str().unwrap(),
        rule["name"].as_str().unwrap(),
        1,
        "",
        "/",
        &rule["definition"],
    )
    .unwrap();
}

#[test]
fn the_event_type_example_is_valid() {
    let ty: lotus_workflow::EventType = serde_json::from_str(&blocks("json")[1]).unwrap();
    ty.validate().unwrap();
}

#[test]
fn the_workflow_example_is_valid() {
    let wf = lotus_workflow::WorkflowDefinition::from_yaml(&blocks("yaml")[0]).unwrap();
    wf.validate().unwrap();
}
