//! Routes whose credential is `aws_sts`: what of an AWS SDK's request the
//! edge reads before it signs it in the agent's place. An AWS operation is
//! not all in the method and path the `allow` rules and policy decide on:
//! S3 names control operations in the query (`?policy`, `?acl`) and in
//! headers (`x-amz-acl`), a second object it reads in `x-amz-copy-source`,
//! and other services name the operation in `X-Amz-Target` or an `Action`
//! parameter. Each of those is refused here unless the route admits it, and
//! named in the record.
//!
//! Not here: the signing itself and the STS exchange (`credential::aws`).

use std::net::SocketAddr;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use serde_json::json;
use warrant_core::audit::AuditEvent;
use warrant_core::decision::Effect;
use warrant_core::task::TaskUse;
use warrant_core::text::shown;
use warrant_core::time::Timestamp;

use super::route::Route;
use super::{body, decision_request};
use crate::boundary;
use crate::credential::aws::{Payload, SigV4, presigned};
use crate::credential::config::{AwsSts, Credential, S3_CONTROL};
use crate::refusal::{Refusal, Shape};
use crate::services::EdgeServices;
use crate::task::add_detail;

/// How a refusal on `route` is written: as an AWS SDK reads errors on a
/// route that signs for AWS, else warrant's own.
pub(super) fn error_shape(route: &Route, headers: &HeaderMap) -> Shape {
    if !route.credential.signs_requests() {
        Shape::Warrant
    } else if headers.contains_key("x-amz-target") {
        Shape::AwsJson
    } else {
        Shape::AwsXml
    }
}

/// What the edge read of an AWS request.
#[derive(Debug, Clone)]
pub(super) struct AwsFacts {
    /// How its payload is signed.
    pub(super) payload: Payload,
    /// The operation, when the request names it in `X-Amz-Target` or the
    /// query's `Action`.
    pub(super) operation: Option<String>,
}

impl AwsFacts {
    /// A request on a route that does not sign for AWS.
    pub(super) fn none() -> Self {
        Self {
            payload: Payload::Hashed,
            operation: None,
        }
    }
}

fn aws(route: &Route) -> Option<&AwsSts> {
    match &route.credential {
        Credential::AwsSts(a) => Some(a),
        _ => None,
    }
}

fn is_s3(a: &AwsSts) -> bool {
    a.service == "s3" || a.service.starts_with("s3-")
}

/// Everything an AWS request must be before a credential is fetched for
/// it: no presigned query (a signature the agent made), one declared
/// payload hash in a mode the edge can sign; on S3, no control operation
/// the route does not admit and a copy source the agent may read; for
/// other services, an operation the route admits. What it found is added
/// to the record.
pub(super) fn read(
    s: &EdgeServices,
    (req, path): (&Request<Body>, &str),
    route: &Route,
    task: &TaskUse,
    peer: SocketAddr,
    event: &mut AuditEvent,
) -> Result<AwsFacts, Box<Refusal>> {
    let Some(a) = aws(route) else {
        return Ok(AwsFacts::none());
    };
    // The query's keys name operations on AWS: recorded (never values,
    // which may carry anything).
    let keys = raw_query_keys(req);
    if !keys.is_empty() {
        let keys: Vec<String> = keys.iter().take(20).map(|k| shown(k, 64)).collect();
        add_detail(event, json!({ "query_keys": keys }));
    }
    if let Some(k) = req.uri().query().and_then(presigned) {
        return Err(Box::new(Refusal::invalid(format!(
            "the query carries `{}`, part of a presigned request; the edge signs requests itself, so send them unsigned by the URL",
            shown(&k, 64)
        ))));
    }
    let payload =
        Payload::of(once(req.headers(), "x-amz-content-sha256")?.map(HeaderValue::as_bytes))
            .map_err(|m| Box::new(Refusal::invalid(m)))?;
    if is_s3(a) {
        form_upload((req, path), route, event)?;
        s3_control((req, path), route, a, event)?;
        let reads = Reads {
            s,
            route,
            task,
            peer,
        };
        if let Some(source) = copy_source(req, route, event)? {
            reads.decided(&source, "the copy source", event)?;
        }
        // SelectObjectContent is a POST that answers the object's data.
        if query_keys(req).iter().any(|k| k == "select") {
            add_detail(event, json!({ "select": path }));
            reads.decided(path, "the object a select reads", event)?;
        }
        return Ok(AwsFacts {
            payload,
            operation: None,
        });
    }
    let operation = operation(req)?;
    if let Some(op) = &operation {
        add_detail(event, json!({ "aws_operation": op }));
    }
    if let Some(list) = &a.actions {
        smuggled(req)?;
        if let Some(op) = &operation {
            admitted(op, list, route)?;
        }
    }
    Ok(AwsFacts { payload, operation })
}

/// The one value of `name`, if sent; two are refused (two readings).
fn once<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a HeaderValue>, Box<Refusal>> {
    let mut values = headers.get_all(HeaderName::from_static(name)).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Box::new(Refusal::invalid(format!(
            "`{name}` is sent more than once; send it once"
        ))));
    }
    Ok(first)
}

/// S3 requests that change who may read, keep or delete data (a bucket
/// policy, ACLs, lifecycle rules, ...) are one method and path with a
/// query key or a header: refused unless the route's `s3_control` names
/// them, whatever its `allow` rules say of the path.
fn s3_control(
    (req, path): (&Request<Body>, &str),
    route: &Route,
    a: &AwsSts,
    event: &mut AuditEvent,
) -> Result<(), Box<Refusal>> {
    let mut keys = query_keys(req);
    // Path-style: a PUT or DELETE on one segment is on the bucket itself,
    // and S3 ignores query keys it does not know (or knows in another
    // spelling): unless one names a bucket subresource exactly, it creates
    // or deletes the bucket.
    let on_bucket = bucket_level(path)
        && !raw_query_keys(req)
            .iter()
            .any(|k| BUCKET_SUBRESOURCES.contains(&k.as_str()));
    if on_bucket && req.method() == Method::PUT {
        keys.push("createbucket".into());
    }
    if on_bucket && req.method() == Method::DELETE {
        keys.push("deletebucket".into());
    }
    let mut used: Vec<&str> = Vec::new();
    for (control, headers) in S3_CONTROL {
        let by_query = keys.iter().any(|k| k == control);
        let by_header = req.headers().keys().any(|h| {
            headers.iter().any(|p| {
                if p.ends_with('-') {
                    h.as_str().starts_with(p)
                } else {
                    h.as_str() == *p
                }
            })
        });
        if by_query || by_header {
            used.push(control);
        }
    }
    if used.is_empty() {
        return Ok(());
    }
    add_detail(event, json!({ "s3_control": used }));
    if let Some(c) = used.iter().find(|c| !a.s3_control.iter().any(|x| x == *c)) {
        event.reasons = vec![format!("route s3_control: `{c}` not admitted")];
        return Err(Box::new(Refusal::forbidden(
            "route s3_control",
            format!(
                "route `{}` does not admit S3 `{c}` requests: they change who may read, keep or delete data, beyond the objects its `allow` rules name",
                route.name
            ),
            format!(
                "ask an administrator to add \"{c}\" to `s3_control` of the credential of [[route]] `{}` in warrant.toml",
                route.name
            ),
            Vec::new(),
        )));
    }
    Ok(())
}

/// The query's keys, trimmed and lower-cased (S3 reads some spellings
/// leniently; refusing more is safe).
fn query_keys(req: &Request<Body>) -> Vec<String> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, _)| k.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

/// S3's browser upload (POST Object) names the key, ACLs, tags, lock and
/// redirect in form fields the edge does not decide on: refused (agents
/// upload with PUT, which the rules and policy see).
fn form_upload(
    (req, path): (&Request<Body>, &str),
    route: &Route,
    event: &mut AuditEvent,
) -> Result<(), Box<Refusal>> {
    if req.method() != Method::POST {
        return Ok(());
    }
    // S3's POSTs name their operation in the query, spelled exactly (S3
    // matches subresources case-sensitively). On the bucket itself the
    // only one is a multi-object delete: any other POST there is a form
    // upload, which takes its key and ACL from form fields or the query,
    // whatever the content type. On an object, the others.
    let keys = raw_query_keys(req);
    let named = |ops: &[&str]| keys.iter().any(|k| ops.contains(&k.as_str()));
    let operation = if bucket_level(path) {
        named(&["delete"])
    } else {
        named(&["uploads", "uploadId", "select", "restore", "renameObject"])
    };
    if operation && !is_multipart(req) {
        return Ok(());
    }
    event.reasons = vec!["route s3_control: form upload".into()];
    Err(Box::new(Refusal::forbidden(
        "route s3_control",
        format!(
            "route `{}` refuses S3 form uploads (a POST that names no S3 POST operation, or with a multipart body): their fields name the key, ACLs and more, which the edge does not decide on",
            route.name
        ),
        "upload with PUT (PutObject, or a multipart upload)".into(),
        Vec::new(),
    )))
}

/// Whether `path` (path-style) is a bucket's own: one segment.
fn bucket_level(path: &str) -> bool {
    path.trim_matches('/').split('/').count() == 1
}

/// The query's keys as sent.
fn raw_query_keys(req: &Request<Body>) -> Vec<String> {
    req.uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, _)| k.into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// S3's bucket subresources for a PUT or DELETE on the bucket, spelled as
/// S3 matches them (exactly). A bucket-level PUT or DELETE naming none of
/// these is, to S3, creating or deleting the bucket.
const BUCKET_SUBRESOURCES: [&str; 26] = [
    "acl",
    "policy",
    "policyStatus",
    "lifecycle",
    "replication",
    "cors",
    "website",
    "versioning",
    "tagging",
    "encryption",
    "logging",
    "notification",
    "accelerate",
    "requestPayment",
    "inventory",
    "metrics",
    "analytics",
    "intelligent-tiering",
    "object-lock",
    "publicAccessBlock",
    "ownershipControls",
    "metadataTable",
    "metadataConfiguration",
    "metadataInventoryTable",
    "metadataJournalTable",
    "abac",
];

/// Whether any `content-type` of the request is `multipart/...`.
fn is_multipart(req: &Request<Body>) -> bool {
    req.headers()
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .any(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/")
        })
}

/// Reads S3 makes by other means than a GET (a copy's source, a select):
/// decided as a GET of that path by this task.
struct Reads<'a> {
    s: &'a EdgeServices,
    route: &'a Route,
    task: &'a TaskUse,
    peer: SocketAddr,
}

impl Reads<'_> {
    /// The route's `allow` rules and policy must let the agent GET `path`,
    /// as if it asked for it directly; a read that needs a person's
    /// approval is not made this way (GET it, and have that approved).
    /// A refusal names what refused it in the record.
    fn decided(&self, path: &str, what: &str, event: &mut AuditEvent) -> Result<(), Box<Refusal>> {
        let (route, task) = (self.route, self.task);
        let shown_path = shown(path, 200);
        if !route.allow.iter().any(|r| r.admits(&Method::GET, path)) {
            event.reasons = vec![format!("route allow list: GET of {what} not allowed")];
            return Err(Box::new(Refusal::forbidden(
                "route allow list",
                format!(
                    "{what} `{shown_path}` is not a path route `{}` allows reading",
                    route.name
                ),
                format!(
                    "read only what route `{}` allows GET on, or ask an administrator to add it to its `allow` rules",
                    route.name
                ),
                Vec::new(),
            )));
        }
        let facts = decision_request(route, task, &Method::GET, path, self.peer, Timestamp::now());
        let scratch = AuditEvent::new(
            warrant_core::audit::Kind::ProxyRequest,
            warrant_core::audit::Outcome::Deny,
        );
        let (decision, _) = self.s.authorizer.decide_for_record(&facts, scratch);
        if decision.effect == Effect::Allow {
            return Ok(());
        }
        // The record names the policies that refused the read, not the
        // ones that allowed the request it came in.
        event.reasons = decision.policies.clone();
        if decision.effect == Effect::ApprovalRequired {
            return Err(Box::new(Refusal::forbidden(
                "policy (approval required)",
                format!(
                    "reading {what} `{shown_path}` needs a person's approval, which this request does not ask for"
                ),
                format!(
                    "GET {shown_path} on route `{}` and have it approved",
                    route.name
                ),
                decision.policies,
            )));
        }
        if event.reasons.is_empty() {
            event.reasons.push("policy (default deny): GET".into());
        }
        Err(Box::new(Refusal::forbidden(
            crate::refusal::refused_by_policy(&decision.policies),
            format!(
                "policy does not allow agent `{}` to read {what} `{shown_path}` on route `{}`",
                task.agent.name, route.name
            ),
            format!(
                "it needs what a GET of it needs: a permit on Action::\"http:request\" and Route::\"{}\" for GET {shown_path}",
                route.name
            ),
            decision.policies,
        )))
    }
}

/// S3's `x-amz-copy-source` names a second object the request reads (copy
/// object, upload part copy) with the route's credentials: its canonical
/// path, named in the record, to be decided as a GET ([`Reads`]).
fn copy_source(
    req: &Request<Body>,
    route: &Route,
    event: &mut AuditEvent,
) -> Result<Option<String>, Box<Refusal>> {
    let Some(v) = once(req.headers(), "x-amz-copy-source")? else {
        return Ok(None);
    };
    let raw = String::from_utf8_lossy(v.as_bytes());
    add_detail(event, json!({ "copy_source": shown(&raw, 300) }));
    let source = raw.split_once("?versionId=").map_or(&*raw, |(p, _)| p);
    if source.starts_with("arn:") || source.contains('?') {
        event.reasons = vec!["route allow list: copy source not a path".into()];
        return Err(Box::new(Refusal::forbidden(
            "route allow list",
            format!(
                "the copy source `{}` is not a path below route `{}`",
                shown(&raw, 200),
                route.name
            ),
            format!("copy only from paths route `{}` allows GET on", route.name),
            Vec::new(),
        )));
    }
    let path = if source.starts_with('/') {
        source.to_owned()
    } else {
        format!("/{source}")
    };
    match boundary::path::canonical_path(&path) {
        Ok(p) => {
            add_detail(event, json!({ "copy_source": p }));
            Ok(Some(p))
        }
        Err(why) => Err(Box::new(Refusal::invalid(format!(
            "the copy source {why}; it could be read as another path than the one allowed"
        )))),
    }
}

/// The operation a request names: `X-Amz-Target` (`AmazonSQS.SendMessage`
/// is `SendMessage`) or the query's `Action`; two names are refused.
fn operation(req: &Request<Body>) -> Result<Option<String>, Box<Refusal>> {
    let target = once(req.headers(), "x-amz-target")?.map(|v| {
        let v = String::from_utf8_lossy(v.as_bytes());
        v.rsplit('.').next().unwrap_or_default().to_owned()
    });
    let query: Vec<String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k.eq_ignore_ascii_case("action"))
                .map(|(_, v)| v.into_owned())
                .collect()
        })
        .unwrap_or_default();
    match (target, query.as_slice()) {
        (None, []) => Ok(None),
        (Some(t), []) => Ok(Some(t)),
        (None, [a]) => Ok(Some(a.clone())),
        _ => Err(Box::new(Refusal::invalid(
            "the request names its operation more than once (`X-Amz-Target` or `Action`); name it once".into(),
        ))),
    }
}

/// Where some servers (moto among them) read an operation besides
/// `X-Amz-Target`, the query and a form body: a header named like a
/// parameter, the fields of a multipart body. Refused on a route that
/// limits operations, since the edge admits only the operation it reads.
fn smuggled(req: &Request<Body>) -> Result<(), Box<Refusal>> {
    if req.headers().contains_key("action") {
        return Err(Box::new(Refusal::invalid(
            "an `Action` header is refused: name the operation in `X-Amz-Target` or the `Action` parameter".into(),
        )));
    }
    let multipart = is_multipart(req);
    if multipart {
        return Err(Box::new(Refusal::invalid(
            "a multipart body is refused on a route that admits only named operations: send the body as the service's SDK does".into(),
        )));
    }
    Ok(())
}

/// Whether the route admits `op`.
fn admitted(op: &str, list: &[String], route: &Route) -> Result<(), Box<Refusal>> {
    if list.iter().any(|a| a == op) {
        return Ok(());
    }
    Err(Box::new(Refusal::forbidden(
        "route actions",
        format!(
            "route `{}` does not admit the operation `{}`",
            route.name,
            shown(op, 100)
        ),
        format!(
            "ask an administrator to add \"{}\" to `actions` of the credential of [[route]] `{}` in warrant.toml",
            shown(op, 100),
            route.name
        ),
        Vec::new(),
    )))
}

/// The request signed with SigV4 by the route's temporary credentials, its
/// body read whole (within the route's limit) when its hash is signed. On
/// a route that limits operations, one named in a form body (the query
/// protocol's `Action`) is checked here, once the body is read.
pub(super) async fn signed(
    out: Request<Body>,
    sig: &SigV4,
    facts: &AwsFacts,
    route: &Route,
    agent: &str,
) -> Result<Request<Body>, Box<Refusal>> {
    let (mut out, bytes) = if facts.payload == Payload::Hashed {
        body::buffered(out, &route.name, agent, route.max_request_bytes)
            .await
            .map_err(Box::new)?
    } else {
        (out, Bytes::new())
    };
    if let Some(list) = aws(route).and_then(|a| a.actions.as_deref()) {
        if facts.payload != Payload::Hashed {
            return Err(Box::new(Refusal::invalid(format!(
                "route `{}` admits only named operations, read from the body too: send it signed whole, not `UNSIGNED-PAYLOAD`",
                route.name
            ))));
        }
        let in_body = form_action(&out, &bytes)?;
        match (&facts.operation, in_body) {
            (Some(_), Some(_)) => {
                return Err(Box::new(Refusal::invalid(
                    "the request names its operation more than once (`X-Amz-Target` or `Action`); name it once".into(),
                )));
            }
            (None, Some(op)) => admitted(&op, list, route)?,
            (Some(_), None) => {}
            (None, None) => {
                return Err(Box::new(Refusal::forbidden(
                    "route actions",
                    format!(
                        "route `{}` admits only named operations, and this request names none (in `X-Amz-Target` or `Action`)",
                        route.name
                    ),
                    "send the request as the service's SDK does".into(),
                    Vec::new(),
                )));
            }
        }
    }
    sig.sign(&mut out, facts.payload, &bytes).map_err(|e| {
        tracing::warn!(route = %route.name, error = %e, "cannot sign the request for AWS");
        Box::new(Refusal::new(
            StatusCode::BAD_GATEWAY,
            "credential_unavailable",
            format!("the request cannot be signed for route `{}`", route.name),
        ))
    })?;
    Ok(out)
}

/// The `Action` of a form-encoded body (the query protocol), if any; two
/// are refused. A body of another type that names `Action` when read as a
/// form is refused too: some servers (moto among them) read it so, and
/// would act on that operation instead of the one the edge admitted.
fn form_action(req: &Request<Body>, bytes: &[u8]) -> Result<Option<String>, Box<Refusal>> {
    let form = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let found: Vec<String> = url::form_urlencoded::parse(bytes)
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("action"))
        .map(|(_, v)| v.into_owned())
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [_] if !form => Err(Box::new(Refusal::invalid(
            "the body names `Action` as a form parameter although it is not a form; name the operation once, where the service reads it".into(),
        ))),
        [a] => Ok(Some(a.clone())),
        _ => Err(Box::new(Refusal::invalid(
            "the body names `Action` more than once; name it once".into(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warrant_core::audit::{Kind, Outcome};

    fn route(s3_control: &str) -> Route {
        let text = format!(
            "name = \"s3\"\nupstream = \"https://s3.example\"\nallow = [ {{ methods = [\"*\"], paths = [\"/**\"] }} ]\ncredential = {{ kind = \"aws_sts\", role_arn = \"arn:aws:iam::1:role/r\", region = \"us-east-1\", service = \"s3\", s3_control = [{s3_control}] }}"
        );
        toml::from_str::<super::super::route::RawRoute>(&text)
            .unwrap()
            .build(|p| p)
            .unwrap()
    }

    fn on(method: &str, uri: &str) -> Request<Body> {
        Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap()
    }

    /// Found by the outside reviews of issue 18: CreateBucket and
    /// DeleteBucket passed with a query key S3 ignores (`?x=1`) or spells
    /// otherwise (`?Tagging` on a route admitting `tagging`), and a POST on
    /// the bucket naming an object operation (`?uploads`) was a form upload.
    #[test]
    fn requests_on_the_bucket_are_what_s3_makes_of_them() {
        let r = route("\"tagging\"");
        let Credential::AwsSts(a) = &r.credential else {
            panic!()
        };
        let gate = |method: &str, uri: &str| {
            let req = on(method, uri);
            let path = uri.split('?').next().unwrap();
            let mut e = AuditEvent::new(Kind::ProxyRequest, Outcome::Deny);
            s3_control((&req, path), &r, a, &mut e)
                .and_then(|()| form_upload((&req, path), &r, &mut e))
                .map_err(|e| e.message)
        };
        assert!(gate("PUT", "/reports?tagging").is_ok());
        assert!(gate("PUT", "/reports/k?tagging").is_ok());
        for (m, u, why) in [
            ("PUT", "/reports", "createbucket"),
            ("PUT", "/reports/", "createbucket"),
            ("PUT", "/reports?x=1", "createbucket"),
            ("PUT", "/reports?Tagging", "createbucket"),
            ("DELETE", "/reports?x-id=DeleteObject", "deletebucket"),
            ("DELETE", "/reports?restore", "deletebucket"),
            ("PUT", "/reports?policy", "policy"),
            ("POST", "/reports", "form uploads"),
            ("POST", "/reports?uploads", "form uploads"),
            ("POST", "/reports?select", "form uploads"),
            ("POST", "/reports/k?Uploads", "form uploads"),
            ("POST", "/reports?delete", "`delete`"),
        ] {
            let e = gate(m, u).unwrap_err();
            assert!(e.contains(why), "{m} {u}: {e}");
        }
        assert!(gate("POST", "/reports/k?uploads").is_ok());
        assert!(gate("POST", "/reports/k?uploadId=1").is_ok());
        assert!(gate("DELETE", "/reports/k").is_ok());
    }

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut b = Request::post(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn the_operation_is_named_once() {
        let r = req("/", &[("x-amz-target", "AmazonSQS.SendMessage")]);
        assert_eq!(operation(&r).unwrap().as_deref(), Some("SendMessage"));
        let r = req("/?Action=Publish&Version=1", &[]);
        assert_eq!(operation(&r).unwrap().as_deref(), Some("Publish"));
        let r = req(
            "/?action=Publish",
            &[("x-amz-target", "AmazonSQS.SendMessage")],
        );
        assert!(operation(&r).is_err(), "two names");
        assert!(operation(&req("/?Action=A&Action=B", &[])).is_err());
        let r = req("/", &[("x-amz-target", "a.B"), ("x-amz-target", "a.C")]);
        assert!(operation(&r).is_err());
        assert_eq!(operation(&req("/", &[])).unwrap(), None);
    }

    #[test]
    fn a_body_names_its_action_once_and_only_as_a_form() {
        let form = [(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )];
        let r = req("/", &form);
        assert_eq!(
            form_action(&r, b"Action=Publish&TopicArn=x")
                .unwrap()
                .as_deref(),
            Some("Publish")
        );
        assert!(form_action(&r, b"Action=Publish&action=DeleteTopic").is_err());
        // Found by the outside review of issue 18: moto read `Action` from a
        // JSON body as a form and ran it instead of `X-Amz-Target`'s.
        let json = [("content-type", "application/x-amz-json-1.0")];
        assert!(form_action(&req("/", &json), br#"{"x":"&Action=PurgeQueue&"}"#).is_err());
        assert!(form_action(&req("/", &json), br#"{"x":"& action =PurgeQueue"}"#).is_err());
        assert_eq!(
            form_action(&req("/", &json), br#"{"QueueUrl":"q"}"#).unwrap(),
            None
        );
        assert!(form_action(&req("/", &[]), b"Action=Publish").is_err());
    }
}
