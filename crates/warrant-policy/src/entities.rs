//! Turning a `DecisionRequest` into a Cedar request and entity set.
//!
//! The entities are built without schema checking (that costs more than the
//! decision itself); a test proves they conform to the schema, so validated
//! policies can't meet an attribute of the wrong type.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression,
};
use warrant_core::decision::{Action, DecisionRequest, Resource};

use crate::index::RequestKeys;
use crate::schema::BASE_CONTEXT;

struct Types {
    agent: EntityTypeName,
    instance: EntityTypeName,
    user: EntityTypeName,
    group: EntityTypeName,
    audience: EntityTypeName,
    route: EntityTypeName,
    mcp_server: EntityTypeName,
    tool: EntityTypeName,
    secret: EntityTypeName,
    actions: Vec<EntityUid>,
}

fn types() -> Option<&'static Types> {
    static T: OnceLock<Option<Types>> = OnceLock::new();
    T.get_or_init(|| {
        let n = |s: &str| EntityTypeName::from_str(s).ok();
        let action_type = n("Action")?;
        Some(Types {
            agent: n("Agent")?,
            instance: n("Instance")?,
            user: n("User")?,
            group: n("Group")?,
            audience: n("Audience")?,
            route: n("Route")?,
            mcp_server: n("McpServer")?,
            tool: n("Tool")?,
            secret: n("Secret")?,
            actions: Action::ALL
                .iter()
                .map(|a| {
                    EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(a.as_str()))
                })
                .collect(),
        })
    })
    .as_ref()
}

fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_owned())
}

fn strings<'a>(v: impl IntoIterator<Item = &'a String>) -> RestrictedExpression {
    RestrictedExpression::new_set(v.into_iter().map(|x| s(x)))
}

fn long(v: i64) -> RestrictedExpression {
    RestrictedExpression::new_long(v)
}

type Built = (Request, Entities, RequestKeys);

/// Builds the Cedar request, the entities it refers to, and the index keys.
pub(crate) fn build(req: &DecisionRequest) -> Result<Built, String> {
    let t = types().ok_or("internal error: entity type names do not parse")?;
    let err = |what: &str, e: &dyn std::fmt::Display| {
        format!("cannot build the {what} for the decision: {e}")
    };

    if req.resource.type_name() != req.action.resource_type() {
        return Err(format!(
            "action `{}` applies to {} resources, not to {}",
            req.action,
            req.action.resource_type(),
            req.resource
        ));
    }

    // Principal: the instance, in its agent.
    let p = &req.principal;
    let agent_uid = uid(&t.agent, &p.agent.name);
    let instance_uid = uid(&t.instance, &p.instance);
    let agent = Entity::new(
        agent_uid.clone(),
        HashMap::from([
            ("name".into(), s(&p.agent.name)),
            ("owner".into(), s(&p.agent.owner)),
            ("env".into(), s(&p.agent.env)),
            ("trust".into(), s(p.agent.trust.as_str())),
            ("purpose".into(), s(&p.agent.purpose)),
        ]),
        HashSet::new(),
    )
    .map_err(|e| err("agent entity", &e))?;
    let instance = Entity::new(
        instance_uid.clone(),
        HashMap::from([
            ("agent".into(), s(&p.agent.name)),
            ("owner".into(), s(&p.agent.owner)),
            ("env".into(), s(&p.agent.env)),
            ("trust".into(), s(p.agent.trust.as_str())),
            ("attestor".into(), s(&p.attestor)),
        ]),
        HashSet::from([agent_uid.clone()]),
    )
    .map_err(|e| err("instance entity", &e))?;
    let mut entities = vec![agent, instance];

    // Resource, and its parent for tools.
    let (resource_uid, resource_type, resource_lineage) = match &req.resource {
        Resource::Tool { server, tool } => {
            let server_uid = uid(&t.mcp_server, server);
            let tool_uid = uid(&t.tool, &req.resource.id());
            entities.push(Entity::new_no_attrs(server_uid.clone(), HashSet::new()));
            entities.push(
                Entity::new(
                    tool_uid.clone(),
                    HashMap::from([("name".into(), s(tool)), ("server".into(), s(server))]),
                    HashSet::from([server_uid.clone()]),
                )
                .map_err(|e| err("tool entity", &e))?,
            );
            (tool_uid.clone(), t.tool.clone(), vec![tool_uid, server_uid])
        }
        other => {
            let ty = match other {
                Resource::Audience(_) => &t.audience,
                Resource::Route(_) => &t.route,
                Resource::McpServer(_) => &t.mcp_server,
                Resource::Secret(_) => &t.secret,
                Resource::Tool { .. } => &t.tool,
            };
            let u = uid(ty, &other.id());
            entities.push(Entity::new_no_attrs(u.clone(), HashSet::new()));
            (u.clone(), ty.clone(), vec![u])
        }
    };

    // Context.
    let c = &req.context;
    let mut pairs: Vec<(String, RestrictedExpression)> = Vec::with_capacity(BASE_CONTEXT.len() + 3);
    let empty = Vec::new();
    let groups = c.user.as_ref().map_or(&empty, |u| &u.groups);
    if let Some(user) = &c.user {
        let user_uid = uid(&t.user, &user.id);
        let mut parents = HashSet::new();
        for g in &user.groups {
            let g_uid = uid(&t.group, g);
            parents.insert(g_uid.clone());
            entities.push(Entity::new_no_attrs(g_uid, HashSet::new()));
        }
        entities.push(Entity::new_no_attrs(user_uid.clone(), parents));
        pairs.push((
            "user".into(),
            RestrictedExpression::new_entity_uid(user_uid),
        ));
    }
    pairs.push(("groups".into(), strings(groups)));
    pairs.push(("scopes".into(), strings(&c.scopes)));
    pairs.push(("depth".into(), long(i64::from(c.depth))));
    pairs.push(("chain".into(), strings(&c.chain)));
    if let Some(task) = &c.task {
        pairs.push(("task".into(), s(task)));
    }
    if let Some(txn) = &c.txn {
        pairs.push(("txn".into(), s(txn)));
    }
    pairs.push(("attestor".into(), s(&p.attestor)));
    pairs.push(("env".into(), s(&p.agent.env)));
    pairs.push(("hour".into(), long(c.time.hour_utc())));
    pairs.push(("weekday".into(), long(c.time.weekday_utc())));
    if let Some(ip) = c.source_ip {
        pairs.push((
            "source_ip".into(),
            RestrictedExpression::new_ip(ip.to_string()),
        ));
    }
    pairs.push(("anomaly_score".into(), long(c.anomaly_score)));
    if req.action == Action::HttpRequest {
        let http = c
            .http
            .as_ref()
            .ok_or("an http:request decision needs the request's method, path and host")?;
        pairs.push(("method".into(), s(&http.method)));
        pairs.push(("path".into(), s(&http.path)));
        pairs.push(("host".into(), s(&http.host)));
    }
    let context = Context::from_pairs(pairs).map_err(|e| err("context", &e))?;

    let action_idx = Action::ALL
        .iter()
        .position(|a| *a == req.action)
        .unwrap_or(0);
    let request = Request::new(
        instance_uid.clone(),
        t.actions[action_idx].clone(),
        resource_uid,
        context,
        None,
    )
    .map_err(|e| err("request", &e))?;
    let entities = Entities::from_entities(entities, None).map_err(|e| err("entities", &e))?;
    let keys = RequestKeys {
        action: req.action,
        principal: vec![instance_uid, agent_uid],
        principal_type: t.instance.clone(),
        resource: resource_lineage,
        resource_type,
    };
    Ok((request, entities, keys))
}

/// For tests: the same entities, checked against the schema.
#[cfg(test)]
pub(crate) fn conforms(req: &DecisionRequest) -> Result<(), String> {
    let (request, entities, _) = build(req)?;
    let schema = crate::schema::schema();
    Entities::from_entities(entities.iter().cloned(), Some(&schema)).map_err(|e| e.to_string())?;
    let ctx = request.context().ok_or("no context")?.clone();
    Request::new(
        request.principal().ok_or("no principal")?.clone(),
        request.action().ok_or("no action")?.clone(),
        request.resource().ok_or("no resource")?.clone(),
        ctx,
        Some(&schema),
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}
