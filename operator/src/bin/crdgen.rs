//! Prints a CustomResourceDefinition as YAML: the ProfileJob's
//! (`cargo run --bin crdgen > crds/profilejob.yaml`) or, with `--schedule`, the ProfileSchedule's
//! (`cargo run --bin crdgen -- --schedule > crds/profileschedule.yaml`).
//! A test (operator/tests/crd.rs) fails when `crds/` drifts from the types.

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        None => print!("{}", truthound_operator::crd::crd_yaml()?),
        Some("--schedule") => print!("{}", truthound_operator::schedule::crd_yaml()?),
        Some(other) => anyhow::bail!("unknown argument `{other}` (crdgen [--schedule])"),
    }
    Ok(())
}
