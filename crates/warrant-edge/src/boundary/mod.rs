//! What every request at the edge must be before anything else is read:
//! one request target in origin form, addressed to this listener by `Host`,
//! with one reading of each header the edge decides on, and (for the MCP
//! gateway) no foreign `Origin`; where its task token is; the one spelling
//! of a path ([`path`]); and the names routes and MCP servers may take.
//!
//! The proxy adds its own checks on what it forwards (header names with
//! `_`, method overrides, header sizes) in `proxy::boundaries`.

pub mod path;

use axum::body::Body;
use http::{HeaderMap, HeaderName, Request, StatusCode, header};
use warrant_core::text::shown;

use crate::refusal::Refusal;
use crate::services::EdgeServices;

/// One request target, one `Host` naming this listener, one value of each
/// of `once` (with `Host`).
pub(crate) fn addressed_here(
    req: &Request<Body>,
    s: &EdgeServices,
    once: &[HeaderName],
) -> Result<(), Refusal> {
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        return Err(Refusal::invalid(
            "absolute-form request targets are refused: this is not an open proxy; send `METHOD /<route>/<path>` or `/mcp/<server>` to the edge listener".into(),
        ));
    }
    if let Some(h) =
        repeated(req.headers(), &[header::HOST]).or_else(|| repeated(req.headers(), once))
    {
        return Err(Refusal::invalid(format!(
            "`{h}` is sent more than once; send it once, so there is one reading of the request"
        )));
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !s.serves_host(host) {
        return Err(Refusal::invalid(format!(
            "the Host header `{}` does not name this edge listener; the upstream is chosen by the route or server, never by Host (add names the edge is reached by to `edge_hosts` in warrant.toml)",
            shown(host, 100)
        )));
    }
    Ok(())
}

/// An `Origin`, if sent, must be the edge's own: a page in a browser must
/// not drive an agent's session.
pub(crate) fn same_origin(req: &Request<Body>, s: &EdgeServices) -> Result<(), Refusal> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(());
    };
    let o = origin.to_str().unwrap_or("");
    let scheme = s.edge_url.split("://").next().unwrap_or("http");
    let ours = s
        .edge_hosts
        .iter()
        .any(|h| o.eq_ignore_ascii_case(&format!("{scheme}://{h}")));
    if ours {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden_origin",
            format!("requests from origin `{}` are refused", shown(o, 100)),
        ))
    }
}

/// The first of `names` that `headers` carry more than once: one request
/// must have one reading, and servers disagree on which of two values wins.
pub(crate) fn repeated<'a>(headers: &HeaderMap, names: &'a [HeaderName]) -> Option<&'a HeaderName> {
    names
        .iter()
        .find(|n| headers.get_all(*n).iter().nth(1).is_some())
}

/// Why no task token could be read from a request.
#[derive(Debug)]
pub(crate) struct NoToken {
    /// What to send instead.
    pub(crate) message: String,
    /// Whether something was sent (a 401's challenge then names an error).
    pub(crate) sent: bool,
}

/// The agent's task token from `header` (`Bearer <token>` in
/// `authorization`; the bare token, or `Bearer <token>`, elsewhere).
pub(crate) fn agent_token<'a>(
    headers: &'a HeaderMap,
    header: &HeaderName,
) -> Result<&'a str, NoToken> {
    let sent = |message: String| NoToken {
        message,
        sent: true,
    };
    let mut values = headers.get_all(header).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return Err(NoToken {
            message: format!(
                "send your task token in `{header}`{}",
                if header == header::AUTHORIZATION {
                    " as `Bearer <task token>`"
                } else {
                    ""
                }
            ),
            sent: headers.contains_key(header),
        });
    };
    let v = v
        .to_str()
        .map_err(|_| sent(format!("`{header}` is not text")))?
        .trim();
    let token = match v.split_once(' ') {
        Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
        Some(_) => return Err(sent(format!("`{header}` must be `Bearer <task token>`"))),
        None if header == header::AUTHORIZATION => {
            return Err(sent("`authorization` must be `Bearer <task token>`".into()));
        }
        None => v,
    };
    if token.is_empty() {
        return Err(sent(format!("`{header}` holds no token")));
    }
    Ok(token)
}

/// How a route reads the `authorization` header when its task token is
/// not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OtherAuthorization {
    /// `Bearer <task token>` only: anything else is refused (the agent
    /// never chooses what the upstream is told about who calls).
    BearerOnly,
    /// The agent's own request signature (SigV4), which the edge drops and
    /// replaces with its own; a `Bearer` value is still a task token.
    Signature,
}

/// The task token of a request to a route: from the route's `agent_header`
/// or, whatever that header is, from `authorization: Bearer <token>`, since
/// SDKs differ on where they put their key. Both may be sent only with the
/// same token (one request, one reading of who calls).
pub(crate) fn route_token<'a>(
    headers: &'a HeaderMap,
    agent_header: &HeaderName,
    other: OtherAuthorization,
) -> Result<&'a str, NoToken> {
    if agent_header == header::AUTHORIZATION {
        return agent_token(headers, agent_header);
    }
    let bearer = match headers.get_all(header::AUTHORIZATION).iter().count() {
        0 => None,
        1 => {
            let v = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .unwrap_or_default();
            match v.split_once(' ') {
                Some((scheme, _)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Some(agent_token(headers, &header::AUTHORIZATION)?)
                }
                _ if other == OtherAuthorization::Signature => None,
                _ => {
                    return Err(NoToken {
                        message: format!(
                            "`authorization` must be `Bearer <task token>` (or leave it out and send the task token in `{agent_header}`); the edge sets the upstream's credential itself"
                        ),
                        sent: true,
                    });
                }
            }
        }
        _ => {
            return Err(NoToken {
                message: "`authorization` is sent more than once; send your task token once".into(),
                sent: true,
            });
        }
    };
    let named = if headers.contains_key(agent_header) {
        Some(agent_token(headers, agent_header)?)
    } else {
        None
    };
    match (bearer, named) {
        (Some(a), Some(b)) if a != b => Err(NoToken {
            message: format!(
                "`authorization` and `{agent_header}` hold two different tokens; send one task token"
            ),
            sent: true,
        }),
        (Some(t), _) | (None, Some(t)) => Ok(t),
        (None, None) => Err(NoToken {
            message: format!(
                "send your task token in `{agent_header}` or in `authorization` as `Bearer <task token>`"
            ),
            sent: false,
        }),
    }
}

/// Checks a route's or MCP server's name: 1 to 64 lower-case letters,
/// digits, `-` or `_`, starting with a letter or digit (it is a path segment).
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "name `{}` must be 1 to 64 lower-case letters, digits, `-` or `_`",
            name.escape_debug()
        ))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn repeated_headers_are_found() {
        let mut h = HeaderMap::new();
        h.append(header::HOST, HeaderValue::from_static("a"));
        assert!(repeated(&h, &[header::HOST, header::ORIGIN]).is_none());
        h.append(header::HOST, HeaderValue::from_static("a"));
        assert_eq!(
            repeated(&h, &[header::ORIGIN, header::HOST]),
            Some(&header::HOST)
        );
    }

    #[test]
    fn a_route_reads_its_header_or_a_bearer_token_never_two_tokens() {
        use OtherAuthorization::{BearerOnly, Signature};
        let x = HeaderName::from_static("x-api-key");
        let with = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            h
        };
        let h = with(&[("authorization", "Bearer abc")]);
        assert_eq!(route_token(&h, &x, BearerOnly).unwrap(), "abc");
        let h = with(&[("x-api-key", "abc")]);
        assert_eq!(route_token(&h, &x, BearerOnly).unwrap(), "abc");
        let h = with(&[("x-api-key", "abc"), ("authorization", "bearer abc")]);
        assert_eq!(route_token(&h, &x, BearerOnly).unwrap(), "abc");
        let h = with(&[("x-api-key", "abc"), ("authorization", "Bearer abd")]);
        assert!(
            route_token(&h, &x, BearerOnly).unwrap_err().sent,
            "two tokens"
        );
        let h = with(&[
            ("authorization", "Bearer abc"),
            ("authorization", "Bearer abc"),
        ]);
        assert!(route_token(&h, &x, BearerOnly).is_err());
        let h = with(&[("x-api-key", "abc"), ("authorization", "Basic abc")]);
        assert!(
            route_token(&h, &x, BearerOnly).is_err(),
            "agent-chosen credential"
        );
        assert_eq!(route_token(&h, &x, Signature).unwrap(), "abc");
        let h = with(&[("authorization", "AWS4-HMAC-SHA256 Credential=x")]);
        let e = route_token(&h, &x, Signature).unwrap_err();
        assert!(!e.sent && e.message.contains("x-api-key"), "{e:?}");
        let h = with(&[("authorization", "Bearer ")]);
        assert!(route_token(&h, &x, BearerOnly).unwrap_err().sent);
        let e = route_token(&HeaderMap::new(), &x, BearerOnly).unwrap_err();
        assert!(!e.sent && e.message.contains("x-api-key") && e.message.contains("Bearer"));
        // The route's header is authorization: its own rules.
        let h = with(&[("authorization", "Bearer abc")]);
        assert_eq!(
            route_token(&h, &header::AUTHORIZATION, BearerOnly).unwrap(),
            "abc"
        );
    }

    #[test]
    fn tokens_come_from_the_configured_header() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(agent_token(&h, &header::AUTHORIZATION).unwrap(), "abc");
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(agent_token(&h, &header::AUTHORIZATION).is_err());
        let x = HeaderName::from_static("x-api-key");
        h.insert(x.clone(), HeaderValue::from_static("abc"));
        assert_eq!(agent_token(&h, &x).unwrap(), "abc");
        h.append(x.clone(), HeaderValue::from_static("def"));
        assert!(agent_token(&h, &x).is_err(), "two tokens");
        let none = agent_token(&HeaderMap::new(), &x).unwrap_err();
        assert!(none.message.contains("x-api-key") && !none.sent);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert!(agent_token(&h, &header::AUTHORIZATION).unwrap_err().sent);
    }
}
