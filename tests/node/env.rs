//! A container's environment as the kubelet computes it: `envFrom` first (Secrets and
//! ConfigMaps, with their prefix), then `env` in order (`value` with `$(VAR)` expansion over what
//! came before, `valueFrom` secretKeyRef / configMapKeyRef / fieldRef). A missing non-optional
//! Secret, ConfigMap or key is an error whose text is the kubelet's, for the container's
//! `CreateContainerConfigError`.

use crate::expand::expand;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::{Api, Client};
use std::collections::{BTreeMap, HashMap};

/// The Secrets and ConfigMaps a container refers to, read once; `None` when not found.
#[derive(Default)]
pub struct Sources {
    pub secrets: HashMap<String, Option<BTreeMap<String, String>>>,
    pub config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
}

/// What a container refers to, by name.
fn referenced(c: &Container) -> (Vec<String>, Vec<String>) {
    let mut secrets = Vec::new();
    let mut maps = Vec::new();
    for e in c.env_from.iter().flatten() {
        if let Some(s) = &e.secret_ref {
            secrets.push(s.name.clone());
        }
        if let Some(m) = &e.config_map_ref {
            maps.push(m.name.clone());
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(from) = &e.value_from {
            if let Some(s) = &from.secret_key_ref {
                secrets.push(s.name.clone());
            }
            if let Some(m) = &from.config_map_key_ref {
                maps.push(m.name.clone());
            }
        }
    }
    (secrets, maps)
}

impl Sources {
    /// Reads every Secret and ConfigMap the containers name from the pod's namespace.
    pub async fn fetch(client: &Client, ns: &str, containers: &[&Container]) -> kube::Result<Self> {
        let secrets_api: Api<Secret> = Api::namespaced(client.clone(), ns);
        let maps_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let mut out = Sources::default();
        for c in containers {
            let (secrets, maps) = referenced(c);
            for name in secrets {
                if out.secrets.contains_key(&name) {
                    continue;
                }
                let data = secrets_api.get_opt(&name).await?.map(|s| {
                    let mut data: BTreeMap<String, String> = s
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        // The kubelet's `string(bytes)`: binary values pass through lossily.
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect();
                    // Only set on objects never written through the API; harmless otherwise.
                    data.extend(s.string_data.unwrap_or_default());
                    data
                });
                out.secrets.insert(name, data);
            }
            for name in maps {
                if out.config_maps.contains_key(&name) {
                    continue;
                }
                let data = maps_api
                    .get_opt(&name)
                    .await?
                    .map(|m| m.data.unwrap_or_default());
                out.config_maps.insert(name, data);
            }
        }
        Ok(out)
    }
}

/// The container's environment, in order (a later entry overrides an earlier one of the same
/// name), or the kubelet's message for why it cannot be made.
pub fn resolve(
    pod: &Pod,
    c: &Container,
    sources: &Sources,
    pod_ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = Vec::new();

    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let data = if let Some(s) = &from.secret_ref {
            match sources.secrets.get(&s.name).cloned().flatten() {
                Some(d) => d,
                None if s.optional == Some(true) => continue,
                None => return Err(format!("secret \"{}\" not found", s.name)),
            }
        } else if let Some(m) = &from.config_map_ref {
            match sources.config_maps.get(&m.name).cloned().flatten() {
                Some(d) => d,
                None if m.optional == Some(true) => continue,
                None => return Err(format!("configmap \"{}\" not found", m.name)),
            }
        } else {
            continue;
        };
        for (k, v) in data {
            let name = format!("{prefix}{k}");
            // The kubelet skips (with an event) keys that are not valid variable names.
            if name.is_empty() || name.contains('=') {
                continue;
            }
            env.push((name, v));
        }
    }

    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => {
                // A later entry of the same name wins, as in the kubelet's map.
                let so_far: HashMap<&str, &str> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                expand(e.value.as_deref().unwrap_or(""), |n| {
                    so_far.get(n).map(|v| v.to_string())
                })
            }
            Some(from) => {
                if let Some(r) = &from.secret_key_ref {
                    match sources.secrets.get(&r.name).cloned().flatten() {
                        None if r.optional == Some(true) => continue,
                        None => return Err(format!("secret \"{}\" not found", r.name)),
                        Some(d) => match d.get(&r.key) {
                            Some(v) => v.clone(),
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in Secret {ns}/{}",
                                    r.key, r.name
                                ));
                            }
                        },
                    }
                } else if let Some(r) = &from.config_map_key_ref {
                    match sources.config_maps.get(&r.name).cloned().flatten() {
                        None if r.optional == Some(true) => continue,
                        None => return Err(format!("configmap \"{}\" not found", r.name)),
                        Some(d) => match d.get(&r.key) {
                            Some(v) => v.clone(),
                            None if r.optional == Some(true) => continue,
                            None => {
                                return Err(format!(
                                    "couldn't find key {} in ConfigMap {ns}/{}",
                                    r.key, r.name
                                ));
                            }
                        },
                    }
                } else if let Some(f) = &from.field_ref {
                    field(pod, &f.field_path, pod_ip)?
                } else if from.resource_field_ref.is_some() {
                    return Err(format!(
                        "env {}: resourceFieldRef is not supported by th-test-node",
                        e.name
                    ));
                } else {
                    String::new()
                }
            }
        };
        env.push((e.name.clone(), value));
    }
    Ok(env)
}

/// A downward-API field of the pod, as the kubelet's `podFieldSelectorRuntimeValue`.
pub fn field(pod: &Pod, path: &str, pod_ip: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let subscript = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?.strip_prefix("['")?;
        rest.strip_suffix("']").map(str::to_string)
    };
    let v = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" | "status.hostIP" | "status.hostIPs" => pod_ip.into(),
        _ => {
            if let Some(k) = subscript("metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = subscript("metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|a| a.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldPath: {path}"));
            }
        }
    };
    Ok(v)
}

/// `k="v"` lines, sorted: the downward API's rendering of all labels or annotations.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector,
        SecretEnvSource, SecretKeySelector,
    };
    use kube::api::ObjectMeta;

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p-0".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                annotations: Some(BTreeMap::from([(
                    "batch.kubernetes.io/job-completion-index".into(),
                    "2".into(),
                )])),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    fn value(name: &str, v: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(v.into()),
            value_from: None,
        }
    }

    fn from(name: &str, src: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(src),
        }
    }

    fn secret_key(name: &str, key: &str, optional: Option<bool>) -> EnvVarSource {
        EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..EnvVarSource::default()
        }
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.secrets.insert(
            "creds".into(),
            Some(BTreeMap::from([("KEY".into(), "s3cr3t".into())])),
        );
        s.secrets.insert("gone".into(), None);
        s.config_maps.insert(
            "conf".into(),
            Some(BTreeMap::from([("MODE".into(), "fast".into())])),
        );
        s
    }

    #[test]
    fn env_from_then_env_with_expansion_and_downward_api() {
        let c = Container {
            name: "c".into(),
            env_from: Some(vec![
                EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "creds".into(),
                        optional: None,
                    }),
                    prefix: Some("S_".into()),
                    ..EnvFromSource::default()
                },
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "conf".into(),
                        optional: None,
                    }),
                    ..EnvFromSource::default()
                },
            ]),
            env: Some(vec![
                from(
                    "IDX",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path:
                                "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                                    .into(),
                            api_version: None,
                        }),
                        ..EnvVarSource::default()
                    },
                ),
                value("MSG", "$(MODE)-$(IDX)-$(NOPE)-$$(MODE)"),
                from("PASS", secret_key("creds", "KEY", None)),
                from("OPT", secret_key("gone", "KEY", Some(true))),
                value("MODE", "slow"),
            ]),
            ..Container::default()
        };
        let env = resolve(&pod(), &c, &sources(), "127.0.0.1").unwrap();
        assert_eq!(
            env,
            [
                ("S_KEY", "s3cr3t"),
                ("MODE", "fast"),
                ("IDX", "2"),
                ("MSG", "fast-2-$(NOPE)-$(MODE)"),
                ("PASS", "s3cr3t"),
                ("MODE", "slow"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn missing_secrets_and_keys_give_the_kubelets_messages() {
        let with = |e: EnvVar| Container {
            name: "c".into(),
            env: Some(vec![e]),
            ..Container::default()
        };
        let err = |c: &Container| resolve(&pod(), c, &sources(), "127.0.0.1").unwrap_err();
        assert_eq!(
            err(&with(from("X", secret_key("gone", "KEY", None)))),
            "secret \"gone\" not found"
        );
        assert_eq!(
            err(&with(from("X", secret_key("creds", "OTHER", None)))),
            "couldn't find key OTHER in Secret ns/creds"
        );
        assert_eq!(
            err(&with(from(
                "X",
                EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "spec.bogus".into(),
                        api_version: None,
                    }),
                    ..EnvVarSource::default()
                }
            ))),
            "unsupported fieldPath: spec.bogus"
        );
        let c = Container {
            name: "c".into(),
            env_from: Some(vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "gone".into(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]),
            ..Container::default()
        };
        assert_eq!(err(&c), "secret \"gone\" not found");
    }
}
