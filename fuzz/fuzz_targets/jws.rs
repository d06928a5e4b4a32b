//! Compact JWS parsing and verification: any input is refused or verified,
//! never a panic; a token verifies only if signed by the key set's key.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn keys() -> &'static warrant_token::jwt::VerifyingKeys {
    static KEYS: OnceLock<warrant_token::jwt::VerifyingKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let jwks = br#"{"keys":[
          {"kty":"EC","crv":"P-256","kid":"e","alg":"ES256",
           "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
           "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
          {"kty":"OKP","crv":"Ed25519","kid":"o","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        warrant_token::jwt::VerifyingKeys::from_jwks(jwks)
            .map(|(k, _)| k)
            .unwrap_or_default()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = warrant_token::jwt::peek_header(token);
    let _ = warrant_token::jwt::peek_claims_unverified(token);
    if warrant_token::jwt::verify(token, keys()).is_ok() {
        // Nobody holds these keys' private halves: nothing may verify.
        panic!("a token verified without its key: {token}");
    }
    // Claim checks on whatever JSON object the payload is.
    if let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice(data) {
        let _ = warrant_token::jwt::Expect {
            issuer: "https://issuer.example",
            audience: "warrant",
            now: warrant_core::time::Timestamp::from_millis(1_800_000_000_000),
            leeway_secs: 5,
        }
        .check(&claims);
    }
});
