//! The HTTP edge: turns requests into store operations and results into Kubernetes JSON responses.

use crate::errors::ApiError;
use crate::kinds::ResourceKind;
use crate::lifecycle::Subresource;
use crate::routes::{self, ResourcePath, Route};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{PatchKind, PatchRequest, Propagation, Store, WatchFrom, WriteOptions};
use crate::watch::{self, WatchRequest};
use crate::{clock, discovery, table};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Shared server state.
#[derive(Clone)]
pub struct App {
    /// The objects.
    pub store: Arc<Mutex<Store>>,
    /// `host:port` the server is reachable at (for `/api`).
    pub address: String,
    /// Interval between watch bookmarks.
    pub bookmark_interval: Duration,
}

impl App {
    fn store(&self) -> MutexGuard<'_, Store> {
        // A panicked request cannot leave the store in a state later requests must not read.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    typed_response(code, body, "application/json")
}

fn typed_response(code: StatusCode, body: &Value, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn error_response(error: &ApiError) -> Response {
    json_response(
        StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &error.to_status(),
    )
}

/// The single handler behind every path.
pub async fn handle(
    axum::extract::State(app): axum::extract::State<App>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match dispatch(&app, &method, &uri, &headers, &body) {
        Ok(Reply::Json(code, value)) => json_response(code, &value),
        Ok(Reply::Table(value)) => typed_response(StatusCode::OK, &value, table::CONTENT_TYPE),
        Ok(Reply::Text(text)) => Response::new(Body::from(text)),
        Ok(Reply::Watch(rx)) => {
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
            });
            let mut response = Response::new(Body::from_stream(stream));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => error_response(&e),
    }
}

enum Reply {
    Json(StatusCode, Value),
    Table(Value),
    Text(&'static str),
    Watch(tokio::sync::mpsc::Receiver<Bytes>),
}

fn query(uri: &Uri) -> Result<HashMap<String, String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(uri.query().unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    Ok(pairs.into_iter().collect())
}

fn flag(q: &HashMap<String, String>, key: &str) -> bool {
    matches!(q.get(key).map(String::as_str), Some("true" | "1"))
}

fn dispatch(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Reply, ApiError> {
    let route = routes::parse(uri.path()).ok_or_else(|| ApiError::no_route(uri.path()))?;
    let get_only = |reply: Option<Value>| -> Result<Reply, ApiError> {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on {}",
                uri.path()
            )));
        }
        reply
            .map(|v| Reply::Json(StatusCode::OK, v))
            .ok_or_else(|| ApiError::no_route(uri.path()))
    };
    match route {
        Route::Health => Ok(Reply::Text("ok")),
        Route::Version => get_only(Some(discovery::version())),
        Route::CoreVersions => get_only(Some(discovery::core_versions(&app.address))),
        Route::Groups => get_only(Some(discovery::group_list(&app.store().kinds()))),
        Route::Group(g) => get_only(discovery::group(&app.store().kinds(), &g)),
        Route::GroupVersion { group, version } => get_only(discovery::resource_list(
            &app.store().kinds(),
            &group,
            &version,
        )),
        Route::Resource(path) => resource(app, method, uri, headers, body, path),
    }
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.contains("protobuf") {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(json_error) if content_type.contains("yaml") => {
            serde_saphyr::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("invalid YAML body: {e} (as JSON: {json_error})"))
            })
        }
        Err(e) => Err(ApiError::bad_request(format!("invalid JSON body: {e}"))),
    }
}

/// Field manager: `fieldManager`, else the user agent's product name, as upstream defaults it.
fn manager(q: &HashMap<String, String>, headers: &HeaderMap) -> String {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    agent
        .split('/')
        .next()
        .unwrap_or("unknown")
        .trim()
        .to_string()
}

/// The watch a `?watch=true` GET asks for.
fn watch_request(
    q: &HashMap<String, String>,
    path: &ResourcePath,
    kind: ResourceKind,
    labels: LabelSelector,
    mut fields: FieldSelector,
    table: bool,
) -> Result<WatchRequest, ApiError> {
    if let Some(name) = &path.name {
        fields.0.push(("metadata.name".into(), true, name.clone()));
    }
    let initial_events_end = flag(q, "sendInitialEvents");
    let from = match q.get("resourceVersion").map(String::as_str) {
        _ if initial_events_end => WatchFrom::Snapshot,
        None | Some("" | "0") => WatchFrom::Snapshot,
        Some(rv) => WatchFrom::After(
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
        ),
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs);
    Ok(WatchRequest {
        kind,
        namespace: path.namespace.clone(),
        labels,
        fields,
        from,
        initial_events_end,
        bookmarks: flag(q, "allowWatchBookmarks"),
        timeout,
        table,
    })
}

/// The patch format named by the request's content type.
fn patch_kind(headers: &HeaderMap) -> Result<PatchKind, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match content_type.split(';').next().unwrap_or_default().trim() {
        "application/merge-patch+json" => Ok(PatchKind::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
        "application/json-patch+json" => Ok(PatchKind::Json),
        "application/apply-patch+yaml" => Ok(PatchKind::Apply),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn resource(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    path: ResourcePath,
) -> Result<Reply, ApiError> {
    let q = query(uri)?;
    let kind = app
        .store()
        .find_kind(&path.group, &path.version, &path.plural)
        .ok_or_else(|| ApiError::no_route(uri.path()))?;
    if path.namespace.is_some() && !kind.namespaced {
        return Err(ApiError::no_route(uri.path()));
    }
    let namespace = path.namespace.as_deref();
    let sub = match path.subresource.as_deref() {
        None => Subresource::Main,
        Some("status") if kind.status_subresource => Subresource::Status,
        Some("scale") if kind.scale.is_some() => Subresource::Scale,
        Some(_) => return Err(ApiError::no_route(uri.path())),
    };
    // A namespaced object can only be addressed inside its namespace.
    if path.name.is_some() && kind.namespaced && namespace.is_none() {
        return Err(ApiError::no_route(uri.path()));
    }
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let opts = WriteOptions {
        manager: manager(&q, headers),
        force: flag(&q, "force"),
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
    };
    let watching = path.watch || flag(&q, "watch");
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let as_table = table::wanted(accept) && sub == Subresource::Main;
    match (method.clone(), path.name.as_deref()) {
        (Method::GET, _) if watching => {
            let req = watch_request(&q, &path, kind, labels, fields, as_table)?;
            Ok(Reply::Watch(watch::open(
                Arc::clone(&app.store),
                req,
                app.bookmark_interval,
            )))
        }
        (Method::GET, None) => {
            let list = app.store().list(&kind, namespace, &labels, &fields);
            if !as_table {
                return Ok(Reply::Json(StatusCode::OK, list));
            }
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let rv = list
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|r| r.parse().ok());
            Ok(Reply::Table(table::render(
                &kind,
                &items,
                rv,
                clock::now_seconds(),
            )))
        }
        (Method::GET, Some(name)) => {
            let object = app.store().get(&kind, namespace, name, sub)?;
            if !as_table {
                return Ok(Reply::Json(StatusCode::OK, object));
            }
            Ok(Reply::Table(table::render(
                &kind,
                &[object],
                None,
                clock::now_seconds(),
            )))
        }
        (Method::POST, None) => {
            let created =
                app.store()
                    .create(&kind, namespace, parse_body(headers, body)?, &opts)?;
            Ok(Reply::Json(StatusCode::CREATED, created))
        }
        (Method::PUT, Some(name)) => {
            let mut updated = app.store().replace(
                &kind,
                namespace,
                name,
                sub,
                parse_body(headers, body)?,
                &opts,
            )?;
            if sub == Subresource::Scale {
                updated = app.store().get(&kind, namespace, name, sub)?;
            }
            Ok(Reply::Json(StatusCode::OK, updated))
        }
        (Method::PATCH, Some(name)) => {
            let patch_kind = patch_kind(headers)?;
            if patch_kind == PatchKind::Apply && q.get("fieldManager").is_none_or(String::is_empty)
            {
                return Err(ApiError::invalid(
                    &kind.group,
                    &kind.plural,
                    name,
                    "fieldManager: Required value: is required for apply patch",
                ));
            }
            let patch = parse_body(headers, body)?;
            let (mut object, created) = app.store().patch(
                &kind,
                namespace,
                name,
                sub,
                PatchRequest {
                    kind: patch_kind,
                    body: &patch,
                },
                &opts,
            )?;
            if sub == Subresource::Scale {
                object = app.store().get(&kind, namespace, name, sub)?;
            }
            Ok(Reply::Json(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                object,
            ))
        }
        (Method::DELETE, name) => {
            let options = if body.is_empty() {
                Value::Null
            } else {
                parse_body(headers, body)?
            };
            let policy = q.get("propagationPolicy").cloned().or_else(|| {
                options
                    .get("propagationPolicy")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
            let orphan = policy.as_deref() == Some("Orphan")
                || options.get("orphanDependents").and_then(Value::as_bool) == Some(true);
            let propagation = if orphan {
                Propagation::Orphan
            } else {
                Propagation::Cascade
            };
            let preconditions = options.get("preconditions").cloned().unwrap_or(Value::Null);
            let mut store = app.store();
            let reply = match name {
                Some(name) => store.delete(
                    &kind,
                    namespace,
                    name,
                    propagation,
                    &preconditions,
                    opts.dry_run
                        || options
                            .get("dryRun")
                            .and_then(Value::as_array)
                            .is_some_and(|d| !d.is_empty()),
                )?,
                None => store.delete_collection(&kind, namespace, &labels, &fields, propagation),
            };
            Ok(Reply::Json(StatusCode::OK, reply))
        }
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "{m} is not supported on {}",
            uri.path()
        ))),
    }
}
