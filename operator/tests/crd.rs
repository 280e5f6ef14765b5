//! The CRD: no drift between the Rust types and `crds/`, a description on every field (what
//! `kubectl explain` shows), and the admission rules (CEL `x-kubernetes-validations`) evaluated
//! the way the API server does, with kube-cel's client-side validator.

use kube::CustomResourceExt;
use kube_cel::Validator;
use serde_json::{Value, json};
use truthound_operator::ProfileJob;

fn schema() -> Value {
    let crd = serde_json::to_value(ProfileJob::crd()).expect("CRD as JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn crds_dir_matches_the_types() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/profilejob.yaml");
    let on_disk = std::fs::read_to_string(path).expect("crds/profilejob.yaml");
    let generated = truthound_operator::crd::crd_yaml().expect("CRD YAML");
    assert!(
        on_disk == generated,
        "crds/profilejob.yaml is stale: run `cargo run -p truthound-operator --bin crdgen > crds/profilejob.yaml`"
    );
}

#[test]
fn the_resource_is_named_as_documented() {
    let crd = ProfileJob::crd();
    assert_eq!(crd.spec.group, "truthound.io");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.short_names, Some(vec!["pj".into()]));
    assert!(
        crd.spec
            .names
            .categories
            .unwrap_or_default()
            .contains(&"all".into())
    );
    let v = &crd.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let cols: Vec<String> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(cols, ["Backend", "State", "Tasks", "Progress", "Age"]);
}

/// Every property of our own types has a description (Kubernetes' embedded types carry theirs).
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
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:#?}"
    );
}

fn pj(spec: Value) -> Value {
    json!({
        "apiVersion": "truthound.io/v1alpha1",
        "kind": "ProfileJob",
        "metadata": {"name": "events", "namespace": "data"},
        "spec": spec,
    })
}

fn errors(object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema(), object, old) {
        Ok(()) => Vec::new(),
        Err(e) => e.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

fn base() -> Value {
    json!({
        "dataset": {"uri": "s3://lake/events/"},
        "output": {"uri": "s3://lake/profiles/events.json"},
    })
}

#[test]
fn a_minimal_job_is_admitted() {
    assert_eq!(errors(&pj(base()), None), Vec::<String>::new());
}

#[test]
fn hash_partitioning_needs_a_hash_column() {
    let mut spec = base();
    spec["partitioning"] = json!({"strategy": "hash", "partitions": 8});
    let e = errors(&pj(spec.clone()), None);
    assert!(e.iter().any(|m| m.contains("hashColumn")), "{e:?}");
    spec["partitioning"]["hashColumn"] = json!("user_id");
    assert_eq!(errors(&pj(spec), None), Vec::<String>::new());
}

#[test]
fn a_remote_backend_may_leave_its_address_to_the_operator() {
    // The operator's SPARK_CONNECT_URL / DASK_SCHEDULER_ADDRESS / RAY_ADDRESS stand in for a
    // missing one (and the operator fails the job, naming both, when it has none).
    for kind in ["spark", "dask", "ray"] {
        let mut spec = base();
        spec["backend"] = json!({"type": kind});
        assert_eq!(errors(&pj(spec), None), Vec::<String>::new(), "{kind}");
    }
}

#[test]
fn a_sampling_fraction_is_more_than_0_and_at_most_1() {
    for (fraction, ok) in [
        (0.0, false),
        (-0.5, false),
        (1.5, false),
        (0.1, true),
        (1.0, true),
    ] {
        let mut spec = base();
        spec["profile"] = json!({"sampling": {"fraction": fraction, "seed": 7}});
        let e = errors(&pj(spec), None);
        assert_eq!(e.is_empty(), ok, "{fraction}: {e:?}");
        if !ok {
            assert!(e.iter().any(|m| m.contains("sampling.fraction")), "{e:?}");
        }
    }
}

#[test]
fn partitions_must_be_at_least_one() {
    let mut spec = base();
    spec["partitioning"] = json!({"partitions": 0});
    assert!(!errors(&pj(spec), None).is_empty());
}

#[test]
fn dataset_and_partitioning_are_immutable_but_suspend_is_not() {
    let old = pj(base());
    let mut changed = base();
    changed["dataset"]["uri"] = json!("s3://lake/other/");
    let e = errors(&pj(changed), Some(&old));
    assert!(
        e.iter().any(|m| m.contains("dataset is immutable")),
        "{e:?}"
    );

    let mut old_spec = base();
    old_spec["partitioning"] = json!({"strategy": "row_based", "partitions": 4});
    let mut new_spec = old_spec.clone();
    new_spec["partitioning"]["partitions"] = json!(8);
    let e = errors(&pj(new_spec), Some(&pj(old_spec.clone())));
    assert!(
        e.iter().any(|m| m.contains("partitioning is immutable")),
        "{e:?}"
    );

    let mut suspended = old_spec.clone();
    suspended["suspend"] = json!(true);
    assert_eq!(
        errors(&pj(suspended), Some(&pj(old_spec))),
        Vec::<String>::new()
    );
}

#[test]
fn the_example_profilejobs_parse_as_the_type() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples");
    let entries = std::fs::read_dir(dir).expect("deploy/examples");
    let mut seen = 0;
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("example");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).expect("YAML");
            if v["kind"] == "ProfileJob" {
                let _: ProfileJob = serde_json::from_value(v.clone())
                    .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
                assert_eq!(
                    errors(&v, None),
                    Vec::<String>::new(),
                    "{}",
                    entry.path().display()
                );
                seen += 1;
            }
        }
    }
    assert!(seen > 0, "no ProfileJob in deploy/examples");
}

#[test]
fn dataset_and_output_uris_need_a_known_scheme_and_a_bounded_length() {
    // A plain path would be read from the operator's own disk: refused at admission, as are
    // schemes the engine does not know; file:// is admitted (the operator checks its roots).
    for (field, uri, ok) in [
        (
            "dataset",
            "/var/run/secrets/kubernetes.io/serviceaccount/token",
            false,
        ),
        ("dataset", "ftp://host/x.csv", false),
        ("dataset", "S3://lake/events/", false),
        ("dataset", "file:///data/shared/events/", true),
        ("dataset", "gs://lake/events/*.parquet", true),
        ("output", "profiles/events.json", false),
        ("output", "abfss://c@acct.dfs.core.windows.net/p.json", true),
    ] {
        let mut spec = base();
        spec[field]["uri"] = json!(uri);
        let e = errors(&pj(spec), None);
        assert_eq!(e.is_empty(), ok, "{field} {uri}: {e:?}");
        if !ok {
            assert!(
                e.iter()
                    .any(|m| m.contains(&format!("{field}.uri must start"))),
                "{field} {uri}: {e:?}"
            );
        }
    }
    // The length is OpenAPI's maxLength (the API server checks it; kube-cel evaluates CEL only),
    // which also bounds the cost the API server estimates for the rule.
    let s = schema();
    for field in ["dataset", "output"] {
        let uri = &s["properties"]["spec"]["properties"][field]["properties"]["uri"];
        assert_eq!(uri["maxLength"], json!(2048), "{field}: {uri}");
    }
}
