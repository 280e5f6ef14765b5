//! `th submit --dry-run` output applies with `kubectl apply --dry-run=client`: the real kubectl
//! (TH_KUBECTL, else `kubectl` on PATH; `scripts/kubectl.sh` installs Debian's) against a small
//! fake API server on 127.0.0.1 that has the ProfileJob CRD of crds/profilejob.yaml installed.
//!
//! kubectl needs a server even for a client-side dry run: it discovers the resource behind
//! `kind: ProfileJob` (/api, /apis, /apis/truthound.io/v1alpha1), validates the object against
//! the server's OpenAPI v2 document (/openapi/v2, protobuf), and GETs the object to choose between
//! create and patch (newer ones also GET the namespace). The fake serves discovery from the CRD's
//! names, the OpenAPI document built from the CRD's schema the way the API server publishes a
//! CRD (`Published::AsTheApiServer`, see `v2_schema`) or with the types of nullable fields kept
//! (`Published::WithNullableTypes`, stricter), a 404 for the object and the namespace `data`. It
//! answers 404 to /openapi/v3, like a server without field validation (before 1.25), so that a
//! newer kubectl validates on the client too instead of leaving it to the server. Any request
//! that would write is a failure: a dry run must not. A failing test prints what kubectl said and
//! the requests the server saw.

use serde_json::{Map, Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const GROUP: &str = "truthound.io";
const VERSION: &str = "v1alpha1";
const NAMESPACE: &str = "data";
/// What the fake server says it is: a server from before field validation (1.25), as old as
/// Debian bookworm's kubectl.
const SERVER_VERSION: &str = "v1.20.2";

/// The CRD as installed: crds/profilejob.yaml.
fn crd() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/profilejob.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).expect("the CRD is YAML")
}

fn crd_version(crd: &Value) -> &Value {
    crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == VERSION))
        .expect("the CRD serves v1alpha1")
}

/// The kubectl to test with: TH_KUBECTL, else `kubectl` on PATH. Missing is a failure.
fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("TH_KUBECTL").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "TH_KUBECTL={} is not a file: run `export TH_KUBECTL=$(scripts/kubectl.sh)`",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("kubectl"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "kubectl not found (TH_KUBECTL is unset and there is no kubectl on PATH): \
                 run `export TH_KUBECTL=$(scripts/kubectl.sh)`, which installs Debian's \
                 kubernetes-client package when needed"
            )
        })
}

/// `th submit --dry-run ARGS`: the manifest.
fn th_dry_run(args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_th"));
    cmd.args(["submit", "--dry-run"]).args(args);
    for var in [
        "TRUTHOUND_DISTRIBUTED_BACKEND",
        "TH_S3_ENDPOINT",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("KUBECONFIG", "/nonexistent/th-test-kubeconfig");
    let out = cmd.output().expect("th runs");
    assert!(
        out.status.success(),
        "th submit --dry-run {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

// ---- the fake API server -----------------------------------------------------------------------

/// A minimal HTTP/1.1 server on 127.0.0.1 with the CRD installed: one request per connection
/// (`Connection: close`), each connection on a thread of its own (kubectl discovers in parallel).
/// It serves until the test process ends. `log` has one line per request, for failure messages.
struct FakeApi {
    server: String,
    log: Arc<Mutex<Vec<String>>>,
}

struct Response {
    code: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Response {
    fn json(code: u16, body: Value) -> Response {
        Response {
            code,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
        }
    }

    fn not_found(what: &str) -> Response {
        Response::json(
            404,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": format!("{what} not found"), "reason": "NotFound", "code": 404}),
        )
    }
}

impl FakeApi {
    fn start(published: Published) -> FakeApi {
        let crd = crd();
        let routes = Arc::new(Routes::new(&crd, published));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (routes, seen) = (routes.clone(), seen.clone());
                std::thread::spawn(move || serve(stream, &routes, &seen));
            }
        });
        FakeApi { server, log }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// What the server saw, for a failure message.
    fn seen(&self) -> String {
        let lines = self.requests();
        if lines.is_empty() {
            "the fake API server saw no request".into()
        } else {
            format!("the fake API server saw:\n  {}", lines.join("\n  "))
        }
    }
}

fn serve(stream: TcpStream, routes: &Routes, log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let (mut length, mut accept) = (0, String::new());
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() {
            return;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "accept" => accept = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let path = target.split('?').next().unwrap_or("");
    let response = if method == "GET" {
        routes.get(path)
    } else {
        Response::json(
            405,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 405,
                   "reason": "MethodNotAllowed", "message": format!("{method} in a dry run")}),
        )
    };
    log.lock().unwrap().push(format!(
        "{method} {target} (Accept: {accept}) -> {} {} bytes{}",
        response.code,
        response.body.len(),
        if body.is_empty() {
            String::new()
        } else {
            format!(", request body: {}", String::from_utf8_lossy(&body))
        }
    ));
    let mut stream = &stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.code,
        if response.code == 200 { "OK" } else { "Error" },
        response.content_type,
        response.body.len()
    );
    let _ = stream.write_all(&response.body);
    let _ = stream.flush();
}

/// The answers of an API server with the CRD installed, built from the CRD.
struct Routes {
    api_group_list: Value,
    resource_list: Value,
    openapi_v2: Vec<u8>,
    objects: String,
}

impl Routes {
    fn new(crd: &Value, published: Published) -> Routes {
        let names = &crd["spec"]["names"];
        assert_eq!(crd["spec"]["group"], GROUP);
        let plural = names["plural"].as_str().unwrap();
        let kind = names["kind"].as_str().unwrap();
        let namespaced = crd["spec"]["scope"] == "Namespaced";
        let group_version = format!("{GROUP}/{VERSION}");
        let mut resources = vec![json!({
            "name": plural,
            "singularName": names["singular"],
            "namespaced": namespaced,
            "kind": kind,
            "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
            "shortNames": names["shortNames"],
            "categories": names["categories"],
        })];
        if crd_version(crd)["subresources"].get("status").is_some() {
            resources.push(json!({"name": format!("{plural}/status"), "singularName": "",
                                  "namespaced": namespaced, "kind": kind, "verbs": ["get", "patch", "update"]}));
        }
        Routes {
            api_group_list: json!({
                "kind": "APIGroupList", "apiVersion": "v1",
                "groups": [{"name": GROUP,
                            "versions": [{"groupVersion": group_version, "version": VERSION}],
                            "preferredVersion": {"groupVersion": group_version, "version": VERSION}}],
            }),
            resource_list: json!({"kind": "APIResourceList", "apiVersion": "v1",
                                  "groupVersion": group_version, "resources": resources}),
            openapi_v2: openapi_v2_document(crd, published),
            objects: if namespaced {
                format!("/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{plural}/")
            } else {
                format!("/apis/{GROUP}/{VERSION}/{plural}/")
            },
        }
    }

    fn get(&self, path: &str) -> Response {
        match path {
            "/version" => Response::json(
                200,
                json!({"major": "1", "minor": "20", "gitVersion": SERVER_VERSION,
                       "gitCommit": "faecb196815e248d3ecfb03c680a4507229c2a56", "gitTreeState": "clean",
                       "buildDate": "2021-01-13T13:20:00Z", "goVersion": "go1.15.5",
                       "compiler": "gc", "platform": "linux/amd64"}),
            ),
            "/api" => Response::json(
                200,
                json!({"kind": "APIVersions", "versions": ["v1"],
                       "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
            ),
            "/api/v1" => Response::json(
                200,
                json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                    {"name": "namespaces", "singularName": "namespace", "namespaced": false, "kind": "Namespace",
                     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"], "shortNames": ["ns"]}]}),
            ),
            p if p == format!("/api/v1/namespaces/{NAMESPACE}") => Response::json(
                200,
                json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": NAMESPACE},
                       "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
            ),
            "/apis" => Response::json(200, self.api_group_list.clone()),
            p if p == format!("/apis/{GROUP}/{VERSION}") => {
                Response::json(200, self.resource_list.clone())
            }
            "/openapi/v2" => Response {
                code: 200,
                // Not the media type asked for: client-go refuses a Content-Type that Go's mime
                // package cannot parse, as it cannot the `@` in that one.
                content_type: "application/octet-stream",
                body: self.openapi_v2.clone(),
            },
            // No OpenAPI v3, so no field validation on the server: kubectl validates itself.
            "/openapi/v3" => Response::not_found(path),
            p if p.starts_with(&self.objects) => Response::not_found(&format!(
                "profilejobs.{GROUP} \"{}\"",
                &p[self.objects.len()..]
            )),
            p => Response::not_found(p),
        }
    }
}

// ---- the OpenAPI v2 document -------------------------------------------------------------------

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// How the CRD's schema is published to kubectl.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Published {
    /// As the API server does (`v2_schema`): what `kubectl apply --dry-run=client` checks
    /// against a real cluster.
    AsTheApiServer,
    /// The same, but nullable fields keep their type, properties and items: kubectl then checks
    /// the type of every field th writes, nullable ones included (`partitions`, `sampling`, ...).
    /// Stricter than a real cluster in one way only: it refuses an explicit `null` in a nullable
    /// field, and th writes none.
    WithNullableTypes,
}

/// A CRD's structural schema as the API server publishes it in OpenAPI v2 for kubectl
/// (apiextensions-apiserver, `ToStructuralOpenAPIV2`): v2 cannot say `nullable`, so a nullable
/// field loses its type, properties and items (and is no longer required); a field that
/// preserves unknown fields loses its properties and items, and its type if `object`; an array
/// without items loses its type. Kept: what kubectl's validation reads (type, format, properties,
/// items, additionalProperties, required); value validations (enum, minimum, pattern, CEL) are the
/// server's, not kubectl's. `Published::WithNullableTypes` skips the nullable rules.
fn v2_schema(s: &Value, published: Published) -> Value {
    let mut out = Map::new();
    let as_the_server = published == Published::AsTheApiServer;
    let nullable = as_the_server && s["nullable"] == true;
    let preserve = s["x-kubernetes-preserve-unknown-fields"] == true;
    let mut ty = if nullable { None } else { s["type"].as_str() };
    let keep_children = !nullable && !preserve;
    if (ty == Some("array") && (s.get("items").is_none() || !keep_children))
        || (preserve && ty == Some("object"))
    {
        ty = None;
    }
    if let Some(ty) = ty {
        out.insert("type".into(), ty.into());
    }
    if let Some(format) = s.get("format") {
        out.insert("format".into(), format.clone());
    }
    if keep_children {
        if let Some(props) = s["properties"].as_object() {
            let props: Map<String, Value> = props
                .iter()
                .map(|(k, v)| (k.clone(), v2_schema(v, published)))
                .collect();
            out.insert("properties".into(), props.into());
        }
        if let Some(items) = s.get("items") {
            out.insert("items".into(), v2_schema(items, published));
        }
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            out.insert("additionalProperties".into(), (*b).into());
        }
        Some(ap) => {
            out.insert("additionalProperties".into(), v2_schema(ap, published));
        }
        None => {}
    }
    let nullable_values = as_the_server && s["additionalProperties"]["nullable"] == true;
    if let Some(required) = s["required"].as_array().filter(|_| !nullable_values) {
        let required: Vec<Value> = required
            .iter()
            .filter(|f| {
                !as_the_server || s["properties"][f.as_str().unwrap_or("")]["nullable"] != true
            })
            .cloned()
            .collect();
        if !required.is_empty() {
            out.insert("required".into(), required.into());
        }
    }
    Value::Object(out)
}

/// The definitions of the API server's /openapi/v2 for the CRD: the kind's schema with the
/// apiVersion, kind and metadata the server adds, tagged with its group, version and kind, and
/// ObjectMeta (its fields as v2 types).
fn openapi_v2_definitions(crd: &Value, published: Published) -> Vec<(String, Value)> {
    let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
    let mut schema = v2_schema(&crd_version(crd)["schema"]["openAPIV3Schema"], published);
    let props = schema["properties"].as_object_mut().expect("properties");
    props.insert("apiVersion".into(), json!({"type": "string"}));
    props.insert("kind".into(), json!({"type": "string"}));
    props.insert(
        "metadata".into(),
        json!({"$ref": format!("#/definitions/{OBJECT_META}")}),
    );
    schema["x-kubernetes-group-version-kind"] =
        format!("- group: {GROUP}\n  kind: {kind}\n  version: {VERSION}\n").into();
    let reversed: Vec<&str> = GROUP.rsplit('.').collect();
    let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let objects = json!({"type": "array", "items": {"type": "object"}});
    let object_meta = json!({"type": "object", "properties": {
        "annotations": string_map, "creationTimestamp": {"type": "string", "format": "date-time"},
        "deletionGracePeriodSeconds": {"type": "integer", "format": "int64"},
        "deletionTimestamp": {"type": "string", "format": "date-time"}, "finalizers": strings,
        "generateName": {"type": "string"}, "generation": {"type": "integer", "format": "int64"},
        "labels": string_map, "managedFields": objects, "name": {"type": "string"},
        "namespace": {"type": "string"}, "ownerReferences": objects,
        "resourceVersion": {"type": "string"}, "selfLink": {"type": "string"}, "uid": {"type": "string"},
    }});
    vec![
        (OBJECT_META.into(), object_meta),
        (format!("{}.{VERSION}.{kind}", reversed.join(".")), schema),
    ]
}

/// The protobuf encoding (gnostic's openapi_v2.Document, which kubectl asks for and parses) of
/// a document with the CRD's definitions and no paths.
fn openapi_v2_document(crd: &Value, published: Published) -> Vec<u8> {
    let mut info = Vec::new();
    pb_bytes(&mut info, 1, b"Kubernetes"); // title
    pb_bytes(&mut info, 2, SERVER_VERSION.as_bytes()); // version
    let mut definitions = Vec::new();
    for (name, schema) in openapi_v2_definitions(crd, published) {
        pb_bytes(&mut definitions, 1, &pb_named_schema(&name, &schema)); // additional_properties
    }
    let mut doc = Vec::new();
    pb_bytes(&mut doc, 1, b"2.0"); // swagger
    pb_bytes(&mut doc, 2, &info);
    pb_bytes(&mut doc, 9, &definitions);
    doc
}

/// gnostic's NamedSchema { name = 1; value = 2 }.
fn pb_named_schema(name: &str, schema: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    pb_bytes(&mut out, 1, name.as_bytes());
    pb_bytes(&mut out, 2, &pb_schema(schema));
    out
}

/// gnostic's openapi_v2.Schema, the fields `v2_schema` keeps.
fn pb_schema(s: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(r) = s["$ref"].as_str() {
        pb_bytes(&mut out, 1, r.as_bytes()); // _ref
    }
    if let Some(f) = s["format"].as_str() {
        pb_bytes(&mut out, 2, f.as_bytes());
    }
    for r in s["required"].as_array().into_iter().flatten() {
        pb_bytes(&mut out, 19, r.as_str().unwrap().as_bytes());
    }
    match &s["additionalProperties"] {
        Value::Null => {}
        Value::Bool(b) => {
            // AdditionalPropertiesItem { oneof { Schema schema = 1; bool boolean = 2; } }
            let mut item = Vec::new();
            pb_varint(&mut item, 2 << 3);
            pb_varint(&mut item, u64::from(*b));
            pb_bytes(&mut out, 21, &item);
        }
        ap => {
            let mut item = Vec::new();
            pb_bytes(&mut item, 1, &pb_schema(ap));
            pb_bytes(&mut out, 21, &item);
        }
    }
    if let Some(t) = s["type"].as_str() {
        let mut type_item = Vec::new(); // TypeItem { repeated string value = 1; }
        pb_bytes(&mut type_item, 1, t.as_bytes());
        pb_bytes(&mut out, 22, &type_item);
    }
    if s.get("items").is_some() {
        let mut items = Vec::new(); // ItemsItem { repeated Schema schema = 1; }
        pb_bytes(&mut items, 1, &pb_schema(&s["items"]));
        pb_bytes(&mut out, 23, &items);
    }
    if let Some(props) = s["properties"].as_object() {
        let mut properties = Vec::new(); // Properties { repeated NamedSchema additional_properties = 1; }
        for (name, schema) in props {
            pb_bytes(&mut properties, 1, &pb_named_schema(name, schema));
        }
        pb_bytes(&mut out, 25, &properties);
    }
    if let Some(gvk) = s["x-kubernetes-group-version-kind"].as_str() {
        // vendor_extension = 31: NamedAny { name = 1; Any value = 2 }, Any { string yaml = 2; }
        let mut any = Vec::new();
        pb_bytes(&mut any, 2, gvk.as_bytes());
        let mut named = Vec::new();
        pb_bytes(&mut named, 1, b"x-kubernetes-group-version-kind");
        pb_bytes(&mut named, 2, &any);
        pb_bytes(&mut out, 31, &named);
    }
    out
}

fn pb_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (string, bytes or message).
fn pb_bytes(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    pb_varint(out, (field << 3) | 2);
    pb_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

// ---- kubectl -----------------------------------------------------------------------------------

/// kubectl with a kubeconfig for the fake server, no cache shared with anything else, and no
/// proxy between them.
struct Kubectl {
    bin: PathBuf,
    dir: tempfile::TempDir,
    api: FakeApi,
}

impl Kubectl {
    fn new(published: Published) -> Kubectl {
        let bin = kubectl();
        let dir = tempfile::tempdir().unwrap();
        let api = FakeApi::start(published);
        std::fs::write(
            dir.path().join("kubeconfig"),
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
                 clusters:\n- name: fake\n  cluster:\n    server: {}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
                 users:\n- name: fake\n  user:\n    token: t0ken\n",
                api.server
            ),
        )
        .unwrap();
        let version = Command::new(&bin).args(["version", "--client"]).output();
        eprintln!(
            "kubectl: {} ({}), fake API server: {}",
            bin.display(),
            version
                .map(|o| String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string())
                .unwrap_or_else(|e| e.to_string()),
            api.server
        );
        Kubectl { bin, dir, api }
    }

    /// `kubectl apply --dry-run=client -f FILE -n data` on `manifest`.
    fn apply(&self, file_name: &str, manifest: &str) -> Output {
        let file = self.dir.path().join(file_name);
        std::fs::write(&file, manifest).unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args(["apply", "--dry-run=client", "-f"])
            .arg(&file)
            .args(["-n", NAMESPACE, "--cache-dir"])
            .arg(self.dir.path().join("cache"))
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("HOME", self.dir.path())
            .env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1");
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
            "KUBECTL_EXTERNAL_DIFF",
        ] {
            cmd.env_remove(var);
        }
        let t0 = Instant::now();
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.display()));
        eprintln!(
            "kubectl apply --dry-run=client -f {file_name}: {} in {:.2}s\n  stdout: {}\n  stderr: {}",
            out.status,
            t0.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end(),
        );
        out
    }

    /// A failure message: what kubectl printed and what the server saw.
    fn explain(&self, out: &Output, manifest: &str) -> String {
        format!(
            "kubectl ({}) exited with {:?}\nstdout: {}\nstderr: {}\nmanifest:\n{manifest}\n{}",
            self.bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.api.seen()
        )
    }

    /// kubectl accepts `manifest`; returns its stdout.
    fn accepts(&self, manifest: &str) -> String {
        let out = self.apply("accepted.yaml", manifest);
        assert!(out.status.success(), "{}", self.explain(&out, manifest));
        self.no_writes(manifest, &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// kubectl refuses `manifest` with a message containing every one of `want`.
    fn rejects(&self, manifest: &str, want: &[&str]) {
        let out = self.apply("rejected.yaml", manifest);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}", self.explain(&out, manifest));
        for w in want {
            assert!(
                err.contains(w),
                "want {w:?}\n{}",
                self.explain(&out, manifest)
            );
        }
        self.no_writes(manifest, &out);
    }

    fn no_writes(&self, manifest: &str, out: &Output) {
        let writes: Vec<String> = self
            .api
            .requests()
            .into_iter()
            .filter(|r| !r.starts_with("GET "))
            .collect();
        assert!(
            writes.is_empty(),
            "a dry run wrote: {writes:?}\n{}",
            self.explain(out, manifest)
        );
    }

    /// kubectl fetched the OpenAPI document, i.e. it validated the object against the schema.
    fn validated(&self) -> bool {
        self.api
            .requests()
            .iter()
            .any(|r| r.starts_with("GET /openapi/v2") && r.contains("-> 200"))
    }
}

/// What the server saw, on stderr: shown when a test fails (or with --nocapture).
impl Drop for Kubectl {
    fn drop(&mut self) {
        eprintln!("{}", self.api.seen());
    }
}

fn manifest_name(manifest: &str) -> String {
    let value: Value = serde_yaml::from_str(manifest).expect("YAML");
    value["metadata"]["name"]
        .as_str()
        .expect("metadata.name")
        .to_string()
}

#[test]
fn th_submit_dry_run_output_applies_with_kubectl() {
    let brief = th_dry_run(&[
        "s3://lake/events/",
        "--output",
        "s3://lake/profiles/events.json",
        "--partitions",
        "8",
        "--strategy",
        "hash",
        "--hash-column",
        "user_id",
        "--sample",
        "0.1",
    ]);
    let name = manifest_name(&brief);
    // Every field th can write, namespace and labels included.
    let full = th_dry_run(&[
        "s3://lake/events/*.parquet",
        "--output",
        "s3://lake/profiles/events.json",
        "--name",
        "events-by-user",
        "-n",
        NAMESPACE,
        "--format",
        "parquet",
        "--columns",
        "id,email,user_id",
        "--strategy",
        "hybrid",
        "--row-partitions",
        "8",
        "--column-partitions",
        "2",
        "--top-k",
        "20",
        "--histogram-bins",
        "30",
        "--exact-distinct-limit",
        "5000",
        "--no-patterns",
        "--no-duplicates",
        "--sample",
        "10%",
        "--sample-seed",
        "7",
        "--endpoint",
        "http://minio.minio:9000",
        "--region",
        "us-east-1",
        "--allow-http",
        "--storage-option",
        "aws_skip_signature=true",
        "--credentials-secret",
        "lake-credentials",
        "--backend",
        "auto",
        "--scheduler",
        "tcp://dask-scheduler.dask:8786",
        "--parallelism",
        "4",
        "--max-failed-tasks",
        "2",
        "--retries",
        "5",
        "--deadline",
        "2h",
        "--ttl",
        "1d",
        "--label",
        "kueue.x-k8s.io/queue-name=team-a",
    ]);
    for published in [Published::AsTheApiServer, Published::WithNullableTypes] {
        let kubectl = Kubectl::new(published);
        assert_eq!(
            kubectl.accepts(&brief),
            format!("profilejob.{GROUP}/{name} created (dry run)\n"),
            "{published:?}"
        );
        let seen = kubectl.api.seen();
        assert!(kubectl.validated(), "no schema validation\n{seen}");
        assert!(
            seen.contains(&format!(
                "GET /apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/profilejobs/{name}"
            )),
            "kubectl did not look the object up in namespace {NAMESPACE}\n{seen}"
        );
        assert_eq!(
            kubectl.accepts(&full),
            format!("profilejob.{GROUP}/events-by-user created (dry run)\n"),
            "{published:?}"
        );
    }
}

#[test]
fn kubectl_rejects_a_manifest_the_crd_does_not_allow() {
    let good = th_dry_run(&[
        "s3://lake/events/",
        "--output",
        "s3://lake/profiles/events.json",
        "--partitions",
        "8",
    ]);
    let edit = |from: &str, to: &str| {
        assert!(good.contains(from), "{from:?} is not in\n{good}");
        good.replace(from, to)
    };
    let kind = "io.truthound.v1alpha1.ProfileJob";
    let cases = [
        // A field the CRD does not have.
        (
            edit("\n    partitions: 8\n", "\n    partitionCount: 8\n"),
            vec![
                "ValidationError(ProfileJob.spec.partitioning)".to_string(),
                format!("unknown field \"partitionCount\" in {kind}.spec.partitioning"),
            ],
        ),
        // Values of the wrong type. (kubectl takes any scalar for a string, where the API server
        // does not, so `uri: 42` is not one of them.)
        (
            edit("\n  suspend: false\n", "\n  suspend: \"no\"\n"),
            vec![format!(
                "ValidationError(ProfileJob.spec.suspend): invalid type for {kind}.spec.suspend: \
                 got \"string\", expected \"boolean\""
            )],
        ),
        (
            edit(
                "\n  output:\n    uri: s3://lake/profiles/events.json\n",
                "\n  output: s3://lake/profiles/events.json\n",
            ),
            vec![format!(
                "ValidationError(ProfileJob.spec.output): invalid type for {kind}.spec.output: \
                 got \"string\", expected \"map\""
            )],
        ),
        // A required field missing.
        (
            edit(
                "\n    uri: s3://lake/profiles/events.json\n",
                "\n    options: {}\n",
            ),
            vec![format!(
                "ValidationError(ProfileJob.spec.output): missing required field \"uri\" in \
                 {kind}.spec.output"
            )],
        ),
    ];
    let as_the_server = Kubectl::new(Published::AsTheApiServer);
    let typed = Kubectl::new(Published::WithNullableTypes);
    for kubectl in [&as_the_server, &typed] {
        kubectl.accepts(&good);
        assert!(kubectl.validated(), "{}", kubectl.api.seen());
        for (manifest, want) in &cases {
            let want: Vec<&str> = want.iter().map(String::as_str).collect();
            kubectl.rejects(manifest, &want);
        }
    }
    // `partitions: eight` is refused only with the nullable fields typed: `partitions` is
    // nullable in the CRD, and the API server publishes a nullable field to kubectl without a type
    // (OpenAPI v2 has no null; see `v2_schema`), so against a real cluster kubectl lets any value
    // through there on the client (seen with kubectl 1.20 and 1.32) and it is the API server that
    // refuses it, when the object is sent.
    typed.rejects(
        &edit("\n    partitions: 8\n", "\n    partitions: eight\n"),
        &[&format!(
            "ValidationError(ProfileJob.spec.partitioning.partitions): invalid type for \
             {kind}.spec.partitioning.partitions: got \"string\", expected \"integer\""
        )],
    );
}
