//! The encoding checked against independent decoders: the JSON text and base64url written out
//! here by hand, and Python's standard library (plus `cryptography` for the signature, if there).

mod common;

use std::{collections::BTreeMap, fmt::Write as _, process::Command};

use aiesim_credential::{Claims, Header, Unsigned};
use common::{b64url, card_sign, key, token};
use sha2::{Digest as _, Sha256};

const HEADER_JSON: &str = r#"{"alg":"ES256","typ":"JWT","kid":"iot-safe-1"}"#;
const CLAIMS_JSON: &str = concat!(
    r#"{"iss":"eid:89049032123451234512345678901235","sub":"device","#,
    r#""aud":"https://metro.ai.example:8443","iat":1767225600,"nbf":1767225600,"#,
    r#""exp":1767225900,"jti":"5f3c9a0e7b1d4c2a8e6f0b9d3a1c7e5f","scope":"chat"}"#
);

fn pinned() -> (Header, Claims) {
    let header = Header {
        kid: Some("iot-safe-1".into()),
        x5c: None,
    };
    let claims = Claims {
        iss: "eid:89049032123451234512345678901235".into(),
        sub: "device".into(),
        aud: "https://metro.ai.example:8443".into(),
        iat: 1_767_225_600,
        nbf: 1_767_225_600,
        exp: 1_767_225_900,
        jti: "5f3c9a0e7b1d4c2a8e6f0b9d3a1c7e5f".into(),
        extra: BTreeMap::from([("scope".into(), "chat".into())]),
    };
    (header, claims)
}

#[test]
fn the_signing_input_is_the_pinned_json_in_base64url() {
    let (header, claims) = pinned();
    let unsigned = Unsigned::new(&header, &claims).unwrap();
    let expected = format!("{}.{}", b64url(HEADER_JSON), b64url(CLAIMS_JSON));
    assert_eq!(unsigned.signing_input(), expected);
    // The well-known prefix of every `{"alg":"ES256","typ":"JWT",…}` header.
    assert!(
        unsigned
            .signing_input()
            .starts_with("eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6Imlv")
    );
    let digest: [u8; 32] = Sha256::digest(expected.as_bytes()).into();
    assert_eq!(unsigned.digest(), digest);
}

/// Decodes the parts with Python's base64 and json, and verifies the signature with the
/// `cryptography` package if it is installed; prints one JSON line.
const PYTHON: &str = r#"
import base64, json, sys
token, point = sys.argv[1], bytes.fromhex(sys.argv[2])
parts = token.split(".")
assert len(parts) == 3, parts
assert all("=" not in p and "+" not in p and "/" not in p for p in parts)
raw = [base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in parts]
out = {"header_text": raw[0].decode(), "header": json.loads(raw[0]), "claims": json.loads(raw[1]),
       "signature_len": len(raw[2])}
try:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, utils
except ImportError:
    out["signature"] = "SKIPPED: python3 has no cryptography package"
else:
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    der = utils.encode_dss_signature(int.from_bytes(raw[2][:32], "big"), int.from_bytes(raw[2][32:], "big"))
    try:
        key.verify(der, (parts[0] + "." + parts[1]).encode(), ec.ECDSA(hashes.SHA256()))
        out["signature"] = "valid"
    except Exception as error:
        out["signature"] = "invalid: " + type(error).__name__
print(json.dumps(out))
"#;

fn python(token: &str, point: &[u8]) -> Option<serde_json::Value> {
    let hex = point.iter().fold(String::new(), |mut hex, byte| {
        write!(hex, "{byte:02x}").expect("writing to a String succeeds");
        hex
    });
    // Debian's python3 (with python3-cryptography, which `cargo xtask setup` installs) first.
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let output = match Command::new(python).arg("-c").arg(PYTHON).arg(token).arg(hex).output() {
        Ok(output) => output,
        Err(error) => {
            skip(&format!("python3 could not be run: {error}"));
            return None;
        }
    };
    assert!(
        output.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("python3 printed JSON"))
}

/// Reports a missing peer: skipped outside CI, a failure under it.
fn skip(why: &str) {
    aiesim_skip::skip(&format!("{why} (cargo xtask setup installs it)"));
}

#[test]
fn python_decodes_the_token_and_verifies_its_signature() {
    let key = key();
    let (header, claims) = pinned();
    let jwt = token(&key, &header, &claims);
    let point = key.verifying_key().to_encoded_point(false);
    let Some(decoded) = python(jwt.as_str(), point.as_bytes()) else {
        return;
    };
    assert_eq!(decoded["header_text"], HEADER_JSON);
    assert_eq!(decoded["header"]["alg"], "ES256");
    assert_eq!(
        decoded["claims"],
        serde_json::from_str::<serde_json::Value>(CLAIMS_JSON).unwrap()
    );
    assert_eq!(decoded["signature_len"], 64);
    match decoded["signature"].as_str().unwrap() {
        "valid" => {}
        skipped if skipped.starts_with("SKIPPED:") => skip(skipped.trim_start_matches("SKIPPED: ")),
        other => panic!("python says the signature is {other}"),
    }

    // The same check must fail on a signature that is not the card's.
    let unsigned = Unsigned::new(&header, &claims).unwrap();
    let mut raw = card_sign(&key, &unsigned.digest());
    raw[5] ^= 0x80;
    let bad = unsigned.sign_with(raw);
    let decoded = python(bad.as_str(), point.as_bytes()).unwrap();
    let verdict = decoded["signature"].as_str().unwrap();
    assert!(
        verdict.starts_with("invalid") || verdict.starts_with("SKIPPED:"),
        "{verdict}"
    );
}
