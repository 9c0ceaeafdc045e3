//! One command's round trip over any transport: the channel in CLA, GET RESPONSE after 61xx,
//! one re-send after 6Cxx, and the STORE DATA chains ES10 uses.

use crate::{ChannelError, Command, CommandError, Le, Response, ResponseError, Status, channel::with_channel, ins};

/// Carries APDUs to the card: QMI UIM "Send APDU", MBIM UICC "APDU", PC/SC, or a test fake.
pub trait Transmit {
    /// How the transport fails (a QMI or MBIM error, a closed device).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Sends one encoded command APDU and returns the raw response APDU; `channel` repeats
    /// the channel in its CLA for transports that address channels themselves (QMI, MBIM).
    fn transmit(&mut self, channel: u8, apdu: &[u8]) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send;
}

/// Bounds on what one exchange accepts from a card, so a misbehaving one cannot loop forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// How many GET RESPONSE commands may follow one command.
    pub get_response_rounds: usize,
    /// How many response data bytes one exchange may collect.
    pub response_len: usize,
}

impl Limits {
    /// 1024 rounds and 256 KiB: far above the largest ES10 answers (profile lists with icons).
    pub const DEFAULT: Self = Self {
        get_response_rounds: 1024,
        response_len: 256 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The most data bytes one STORE DATA block carries.
pub const MAX_STORE_DATA_BLOCK: usize = 255;

/// STORE DATA P1 for a block that more blocks follow (SGP.22 §5.7.2).
const STORE_DATA_MORE: u8 = 0x11;
/// STORE DATA P1 for the last block.
const STORE_DATA_LAST: u8 = 0x91;

/// Why an exchange produced no response.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError<E> {
    #[error("the command cannot be sent on logical channel {channel}")]
    Channel {
        channel: u8,
        #[source]
        source: ChannelError,
    },
    #[error("the command cannot be encoded as an APDU")]
    Encode(#[source] CommandError),
    #[error("the transport failed to exchange the APDU")]
    Transport(#[source] E),
    #[error("the card's answer is not a response APDU")]
    Response(#[source] ResponseError),
    #[error("the card still announced more data after {rounds} GET RESPONSE rounds")]
    TooManyRounds { rounds: usize },
    #[error("the card's response data exceeds the limit of {max} bytes")]
    ResponseTooLong { max: usize },
    #[error("a STORE DATA payload of {len} bytes needs more than 256 blocks of 255 bytes")]
    PayloadTooLong { len: usize },
}

/// Sends `command` on `channel` with the default [`Limits`].
///
/// The channel replaces the one in `command.cla`. 61xx is followed by GET RESPONSE on the
/// same channel, concatenating the data; 6Cxx is answered by re-sending once with that Le.
/// Any other status word, failures included, ends the exchange and is returned.
pub async fn exchange<T: Transmit>(
    transport: &mut T,
    channel: u8,
    command: &Command,
) -> Result<Response, ExchangeError<T::Error>> {
    exchange_with(transport, channel, command, Limits::DEFAULT).await
}

/// [`exchange`] with explicit [`Limits`].
pub async fn exchange_with<T: Transmit>(
    transport: &mut T,
    channel: u8,
    command: &Command,
    limits: Limits,
) -> Result<Response, ExchangeError<T::Error>> {
    let Limits {
        get_response_rounds,
        response_len,
    } = limits;
    let on_channel = |cla| with_channel(cla, channel).map_err(|source| ExchangeError::Channel { channel, source });
    let mut next = Command {
        cla: on_channel(command.cla)?,
        ..command.clone()
    };
    let get_response_cla = on_channel(0x00)?;
    let mut data = Vec::new();
    let mut rounds = 0;
    let mut resent = false;
    loop {
        let response = send(transport, channel, &next).await?;
        let append = |data: &mut Vec<u8>| {
            if data.len() + response.data.len() > response_len {
                return Err(ExchangeError::ResponseTooLong { max: response_len });
            }
            data.extend_from_slice(&response.data);
            Ok(())
        };
        match response.sw.status() {
            // Whatever came with 6Cxx is discarded: the re-sent command answers in full.
            Status::WrongLe(_) if !resent => {
                resent = true;
                next.le = Some(Le::from_short(response.sw.sw2()));
            }
            Status::MoreData(_) => {
                append(&mut data)?;
                if rounds == get_response_rounds {
                    return Err(ExchangeError::TooManyRounds { rounds });
                }
                rounds += 1;
                next = Command {
                    cla: get_response_cla,
                    ..Command::get_response(Le::from_short(response.sw.sw2()))
                };
            }
            _ => {
                append(&mut data)?;
                return Ok(Response { data, sw: response.sw });
            }
        }
    }
}

/// Sends `payload` as a STORE DATA chain (INS E2) to the application on `channel`.
///
/// Blocks of at most 255 bytes go out with P1 = 11, the last with P1 = 91, and P2 counting
/// blocks from 0: a one-block ES10 request is `81 E2 91 00 Lc …` on channel 1 with CLA 80.
/// A block other than the last that does not complete ends the chain with its response.
pub async fn store_data_chained<T: Transmit>(
    transport: &mut T,
    channel: u8,
    cla: u8,
    payload: &[u8],
) -> Result<Response, ExchangeError<T::Error>> {
    let count = payload.len().div_ceil(MAX_STORE_DATA_BLOCK).max(1);
    let last_p2 = u8::try_from(count - 1).map_err(|_| ExchangeError::PayloadTooLong { len: payload.len() })?;
    let mut rest = payload;
    for p2 in 0..last_p2 {
        // Every block before the last is full, so the split always succeeds.
        let Some((block, after)) = rest.split_at_checked(MAX_STORE_DATA_BLOCK) else {
            break;
        };
        rest = after;
        let command = Command::new(cla, ins::STORE_DATA, STORE_DATA_MORE, p2).with_data(block);
        let response = exchange(transport, channel, &command).await?;
        if !response.is_ok() {
            return Ok(response);
        }
    }
    let command = Command::new(cla, ins::STORE_DATA, STORE_DATA_LAST, last_p2).with_data(rest);
    exchange(transport, channel, &command).await
}

async fn send<T: Transmit>(
    transport: &mut T,
    channel: u8,
    command: &Command,
) -> Result<Response, ExchangeError<T::Error>> {
    let apdu = command.encode().map_err(ExchangeError::Encode)?;
    let raw = transport
        .transmit(channel, &apdu)
        .await
        .map_err(ExchangeError::Transport)?;
    Response::decode(&raw).map_err(ExchangeError::Response)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        pin::pin,
        task::{Context, Poll, Waker},
    };

    use super::*;
    use crate::{
        CardError, StatusWord, channel,
        test_support::{hex, to_hex},
        tlv,
    };

    /// The EID used throughout: 32 digits, as `GetEID` returns it in tag 5A.
    const EID: &str = "89049032123451234512345678901235";

    /// One scripted step: the channel and APDU the card expects, and what it answers.
    type Step = (u8, Vec<u8>, Result<Vec<u8>, FakeError>);

    /// A card that expects a scripted sequence of APDUs and answers each from the script.
    struct FakeCard {
        script: VecDeque<Step>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("the fake link dropped")]
    struct FakeError;

    impl FakeCard {
        fn new(script: &[(u8, &str, &str)]) -> Self {
            let script = script
                .iter()
                .map(|&(channel, apdu, answer)| (channel, hex(apdu), Ok(hex(answer))))
                .collect();
            Self { script }
        }

        fn assert_done(&self) {
            assert!(self.script.is_empty(), "unsent: {:?}", self.script);
        }
    }

    impl Transmit for FakeCard {
        type Error = FakeError;

        async fn transmit(&mut self, channel: u8, apdu: &[u8]) -> Result<Vec<u8>, FakeError> {
            let (expected_channel, expected, answer) = self.script.pop_front().expect("an unexpected extra APDU");
            assert_eq!((channel, apdu), (expected_channel, expected.as_slice()));
            answer
        }
    }

    /// Runs a future that never waits, as every future over [`FakeCard`] does.
    fn run<F: Future>(future: F) -> F::Output {
        let mut future = pin!(future);
        match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("the fake card never makes a future wait"),
        }
    }

    #[test]
    fn get_eid_over_a_logical_channel() {
        let eid = format!("BF3E12 5A10 {EID}");
        let mut card = FakeCard::new(&[
            (0, "0070000001", "01 9000"),
            (1, "01A4040010 A0000005591010FFFFFFFF8900000100 00", "6F00 9000"),
            (1, "81E2910006 BF3E035C015A", "6114"),
            (1, "01C0000014", &format!("{eid} 9000")),
            (0, "0070800100", "9000"),
        ]);
        run(async {
            let opened = exchange(&mut card, 0, &channel::open_command()).await.unwrap();
            let ch = channel::opened_channel(&opened).unwrap();
            let isd_r = hex("A0000005591010FFFFFFFF8900000100");
            let select = Command::select_by_aid(&isd_r, crate::SelectP2::Fci).unwrap();
            exchange(&mut card, ch, &select).await.unwrap().into_result().unwrap();

            let response = store_data_chained(&mut card, ch, 0x80, &hex("BF3E035C015A"))
                .await
                .unwrap();
            let data = response.into_result().unwrap();
            let eid_tlv = tlv::find_path(&data, &[tlv::Tag::new(0xBF3E).unwrap(), tlv::Tag::new(0x5A).unwrap()])
                .unwrap()
                .unwrap();
            assert_eq!(eid_tlv.value, hex(EID));

            let close = channel::close_command(ch).unwrap();
            assert!(exchange(&mut card, 0, &close).await.unwrap().is_ok());
        });
        card.assert_done();
    }

    #[test]
    fn get_response_chains_concatenate() {
        let mut card = FakeCard::new(&[
            (2, "02CA00FE00", "AABB 6100"),
            (2, "02C0000000", &format!("{} 6103", "CC".repeat(256))),
            (2, "02C0000003", "DDEEFF 9000"),
        ]);
        let command = Command::new(0x00, 0xCA, 0x00, 0xFE).with_le(Le::SHORT_MAX);
        let response = run(exchange(&mut card, 2, &command)).unwrap();
        card.assert_done();
        assert_eq!(response.sw, StatusWord::OK);
        assert_eq!(response.data.len(), 2 + 256 + 3);
        assert_eq!(response.data[..2], hex("AABB"));
        assert_eq!(response.data[258..], hex("DDEEFF"));
    }

    #[test]
    fn get_response_on_a_further_channel_keeps_its_class() {
        let mut card = FakeCard::new(&[(5, "C1CB000000", "6102"), (5, "41C0000002", "1011 9000")]);
        let command = Command::new(0x80, 0xCB, 0x00, 0x00).with_le(Le::SHORT_MAX);
        let response = run(exchange(&mut card, 5, &command)).unwrap();
        card.assert_done();
        assert_eq!(response, Response::ok(hex("1011")));
    }

    #[test]
    fn wrong_le_is_resent_once() {
        let mut card = FakeCard::new(&[(1, "81CB000000", "6C08"), (1, "81CB000008", "0102030405060708 9000")]);
        let command = Command::new(0x80, 0xCB, 0x00, 0x00).with_le(Le::SHORT_MAX);
        let response = run(exchange(&mut card, 1, &command)).unwrap();
        card.assert_done();
        assert_eq!(response.into_result(), Ok(hex("0102030405060708")));

        // A second 6Cxx is the card's final word.
        let mut card = FakeCard::new(&[(0, "00B0000000", "6C10"), (0, "00B0000010", "6C20")]);
        let command = Command::new(0x00, 0xB0, 0x00, 0x00).with_le(Le::SHORT_MAX);
        let response = run(exchange(&mut card, 0, &command)).unwrap();
        card.assert_done();
        assert_eq!(response.into_result(), Err(CardError::WrongLe { exact: 0x20 }));
    }

    #[test]
    fn failures_are_returned_as_responses() {
        let mut card = FakeCard::new(&[(1, "01A4040007 A0000005590010 00", "6A82")]);
        let select = Command::select_by_aid(&hex("A0000005590010"), crate::SelectP2::Fci).unwrap();
        let response = run(exchange(&mut card, 1, &select)).unwrap();
        card.assert_done();
        assert_eq!(response.into_result(), Err(CardError::NotFound));
    }

    #[test]
    fn endless_more_data_is_bounded() {
        let mut card = FakeCard::new(&[(0, "00CA000000", "AA 6101"), (0, "00C0000001", "BB 6101")]);
        let command = Command::new(0x00, 0xCA, 0x00, 0x00).with_le(Le::SHORT_MAX);
        let limits = Limits {
            get_response_rounds: 1,
            ..Limits::DEFAULT
        };
        let error = run(exchange_with(&mut card, 0, &command, limits)).unwrap_err();
        card.assert_done();
        assert!(matches!(error, ExchangeError::TooManyRounds { rounds: 1 }), "{error}");

        let mut card = FakeCard::new(&[(0, "00CA000000", "AAAA 6101"), (0, "00C0000001", "BB 6101")]);
        let limits = Limits {
            response_len: 2,
            ..Limits::DEFAULT
        };
        let error = run(exchange_with(&mut card, 0, &command, limits)).unwrap_err();
        card.assert_done();
        assert!(matches!(error, ExchangeError::ResponseTooLong { max: 2 }), "{error}");
    }

    #[test]
    fn transport_and_framing_failures_are_errors() {
        let mut card = FakeCard {
            script: VecDeque::from([(0, hex("0070000001"), Err(FakeError))]),
        };
        let error = run(exchange(&mut card, 0, &channel::open_command())).unwrap_err();
        assert!(matches!(error, ExchangeError::Transport(FakeError)));
        assert_eq!(error.to_string(), "the transport failed to exchange the APDU");
        assert_eq!(
            std::error::Error::source(&error).map(ToString::to_string),
            Some("the fake link dropped".to_owned())
        );

        let mut card = FakeCard::new(&[(0, "0070000001", "90")]);
        let error = run(exchange(&mut card, 0, &channel::open_command())).unwrap_err();
        assert!(matches!(
            error,
            ExchangeError::Response(ResponseError::Truncated { len: 1 })
        ));

        let mut card = FakeCard::new(&[]);
        let error = run(exchange(&mut card, 20, &channel::open_command())).unwrap_err();
        assert!(matches!(
            error,
            ExchangeError::Channel {
                channel: 20,
                source: ChannelError::OutOfRange { channel: 20 }
            }
        ));
    }

    #[test]
    fn store_data_splits_into_numbered_blocks() {
        let payload: Vec<u8> = (0..=u8::MAX).cycle().take(600).collect();
        let block = |range: std::ops::Range<usize>| to_hex(&payload[range]);
        let mut card = FakeCard::new(&[
            (1, &format!("81E21100FF{}", block(0..255)), "9000"),
            (1, &format!("81E21101FF{}", block(255..510)), "9000"),
            (1, &format!("81E291025A{}", block(510..600)), "BF3603800100 9000"),
        ]);
        let response = run(store_data_chained(&mut card, 1, 0x80, &payload)).unwrap();
        card.assert_done();
        assert_eq!(response, Response::ok(hex("BF3603800100")));
    }

    #[test]
    fn store_data_stops_at_a_failed_block() {
        let payload = vec![0xA5; 300];
        let mut card = FakeCard::new(&[(1, &format!("81E21100FF{}", "A5".repeat(255)), "6A80")]);
        let response = run(store_data_chained(&mut card, 1, 0x80, &payload)).unwrap();
        card.assert_done();
        assert_eq!(response.into_result(), Err(CardError::IncorrectData));

        let mut card = FakeCard::new(&[]);
        let error = run(store_data_chained(&mut card, 1, 0x80, &vec![0; 256 * 255 + 1])).unwrap_err();
        assert!(matches!(error, ExchangeError::PayloadTooLong { len: 65_281 }));
    }

    #[test]
    fn exchange_futures_are_send() {
        fn assert_send<F: Send>(_: &F) {}
        let mut card = FakeCard::new(&[(0, "0070000001", "01 9000")]);
        let command = channel::open_command();
        let future = exchange(&mut card, 0, &command);
        assert_send(&future);
        assert!(run(future).is_ok());
    }
}
