//! The signature an `IoT` SAFE applet returns after Compute Signature Update, in every form seen
//! on cards (`33 LL`, `33 00 LL`, `33 81 LL`, raw r‖s or DER), normalised to P-256's 64-byte r‖s.

/// The tag of a signature in `IoT` SAFE responses and Verify Signature data.
pub const SIGNATURE_TAG: u8 = 0x33;
/// P-256's r‖s length.
pub const RAW_LEN: usize = 64;
const SCALAR_LEN: usize = 32;
const DER_SEQUENCE: u8 = 0x30;
const DER_INTEGER: u8 = 0x02;

/// Why a response does not hold a P-256 signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the response does not start with the signature tag 33 or a DER SEQUENCE")]
    NoSignatureTag,
    #[error("the signature's length field announces {announced} bytes but {available} follow it")]
    LengthMismatch { announced: usize, available: usize },
    #[error("the {len}-byte signature is neither 64 bytes of r‖s nor DER")]
    UnknownForm { len: usize },
    #[error("the DER signature is malformed at byte {offset}")]
    Der { offset: usize },
    #[error("a signature scalar of {len} significant bytes does not fit P-256's 32")]
    ScalarTooLong { len: usize },
}

/// How [`encode`] writes a signature; the simulator can imitate each card family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureForm {
    /// `33 40 r‖s`.
    Short,
    /// `33 00 40 r‖s`, as some cards send a two-byte length.
    ZeroPrefixed,
    /// `33 81 40 r‖s`, BER's long form.
    Ber,
    /// `33 LL 30 …`: DER inside the tag.
    Der,
}

/// The 64-byte r‖s in any accepted form of a Sign Update response (or a Verify Update field).
pub fn decode(data: &[u8]) -> Result<[u8; RAW_LEN], SignatureError> {
    let content = match data {
        [SIGNATURE_TAG, rest @ ..] => unwrap_length(rest)?,
        // Some applets return the DER signature bare.
        [DER_SEQUENCE, ..] => data,
        _ => return Err(SignatureError::NoSignatureTag),
    };
    // A 64-byte DER signature exists too (short r or s): whatever parses whole as DER is DER.
    if content.first() == Some(&DER_SEQUENCE) {
        if let Ok(raw) = from_der(content) {
            return Ok(raw);
        }
    }
    if let Ok(raw) = <[u8; RAW_LEN]>::try_from(content) {
        return Ok(raw);
    }
    match content {
        [DER_SEQUENCE, ..] => from_der(content),
        _ => Err(SignatureError::UnknownForm { len: content.len() }),
    }
}

/// The value after `33` under the three length encodings cards use.
fn unwrap_length(rest: &[u8]) -> Result<&[u8], SignatureError> {
    let exact = |announced: usize, value: &'_ [u8]| {
        if value.len() == announced {
            Ok(())
        } else {
            Err(SignatureError::LengthMismatch {
                announced,
                available: value.len(),
            })
        }
    };
    match rest {
        // 00 LL and 81 LL both read as a second length byte; 00 alone would be an empty signature.
        &[0x00 | 0x81, len, ref value @ ..] if value.len() == usize::from(len) => Ok(value),
        &[len, ref value @ ..] => exact(usize::from(len), value).map(|()| value),
        [] => Err(SignatureError::LengthMismatch {
            announced: 0,
            available: 0,
        }),
    }
}

/// r‖s from `30 len 02 rlen r 02 slen s`, with short or `81` lengths.
fn from_der(der: &[u8]) -> Result<[u8; RAW_LEN], SignatureError> {
    let (body, trailing) = der_tlv(der, 0, DER_SEQUENCE)?;
    if !trailing.is_empty() {
        return Err(SignatureError::Der {
            offset: der.len() - trailing.len(),
        });
    }
    // Each slice below is a suffix of `der`, so its offset is what it lacks of der's length.
    let (r, rest) = der_tlv(body, der.len() - body.len(), DER_INTEGER)?;
    let (s, rest) = der_tlv(rest, der.len() - rest.len(), DER_INTEGER)?;
    if !rest.is_empty() {
        return Err(SignatureError::Der {
            offset: der.len() - rest.len(),
        });
    }
    let mut raw = [0; RAW_LEN];
    let (r_half, s_half) = raw.split_at_mut(SCALAR_LEN);
    put_scalar(r_half, r)?;
    put_scalar(s_half, s)?;
    Ok(raw)
}

/// One DER TLV tagged `tag` at `offset` of the signature: its value and what follows it.
fn der_tlv(bytes: &[u8], offset: usize, tag: u8) -> Result<(&[u8], &[u8]), SignatureError> {
    let error = SignatureError::Der { offset };
    let (len, header) = match *bytes {
        [found, len, ..] if found == tag && len < 0x80 => (usize::from(len), 2),
        [found, 0x81, len, ..] if found == tag => (usize::from(len), 3),
        _ => return Err(error),
    };
    bytes[header..].split_at_checked(len).ok_or(error)
}

/// A DER INTEGER's bytes, leading zeros dropped, right-aligned in 32 bytes.
fn put_scalar(out: &mut [u8], value: &[u8]) -> Result<(), SignatureError> {
    let zeros = value.iter().take_while(|&&b| b == 0).count();
    let significant = &value[zeros..];
    let Some(pad) = out.len().checked_sub(significant.len()) else {
        return Err(SignatureError::ScalarTooLong { len: significant.len() });
    };
    out[pad..].copy_from_slice(significant);
    Ok(())
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` for a 64-byte r‖s.
pub fn to_der(raw: &[u8; RAW_LEN]) -> Vec<u8> {
    let mut body = Vec::with_capacity(70);
    for half in raw.chunks_exact(SCALAR_LEN) {
        let zeros = half.iter().take_while(|&&b| b == 0).count().min(SCALAR_LEN - 1);
        let significant = &half[zeros..];
        let pad = significant[0] & 0x80 != 0;
        body.push(DER_INTEGER);
        // At most 33 bytes, so the length is one short byte.
        body.push(u8::try_from(significant.len() + usize::from(pad)).unwrap_or(0));
        if pad {
            body.push(0);
        }
        body.extend_from_slice(significant);
    }
    let mut out = vec![DER_SEQUENCE, u8::try_from(body.len()).unwrap_or(0)];
    out.extend_from_slice(&body);
    out
}

/// A Sign Update response body carrying `raw` in `form`.
pub fn encode(raw: &[u8; RAW_LEN], form: SignatureForm) -> Vec<u8> {
    let value = match form {
        SignatureForm::Der => to_der(raw),
        SignatureForm::Short | SignatureForm::ZeroPrefixed | SignatureForm::Ber => raw.to_vec(),
    };
    // r‖s is 64 bytes and DER at most 72, so every length fits one byte.
    let len = u8::try_from(value.len()).unwrap_or(0);
    let mut out = match form {
        SignatureForm::ZeroPrefixed => vec![SIGNATURE_TAG, 0x00, len],
        SignatureForm::Ber => vec![SIGNATURE_TAG, 0x81, len],
        SignatureForm::Short | SignatureForm::Der => vec![SIGNATURE_TAG, len],
    };
    out.extend_from_slice(&value);
    out
}
