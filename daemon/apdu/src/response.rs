//! Response APDUs (ISO 7816-4 §5.1): optional data, then SW1 SW2.

use crate::{CardError, StatusWord};

/// A response APDU.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Response {
    /// The response data, possibly empty.
    pub data: Vec<u8>,
    /// SW1 SW2.
    pub sw: StatusWord,
}

/// Why bytes could not be read as a response APDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("a response APDU ends with a two-byte status word but only {len} bytes arrived")]
    Truncated { len: usize },
}

impl Response {
    /// A response of `data` and `sw`.
    pub fn new(data: impl Into<Vec<u8>>, sw: StatusWord) -> Self {
        Self { data: data.into(), sw }
    }

    /// Data with 9000.
    pub fn ok(data: impl Into<Vec<u8>>) -> Self {
        Self::new(data, StatusWord::OK)
    }

    /// A bare status word, as cards answer errors.
    pub fn status(sw: StatusWord) -> Self {
        Self::new(Vec::new(), sw)
    }

    /// Splits raw bytes into data and the trailing status word.
    pub fn decode(bytes: &[u8]) -> Result<Self, ResponseError> {
        let Some((data, &sw)) = bytes.split_last_chunk::<2>() else {
            return Err(ResponseError::Truncated { len: bytes.len() });
        };
        Ok(Self::new(data, StatusWord::from(sw)))
    }

    /// The raw bytes: data, then SW1 SW2.
    pub fn encode(&self) -> Vec<u8> {
        let Self { data, sw } = self;
        let mut out = Vec::with_capacity(data.len() + 2);
        out.extend_from_slice(data);
        out.extend_from_slice(&sw.to_bytes());
        out
    }

    /// Whether the status word says the command completed (9000 or 91xx).
    pub fn is_ok(&self) -> bool {
        self.sw.is_ok()
    }

    /// The data if the command completed; a warning, 61xx or 6Cxx counts as not completed.
    pub fn into_result(self) -> Result<Vec<u8>, CardError> {
        let Self { data, sw } = self;
        sw.to_result().map(|()| data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::hex;

    #[test]
    fn parses_and_encodes() {
        let bytes = hex("BF3E03 5A0102 9000");
        let response = Response::decode(&bytes).unwrap();
        assert_eq!(response, Response::ok(hex("BF3E035A0102")));
        assert_eq!(response.encode(), bytes);
        assert_eq!(response.into_result(), Ok(hex("BF3E035A0102")));

        let bare = Response::decode(&hex("6A82")).unwrap();
        assert_eq!(bare, Response::status(StatusWord::NOT_FOUND));
        assert_eq!(bare.encode(), hex("6A82"));
        assert!(!bare.is_ok());
        assert_eq!(bare.into_result(), Err(CardError::NotFound));
    }

    #[test]
    fn needs_a_status_word() {
        assert_eq!(Response::decode(&[]), Err(ResponseError::Truncated { len: 0 }));
        assert_eq!(Response::decode(&[0x90]), Err(ResponseError::Truncated { len: 1 }));
    }

    #[test]
    fn warnings_and_pending_data_are_not_success() {
        let more = Response::new(hex("C1"), StatusWord::MORE_DATA_AVAILABLE);
        assert_eq!(
            more.into_result(),
            Err(CardError::Warning(crate::Warning::MoreDataAvailable))
        );
        let pending = Response::status(StatusWord::more_data(0x20));
        assert_eq!(
            pending.into_result(),
            Err(CardError::MoreDataPending { available: 0x20 })
        );
        let wrong_le = Response::status(StatusWord(0x6C00));
        assert_eq!(wrong_le.into_result(), Err(CardError::WrongLe { exact: 256 }));
        assert!(Response::status(StatusWord(0x910B)).is_ok());
    }
}
