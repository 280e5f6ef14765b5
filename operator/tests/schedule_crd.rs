//! The ProfileSchedule CRD: no drift between the Rust types and `crds/profileschedule.yaml`, a
//! description on every field, and its admission rules evaluated as the API server does
//! (kube-cel): the job template keeps the ProfileJob's rules on values but not its immutability
//! rules, which would freeze the template.

use kube_cel::Validator;
use serde_json::{Value, json};

fn crd() -> Value {
    let yaml = truthound_operator::schedule::crd_yaml().expect("CRD YAML");
    serde_yaml::from_str(&yaml).expect("YAML")
}

fn schema() -> Value {
    crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn crds_dir_matches_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/profileschedule.yaml");
    let on_disk = std::fs::read_to_string(path).expect("crds/profileschedule.yaml");
    let generated = truthound_operator::schedule::crd_yaml().expect("CRD YAML");
    assert!(
        on_disk == generated,
        "crds/profileschedule.yaml is stale: run `cargo run -p truthound-operator --bin crdgen -- --schedule > crds/profileschedule.yaml`"
    );
}

#[test]
fn the_resource_is_named_as_documented() {
    let crd = crd();
    assert_eq!(crd["metadata"]["name"], "profileschedules.truthound.io");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["kind"], "ProfileSchedule");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["pjs"]));
    let v = &crd["spec"]["versions"][0];
    assert_eq!(v["name"], "v1alpha1");
    assert!(v["subresources"]["status"].is_object());
}

#[test]
fn every_field_is_described() {
    fn walk(path: &str, node: &Value, missing: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                let p = format!("{path}.{name}");
                if child.get("description").is_none() {
                    missing.push(p.clone());
                }
                walk(&p, child, missing);
            }
        }
        if let Some(items) = node.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let s = schema();
    let mut missing = Vec::new();
    walk("", &s["properties"]["spec"], &mut missing);
    walk("", &s["properties"]["status"], &mut missing);
    // ObjectReference (status.active) is Kubernetes' own and described by it.
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:#?}"
    );
}

fn errors(object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(), object, old) {
        Ok(()) => Vec::new(),
        Err(e) => e.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

fn schedule(dataset: &str) -> Value {
    json!({
        "apiVersion": "truthound.io/v1alpha1",
        "kind": "ProfileSchedule",
        "metadata": {"name": "daily"},
        "spec": {
            "schedule": "0 6 * * *",
            "timeZone": "Europe/Berlin",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": {
                "dataset": {"uri": dataset},
                "output": {"uri": "s3://lake/profiles/{date}.json"},
            }},
        },
    })
}

#[test]
fn the_template_keeps_the_value_rules_and_may_change() {
    assert_eq!(
        errors(&schedule("s3://lake/events/"), None),
        Vec::<String>::new()
    );
    // a plain path is refused in a template as in a ProfileJob
    let bad = errors(&schedule("/etc/passwd"), None);
    assert!(
        bad.iter()
            .any(|m| m.contains("dataset.uri must start with")),
        "{bad:?}"
    );
    // the dataset of the template may change (in a ProfileJob it is immutable)
    let old = schedule("s3://lake/events/");
    let new = schedule("s3://lake/events-v2/");
    assert_eq!(errors(&new, Some(&old)), Vec::<String>::new());
    let yaml = truthound_operator::schedule::crd_yaml().expect("CRD YAML");
    assert!(
        !yaml.contains("oldSelf"),
        "no transition rule in the template"
    );
}
