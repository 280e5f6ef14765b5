//! The settings every pod the operator starts can carry (worker and merge pods, the Dask runner
//! pod): scheduling, registry credentials, labels and annotations, security overrides. A
//! ProfileJob's own settings (`spec.backend.local`, `spec.backend.dask`) win field by field over
//! the operator's defaults (`--pod-defaults`, the chart's `podDefaults`), which win over the
//! built-in ones.
//!
//! Resources: a container without any (no `resources` in the job nor in the defaults) gets
//! [`default_resources`], so that omitting them never makes an unbounded pod; a job's or the
//! defaults' `resources` replace them whole (`resources: {}` in the defaults opts out).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Affinity, Container, LocalObjectReference, PodSecurityContext, PodSpec, ResourceRequirements,
    SecurityContext, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::crd::{DaskBackend, LocalBackend};

/// One pod's settings; every field optional. Also the shape of the `--pod-defaults` file.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security_context: Option<PodSecurityContext>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// Every container's resources (whole: requests and limits together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Requests of a container that names no resources (`cpu`, `memory`).
pub const DEFAULT_REQUESTS: [(&str, &str); 2] = [("cpu", "500m"), ("memory", "512Mi")];
/// Limits of a container that names no resources.
pub const DEFAULT_LIMITS: [(&str, &str); 1] = [("memory", "2Gi")];

/// The resources of a container that names none: [`DEFAULT_REQUESTS`] and [`DEFAULT_LIMITS`].
pub fn default_resources() -> ResourceRequirements {
    let map = |pairs: &[(&str, &str)]| {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        )
    };
    ResourceRequirements {
        requests: map(&DEFAULT_REQUESTS),
        limits: map(&DEFAULT_LIMITS),
        ..ResourceRequirements::default()
    }
}

/// A `--pod-defaults` file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PodDefaultsError {
    #[error("reading the pod defaults {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the pod defaults {path} are not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
}

impl PodSettings {
    /// Reads a defaults file (YAML or JSON, the fields of [`PodSettings`] in camelCase; an
    /// empty file is no defaults). An unknown field is an error naming it, so a typo is not a
    /// silently ignored setting.
    pub fn load(path: &Path) -> Result<Self, PodDefaultsError> {
        let text = std::fs::read_to_string(path).map_err(|source| PodDefaultsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|source| PodDefaultsError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn parse(text: &str) -> Result<Self, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        // `{}` and `null` documents are no defaults, like an empty file.
        let value: serde_yaml::Value = serde_yaml::from_str(text)?;
        if value.is_null() {
            return Ok(Self::default());
        }
        // From the text again, not the value: its errors name the field and the line.
        serde_yaml::from_str(text)
    }

    /// The worker and merge pods' settings of a ProfileJob.
    pub fn of_local(l: &LocalBackend) -> Self {
        PodSettings {
            image_pull_secrets: l.image_pull_secrets.clone(),
            priority_class_name: l.priority_class_name.clone(),
            node_selector: l.node_selector.clone(),
            tolerations: l.tolerations.clone(),
            affinity: l.affinity.clone(),
            topology_spread_constraints: l.topology_spread_constraints.clone(),
            pod_labels: l.pod_labels.clone(),
            pod_annotations: l.pod_annotations.clone(),
            pod_security_context: l.pod_security_context.clone(),
            security_context: l.security_context.clone(),
            resources: l.resources.clone(),
        }
    }

    /// The Dask runner pod's settings of a ProfileJob.
    pub fn of_dask(d: &DaskBackend) -> Self {
        PodSettings {
            image_pull_secrets: d.image_pull_secrets.clone(),
            priority_class_name: d.priority_class_name.clone(),
            node_selector: d.node_selector.clone(),
            tolerations: d.tolerations.clone(),
            affinity: d.affinity.clone(),
            topology_spread_constraints: d.topology_spread_constraints.clone(),
            pod_labels: d.pod_labels.clone(),
            pod_annotations: d.pod_annotations.clone(),
            pod_security_context: None,
            security_context: None,
            resources: None,
        }
    }

    /// These settings, with `defaults` filling each field left unset. Security contexts are
    /// overlaid field by field (a job that sets only `runAsUser` keeps the defaults' others).
    pub fn or(self, defaults: &PodSettings) -> PodSettings {
        let d = defaults.clone();
        PodSettings {
            image_pull_secrets: self.image_pull_secrets.or(d.image_pull_secrets),
            priority_class_name: self.priority_class_name.or(d.priority_class_name),
            node_selector: self.node_selector.or(d.node_selector),
            tolerations: self.tolerations.or(d.tolerations),
            affinity: self.affinity.or(d.affinity),
            topology_spread_constraints: self
                .topology_spread_constraints
                .or(d.topology_spread_constraints),
            pod_labels: merged(d.pod_labels, self.pod_labels),
            pod_annotations: merged(d.pod_annotations, self.pod_annotations),
            pod_security_context: overlay_opt(d.pod_security_context, self.pod_security_context),
            security_context: overlay_opt(d.security_context, self.security_context),
            resources: self.resources.or(d.resources),
        }
    }

    /// Puts the settings on a pod: its spec, its template metadata (the operator's labels,
    /// already there, are kept over any of the same key) and every container's security
    /// context (overlaid on what the operator set); every container gets the resources, or
    /// [`default_resources`] when neither these settings nor the container name any.
    pub fn apply(&self, meta: &mut ObjectMeta, spec: &mut PodSpec) {
        if let Some(extra) = &self.pod_labels {
            let labels = meta.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in extra {
                labels.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        if let Some(a) = &self.pod_annotations {
            meta.annotations
                .get_or_insert_with(BTreeMap::new)
                .extend(a.clone());
        }
        set(&mut spec.image_pull_secrets, &self.image_pull_secrets);
        set(&mut spec.priority_class_name, &self.priority_class_name);
        set(&mut spec.node_selector, &self.node_selector);
        set(&mut spec.tolerations, &self.tolerations);
        set(&mut spec.affinity, &self.affinity);
        set(
            &mut spec.topology_spread_constraints,
            &self.topology_spread_constraints,
        );
        spec.security_context = overlay_opt(
            spec.security_context.take(),
            self.pod_security_context.clone(),
        );
        for c in &mut spec.containers {
            apply_container(c, self);
        }
    }
}

/// `field` becomes `value` when that is set.
fn set<T: Clone>(field: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        field.clone_from(value);
    }
}

fn apply_container(c: &mut Container, s: &PodSettings) {
    c.security_context = overlay_opt(c.security_context.take(), s.security_context.clone());
    if let Some(r) = &s.resources {
        c.resources = Some(r.clone());
    } else if c.resources.is_none() {
        c.resources = Some(default_resources());
    }
}

/// `base` with `over`'s entries added (over's win).
fn merged(
    base: Option<BTreeMap<String, String>>,
    over: Option<BTreeMap<String, String>>,
) -> Option<BTreeMap<String, String>> {
    match (base, over) {
        (Some(mut b), Some(o)) => {
            b.extend(o);
            Some(b)
        }
        (b, o) => o.or(b),
    }
}

fn overlay_opt<T: Serialize + DeserializeOwned>(base: Option<T>, over: Option<T>) -> Option<T> {
    match (base, over) {
        (Some(b), Some(o)) => Some(overlay(b, &o)),
        (b, o) => o.or(b),
    }
}

/// `base` with every field `over` sets replacing base's (one level deep: `capabilities` set in
/// `over` replaces base's whole).
fn overlay<T: Serialize + DeserializeOwned>(base: T, over: &T) -> T {
    let (Ok(serde_json::Value::Object(mut b)), Ok(serde_json::Value::Object(o))) =
        (serde_json::to_value(&base), serde_json::to_value(over))
    else {
        return base;
    };
    for (k, v) in o {
        if !v.is_null() {
            b.insert(k, v);
        }
    }
    // Both came from T, so the union of their fields is a T; should it not be, base stands.
    serde_json::from_value(serde_json::Value::Object(b)).unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Capabilities;

    #[test]
    fn a_defaults_file_parses_and_rejects_unknown_fields() {
        let d = PodSettings::parse(
            "imagePullSecrets: [{name: registry}]\npriorityClassName: batch-low\n\
             podLabels: {team: data}\npodSecurityContext: {runAsUser: 1000}\n",
        )
        .expect("defaults");
        assert_eq!(d.priority_class_name.as_deref(), Some("batch-low"));
        assert_eq!(
            d.image_pull_secrets,
            Some(vec![LocalObjectReference {
                name: "registry".into()
            }])
        );
        assert_eq!(
            PodSettings::parse("").expect("empty"),
            PodSettings::default()
        );
        assert_eq!(
            PodSettings::parse("{}").expect("{}"),
            PodSettings::default()
        );
        let err = PodSettings::parse("priorityClass: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("priorityClass"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.yaml");
        let err = PodSettings::load(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.yaml"), "{err}");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "tolerations: 3\n").expect("write");
        let err = PodSettings::load(&bad).unwrap_err().to_string();
        assert!(
            err.contains("bad.yaml") && err.contains("tolerations"),
            "{err}"
        );
    }

    #[test]
    fn containers_without_resources_get_bounded_defaults() {
        let pod = |settings: &PodSettings| {
            let mut spec = PodSpec {
                containers: vec![Container {
                    name: "worker".into(),
                    ..Container::default()
                }],
                ..PodSpec::default()
            };
            settings.apply(&mut ObjectMeta::default(), &mut spec);
            spec.containers[0].resources.clone().unwrap_or_default()
        };
        // Nothing named: the built-in requests and memory limit.
        let r = pod(&PodSettings::default());
        let limits = r.limits.clone().unwrap_or_default();
        let requests = r.requests.clone().unwrap_or_default();
        assert_eq!(limits["memory"], Quantity("2Gi".into()));
        assert_eq!(requests["memory"], Quantity("512Mi".into()));
        assert_eq!(requests["cpu"], Quantity("500m".into()));

        // The operator's defaults win over the built-in ones, the job's over both, whole.
        let mine = |mem: &str| ResourceRequirements {
            limits: Some(BTreeMap::from([("memory".into(), Quantity(mem.into()))])),
            ..ResourceRequirements::default()
        };
        let defaults = PodSettings {
            resources: Some(mine("4Gi")),
            ..PodSettings::default()
        };
        assert_eq!(pod(&PodSettings::default().or(&defaults)), mine("4Gi"));
        let job = PodSettings {
            resources: Some(mine("8Gi")),
            ..PodSettings::default()
        };
        assert_eq!(pod(&job.or(&defaults)), mine("8Gi"));
        // `resources: {}` in a defaults file opts out.
        let none = PodSettings::parse("resources: {}\n").expect("defaults");
        assert_eq!(pod(&none), ResourceRequirements::default());
    }

    #[test]
    fn the_job_wins_field_by_field_over_the_defaults() {
        let defaults = PodSettings {
            priority_class_name: Some("default-class".into()),
            node_selector: Some(BTreeMap::from([("pool".into(), "batch".into())])),
            pod_labels: Some(BTreeMap::from([
                ("team".into(), "platform".into()),
                ("cost".into(), "shared".into()),
            ])),
            security_context: Some(SecurityContext {
                run_as_user: Some(2000),
                read_only_root_filesystem: Some(true),
                ..SecurityContext::default()
            }),
            ..PodSettings::default()
        };
        let job = PodSettings {
            priority_class_name: Some("urgent".into()),
            pod_labels: Some(BTreeMap::from([("team".into(), "data".into())])),
            security_context: Some(SecurityContext {
                run_as_user: Some(3000),
                ..SecurityContext::default()
            }),
            ..PodSettings::default()
        };
        let s = job.or(&defaults);
        assert_eq!(s.priority_class_name.as_deref(), Some("urgent"));
        assert_eq!(s.node_selector, defaults.node_selector);
        let labels = s.pod_labels.clone().unwrap_or_default();
        assert_eq!(labels.get("team").map(String::as_str), Some("data"));
        assert_eq!(labels.get("cost").map(String::as_str), Some("shared"));
        let sc = s.security_context.clone().unwrap_or_default();
        assert_eq!(sc.run_as_user, Some(3000));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
    }

    #[test]
    fn applying_keeps_the_operators_labels_and_overlays_security() {
        let mut meta = ObjectMeta {
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".into(),
                "truthound-operator".into(),
            )])),
            ..ObjectMeta::default()
        };
        let mut spec = PodSpec {
            containers: vec![Container {
                name: "worker".into(),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        add: None,
                    }),
                    ..SecurityContext::default()
                }),
                ..Container::default()
            }],
            security_context: Some(PodSecurityContext {
                run_as_user: Some(65532),
                run_as_non_root: Some(true),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        };
        let s = PodSettings {
            pod_labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".into(), "me".into()),
                ("team".into(), "data".into()),
            ])),
            pod_annotations: Some(BTreeMap::from([("a".into(), "b".into())])),
            pod_security_context: Some(PodSecurityContext {
                fs_group: Some(65532),
                run_as_user: Some(1000),
                ..PodSecurityContext::default()
            }),
            security_context: Some(SecurityContext {
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".into()]),
                    add: Some(vec!["NET_BIND_SERVICE".into()]),
                }),
                ..SecurityContext::default()
            }),
            ..PodSettings::default()
        };
        s.apply(&mut meta, &mut spec);
        let labels = meta.labels.unwrap_or_default();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "truthound-operator");
        assert_eq!(labels["team"], "data");
        assert_eq!(meta.annotations.unwrap_or_default()["a"], "b");
        let psc = spec.security_context.unwrap_or_default();
        assert_eq!(
            (psc.run_as_user, psc.run_as_non_root, psc.fs_group),
            (Some(1000), Some(true), Some(65532))
        );
        let csc = spec.containers[0]
            .security_context
            .clone()
            .unwrap_or_default();
        assert_eq!(csc.allow_privilege_escalation, Some(false));
        assert_eq!(
            csc.capabilities.and_then(|c| c.add),
            Some(vec!["NET_BIND_SERVICE".to_string()])
        );
    }
}
