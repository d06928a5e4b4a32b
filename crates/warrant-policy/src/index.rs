//! A scope index over the policy set.
//!
//! Plain Cedar evaluates every policy for every request: about a microsecond per
//! policy, so 17 ms at 10,000 policies. But a policy whose scope (principal,
//! action, resource) cannot match the request is false without evaluating its
//! conditions, and Cedar checks scope before conditions, so skipping it changes
//! neither the decision nor the errors. The index files each policy under the
//! entity its principal and resource constraints name (or "any"), per action, so
//! a request looks up only the buckets of its principal's and resource's
//! ancestors-or-self and evaluates just those candidates.
//!
//! INVARIANT (index is exact): for every request, the candidates include every
//! policy whose scope matches. A randomized test compares `decide` with
//! `decide_unindexed` to keep it so.
//!
//! INVARIANT (no action groups): warrant's schema declares no action groups, so
//! an action is `in` only itself. If groups are ever added, `ActionSlot` must
//! include the group ancestors of the requested action.

use std::collections::HashMap;

use cedar_policy::{
    ActionConstraint, EntityTypeName, EntityUid, Policy, PrincipalConstraint, ResourceConstraint,
};
use warrant_core::decision::Action;

/// warrant's entity types, as one byte each for cheap keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TypeCode {
    Agent,
    Instance,
    User,
    Group,
    Audience,
    Route,
    McpServer,
    Tool,
    Secret,
    /// A type outside warrant's schema (validation rejects these; kept total).
    Other,
}

impl TypeCode {
    fn of(t: &EntityTypeName) -> Self {
        match t.to_string().as_str() {
            "Agent" => Self::Agent,
            "Instance" => Self::Instance,
            "User" => Self::User,
            "Group" => Self::Group,
            "Audience" => Self::Audience,
            "Route" => Self::Route,
            "McpServer" => Self::McpServer,
            "Tool" => Self::Tool,
            "Secret" => Self::Secret,
            _ => Self::Other,
        }
    }

    fn tag(self) -> char {
        match self {
            Self::Agent => 'A',
            Self::Instance => 'I',
            Self::User => 'U',
            Self::Group => 'G',
            Self::Audience => 'a',
            Self::Route => 'R',
            Self::McpServer => 'M',
            Self::Tool => 'T',
            Self::Secret => 'S',
            Self::Other => '?',
        }
    }
}

/// An entity as an index key: a one-character type tag, then the id. The tag
/// has a fixed width, so keys of different types never collide.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key(String);

impl Key {
    pub(crate) fn new(ty: TypeCode, id: &str) -> Self {
        let mut s = String::with_capacity(id.len() + 1);
        s.push(ty.tag());
        s.push_str(id);
        Self(s)
    }

    fn of(uid: &EntityUid) -> Self {
        Self::new(TypeCode::of(uid.type_name()), uid.id().unescaped())
    }
}

/// A scope constraint on principal or resource, reduced to what the index needs.
#[derive(Debug, Clone)]
pub(crate) enum Constraint {
    Any,
    Eq(Key),
    In(Key),
    Is(TypeCode),
    IsIn(TypeCode, Key),
}

impl Constraint {
    /// The entity a request's ancestry must contain for the policy to apply.
    fn key(&self) -> Option<&Key> {
        match self {
            Self::Any | Self::Is(_) => None,
            Self::Eq(e) | Self::In(e) | Self::IsIn(_, e) => Some(e),
        }
    }

    /// Whether an entity of this type, with this lineage (itself first, then
    /// its ancestors), can match.
    fn admits(&self, ty: TypeCode, lineage: &[Key]) -> bool {
        match self {
            Self::Any => true,
            Self::Eq(e) => lineage.first() == Some(e),
            Self::In(e) => lineage.contains(e),
            Self::Is(t) => *t == ty,
            Self::IsIn(t, e) => *t == ty && lineage.contains(e),
        }
    }
}

/// A policy's scope.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    principal: Constraint,
    /// `None` for any action, else the action ids named.
    actions: Option<Vec<String>>,
    resource: Constraint,
}

impl Scope {
    pub(crate) fn of(p: &Policy) -> Self {
        let principal = match p.principal_constraint() {
            PrincipalConstraint::Any => Constraint::Any,
            PrincipalConstraint::Eq(e) => Constraint::Eq(Key::of(&e)),
            PrincipalConstraint::In(e) => Constraint::In(Key::of(&e)),
            PrincipalConstraint::Is(t) => Constraint::Is(TypeCode::of(&t)),
            PrincipalConstraint::IsIn(t, e) => Constraint::IsIn(TypeCode::of(&t), Key::of(&e)),
        };
        let resource = match p.resource_constraint() {
            ResourceConstraint::Any => Constraint::Any,
            ResourceConstraint::Eq(e) => Constraint::Eq(Key::of(&e)),
            ResourceConstraint::In(e) => Constraint::In(Key::of(&e)),
            ResourceConstraint::Is(t) => Constraint::Is(TypeCode::of(&t)),
            ResourceConstraint::IsIn(t, e) => Constraint::IsIn(TypeCode::of(&t), Key::of(&e)),
        };
        // INVARIANT (index is exact): an action is warrant's only if its
        // type is `Action` itself; `Foo::Action::"token:self"` names no
        // action a request can have, so it is filed under none (a policy
        // naming only such actions is never a candidate, as Cedar never
        // matches it).
        let ours = |a: &EntityUid| {
            (a.type_name().to_string() == "Action").then(|| a.id().unescaped().to_owned())
        };
        let actions = match p.action_constraint() {
            ActionConstraint::Any => None,
            ActionConstraint::Eq(a) => Some(ours(&a).into_iter().collect()),
            ActionConstraint::In(v) => Some(v.iter().filter_map(ours).collect()),
        };
        Self {
            principal,
            actions,
            resource,
        }
    }

    fn has_action(&self, a: Action) -> bool {
        self.actions
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == a.as_str()))
    }

    /// Whether a call of the tool with Cedar id `id` (`server/tool`) is in
    /// this scope (whatever the principal).
    pub(crate) fn reaches_tool(&self, id: &str) -> bool {
        let server = id.split_once('/').map_or(id, |(s, _)| s);
        self.has_action(Action::McpCallTool)
            && self.resource.admits(
                TypeCode::Tool,
                &[
                    Key::new(TypeCode::Tool, id),
                    Key::new(TypeCode::McpServer, server),
                ],
            )
    }

    /// Whether some tool call could be in this scope.
    pub(crate) fn reaches_any_tool(&self) -> bool {
        self.has_action(Action::McpCallTool)
            && match &self.resource {
                Constraint::Any => true,
                Constraint::Is(t) | Constraint::IsIn(t, _) => *t == TypeCode::Tool,
                Constraint::Eq(k) => k.0.starts_with(TypeCode::Tool.tag()),
                Constraint::In(k) => {
                    k.0.starts_with(TypeCode::Tool.tag())
                        || k.0.starts_with(TypeCode::McpServer.tag())
                }
            }
    }
}

/// What the index needs to know about a request.
#[derive(Debug)]
pub(crate) struct RequestKeys {
    pub(crate) action: Action,
    /// The principal first, then its ancestors.
    pub(crate) principal: Vec<Key>,
    pub(crate) principal_type: TypeCode,
    /// The resource first, then its ancestors.
    pub(crate) resource: Vec<Key>,
    pub(crate) resource_type: TypeCode,
}

#[derive(Debug, Default)]
struct ResourceLevel {
    by_key: HashMap<Key, Vec<u32>>,
    any: Vec<u32>,
}

#[derive(Debug, Default)]
struct PrincipalLevel {
    by_key: HashMap<Key, ResourceLevel>,
    any: ResourceLevel,
}

/// Slot 0 holds policies for any action; slot `1 + i` those naming `Action::ALL[i]`.
const SLOTS: usize = Action::ALL.len() + 1;

fn slot(a: Action) -> usize {
    1 + Action::ALL.iter().position(|x| *x == a).unwrap_or(0)
}

/// The index: action slot → principal bucket → resource bucket → policy numbers.
#[derive(Debug, Default)]
pub(crate) struct ScopeIndex {
    slots: Vec<PrincipalLevel>,
    scopes: Vec<Scope>,
}

impl ScopeIndex {
    pub(crate) fn build(scopes: &[Scope]) -> Self {
        let mut slots: Vec<PrincipalLevel> =
            (0..SLOTS).map(|_| PrincipalLevel::default()).collect();
        for (i, scope) in scopes.iter().enumerate() {
            let n = u32::try_from(i).unwrap_or(u32::MAX);
            let targets: Vec<usize> = match &scope.actions {
                None => vec![0],
                Some(names) => names
                    .iter()
                    // A name that is no action of warrant's (a pending
                    // policy is not validated) is filed under none.
                    .filter_map(|name| {
                        Action::ALL
                            .iter()
                            .find(|a| a.as_str() == name)
                            .map(|a| slot(*a))
                    })
                    .collect(),
            };
            for s in targets {
                let level = &mut slots[s];
                let rl = match scope.principal.key() {
                    Some(k) => level.by_key.entry(k.clone()).or_default(),
                    None => &mut level.any,
                };
                match scope.resource.key() {
                    Some(k) => rl.by_key.entry(k.clone()).or_default().push(n),
                    None => rl.any.push(n),
                }
            }
        }
        Self {
            slots,
            scopes: scopes.to_vec(),
        }
    }

    /// Numbers of the policies whose scope matches, ascending.
    pub(crate) fn candidates(&self, keys: &RequestKeys) -> Vec<u32> {
        let mut out = Vec::new();
        if self.slots.is_empty() {
            return out;
        }
        for s in [0, slot(keys.action)] {
            let level = &self.slots[s];
            let principal_levels = keys
                .principal
                .iter()
                .filter_map(|p| level.by_key.get(p))
                .chain(std::iter::once(&level.any));
            for rl in principal_levels {
                let buckets = keys
                    .resource
                    .iter()
                    .filter_map(|r| rl.by_key.get(r))
                    .chain(std::iter::once(&rl.any));
                for bucket in buckets {
                    for &n in bucket {
                        let scope = &self.scopes[n as usize];
                        if scope.principal.admits(keys.principal_type, &keys.principal)
                            && scope.resource.admits(keys.resource_type, &keys.resource)
                        {
                            out.push(n);
                        }
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}
