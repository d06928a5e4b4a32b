//! What a task token's use means to the edge's decisions and records: the
//! Cedar request for a use ([`task_request`]), and the audit record's
//! attribution, from a verified use ([`describe`]) or from the claims of a
//! token warrant issued whose use was refused ([`attribute`]).

use std::net::SocketAddr;

use serde_json::json;
use warrant_core::audit::AuditEvent;
use warrant_core::decision::{
    Action, AgentFacts, Context, DecisionRequest, Principal, Resource, UserRef,
};
use warrant_core::task::{TaskClaims, TaskUse};
use warrant_core::time::Timestamp;

/// The decision request for a use of a task token at the edge: the acting
/// instance as principal, the user, groups, scopes, chain, depth, task, txn,
/// time and source address as context.
pub(crate) fn task_request(
    task: &TaskUse,
    action: Action,
    resource: Resource,
    peer: SocketAddr,
    now: Timestamp,
) -> DecisionRequest {
    let c = &task.claims;
    let mut context = Context::at(now);
    context.user = c.sub.strip_prefix("user:").map(|u| UserRef {
        id: u.to_owned(),
        groups: task.groups.clone(),
    });
    context.scopes = c
        .scope
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    context.depth = u32::try_from(c.depth()).unwrap_or(u32::MAX);
    context.chain = c
        .act
        .as_ref()
        .map(|a| {
            a.chain()
                .into_iter()
                .rev()
                .filter_map(warrant_core::task::agent_of)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    context.task = Some(c.task.clone());
    context.txn = Some(c.txn.clone());
    context.source_ip = Some(peer.ip());
    let a = &task.agent;
    DecisionRequest {
        principal: Principal {
            agent: AgentFacts::from(a),
            instance: task.instance.clone(),
            attestor: task.attestor.clone(),
        },
        action,
        resource,
        context,
    }
}

/// Adds keys to a record's detail object.
pub(crate) fn add_detail(event: &mut AuditEvent, more: serde_json::Value) {
    let mut d = event.detail.take().unwrap_or_else(|| json!({}));
    if let (Some(d), serde_json::Value::Object(m)) = (d.as_object_mut(), more) {
        d.extend(m);
    }
    event.detail = Some(d);
}

pub(crate) fn describe(event: &mut AuditEvent, t: &TaskUse) {
    for_whom(event, &t.claims);
    event.agent = Some(t.agent.name.to_string());
    event.instance = Some(t.instance.clone());
}

/// What a task token warrant issued says about who acts for whom: the
/// user, task, txn, scope and chain, and the acting agent and instance
/// named by its SPIFFE ID. For the record of a use refused after the token
/// verified (expired, revoked, an agent disabled), so a trace shows who
/// kept trying.
pub(crate) fn attribute(event: &mut AuditEvent, c: &TaskClaims) {
    for_whom(event, c);
    // `spiffe://<domain>/agent/<name>/<instance>` of the current actor (or
    // of the agent itself when it acts for itself).
    let actor = c.act.as_ref().map_or(c.sub.as_str(), |a| a.sub.as_str());
    if let Some(rest) = actor.strip_prefix("spiffe://")
        && let Some((_, path)) = rest.split_once("/agent/")
        && let Some((name, instance)) = path.split_once('/')
    {
        event.agent = Some(name.to_owned());
        event.instance = Some(instance.to_owned());
    }
}

/// The user, task, txn, scope, parent and chain a task token names.
fn for_whom(e: &mut AuditEvent, c: &TaskClaims) {
    e.user = Some(c.sub.clone());
    e.task = Some(c.task.clone());
    e.txn = Some(c.txn.clone());
    e.scope = Some(c.scope.clone());
    e.parent = c.parent.clone();
    e.chain = c
        .act
        .as_ref()
        .map(|a| a.chain().into_iter().map(str::to_owned).collect())
        .unwrap_or_default();
}
