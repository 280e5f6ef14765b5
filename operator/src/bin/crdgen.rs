//! Prints the ProfileJob CustomResourceDefinition as YAML (`cargo run --bin crdgen > crds/profilejob.yaml`).
//! A test (operator/tests/crd.rs) fails when `crds/` drifts from the types.

fn main() -> anyhow::Result<()> {
    print!("{}", truthound_operator::crd::crd_yaml()?);
    Ok(())
}
