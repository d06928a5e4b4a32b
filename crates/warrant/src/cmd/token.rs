//! `warrant token`: tokens for shell agents, and for debugging.
//!
//! `identity`, `self` and `exchange` print the token alone on standard
//! output (`TOKEN=$(warrant token self ...)`), or the broker's whole answer
//! with `--output json`. A refusal is printed as the broker gave it (code,
//! description, deciding policies, how to get access) with exit code 3.
//! `inspect` decodes a token without trusting it and asks the broker
//! whether it is still active.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::agent::{self, AgentError};
use crate::cli::{Cli, Output, TokenCmd};
use crate::cmd::EXIT_DENIED;

pub async fn run(cli: &Cli, cmd: &TokenCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCmd::Identity { agent, audience } => {
            let a = super::agent_client(cli, agent)?;
            let got = match audience {
                Some(aud) => a.identity_for(aud).await,
                None => a.identity().await,
            };
            print_token(cli.output, got)
        }
        TokenCmd::SelfToken {
            agent,
            audience,
            scope,
        } => {
            let a = super::agent_client(cli, agent)?;
            print_token(cli.output, a.self_task(audience, scope).await)
        }
        TokenCmd::Exchange {
            agent,
            user_token,
            task_token,
            audience,
            scope,
        } => {
            let a = super::agent_client(cli, agent)?;
            let (subject, ty) = match (user_token, task_token) {
                (Some(t), _) => (read_arg(t, "--user-token")?, agent::TYPE_JWT),
                (None, Some(t)) => (read_arg(t, "--task-token")?, agent::TYPE_ACCESS_TOKEN),
                (None, None) => anyhow::bail!("give --user-token or --task-token"),
            };
            print_token(cli.output, a.exchange(&subject, ty, audience, scope).await)
        }
        TokenCmd::Inspect { agent, token } => {
            let token = read_arg(token, "TOKEN")?;
            inspect(cli, agent, &token).await
        }
    }
}

/// The value of an argument, or standard input for `-`.
fn read_arg(v: &str, what: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    if v != "-" {
        return Ok(zeroize::Zeroizing::new(v.trim().to_owned()));
    }
    let mut s = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut s)
        .with_context(|| format!("reading {what} from standard input"))?;
    Ok(zeroize::Zeroizing::new(s.trim().to_owned()))
}

fn print_token(out: Output, got: Result<agent::Held, AgentError>) -> anyhow::Result<ExitCode> {
    match got {
        Ok(h) => {
            match out {
                Output::Json => crate::output::json(&*h.answer)?,
                Output::Human => println!("{}", h.token.as_str()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => refused(out, &e),
    }
}

/// Prints a refusal; exit code 3 for a rule's or policy's, 1 otherwise.
pub fn refused(out: Output, e: &AgentError) -> anyhow::Result<ExitCode> {
    match out {
        Output::Json => crate::output::json(&e.edge_body().1)?,
        Output::Human => {
            eprintln!("error: {e}");
            if let AgentError::Refused {
                refused_by,
                policies,
                how_to_get_access,
                ..
            } = e
            {
                if let Some(r) = refused_by {
                    eprintln!("refused by: {r}");
                }
                if !policies.is_empty() {
                    eprintln!("policies: {}", policies.join(", "));
                }
                if let Some(h) = how_to_get_access {
                    eprintln!("to get access: {h}");
                }
            }
        }
    }
    Ok(if e.is_denied() {
        ExitCode::from(EXIT_DENIED)
    } else {
        ExitCode::FAILURE
    })
}

async fn inspect(cli: &Cli, args: &crate::cli::AgentArgs, token: &str) -> anyhow::Result<ExitCode> {
    let (Some(header), Some(claims)) = (agent::jwt_part(token, 0), agent::claims(token)) else {
        anyhow::bail!("this is not a JWT (three base64url parts separated by dots)");
    };
    let typ = header.get("typ").and_then(Value::as_str).unwrap_or("");
    let kind = match typ {
        "at+jwt" => "task token",
        "JWT" if claims.contains_key("attestor") => "identity token (JWT-SVID)",
        _ => "not a warrant task or identity token",
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
    let expired = exp <= now;
    let mut chain = Vec::new();
    let mut act = claims.get("act");
    while let Some(a) = act {
        if let Some(s) = a.get("sub").and_then(Value::as_str) {
            chain.push(s.to_owned());
        }
        act = a.get("act");
    }
    // Whether the broker signed it (its JWKS), then whether it is good now:
    // a task token as the broker says (introspection, with this process's
    // identity), an identity token by its lifetime.
    let agent = super::agent_client(cli, args);
    let signed = match &agent {
        Err(e) => Sig::Unknown(format!("cannot ask the broker: {e:#}")),
        Ok(a) => match a.jwks().await {
            Err(e) => Sig::Unknown(format!("cannot fetch the broker's JWKS: {e}")),
            Ok(bytes) => match warrant_token::jwt::VerifyingKeys::from_jwks(&bytes) {
                Err(e) => Sig::Unknown(format!("the broker's JWKS does not parse: {e}")),
                Ok((keys, _)) => match warrant_token::jwt::verify(token, &keys) {
                    Ok(_) => Sig::Broker(format!(
                        "signed by the broker's key `{}`",
                        header.get("kid").and_then(Value::as_str).unwrap_or("-")
                    )),
                    Err(e) => Sig::Forged(format!("NOT the broker's: {e}")),
                },
            },
        },
    };
    let forged = matches!(signed, Sig::Forged(_));
    let signature = match &signed {
        Sig::Broker(m) | Sig::Forged(m) | Sig::Unknown(m) => m.clone(),
    };
    let (active, why): (Option<bool>, String) = if forged {
        (Some(false), "its signature is not the broker's".into())
    } else if matches!(signed, Sig::Unknown(_)) {
        (None, "the signature could not be checked".into())
    } else if expired {
        (Some(false), "expired".into())
    } else if typ != "at+jwt" {
        (
            Some(true),
            "signed by the broker and not expired (only task tokens are introspected)".into(),
        )
    } else {
        match agent {
            Err(e) => (None, format!("cannot ask the broker: {e:#}")),
            Ok(a) => match a.introspect(token).await {
                Ok(v) => {
                    let on = v.get("active").and_then(Value::as_bool) == Some(true);
                    (
                        Some(on),
                        if on {
                            "the broker says it is active".into()
                        } else {
                            "the broker says it is not active (revoked, or an agent or instance in its chain may no longer act)".into()
                        },
                    )
                }
                Err(e) => (None, format!("cannot ask the broker: {e}")),
            },
        }
    };
    let v = json!({
        "kind": kind,
        "typ": typ,
        "alg": header.get("alg"),
        "kid": header.get("kid"),
        "iss": claims.get("iss"),
        "sub": claims.get("sub"),
        "chain": chain,
        "aud": claims.get("aud"),
        "scope": claims.get("scope"),
        "task": claims.get("task"),
        "parent": claims.get("parent"),
        "txn": claims.get("txn"),
        "iat": claims.get("iat"),
        "exp": exp,
        "expires_in": exp.saturating_sub(now),
        "signature": signature,
        "active": active,
        "active_because": why,
        "claims": claims,
    });
    crate::output::emit(cli.output, &v, |v| {
        let s = |k: &str| match &v[k] {
            Value::Null => "-".to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("kind:     {}", s("kind"));
        println!("signature: {}", s("signature"));
        println!("issuer:   {}", s("iss"));
        println!("subject:  {}", s("sub"));
        for (i, a) in chain.iter().enumerate() {
            println!("{}{a}", if i == 0 { "acting:   " } else { "  for:    " });
        }
        println!("audience: {}", s("aud"));
        println!("scope:    {}", s("scope"));
        if v["task"].is_string() {
            println!(
                "task:     {} (txn {}, parent {})",
                s("task"),
                s("txn"),
                s("parent")
            );
        }
        println!(
            "expires:  {} ({})",
            exp,
            if expired {
                "expired".to_owned()
            } else {
                format!("in {} s", exp.saturating_sub(now))
            }
        );
        let state = match active {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        };
        println!("active:   {state}: {why}");
    })?;
    Ok(match active {
        Some(true) => ExitCode::SUCCESS,
        Some(false) => ExitCode::from(EXIT_DENIED),
        None => ExitCode::FAILURE,
    })
}

/// What the broker's JWKS says of a token's signature.
enum Sig {
    Broker(String),
    Forged(String),
    Unknown(String),
}
