//! Turning a `DecisionRequest` into what Cedar evaluates.
//!
//! This builds `cedar-policy-core` values directly instead of going through
//! `cedar-policy`'s public constructors, which evaluate every attribute as an
//! expression, re-derive the entity hierarchy and parse extension calls on each
//! request: measured at about 30 µs per decision, more than evaluating the
//! policies themselves. Here:
//! - attributes and context are plain values (no expression evaluation);
//! - the hierarchy is given, not computed: warrant's is one level deep
//!   (Instance in Agent, User in Group, Tool in McpServer), so each entity's
//!   parents are already all its ancestors;
//! - `ip` values are built once per address and cached per thread.
//!
//! The types are Cedar's own, so evaluation is Cedar's; a test checks the
//! entities and context against the schema through the public API, and the
//! randomized test compares every answer with plain `cedar-policy`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use cedar_policy_core::ast::{
    Context, Eid, Entity, EntityType, EntityUID, EntityUIDEntry, PartialValue, Request, Value,
};
use cedar_policy_core::entities::{Entities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::evaluator::RestrictedEvaluator;
use cedar_policy_core::extensions::Extensions;
use smol_str::SmolStr;
use warrant_core::decision::{Action, DecisionRequest, Resource};

use crate::index::{Key, RequestKeys, TypeCode};

struct Types {
    agent: EntityType,
    instance: EntityType,
    user: EntityType,
    group: EntityType,
    audience: EntityType,
    route: EntityType,
    mcp_server: EntityType,
    tool: EntityType,
    secret: EntityType,
    actions: Vec<EntityUID>,
}

fn types() -> Option<&'static Types> {
    static T: OnceLock<Option<Types>> = OnceLock::new();
    T.get_or_init(|| {
        let n = |s: &str| s.parse::<EntityType>().ok();
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
                    EntityUID::from_components(action_type.clone(), Eid::new(a.as_str()), None)
                })
                .collect(),
        })
    })
    .as_ref()
}

fn uid(ty: &EntityType, id: &str) -> EntityUID {
    EntityUID::from_components(ty.clone(), Eid::new(id), None)
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn strings<'a>(v: impl IntoIterator<Item = &'a String>) -> Value {
    Value::set(v.into_iter().map(|x| s(x)), None)
}

/// The call's arguments as the record the schema declares, and the names of
/// those given that the tool declares with a type policies cannot read. An
/// argument the tool does not declare refuses the call (it would reach the
/// server unseen: `PATH` beside a policed `path`), and so does one of the
/// wrong JSON type (a forbid on `path` must not be dodged by sending `path`
/// as a list).
fn arguments(
    given: Option<&serde_json::Map<String, serde_json::Value>>,
    schema: &warrant_core::mcp::ArgumentSchema,
    hidden: &mut Vec<String>,
) -> Result<Value, String> {
    use warrant_core::mcp::ArgType;
    let mut rec: BTreeMap<SmolStr, Value> = BTreeMap::new();
    for (name, v) in given.into_iter().flatten() {
        if !schema.declares(name) {
            return Err(format!(
                "argument `{}` is not declared by the tool's input schema; only declared arguments are passed on, so that policy sees every argument the server gets",
                name.chars().take(64).collect::<String>().escape_debug()
            ));
        }
        let Some(ty) = schema.get(name) else {
            hidden.push(name.clone());
            continue;
        };
        if !ty.admits(v) {
            return Err(format!(
                "argument `{}` is not of type {} as the tool's input schema declares",
                name.escape_debug(),
                ty.cedar()
            ));
        }
        let value = match (ty, v) {
            (ArgType::String, serde_json::Value::String(x)) => s(x),
            (ArgType::Bool, serde_json::Value::Bool(b)) => Value::from(*b),
            (ArgType::Long, n) => Value::from(n.as_i64().unwrap_or_default()),
            (ArgType::Strings, serde_json::Value::Array(a)) => {
                Value::set(a.iter().filter_map(|x| x.as_str()).map(s), None)
            }
            (ArgType::Longs, serde_json::Value::Array(a)) => Value::set(
                a.iter()
                    .filter_map(serde_json::Value::as_i64)
                    .map(Value::from),
                None,
            ),
            _ => continue,
        };
        rec.insert(SmolStr::new(name), value);
    }
    Ok(Value::record(rec, None))
}

fn entity(uid: EntityUID, attrs: Vec<(&str, Value)>, parents: HashSet<EntityUID>) -> Entity {
    let attrs = attrs
        .into_iter()
        .map(|(k, v)| (SmolStr::new(k), PartialValue::Value(v)));
    // INVARIANT (one-level hierarchy): `parents` are all the ancestors.
    Entity::new_with_attr_partial_value(uid, attrs, HashSet::new(), parents, [])
}

/// The Cedar `ipaddr` value of an address, built once per address per thread.
fn ip_value(ip: IpAddr) -> Result<Value, String> {
    thread_local! {
        static CACHE: RefCell<HashMap<IpAddr, Value>> = RefCell::new(HashMap::new());
    }
    if let Some(v) = CACHE.with(|c| c.borrow().get(&ip).cloned()) {
        return Ok(v);
    }
    let expr = cedar_policy::RestrictedExpression::new_ip(ip.to_string());
    let expr: &cedar_policy_core::ast::RestrictedExpr = expr.as_ref();
    let v = RestrictedEvaluator::new(Extensions::all_available())
        .interpret(expr.as_borrowed())
        .map_err(|e| format!("cannot represent source address `{ip}` in Cedar: {e}"))?;
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        // Bounded: an attacker cycling addresses costs a rebuild, not memory.
        if c.len() >= 4096 {
            c.clear();
        }
        c.insert(ip, v.clone());
    });
    Ok(v)
}

/// What a decision evaluates against.
pub(crate) struct Built {
    pub(crate) request: Request,
    pub(crate) entities: Entities,
    pub(crate) keys: RequestKeys,
    /// Arguments of the call that policies cannot read (declared by the
    /// tool with a type that has no Cedar counterpart).
    pub(crate) hidden_arguments: Vec<String>,
}

/// Builds the Cedar request, the entities it refers to, and the index keys.
pub(crate) fn build(
    req: &DecisionRequest,
    args: &warrant_core::mcp::ArgumentSchema,
    anomaly_score: i64,
) -> Result<Built, String> {
    build_with(req, args, false, anomaly_score)
}

/// Like [`build`]; with `unknown_arguments`, a tool call's
/// `context.arguments` is left unknown, for partial evaluation (which tools
/// could this principal call with some arguments?).
pub(crate) fn build_with(
    req: &DecisionRequest,
    args: &warrant_core::mcp::ArgumentSchema,
    unknown_arguments: bool,
    anomaly_score: i64,
) -> Result<Built, String> {
    let t = types().ok_or("internal error: entity type names do not parse")?;
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
    let mut entities = Vec::with_capacity(8);
    entities.push(entity(
        agent_uid.clone(),
        vec![
            ("name", s(&p.agent.name)),
            ("owner", s(&p.agent.owner)),
            ("env", s(&p.agent.env)),
            ("trust", s(p.agent.trust.as_str())),
            ("purpose", s(&p.agent.purpose)),
        ],
        HashSet::new(),
    ));
    entities.push(entity(
        instance_uid.clone(),
        vec![
            ("agent", s(&p.agent.name)),
            ("owner", s(&p.agent.owner)),
            ("env", s(&p.agent.env)),
            ("trust", s(p.agent.trust.as_str())),
            ("attestor", s(&p.attestor)),
        ],
        HashSet::from([agent_uid]),
    ));

    // Resource, and its parent for tools.
    let resource_uid = match &req.resource {
        Resource::Tool { server, tool } => {
            let server_uid = uid(&t.mcp_server, server);
            let tool_uid = uid(&t.tool, &req.resource.id());
            entities.push(entity(server_uid.clone(), vec![], HashSet::new()));
            entities.push(entity(
                tool_uid.clone(),
                vec![("name", s(tool)), ("server", s(server))],
                HashSet::from([server_uid]),
            ));
            tool_uid
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
            entities.push(entity(u.clone(), vec![], HashSet::new()));
            u
        }
    };

    // Context, with the key names of DESIGN §4.
    let c = &req.context;
    let mut ctx: BTreeMap<SmolStr, Value> = BTreeMap::new();
    let empty = Vec::new();
    let groups = c.user.as_ref().map_or(&empty, |u| &u.groups);
    if let Some(user) = &c.user {
        let user_uid = uid(&t.user, &user.id);
        let parents: HashSet<EntityUID> = user.groups.iter().map(|g| uid(&t.group, g)).collect();
        entities.push(entity(user_uid.clone(), vec![], parents));
        ctx.insert("user".into(), Value::from(user_uid));
    }
    ctx.insert("groups".into(), strings(groups));
    ctx.insert("scopes".into(), strings(&c.scopes));
    let (resources, verbs): (Vec<String>, Vec<String>) = c
        .scopes
        .iter()
        .map(|s| match s.rsplit_once(':') {
            Some((r, v)) => (r.to_owned(), v.to_owned()),
            None => (s.clone(), String::new()),
        })
        .unzip();
    let verbs: Vec<String> = verbs.into_iter().filter(|v| !v.is_empty()).collect();
    ctx.insert("scope_resources".into(), strings(&resources));
    ctx.insert("scope_verbs".into(), strings(&verbs));
    ctx.insert("depth".into(), Value::from(i64::from(c.depth)));
    ctx.insert("chain".into(), strings(&c.chain));
    if let Some(task) = &c.task {
        ctx.insert("task".into(), s(task));
    }
    if let Some(txn) = &c.txn {
        ctx.insert("txn".into(), s(txn));
    }
    ctx.insert("attestor".into(), s(&p.attestor));
    ctx.insert("env".into(), s(&p.agent.env));
    ctx.insert("hour".into(), Value::from(c.time.hour_utc()));
    ctx.insert("weekday".into(), Value::from(c.time.weekday_utc()));
    if let Some(ip) = c.source_ip {
        ctx.insert("source_ip".into(), ip_value(ip)?);
    }
    ctx.insert("anomaly_score".into(), Value::from(anomaly_score));
    if req.action == Action::HttpRequest {
        let http = c
            .http
            .as_ref()
            .ok_or("an http:request decision needs the request's method, path and host")?;
        ctx.insert("method".into(), s(&http.method));
        ctx.insert("path".into(), s(&http.path));
        ctx.insert("host".into(), s(&http.host));
    }
    let residual = req.action == Action::McpCallTool && unknown_arguments;
    let mut hidden_arguments = Vec::new();
    if req.action == Action::McpCallTool && !residual {
        ctx.insert(
            "arguments".into(),
            arguments(c.arguments.as_ref(), args, &mut hidden_arguments)?,
        );
    }

    let action_idx = Action::ALL
        .iter()
        .position(|a| *a == req.action)
        .unwrap_or(0);
    let request = Request::new_unchecked(
        EntityUIDEntry::known(instance_uid, None),
        EntityUIDEntry::known(t.actions[action_idx].clone(), None),
        EntityUIDEntry::known(resource_uid, None),
        Some(if residual {
            // Cedar projects attributes out of a residual record only if every
            // part is a literal, set, record or unknown; an `ip(...)` value is
            // an extension call, so the source address is left unknown too
            // (a condition on it then "could" hold, which only widens the list).
            let mut exprs: BTreeMap<SmolStr, cedar_policy_core::ast::Expr> = ctx
                .into_iter()
                .map(|(k, v)| {
                    let e = if k == "source_ip" {
                        cedar_policy_core::ast::Expr::unknown(
                            cedar_policy_core::ast::Unknown::new_untyped("source_ip"),
                        )
                    } else {
                        v.into()
                    };
                    (k, e)
                })
                .collect();
            exprs.insert(
                "arguments".into(),
                cedar_policy_core::ast::Expr::unknown(
                    cedar_policy_core::ast::Unknown::new_untyped("arguments"),
                ),
            );
            Context::RestrictedResidual(Arc::new(exprs))
        } else {
            Context::Value(Arc::new(ctx))
        }),
    );
    let entities = Entities::from_entities(
        entities,
        None::<&NoEntitiesSchema>,
        TCComputation::AssumeAlreadyComputed,
        Extensions::none(),
    )
    .map_err(|e| format!("cannot build the entities for the decision: {e}"))?;
    Ok(Built {
        request,
        entities,
        keys: keys(req),
        hidden_arguments,
    })
}

/// The index keys of a request: principal and resource with their ancestors.
fn keys(req: &DecisionRequest) -> RequestKeys {
    let p = &req.principal;
    let (resource, resource_type) = match &req.resource {
        Resource::Tool { server, .. } => (
            vec![
                Key::new(TypeCode::Tool, &req.resource.id()),
                Key::new(TypeCode::McpServer, server),
            ],
            TypeCode::Tool,
        ),
        Resource::Audience(id) => (vec![Key::new(TypeCode::Audience, id)], TypeCode::Audience),
        Resource::Route(id) => (vec![Key::new(TypeCode::Route, id)], TypeCode::Route),
        Resource::McpServer(id) => (vec![Key::new(TypeCode::McpServer, id)], TypeCode::McpServer),
        Resource::Secret(id) => (vec![Key::new(TypeCode::Secret, id)], TypeCode::Secret),
    };
    RequestKeys {
        action: req.action,
        principal: vec![
            Key::new(TypeCode::Instance, &p.instance),
            Key::new(TypeCode::Agent, &p.agent.name),
        ],
        principal_type: TypeCode::Instance,
        resource,
        resource_type,
    }
}

/// For tests: the same entities and context, checked against the schema through
/// the public API.
#[cfg(test)]
pub(crate) fn conforms(
    req: &DecisionRequest,
    args: &warrant_core::mcp::ArgumentSchema,
) -> Result<(), String> {
    let built = build(req, args, req.context.anomaly_score)?;
    let schema = crate::schema::schema_with(args)?;
    let public = cedar_policy::Entities::from(built.entities);
    cedar_policy::Entities::from_entities(public.iter().cloned(), Some(&schema))
        .map_err(|e| e.to_string())?;
    let request = cedar_policy::Request::from(built.request);
    let ctx = request.context().ok_or("no context")?.clone();
    cedar_policy::Request::new(
        request.principal().ok_or("no principal")?.clone(),
        request.action().ok_or("no action")?.clone(),
        request.resource().ok_or("no resource")?.clone(),
        ctx,
        Some(&schema),
    )
    .map_err(|e| e.to_string())?;
    Ok(())
}
