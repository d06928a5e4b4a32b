//! AWS by federation: warrant is an OIDC identity provider for STS
//! `AssumeRoleWithWebIdentity`. The web identity token names the acting
//! agent (and, by the subject template, its environment and user) and asks
//! for session tags; the temporary credentials are cached per role and
//! subject; every proxied request is signed with SigV4 at the last hop, the
//! agent's own signature dropped.
//!
//! Not here: verifying the task token, or anything the agent may choose.
//! No long-lived AWS key exists anywhere.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use serde_json::{Value, json};
use warrant_core::task::TaskUse;
use zeroize::Zeroizing;

use super::cache::{CachedToken, TokenCache, TokenClient, form, form_post, send};
use super::config::AwsSts;
use super::{CredentialError, Injected, Providers, Target};

/// Who a session is for, and what is asked of STS for it.
struct Session<'a> {
    agent: &'a str,
    env: &'a str,
    user: Option<&'a str>,
    subject: String,
    name: String,
    policy: Option<String>,
}

/// Temporary credentials from STS.
pub(crate) struct AwsKeys {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: Zeroizing<String>,
    pub(crate) session_token: Zeroizing<String>,
}

/// What signs a request: the keys, the region and the service.
pub struct SigV4 {
    keys: Arc<CachedToken>,
    region: String,
    service: String,
}

impl std::fmt::Debug for SigV4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// How the request's payload is signed, from what the agent's SDK declared
/// in `x-amz-content-sha256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// The edge reads the body and signs its hash.
    Hashed,
    /// `UNSIGNED-PAYLOAD` (S3 over TLS).
    Unsigned,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`: aws-chunked with a trailing
    /// checksum, nothing signed per chunk.
    UnsignedTrailer,
}

impl Payload {
    /// The mode for a declared `x-amz-content-sha256`, or why the edge
    /// cannot sign it: chunk signatures chain from the agent's own
    /// signature, which the edge replaces.
    pub fn of(declared: Option<&[u8]>) -> Result<Self, String> {
        match declared {
            None => Ok(Self::Hashed),
            Some(b"UNSIGNED-PAYLOAD") => Ok(Self::Unsigned),
            Some(b"STREAMING-UNSIGNED-PAYLOAD-TRAILER") => Ok(Self::UnsignedTrailer),
            Some(v) if v.starts_with(b"STREAMING-") => Err(
                "the request's payload is signed chunk by chunk (`x-amz-content-sha256: STREAMING-...`), which chains from your SDK's signature, and the edge signs requests itself; send the body whole or unsigned (in boto3, `Config(s3={\"payload_signing_enabled\": False})` over https)".into(),
            ),
            Some(v) if v.len() == 64 && v.iter().all(u8::is_ascii_hexdigit) => Ok(Self::Hashed),
            Some(_) => Err("`x-amz-content-sha256` is neither a SHA-256 nor a payload mode".into()),
        }
    }
}

/// Query parameters of a presigned request: a signature the agent made,
/// which the edge does not pass on.
pub(crate) fn presigned(query: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, _)| k)
        .find(|k| {
            let k = k.to_ascii_lowercase();
            matches!(
                k.as_str(),
                "x-amz-algorithm"
                    | "x-amz-credential"
                    | "x-amz-signature"
                    | "x-amz-security-token"
                    | "x-amz-date"
                    | "x-amz-signedheaders"
                    | "x-amz-expires"
                    | "awsaccesskeyid"
                    | "signature"
            )
        })
        .map(|k| k.into_owned())
}

/// The typ of a token warrant mints for a federation (AWS, a security token
/// service): its own, never a task token's (`at+jwt`) or an identity
/// token's (`JWT`), so none of warrant's tokens stands in for another.
pub const FEDERATION_JWT_TYP: &str = "warrant-federation+jwt";

/// `v` in the characters AWS accepts in a field (`keep`), at most `max`
/// long, so that two different values never look alike: every other
/// character (and `=` itself) is written `=XX` per UTF-8 byte, and a value
/// still too long is cut and ends in `==` and a digest of the whole (`==`
/// cannot occur in a value that was not cut, since each `=` is followed
/// by two hex digits).
fn aws_field(v: &str, keep: impl Fn(char) -> bool, max: usize) -> String {
    use sha2::Digest as _;
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if c != '=' && keep(c) {
            out.push(c);
        } else {
            let mut buf = [0; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("={b:02X}"));
            }
        }
    }
    if out.len() <= max {
        return out;
    }
    let digest = hex::encode(sha2::Sha256::digest(v.as_bytes()));
    // 64 bits of it in a session name (64 characters in all), 128 in a tag.
    let digest = &digest[..if max <= 64 { 16 } else { 32 }];
    let mut cut = max - 2 - digest.len();
    while !out.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}=={digest}", &out[..cut])
}

/// A session tag value (AWS: letters, digits, spaces and `_.:/=+-@`, at
/// most 256), as [`aws_field`] writes it: user ids such as `corp/alice`
/// are kept as they are.
fn tag_value(v: &str) -> String {
    aws_field(
        v,
        |c| c.is_ascii_alphanumeric() || " _.:/+-@".contains(c),
        256,
    )
}

/// The role session name: `<agent>@<user>` (AWS: 2 to 64 of letters,
/// digits and `=,.@_-`, written as [`aws_field`] does). CloudTrail shows it
/// in every record's `userIdentity.arn`; the session tags carry the whole
/// user id.
fn session_name(agent: &str, user: Option<&str>) -> String {
    let raw = match user {
        Some(u) => format!("{agent}@{u}"),
        None => agent.to_owned(),
    };
    let mut s = aws_field(
        &raw,
        |c| c.is_ascii_alphanumeric() || "_.@-".contains(c),
        64,
    );
    while s.len() < 2 {
        s.push('-');
    }
    s
}

/// The session policy for a task: the statements of every scope it holds
/// that the route maps, or `None` when the route maps none. A route that
/// maps scopes refuses a task holding none of them.
fn session_policy(a: &AwsSts, scope: &str, route: &str) -> Result<Option<String>, CredentialError> {
    if a.session_policies.is_empty() {
        return Ok(None);
    }
    let held: Vec<&str> = scope.split_whitespace().collect();
    let statements: Vec<&Value> = a
        .session_policies
        .iter()
        .filter(|(s, _)| held.contains(&s.as_str()))
        .flat_map(|(_, st)| st.iter())
        .collect();
    if statements.is_empty() {
        let mapped: Vec<&str> = a.session_policies.keys().map(String::as_str).collect();
        return Err(CredentialError::Scope(format!(
            "route `{route}` grants AWS access only for the scopes {}, and this task holds none of them; exchange a token with one",
            mapped.join(", ")
        )));
    }
    let policy = json!({ "Version": "2012-10-17", "Statement": statements }).to_string();
    if policy.len() > 2048 {
        return Err(CredentialError::Unavailable(format!(
            "route `{route}`: the session policy for scopes `{scope}` is {} characters, over AWS's 2048",
            policy.len()
        )));
    }
    Ok(Some(policy))
}

impl Providers<'_> {
    /// Temporary credentials for this task's agent and user, cached per
    /// subject, tags and session policy.
    pub(crate) async fn aws(
        &self,
        route: Target<'_>,
        a: &AwsSts,
        cache: &TokenCache,
        task: &TaskUse,
    ) -> Result<Injected, CredentialError> {
        let agent = task.agent.name.as_str();
        let env = task.agent.env.as_str();
        let user = task.claims.sub.strip_prefix("user:");
        let session = Session {
            agent,
            env,
            user,
            subject: a.subject.render(agent, env, user),
            name: session_name(agent, user),
            policy: session_policy(a, &task.claims.scope, route.name)?,
        };
        // Everything the minted token and the request to STS depend on,
        // unambiguously (a JSON array).
        let key = json!([session.subject, agent, env, user, session.policy]).to_string();
        let keys = cache
            .get(&key, |client| async move {
                self.assume_role(&client, (route, a), task, &session).await
            })
            .await?;
        let Some(k) = &keys.aws else {
            return Err(CredentialError::Unavailable("no AWS keys".into()));
        };
        let echoes = vec![
            k.secret_access_key.as_bytes().to_vec(),
            k.session_token.as_bytes().to_vec(),
        ];
        let id = format!("{} (expires in {}s)", keys.id, keys.left());
        Ok(Injected {
            header: None,
            tls: None,
            sigv4: Some(SigV4 {
                keys,
                region: a.region.clone(),
                service: a.service.clone(),
            }),
            echoes,
            id,
        })
    }

    /// `AssumeRoleWithWebIdentity` for one session, with a token minted for
    /// it (asking for its tags when the route does).
    async fn assume_role(
        &self,
        client: &TokenClient,
        (route, a): (Target<'_>, &AwsSts),
        task: &TaskUse,
        s: &Session<'_>,
    ) -> Result<CachedToken, CredentialError> {
        let mut extra = serde_json::Map::new();
        if a.session_tags {
            extra.insert(
                "https://aws.amazon.com/tags".into(),
                json!({ "principal_tags": {
                    "warrant:agent": [tag_value(s.agent)],
                    "warrant:env": [tag_value(s.env)],
                    "warrant:user": [tag_value(s.user.unwrap_or("-"))],
                } }),
            );
        }
        let token = self.federation_token(&a.token_audience, &s.subject, task, extra)?;
        let duration = a.session_duration.as_secs().to_string();
        let mut pairs = vec![
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", a.role_arn.as_str()),
            ("RoleSessionName", s.name.as_str()),
            ("WebIdentityToken", token.as_str()),
            ("DurationSeconds", duration.as_str()),
        ];
        if let Some(p) = &s.policy {
            pairs.push(("Policy", p));
        }
        let req = form_post(&a.sts_url, form(&pairs), None)?;
        let (status, body) =
            send(client, req, route.name, "AWS STS endpoint", route.timeout).await?;
        let answer = sts_answer(&body);
        if !status.is_success() {
            let code = answer.err().unwrap_or_default();
            tracing::warn!(route = route.name, role = %a.role_arn, status = %status, code = %code, "AWS STS refused AssumeRoleWithWebIdentity");
            let code = if code.is_empty() {
                String::new()
            } else {
                format!(", `{code}`")
            };
            let tags = if a.session_tags {
                ", and allows `sts:TagSession`"
            } else {
                ""
            };
            return Err(CredentialError::Unavailable(format!(
                "`{}`: AWS STS refused to let warrant assume `{}` ({status}{code}); check the role's trust policy names warrant's issuer, audience `{}` and subject `{}`{tags}",
                route.name, a.role_arn, a.token_audience, s.subject,
            )));
        }
        let (keys, expiration) = answer.map_err(|code| {
            CredentialError::Unavailable(format!(
                "`{}`: AWS STS answered without credentials ({code})",
                route.name
            ))
        })?;
        let life = expiration
            .and_then(|e| e.duration_since(SystemTime::now()).ok())
            .unwrap_or(a.session_duration)
            .min(a.session_duration)
            .max(Duration::from_secs(1));
        let id = format!(
            "aws:{} session {} key {}",
            a.role_arn, s.name, keys.access_key_id
        );
        let mut t = CachedToken::new(Zeroizing::new(String::new()), id, life);
        t.aws = Some(keys);
        Ok(t)
    }
}

/// The credentials (and their expiry) in STS's XML answer, or the error
/// code it gave.
fn sts_answer(body: &[u8]) -> Result<(AwsKeys, Option<SystemTime>), String> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_reader(body);
    // The text of the element being read (text and entity references
    // arrive as separate events).
    let mut text = Zeroizing::new(String::new());
    let (mut akid, mut secret, mut session, mut exp, mut code) = (None, None, None, None, None);
    loop {
        match r.read_event() {
            Ok(Event::Start(_)) => text.clear(),
            Ok(Event::Text(t)) => {
                if let Ok(t) = t.decode() {
                    text.push_str(&t);
                }
            }
            Ok(Event::GeneralRef(e)) => {
                let c = match e.resolve_char_ref() {
                    Ok(Some(c)) => Some(c),
                    _ => match e.decode().as_deref() {
                        Ok("amp") => Some('&'),
                        Ok("lt") => Some('<'),
                        Ok("gt") => Some('>'),
                        Ok("quot") => Some('"'),
                        Ok("apos") => Some('\''),
                        _ => None,
                    },
                };
                text.extend(c);
            }
            Ok(Event::End(e)) => {
                let v = text.trim().to_owned();
                text.clear();
                match e.local_name().as_ref() {
                    b"AccessKeyId" => akid = Some(v),
                    b"SecretAccessKey" => secret = Some(Zeroizing::new(v)),
                    b"SessionToken" => session = Some(Zeroizing::new(v)),
                    b"Expiration" => exp = humantime::parse_rfc3339_weak(&v).ok(),
                    b"Code" => code = Some(v),
                    _ => {}
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    match (akid, secret, session) {
        (Some(a), Some(s), Some(t)) if !a.is_empty() && !s.is_empty() && !t.is_empty() => Ok((
            AwsKeys {
                access_key_id: a,
                secret_access_key: s,
                session_token: t,
            },
            exp,
        )),
        _ => Err(code
            .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'))
            .unwrap_or_else(|| "no credentials in the answer".into())),
    }
}

/// The headers a request is signed over: `host`, the content's type,
/// digest and encoding, and every `x-amz-*` (S3 requires those signed).
fn signed(name: &str) -> bool {
    matches!(
        name,
        "host" | "content-type" | "content-md5" | "content-encoding"
    ) || name.starts_with("x-amz-")
}

impl SigV4 {
    /// Signs `req` (whose `uri` is the upstream's, already encoded) with the
    /// temporary credentials; `body` is the body read whole for
    /// [`Payload::Hashed`].
    pub fn sign<B>(
        &self,
        req: &mut http::Request<B>,
        payload: Payload,
        body: &[u8],
    ) -> Result<(), String> {
        let Some(k) = &self.keys.aws else {
            return Err("no AWS keys".into());
        };
        let creds = aws_credential_types::Credentials::new(
            k.access_key_id.as_str(),
            k.secret_access_key.as_str(),
            Some(k.session_token.as_str().to_owned()),
            None,
            "warrant",
        );
        let identity = creds.into();
        let s3 = self.service == "s3" || self.service.starts_with("s3-");
        let mut settings = SigningSettings::default();
        if s3 {
            // S3 takes the path as sent: encoded once, never normalised.
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.service)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| e.to_string())?
            .into();
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter(|(n, _)| signed(n.as_str()))
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
            .collect();
        let signable_body = match payload {
            Payload::Hashed => SignableBody::Bytes(body),
            Payload::Unsigned => SignableBody::UnsignedPayload,
            Payload::UnsignedTrailer => SignableBody::StreamingUnsignedPayloadTrailer,
        };
        let uri = req.uri().to_string();
        let signable = SignableRequest::new(
            req.method().as_str(),
            uri.as_str(),
            headers.into_iter(),
            signable_body,
        )
        .map_err(|e| e.to_string())?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| e.to_string())?
            .into_parts();
        // Headers only (the signature is never put in the query).
        let (headers, _) = instructions.into_parts();
        for h in headers {
            let mut v = http::HeaderValue::from_str(h.value()).map_err(|e| e.to_string())?;
            v.set_sensitive(h.sensitive() || h.name() == "authorization");
            req.headers_mut()
                .insert(http::HeaderName::from_static(h.name()), v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_and_tags_are_what_aws_accepts_and_never_alike() {
        assert_eq!(
            session_name("orch", Some("login.test/alice")),
            "orch@login.test=2Falice"
        );
        assert_eq!(session_name("a", None), "a-");
        assert_eq!(tag_value("login.test/alice"), "login.test/alice");
        assert_eq!(tag_value("auth0|12 é"), "auth0=7C12 =C3=A9");
        // Found by the outside review of issue 18: values that differed
        // only in a replaced character, or past the length AWS takes, were
        // written alike.
        let pairs = [
            ("login.test/a|b", "login.test/a_b"),
            ("login.test/a=7Cb", "login.test/a|b"),
            ("x/a*", "x/a_"),
        ];
        for (a, b) in pairs {
            assert_ne!(tag_value(a), tag_value(b), "{a} {b}");
            assert_ne!(session_name("orch", Some(a)), session_name("orch", Some(b)));
        }
        let long = |end: &str| format!("login.microsoftonline.com/{}{end}", "y".repeat(80));
        let (one, two) = (long("-one"), long("-two"));
        let (s1, s2) = (
            session_name("triage-agent", Some(&one)),
            session_name("triage-agent", Some(&two)),
        );
        assert!(s1.len() <= 64 && s2.len() <= 64, "{s1}");
        assert_ne!(s1, s2);
        assert!(
            s1.starts_with("triage-agent@login.microsoftonline.com=2Fyy"),
            "{s1}"
        );
        let long_tag = |end: &str| format!("ns/{}{end}", "z".repeat(300));
        let (t1, t2) = (tag_value(&long_tag("1")), tag_value(&long_tag("2")));
        assert!(t1.len() <= 256 && t1 != t2);
        let allowed = |c: char| c.is_ascii_alphanumeric() || "=,.@_-".contains(c);
        for s in [&s1, &s2] {
            assert!(s.chars().all(allowed), "{s}");
        }
    }

    #[test]
    fn payload_modes_follow_the_declared_hash() {
        assert_eq!(Payload::of(None), Ok(Payload::Hashed));
        assert_eq!(Payload::of(Some(&[b'a'; 64])), Ok(Payload::Hashed));
        assert_eq!(
            Payload::of(Some(b"UNSIGNED-PAYLOAD")),
            Ok(Payload::Unsigned)
        );
        assert_eq!(
            Payload::of(Some(b"STREAMING-UNSIGNED-PAYLOAD-TRAILER")),
            Ok(Payload::UnsignedTrailer)
        );
        assert!(Payload::of(Some(b"STREAMING-AWS4-HMAC-SHA256-PAYLOAD")).is_err());
        assert!(Payload::of(Some(b"STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER")).is_err());
        assert!(Payload::of(Some(b"nonsense")).is_err());
    }

    #[test]
    fn presigned_queries_are_found_in_any_case() {
        assert_eq!(
            presigned("a=1&X-Amz-Signature=x").as_deref(),
            Some("X-Amz-Signature")
        );
        assert!(presigned("x-amz-credential=x").is_some());
        assert!(presigned("AWSAccessKeyId=x&Signature=y").is_some());
        assert!(presigned("list-type=2&prefix=a").is_none());
    }

    #[test]
    fn the_sts_answer_is_read_and_its_errors_named() {
        let ok = br#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleWithWebIdentityResult><Credentials>
<SessionToken>FQo&amp;token</SessionToken><SecretAccessKey>secret</SecretAccessKey>
<Expiration>2030-01-01T00:00:00Z</Expiration><AccessKeyId>ASIAEXAMPLE</AccessKeyId>
</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"#;
        let (k, exp) = sts_answer(ok).unwrap();
        assert_eq!(k.access_key_id, "ASIAEXAMPLE");
        assert_eq!(k.session_token.as_str(), "FQo&token");
        assert!(exp.is_some());
        let err = br#"<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code><Message>x</Message></Error></ErrorResponse>"#;
        assert_eq!(sts_answer(err).err().unwrap(), "InvalidIdentityToken");
        assert!(sts_answer(b"not xml <").is_err());
    }
}
