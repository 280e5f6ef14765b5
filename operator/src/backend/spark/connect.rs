//! A minimal Spark Connect client: run a SQL query and collect its Arrow batches; interrupt an
//! operation. Only the messages and fields used are declared (hand-written prost messages with
//! the tags of Spark's `spark/connect/base.proto` and `relations.proto`), so there is no protoc
//! and no generated code; unknown fields in the answers are skipped by prost.
//!
//! URLs follow Spark Connect's form: `sc://HOST[:PORT][/;param=value;...]`, port 15002 by
//! default, with the parameters `token` (sent as `authorization: Bearer ...`), `use_ssl`
//! (`true`: TLS with the system's roots) and `user_id`.

use super::SparkError;
use arrow::record_batch::RecordBatch;
use prost::Message;
use std::time::Duration;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use truthound_profile::error::error_chain;

/// Spark Connect's default port.
pub const DEFAULT_PORT: u16 = 15002;

/// The largest message taken from the server (Spark sends Arrow batches of at most 4 MiB by
/// default, `spark.connect.grpc.arrow.maxBatchSize`): the server is the spec's to choose, and
/// tonic would otherwise buffer whatever length a message header claims.
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// The largest message sent (a query: its text grows with the plan's columns).
const MAX_REQUEST: usize = 256 * 1024 * 1024;
/// The most Arrow data of one query's answer (a task's aggregates, or a column's exact value
/// counts: at most the exact limit + 1 rows).
pub const MAX_ANSWER: usize = 256 * 1024 * 1024;

/// A parsed `sc://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectUrl {
    pub host: String,
    pub port: u16,
    pub token: Option<String>,
    pub use_ssl: bool,
    pub user_id: Option<String>,
}

impl std::fmt::Debug for ConnectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

/// The URL as it is shown in messages: without the token.
impl std::fmt::Display for ConnectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sc://{}:{}", self.host, self.port)?;
        if self.use_ssl {
            f.write_str("/;use_ssl=true")?;
        }
        Ok(())
    }
}

/// When `given` is a Spark master URL (the ancestor's `spark://HOST:7077`, `local[*]`, `yarn`,
/// `k8s://...`) rather than a Spark Connect URL: what to start instead, and where.
pub fn master_url_error(given: &str) -> Option<String> {
    let given = given.trim();
    let master = ["spark://", "local", "yarn", "k8s://", "mesos://"]
        .iter()
        .any(|p| given.starts_with(p));
    master.then(|| {
        format!(
            "`{m}` is a Spark master URL, and the spark backend talks to Spark Connect, not to a \
             master: start a Spark Connect server next to the cluster (from the Spark \
             distribution: sbin/start-connect-server.sh --master {m}, which listens on port \
             15002) and give its address, sc://HOST:15002",
            m = redact(given)
        )
    })
}

impl ConnectUrl {
    pub fn parse(url: &str) -> Result<ConnectUrl, SparkError> {
        let bad = |why: &str| {
            SparkError::Invalid(format!(
                "`{}` is not a Spark Connect URL ({why}); expected sc://HOST[:PORT][/;token=...;use_ssl=true]",
                redact(url)
            ))
        };
        let given = url.trim();
        if let Some(why) = master_url_error(given) {
            return Err(SparkError::Invalid(why));
        }
        let rest = given
            .strip_prefix("sc://")
            .ok_or_else(|| bad("it must start with sc://"))?;
        let (authority, params) = match rest.split_once('/') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 literal in brackets keeps its colons.
            Some((h, p)) if !p.contains(']') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| bad(&format!("`{p}` is not a port")))?,
            ),
            _ => (authority, DEFAULT_PORT),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let mut out = ConnectUrl {
            host: host.to_string(),
            port,
            token: None,
            use_ssl: false,
            user_id: None,
        };
        for p in params.split(';').filter(|p| !p.trim().is_empty()) {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| bad(&format!("parameter `{p}` is not key=value")))?;
            // Keys are matched whatever their case, as `redact` hides them.
            match k.trim().to_ascii_lowercase().as_str() {
                "token" => out.token = Some(v.to_string()),
                "use_ssl" => out.use_ssl = v.eq_ignore_ascii_case("true"),
                "user_id" => out.user_id = Some(v.to_string()),
                // Other parameters of the format (user_agent, session_id) do not change what is
                // computed; they are accepted and ignored.
                other => tracing::debug!(parameter = other, "Spark Connect URL parameter ignored"),
            }
        }
        Ok(out)
    }

    fn endpoint(&self) -> String {
        let scheme = if self.use_ssl { "https" } else { "http" };
        format!("{scheme}://{}:{}", self.host, self.port)
    }
}

/// Any text with the value of every Spark Connect `token` parameter hidden: `;token=abc` (or
/// `/token=abc`, a first parameter without its `;`) becomes `;token=***`, whatever the key's
/// case and wherever the URL is in the text (a message, a condition, an event). The value ends
/// at the next `;`, whitespace, quote or backtick. The one function behind every place an
/// address is shown: status, events, conditions, logs and errors.
pub fn redact(text: &str) -> String {
    // ASCII lowercasing keeps every byte offset, so indices into `lower` are valid in `text`.
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut from) = (0, 0);
    while let Some(found) = lower[from..].find("token") {
        let key = from + found;
        from = key + "token".len();
        let before = lower[..key].trim_end();
        if !(before.ends_with(';') || before.ends_with('/')) {
            continue;
        }
        let rest = &lower[from..];
        let eq = from + (rest.len() - rest.trim_start().len());
        if !lower[eq..].starts_with('=') {
            continue;
        }
        let after_eq = &lower[eq + 1..];
        let value = eq + 1 + (after_eq.len() - after_eq.trim_start().len());
        let end = lower[value..]
            .find(|c: char| c == ';' || c.is_whitespace() || matches!(c, '`' | '\'' | '"'))
            .map_or(lower.len(), |i| value + i);
        out.push_str(&text[copied..eq + 1]);
        out.push_str("***");
        copied = end;
        from = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// `url` with the token parameter `token` added (after any the URL has, so it wins over a
/// token written in the URL itself). Only ever held in memory, to connect.
pub fn with_token(url: &str, token: &str) -> String {
    let url = url.trim();
    let has_params = url
        .strip_prefix("sc://")
        .is_some_and(|rest| rest.contains('/'));
    if has_params {
        format!("{url};token={token}")
    } else {
        format!("{url}/;token={token}")
    }
}

// ---- the messages -----------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
pub struct UserContext {
    #[prost(string, tag = "1")]
    pub user_id: String,
    #[prost(string, tag = "2")]
    pub user_name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sql {
    #[prost(string, tag = "1")]
    pub query: String,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum RelType {
    #[prost(message, tag = "10")]
    Sql(Sql),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Relation {
    #[prost(oneof = "RelType", tags = "10")]
    pub rel_type: Option<RelType>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum OpType {
    #[prost(message, tag = "1")]
    Root(Relation),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Plan {
    #[prost(oneof = "OpType", tags = "1")]
    pub op_type: Option<OpType>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecutePlanRequest {
    #[prost(string, tag = "1")]
    pub session_id: String,
    #[prost(message, optional, tag = "2")]
    pub user_context: Option<UserContext>,
    #[prost(message, optional, tag = "3")]
    pub plan: Option<Plan>,
    #[prost(string, optional, tag = "4")]
    pub client_type: Option<String>,
    #[prost(string, optional, tag = "6")]
    pub operation_id: Option<String>,
    #[prost(string, repeated, tag = "7")]
    pub tags: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrowBatch {
    #[prost(int64, tag = "1")]
    pub row_count: i64,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResultComplete {}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ResponseType {
    #[prost(message, tag = "2")]
    ArrowBatch(ArrowBatch),
    #[prost(message, tag = "14")]
    ResultComplete(ResultComplete),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecutePlanResponse {
    #[prost(string, tag = "1")]
    pub session_id: String,
    #[prost(string, tag = "12")]
    pub operation_id: String,
    #[prost(oneof = "ResponseType", tags = "2, 14")]
    pub response_type: Option<ResponseType>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Interrupt {
    #[prost(string, tag = "6")]
    OperationId(String),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InterruptRequest {
    #[prost(string, tag = "1")]
    pub session_id: String,
    #[prost(message, optional, tag = "2")]
    pub user_context: Option<UserContext>,
    #[prost(string, optional, tag = "3")]
    pub client_type: Option<String>,
    /// 3: INTERRUPT_TYPE_OPERATION_ID.
    #[prost(int32, tag = "4")]
    pub interrupt_type: i32,
    #[prost(oneof = "Interrupt", tags = "6")]
    pub interrupt: Option<Interrupt>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InterruptResponse {
    #[prost(string, tag = "1")]
    pub session_id: String,
    #[prost(string, repeated, tag = "2")]
    pub interrupted_ids: Vec<String>,
}

/// `google.rpc.Status`, as gRPC's `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoAny {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.ErrorInfo`: Spark puts the id of the error's details in `metadata["errorId"]`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorInfo {
    #[prost(string, tag = "1")]
    pub reason: String,
    #[prost(string, tag = "2")]
    pub domain: String,
    #[prost(map = "string, string", tag = "3")]
    pub metadata: std::collections::HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchErrorDetailsRequest {
    #[prost(string, tag = "1")]
    pub session_id: String,
    #[prost(message, optional, tag = "2")]
    pub user_context: Option<UserContext>,
    #[prost(string, tag = "3")]
    pub error_id: String,
    #[prost(string, optional, tag = "4")]
    pub client_type: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorDetail {
    #[prost(string, repeated, tag = "1")]
    pub error_type_hierarchy: Vec<String>,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(int32, optional, tag = "4")]
    pub cause_idx: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchErrorDetailsResponse {
    #[prost(int32, optional, tag = "1")]
    pub root_error_idx: Option<i32>,
    #[prost(message, repeated, tag = "2")]
    pub errors: Vec<ErrorDetail>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReleaseSessionRequest {
    #[prost(string, tag = "1")]
    pub session_id: String,
    #[prost(message, optional, tag = "2")]
    pub user_context: Option<UserContext>,
    #[prost(string, optional, tag = "3")]
    pub client_type: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReleaseSessionResponse {
    #[prost(string, tag = "1")]
    pub session_id: String,
}

const RELEASE_SESSION: &str = "/spark.connect.SparkConnectService/ReleaseSession";
const FETCH_ERROR_DETAILS: &str = "/spark.connect.SparkConnectService/FetchErrorDetails";
const EXECUTE_PLAN: &str = "/spark.connect.SparkConnectService/ExecutePlan";
const INTERRUPT: &str = "/spark.connect.SparkConnectService/Interrupt";
const CLIENT_TYPE: &str = concat!("truthound-operator/", env!("CARGO_PKG_VERSION"));

// ---- the client -------------------------------------------------------------------------------

/// A session on a Spark Connect server. Cheap to clone: clones share the connection and the
/// session.
#[derive(Clone)]
pub struct SparkConnect {
    url: ConnectUrl,
    channel: Channel,
    session_id: String,
    user_id: String,
}

/// A fresh UUID-formatted id (Spark Connect wants UUIDs for sessions and operations): not a
/// cryptographic id, only unique, from the time, the process and a counter.
pub fn new_uuid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!(
        "{nanos}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let v = xxhash_rust::xxh3::xxh3_128(seed.as_bytes());
    // Version 4, variant 1 bits, so that servers that check the form accept it.
    let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let h = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl SparkConnect {
    /// Opens a connection to `url` (fails with [`SparkError::Unreachable`] when nothing answers
    /// within `timeout`) and starts a session.
    pub async fn connect(url: &str, timeout: Duration) -> Result<SparkConnect, SparkError> {
        let url = ConnectUrl::parse(url)?;
        let unreachable = |detail: String| SparkError::Unreachable {
            url: url.to_string(),
            detail,
        };
        let mut endpoint = Endpoint::from_shared(url.endpoint())
            .map_err(|e| SparkError::Invalid(format!("{url}: {e}")))?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if url.use_ssl {
            endpoint = endpoint
                .tls_config(tonic::transport::ClientTlsConfig::new().with_native_roots())
                .map_err(|e| SparkError::Invalid(format!("{url}: TLS: {e}")))?;
        }
        let channel = tokio::time::timeout(timeout, endpoint.connect())
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", timeout.as_secs())))?
            .map_err(|e| unreachable(error_chain(&e)))?;
        let user_id = url
            .user_id
            .clone()
            .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "truthound".into());
        Ok(SparkConnect {
            url,
            channel,
            session_id: new_uuid(),
            user_id,
        })
    }

    /// The URL, without the token.
    pub fn url(&self) -> String {
        self.url.to_string()
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, SparkError> {
        let mut req = tonic::Request::new(message);
        if let Some(token) = &self.url.token {
            let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                SparkError::Invalid(format!(
                    "{}: the token is not a valid header value",
                    self.url
                ))
            })?;
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }

    fn user_context(&self) -> Option<UserContext> {
        Some(UserContext {
            user_id: self.user_id.clone(),
            user_name: self.user_id.clone(),
        })
    }

    /// Runs `query` as operation `operation_id` and returns its rows.
    pub async fn sql(
        &self,
        query: &str,
        operation_id: &str,
    ) -> Result<Vec<RecordBatch>, SparkError> {
        let request = self.request(ExecutePlanRequest {
            session_id: self.session_id.clone(),
            user_context: self.user_context(),
            plan: Some(Plan {
                op_type: Some(OpType::Root(Relation {
                    rel_type: Some(RelType::Sql(Sql {
                        query: query.to_string(),
                    })),
                })),
            }),
            client_type: Some(CLIENT_TYPE.into()),
            operation_id: Some(operation_id.to_string()),
            tags: Vec::new(),
        })?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_REQUEST);
        grpc.ready().await.map_err(|e| SparkError::Unreachable {
            url: self.url(),
            detail: error_chain(&e),
        })?;
        let codec = tonic_prost::ProstCodec::<ExecutePlanRequest, ExecutePlanResponse>::default();
        let mut stream = match grpc
            .server_streaming(request, PathAndQuery::from_static(EXECUTE_PLAN), codec)
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return Err(self.query_error(s).await),
        };
        let mut batches = Vec::new();
        let mut answer = 0usize;
        loop {
            let msg = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(s) => return Err(self.query_error(s).await),
            };
            if let Some(ResponseType::ArrowBatch(b)) = msg.response_type {
                answer += b.data.len();
                if answer > MAX_ANSWER {
                    return Err(SparkError::Protocol {
                        url: self.url(),
                        detail: format!("the answer is longer than {MAX_ANSWER} bytes"),
                    });
                }
                batches.extend(decode_arrow(&b.data).map_err(|e| SparkError::Protocol {
                    url: self.url(),
                    detail: format!("undecodable Arrow batch: {e}"),
                })?);
            }
        }
        Ok(batches)
    }

    /// Asks the server to stop operation `operation_id` of this session (it fails with a
    /// cancelled status). Returns whether the server knew it.
    pub async fn interrupt(&self, operation_id: &str) -> Result<bool, SparkError> {
        let request = self.request(InterruptRequest {
            session_id: self.session_id.clone(),
            user_context: self.user_context(),
            client_type: Some(CLIENT_TYPE.into()),
            interrupt_type: 3,
            interrupt: Some(Interrupt::OperationId(operation_id.to_string())),
        })?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| SparkError::Unreachable {
            url: self.url(),
            detail: error_chain(&e),
        })?;
        let codec = tonic_prost::ProstCodec::<InterruptRequest, InterruptResponse>::default();
        let answer = grpc
            .unary(request, PathAndQuery::from_static(INTERRUPT), codec)
            .await
            .map_err(|s| self.status_error(s))?
            .into_inner();
        Ok(answer.interrupted_ids.iter().any(|id| id == operation_id))
    }

    /// [`Self::status_error`], with the causes Spark keeps apart (the top error of a failed read
    /// says only which file; its cause says what is wrong with it), fetched by the error's id.
    async fn query_error(&self, s: tonic::Status) -> SparkError {
        let error_id = RpcStatus::decode(s.details()).ok().and_then(|st| {
            st.details.iter().find_map(|d| {
                d.type_url
                    .ends_with("google.rpc.ErrorInfo")
                    .then(|| ErrorInfo::decode(d.value.as_slice()).ok())
                    .flatten()
                    .and_then(|info| info.metadata.get("errorId").cloned())
            })
        });
        let mut err = self.status_error(s);
        if let (SparkError::Query { message, .. }, Some(id)) = (&mut err, error_id) {
            match self.error_causes(&id).await {
                Ok(causes) => {
                    let causes: Vec<String> = causes
                        .into_iter()
                        .map(|c| short_message(&c))
                        .filter(|c| !c.is_empty() && !message.contains(c.as_str()))
                        .collect();
                    if !causes.is_empty() {
                        message
                            .push_str(&format!(" (caused by: {})", causes.join("; caused by: ")));
                    }
                }
                Err(e) => tracing::debug!("cannot fetch the details of Spark error {id}: {e}"),
            }
        }
        err
    }

    /// The messages of the causes of error `id`, outermost first.
    async fn error_causes(&self, id: &str) -> Result<Vec<String>, tonic::Status> {
        let request = tonic::Request::new(FetchErrorDetailsRequest {
            session_id: self.session_id.clone(),
            user_context: self.user_context(),
            error_id: id.to_string(),
            client_type: Some(CLIENT_TYPE.into()),
        });
        let mut request = request;
        if let Some(token) = &self.url.token
            && let Ok(v) = MetadataValue::try_from(format!("Bearer {token}"))
        {
            request.metadata_mut().insert("authorization", v);
        }
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let codec =
            tonic_prost::ProstCodec::<FetchErrorDetailsRequest, FetchErrorDetailsResponse>::default(
            );
        let answer = grpc
            .unary(
                request,
                PathAndQuery::from_static(FETCH_ERROR_DETAILS),
                codec,
            )
            .await?
            .into_inner();
        let mut out = Vec::new();
        let mut at = answer.root_error_idx;
        // The chain is short; the bound guards against a cycle.
        while let Some(i) = at.filter(|_| out.len() < 8) {
            let Some(e) = answer.errors.get(i as usize) else {
                break;
            };
            if Some(i) != answer.root_error_idx {
                out.push(e.message.clone());
            }
            at = e.cause_idx;
        }
        Ok(out)
    }

    /// Ends the session on the server (its temporary views and cached state go with it),
    /// rather than leaving it to the server's idle timeout.
    pub async fn release(&self) -> Result<(), SparkError> {
        let request = self.request(ReleaseSessionRequest {
            session_id: self.session_id.clone(),
            user_context: self.user_context(),
            client_type: Some(CLIENT_TYPE.into()),
        })?;
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| SparkError::Unreachable {
            url: self.url(),
            detail: error_chain(&e),
        })?;
        let codec =
            tonic_prost::ProstCodec::<ReleaseSessionRequest, ReleaseSessionResponse>::default();
        grpc.unary(request, PathAndQuery::from_static(RELEASE_SESSION), codec)
            .await
            .map_err(|s| self.status_error(s))?;
        Ok(())
    }

    /// A gRPC status as an error of this server: transport failures are unreachable or
    /// transient; anything else is Spark's own error, whose text is in the status message.
    fn status_error(&self, s: tonic::Status) -> SparkError {
        use tonic::Code;
        let message = short_message(s.message());
        match s.code() {
            // Not a gRPC server, or the connection dropped: no Spark answered.
            Code::Unavailable | Code::Unknown
                if message.contains("onnect")
                    || message.contains("transport")
                    || message.contains("h2 protocol") =>
            {
                SparkError::Unreachable {
                    url: self.url(),
                    detail: message,
                }
            }
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted => SparkError::Transient {
                url: self.url(),
                detail: format!("{:?}: {message}", s.code()),
            },
            Code::Cancelled => SparkError::Interrupted,
            Code::Unauthenticated | Code::PermissionDenied => SparkError::Query {
                url: self.url(),
                message: format!("{:?}: {message}", s.code()),
                class: QueryFailure::Invalid,
            },
            Code::Unimplemented => SparkError::Protocol {
                url: self.url(),
                detail: format!(
                    "the server does not implement {message} (is it a Spark Connect server?)"
                ),
            },
            _ if message.contains("OPERATION_CANCELED")
                || message.contains("cancelled") && message.contains("nterrupt") =>
            {
                SparkError::Interrupted
            }
            _ => {
                let class = classify(&message);
                let mut message = message;
                if message.contains("UNRESOLVED_ROUTINE")
                    && ["sketch", "approx_top_k"]
                        .iter()
                        .any(|f| message.contains(f))
                {
                    message.push_str(
                        " (the spark backend needs Spark's DataSketches aggregates: Spark 4.1 or later)",
                    );
                }
                SparkError::Query {
                    url: self.url(),
                    class,
                    message,
                }
            }
        }
    }
}

/// What a failed query says about its cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryFailure {
    /// The data is at fault (missing, corrupt, not of the planned schema): exit 65, no retry.
    BadData,
    /// The query or the request is at fault (a function or setting the server lacks): exit 64.
    Invalid,
    /// The cluster failed (an executor lost, out of memory): retried, exit 75.
    Transient,
}

/// Spark's error classes (the `[CLASS]` that starts its messages) sorted by cause.
fn classify(message: &str) -> QueryFailure {
    const TRANSIENT: [&str; 6] = [
        "SPARK_JOB_CANCELLED",
        "ExecutorLostFailure",
        "OutOfMemoryError",
        "FetchFailed",
        "TASK_WRITE_FAILED",
        "Connection reset",
    ];
    const INVALID: [&str; 5] = [
        "UNRESOLVED_ROUTINE",
        "WRONG_NUM_ARGS",
        "PARSE_SYNTAX_ERROR",
        "INVALID_CONF",
        "DATATYPE_MISMATCH",
    ];
    if TRANSIENT.iter().any(|t| message.contains(t)) {
        QueryFailure::Transient
    } else if INVALID.iter().any(|t| message.contains(t)) {
        QueryFailure::Invalid
    } else {
        QueryFailure::BadData
    }
}

/// Spark's message without the Java stack trace some errors carry (its first frame, the
/// exception's name, stays).
fn short_message(m: &str) -> String {
    let m = m.trim();
    let cut = m.find("\n\tat ").map_or(m.len(), |i| i);
    let mut out = m[..cut].trim_end().to_string();
    if cut < m.len() {
        out.push_str(" (Java stack trace left out)");
    }
    out
}

fn decode_arrow(data: &[u8]) -> Result<Vec<RecordBatch>, arrow::error::ArrowError> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(data), None)?;
    reader.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spark_connect_urls() {
        let u = ConnectUrl::parse("sc://127.0.0.1:15003").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.use_ssl),
            ("127.0.0.1", 15003, false)
        );
        let u =
            ConnectUrl::parse("sc://spark.example.com/;token=abc;use_ssl=true;user_id=me").unwrap();
        assert_eq!(u.port, DEFAULT_PORT);
        assert_eq!(u.token.as_deref(), Some("abc"));
        assert!(u.use_ssl);
        assert_eq!(u.user_id.as_deref(), Some("me"));
        // The token never shows in messages.
        assert_eq!(u.to_string(), "sc://spark.example.com:15002/;use_ssl=true");
        for bad in ["http://x:1", "sc://", "sc://h:notaport", "sc://h/;token"] {
            let e = ConnectUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains("not a Spark Connect URL"), "{bad}: {e}");
        }
        // The ancestor's masters: what to start instead, and where.
        for master in [
            "spark://m:7077",
            "local[*]",
            "local",
            "yarn",
            "k8s://https://k:6443",
        ] {
            let e = ConnectUrl::parse(master).unwrap_err().to_string();
            assert!(
                e.contains("Spark master URL")
                    && e.contains("start-connect-server.sh --master")
                    && e.contains("sc://HOST:15002"),
                "{master}: {e}"
            );
        }
        assert_eq!(redact("sc://h/;token=secret;x=1"), "sc://h/;token=***;x=1");
    }

    #[test]
    fn tokens_are_redacted_wherever_they_are() {
        for (text, shown) in [
            // first, middle and last parameter
            ("sc://h:1/;token=s3cr3t", "sc://h:1/;token=***"),
            (
                "sc://h/;token=s3cr3t;use_ssl=true",
                "sc://h/;token=***;use_ssl=true",
            ),
            (
                "sc://h/;user_id=me;token=s3cr3t;use_ssl=true",
                "sc://h/;user_id=me;token=***;use_ssl=true",
            ),
            (
                "sc://h/;use_ssl=true;token=s3cr3t",
                "sc://h/;use_ssl=true;token=***",
            ),
            // any case, spaces, the first parameter without `;`
            ("sc://h/;Token=s3cr3t", "sc://h/;Token=***"),
            ("sc://h/; TOKEN = s3cr3t;x=1", "sc://h/; TOKEN =***;x=1"),
            ("sc://h/token=s3cr3t", "sc://h/token=***"),
            // inside a message, twice
            (
                "cannot reach `sc://a/;token=s3cr3t`: refused; then sc://b/;token=other x",
                "cannot reach `sc://a/;token=***`: refused; then sc://b/;token=*** x",
            ),
            // no token: unchanged
            ("sc://h:15002", "sc://h:15002"),
            (
                "sc://h/;user_id=tokenizer;use_ssl=true",
                "sc://h/;user_id=tokenizer;use_ssl=true",
            ),
            ("the token is missing", "the token is missing"),
            ("", ""),
        ] {
            assert_eq!(redact(text), shown, "{text}");
            assert!(!redact(text).contains("s3cr3t"), "{text}");
        }
        // What is redacted is what the parser takes as the token.
        let u = ConnectUrl::parse("sc://h/;Token=abc").unwrap();
        assert_eq!(u.token.as_deref(), Some("abc"));
    }

    #[test]
    fn a_token_is_added_to_any_url_form_and_wins() {
        for url in [
            "sc://h:1",
            "sc://h:1/",
            "sc://h:1/;use_ssl=false",
            "sc://h:1/;token=old",
        ] {
            let u = ConnectUrl::parse(&with_token(url, "new")).unwrap();
            assert_eq!((u.host.as_str(), u.port), ("h", 1), "{url}");
            assert_eq!(u.token.as_deref(), Some("new"), "{url}");
        }
    }

    #[test]
    fn ids_look_like_uuids_and_differ() {
        let (a, b) = (new_uuid(), new_uuid());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
    }

    #[test]
    fn sorts_spark_errors_by_cause() {
        assert_eq!(
            classify("[FAILED_READ_FILE.NO_HINT] Encountered error while reading file"),
            QueryFailure::BadData
        );
        assert_eq!(
            classify("[UNRESOLVED_ROUTINE] Cannot resolve routine `kll_sketch_agg_bigint`"),
            QueryFailure::Invalid
        );
        assert_eq!(
            classify("Job aborted: ExecutorLostFailure (executor 1 exited)"),
            QueryFailure::Transient
        );
    }
}
