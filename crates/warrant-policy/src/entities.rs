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

/// An entity with those of its string attributes (by [`attr`] index) some
/// policy reads.
fn entity(
    uid: EntityUID,
    attrs: &[(usize, &str)],
    reads: Reads,
    parents: HashSet<EntityUID>,
) -> Entity {
    let attrs = attrs
        .iter()
        .filter(|(i, _)| reads.wants_attr(*i))
        .map(|(i, v)| (SmolStr::new(ATTRS[*i]), PartialValue::Value(s(v))));
    // INVARIANT (one-level hierarchy): `parents` are all the ancestors.
    Entity::new_with_attr_partial_value(uid, attrs, HashSet::new(), parents, [])
}

/// The Cedar `ipaddr` value of an address, built once per address per thread.
///
/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how an IPv4 client
/// appears on a dual-stack listener) is the IPv4 address it maps: Cedar's
/// `ip()` refuses IPv4 embedded in IPv6, and `isInRange(ip("10.0.0.0/8"))`
/// must match such a client.
fn ip_value(ip: IpAddr) -> Result<Value, String> {
    let ip = ip.to_canonical();
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

/// The context keys a policy set can read, so that a decision builds only
/// those (a key no policy names cannot change an answer, and its value,
/// a Cedar set for most, costs allocations and hashing on every request).
///
/// Found in the conditions at load: a key counts as read when some
/// condition applies `.key`, `has key` or `has key.more` to `context`. If
/// some condition uses `context` any other way (`{"c": context}.c.scopes`,
/// `[context].contains(...)`), it can reach every key, and every key is
/// built. `arguments` is not covered: a call's arguments are always
/// checked against the tool's schema and always given.
///
/// Entity attributes likewise: Cedar reads an attribute only by naming it
/// (`.name`, `has name`), on whatever entity, so an attribute of
/// warrant's entities that no condition names anywhere is not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reads {
    context: u32,
    attrs: u32,
}

/// The attributes of warrant's entities (Agent, Instance, Tool), one bit
/// each.
const ATTRS: [&str; 8] = [
    "name", "owner", "env", "trust", "purpose", "agent", "attestor", "server",
];

/// The context keys as they are named in policies (DESIGN §4), one bit each.
const KEYS: [&str; 18] = [
    "user",
    "groups",
    "scopes",
    "scope_resources",
    "scope_verbs",
    "depth",
    "chain",
    "task",
    "txn",
    "attestor",
    "env",
    "hour",
    "weekday",
    "source_ip",
    "anomaly_score",
    "method",
    "path",
    "host",
];

impl Reads {
    /// Every key: for the plain-Cedar reference, and whenever a policy
    /// uses `context` as a whole.
    pub(crate) const ALL: Self = Self {
        context: u32::MAX,
        attrs: u32::MAX,
    };

    /// What these conditions read.
    pub(crate) fn of<'a>(
        conditions: impl IntoIterator<Item = &'a cedar_policy_core::ast::Expr>,
    ) -> Self {
        use cedar_policy_core::ast::{ExprKind, Var};
        let is_context =
            |e: &cedar_policy_core::ast::Expr| matches!(e.expr_kind(), ExprKind::Var(Var::Context));
        let mut bits = 0u32;
        let mut attrs = 0u32;
        for c in conditions {
            let (mut uses, mut named) = (0usize, 0usize);
            for e in c.subexpressions() {
                // Any attribute named anywhere, of any entity or record.
                let mut attr_named = |a: &SmolStr| {
                    if let Some(i) = ATTRS.iter().position(|n| *n == a.as_str()) {
                        attrs |= 1 << i;
                    }
                };
                match e.expr_kind() {
                    ExprKind::GetAttr { attr, .. } | ExprKind::HasAttr { attr, .. } => {
                        attr_named(attr);
                    }
                    ExprKind::ExtHasAttr { attrs, .. } => attrs.iter().for_each(&mut attr_named),
                    _ => {}
                }
                let key = match e.expr_kind() {
                    ExprKind::Var(Var::Context) => {
                        uses += 1;
                        continue;
                    }
                    ExprKind::GetAttr { expr, attr } | ExprKind::HasAttr { expr, attr }
                        if is_context(expr) =>
                    {
                        attr
                    }
                    ExprKind::ExtHasAttr { expr, attrs } if is_context(expr) => attrs.first(),
                    _ => continue,
                };
                named += 1;
                if let Some(i) = KEYS.iter().position(|k| *k == key.as_str()) {
                    bits |= 1 << i;
                }
            }
            // INVARIANT (no key an evaluation could reach is left out):
            // every use of `context` names its key, or all are built.
            if uses != named {
                return Self::ALL;
            }
        }
        Self {
            context: bits,
            attrs,
        }
    }

    /// Exactly these keys.
    #[cfg(test)]
    pub(crate) fn only(keys: &[&str]) -> Self {
        Self {
            context: keys.iter().fold(0, |bits, k| {
                bits | 1 << KEYS.iter().position(|n| n == k).expect("a key")
            }),
            attrs: 0,
        }
    }

    /// Whether `key` (a [`key`] index) is built.
    fn wants(self, key: usize) -> bool {
        self.context & (1 << key) != 0
    }

    /// Whether the entity attribute `attr` (an [`attr`] index) is given.
    fn wants_attr(self, attr: usize) -> bool {
        self.attrs & (1 << attr) != 0
    }

    /// Whether the entity attribute `name` is given (always, for a name
    /// not in [`ATTRS`]).
    #[cfg(test)]
    pub(crate) fn reads_attr(self, name: &str) -> bool {
        ATTRS
            .iter()
            .position(|n| *n == name)
            .is_none_or(|i| self.attrs & (1 << i) != 0)
    }
}

/// The index of `name` in `names`, at compile time: a name that is not
/// there does not compile.
#[expect(
    clippy::panic,
    reason = "only evaluated in constants, where a panic is a compile error"
)]
const fn position(names: &[&str], name: &str) -> usize {
    let mut i = 0;
    while i < names.len() {
        let (a, b) = (names[i].as_bytes(), name.as_bytes());
        let mut same = a.len() == b.len();
        let mut j = 0;
        while same && j < a.len() {
            same = a[j] == b[j];
            j += 1;
        }
        if same {
            return i;
        }
        i += 1;
    }
    panic!("not one of the names")
}

/// Indices into [`KEYS`].
mod key {
    use super::{KEYS, position};
    pub(super) const USER: usize = position(&KEYS, "user");
    pub(super) const GROUPS: usize = position(&KEYS, "groups");
    pub(super) const SCOPES: usize = position(&KEYS, "scopes");
    pub(super) const SCOPE_RESOURCES: usize = position(&KEYS, "scope_resources");
    pub(super) const SCOPE_VERBS: usize = position(&KEYS, "scope_verbs");
    pub(super) const DEPTH: usize = position(&KEYS, "depth");
    pub(super) const CHAIN: usize = position(&KEYS, "chain");
    pub(super) const TASK: usize = position(&KEYS, "task");
    pub(super) const TXN: usize = position(&KEYS, "txn");
    pub(super) const ATTESTOR: usize = position(&KEYS, "attestor");
    pub(super) const ENV: usize = position(&KEYS, "env");
    pub(super) const HOUR: usize = position(&KEYS, "hour");
    pub(super) const WEEKDAY: usize = position(&KEYS, "weekday");
    pub(super) const SOURCE_IP: usize = position(&KEYS, "source_ip");
    pub(super) const ANOMALY_SCORE: usize = position(&KEYS, "anomaly_score");
    pub(super) const METHOD: usize = position(&KEYS, "method");
    pub(super) const PATH: usize = position(&KEYS, "path");
    pub(super) const HOST: usize = position(&KEYS, "host");
}

/// Indices into [`ATTRS`].
mod attr {
    use super::{ATTRS, position};
    pub(super) const NAME: usize = position(&ATTRS, "name");
    pub(super) const OWNER: usize = position(&ATTRS, "owner");
    pub(super) const ENV: usize = position(&ATTRS, "env");
    pub(super) const TRUST: usize = position(&ATTRS, "trust");
    pub(super) const PURPOSE: usize = position(&ATTRS, "purpose");
    pub(super) const AGENT: usize = position(&ATTRS, "agent");
    pub(super) const ATTESTOR: usize = position(&ATTRS, "attestor");
    pub(super) const SERVER: usize = position(&ATTRS, "server");
}

/// Builds the Cedar request, the entities it refers to, and the index keys,
/// with the context keys in `reads`.
pub(crate) fn build(
    req: &DecisionRequest,
    args: &warrant_core::mcp::ArgumentSchema,
    anomaly_score: i64,
    reads: Reads,
) -> Result<Built, String> {
    build_with(req, args, false, anomaly_score, reads)
}

/// Like [`build`]; with `unknown_arguments`, a tool call's
/// `context.arguments` is left unknown, for partial evaluation (which tools
/// could this principal call with some arguments?).
pub(crate) fn build_with(
    req: &DecisionRequest,
    args: &warrant_core::mcp::ArgumentSchema,
    unknown_arguments: bool,
    anomaly_score: i64,
    reads: Reads,
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
        &[
            (attr::NAME, &p.agent.name),
            (attr::OWNER, &p.agent.owner),
            (attr::ENV, &p.agent.env),
            (attr::TRUST, p.agent.trust.as_str()),
            (attr::PURPOSE, &p.agent.purpose),
        ],
        reads,
        HashSet::new(),
    ));
    entities.push(entity(
        instance_uid.clone(),
        &[
            (attr::AGENT, &p.agent.name),
            (attr::OWNER, &p.agent.owner),
            (attr::ENV, &p.agent.env),
            (attr::TRUST, p.agent.trust.as_str()),
            (attr::ATTESTOR, &p.attestor),
        ],
        reads,
        HashSet::from([agent_uid]),
    ));

    // Resource, and its parent for tools.
    let resource_uid = match &req.resource {
        Resource::Tool { server, tool } => {
            let server_uid = uid(&t.mcp_server, server);
            let tool_uid = uid(&t.tool, &req.resource.id());
            entities.push(entity(server_uid.clone(), &[], reads, HashSet::new()));
            entities.push(entity(
                tool_uid.clone(),
                &[(attr::NAME, tool), (attr::SERVER, server)],
                reads,
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
            entities.push(entity(u.clone(), &[], reads, HashSet::new()));
            u
        }
    };

    // The user's entity is built whether or not `context.user` is read: a
    // policy may name it itself (`User::"alice" in Group::"admins"`).
    let user_uid = req.context.user.as_ref().map(|user| {
        let user_uid = uid(&t.user, &user.id);
        let parents: HashSet<EntityUID> = user.groups.iter().map(|g| uid(&t.group, g)).collect();
        entities.push(entity(user_uid.clone(), &[], reads, parents));
        user_uid
    });
    let mut ctx = context(req, user_uid, anomaly_score, reads)?;
    let residual = req.action == Action::McpCallTool && unknown_arguments;
    let mut hidden_arguments = Vec::new();
    if req.action == Action::McpCallTool && !residual {
        ctx.insert(
            "arguments".into(),
            arguments(req.context.arguments.as_ref(), args, &mut hidden_arguments)?,
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

/// The request's context, with the key names of DESIGN §4: those some
/// policy reads (`user_uid` is the user's entity, when there is a user).
fn context(
    req: &DecisionRequest,
    user_uid: Option<EntityUID>,
    anomaly_score: i64,
    reads: Reads,
) -> Result<BTreeMap<SmolStr, Value>, String> {
    let (c, p) = (&req.context, &req.principal);
    let mut ctx: BTreeMap<SmolStr, Value> = BTreeMap::new();
    let empty = Vec::new();
    let groups = c.user.as_ref().map_or(&empty, |u| &u.groups);
    if let Some(user_uid) = user_uid
        && reads.wants(key::USER)
    {
        ctx.insert("user".into(), Value::from(user_uid));
    }
    if reads.wants(key::GROUPS) {
        ctx.insert("groups".into(), strings(groups));
    }
    if reads.wants(key::SCOPES) {
        ctx.insert("scopes".into(), strings(&c.scopes));
    }
    if reads.wants(key::SCOPE_RESOURCES) {
        let resources = c
            .scopes
            .iter()
            .map(|s| s.rsplit_once(':').map_or(s.as_str(), |(r, _)| r));
        ctx.insert("scope_resources".into(), Value::set(resources.map(s), None));
    }
    if reads.wants(key::SCOPE_VERBS) {
        let verbs = c
            .scopes
            .iter()
            .filter_map(|s| s.rsplit_once(':').map(|(_, v)| v))
            .filter(|v| !v.is_empty());
        ctx.insert("scope_verbs".into(), Value::set(verbs.map(s), None));
    }
    if reads.wants(key::DEPTH) {
        ctx.insert("depth".into(), Value::from(i64::from(c.depth)));
    }
    if reads.wants(key::CHAIN) {
        ctx.insert("chain".into(), strings(&c.chain));
    }
    if let Some(task) = &c.task
        && reads.wants(key::TASK)
    {
        ctx.insert("task".into(), s(task));
    }
    if let Some(txn) = &c.txn
        && reads.wants(key::TXN)
    {
        ctx.insert("txn".into(), s(txn));
    }
    if reads.wants(key::ATTESTOR) {
        ctx.insert("attestor".into(), s(&p.attestor));
    }
    if reads.wants(key::ENV) {
        ctx.insert("env".into(), s(&p.agent.env));
    }
    if reads.wants(key::HOUR) {
        ctx.insert("hour".into(), Value::from(c.time.hour_utc()));
    }
    if reads.wants(key::WEEKDAY) {
        ctx.insert("weekday".into(), Value::from(c.time.weekday_utc()));
    }
    if let Some(ip) = c.source_ip {
        // Converted whether or not it is read: an address Cedar cannot
        // take must fail every decision alike, not only those of a set
        // that reads it.
        let v = ip_value(ip)?;
        if reads.wants(key::SOURCE_IP) {
            ctx.insert("source_ip".into(), v);
        }
    }
    if reads.wants(key::ANOMALY_SCORE) {
        ctx.insert("anomaly_score".into(), Value::from(anomaly_score));
    }
    if req.action == Action::HttpRequest {
        let http = c
            .http
            .as_ref()
            .ok_or("an http:request decision needs the request's method, path and host")?;
        for (k, name, value) in [
            (key::METHOD, "method", &http.method),
            (key::PATH, "path", &http.path),
            (key::HOST, "host", &http.host),
        ] {
            if reads.wants(k) {
                ctx.insert(name.into(), s(value));
            }
        }
    }
    Ok(ctx)
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
    let built = build(req, args, req.context.anomaly_score, Reads::ALL)?;
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

#[cfg(test)]
#[test]
fn every_context_key_of_the_schema_is_a_key() {
    // Every context attribute the schema declares is a key here (or
    // `arguments`, always given).
    let none = warrant_core::mcp::ArgumentSchema::empty();
    let extra: Vec<&str> = Action::ALL
        .iter()
        .flat_map(|a| crate::schema::extra_context(*a, &none))
        .map(|(n, _, _)| n)
        .collect();
    for name in crate::schema::BASE_CONTEXT
        .iter()
        .map(|(n, _, _)| *n)
        .chain(extra)
    {
        assert!(
            name == "arguments" || KEYS.contains(&name),
            "context key `{name}` of the schema is not in KEYS"
        );
    }
}
