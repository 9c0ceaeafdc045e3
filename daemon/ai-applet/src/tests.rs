//! Round trips of every instruction, the signed layouts pinned by bytes written out from
//! docs/ai-applet.md, malformed inputs and a no-panic sweep.

use aiesim_apdu::{Command, StatusWord};

use crate::*;

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

const EID: &str = "89049032123451234512345678901235";

fn card_id() -> CardId {
    hex(EID).try_into().unwrap()
}

fn debit() -> Debit {
    Debit {
        amount: 1500,
        digest: [0x11; 32],
        nonce: [0x22; 16],
    }
}

fn voucher() -> Voucher {
    Voucher {
        id: [0x33; 16],
        amount: 50_000,
        expiry: 1_767_225_600,
        card_id: card_id(),
        signature: [0x44; 64],
    }
}

#[test]
fn receipt_message_layout() {
    let expected = hex(&format!(
        "41494553494D2D44454249542D5631 {EID} 00000000000005DC {} {} 00000000000180C4 00000007",
        "11".repeat(32),
        "22".repeat(16)
    ));
    let message = receipt_message(&card_id(), &debit(), 98_500, 7);
    assert_eq!(message, expected);
    assert_eq!(message.len(), RECEIPT_MESSAGE_LEN);
    // Every bound field changes the bytes.
    assert_ne!(receipt_message(&card_id(), &debit(), 98_501, 7), expected);
    assert_ne!(receipt_message(&card_id(), &debit(), 98_500, 8), expected);
    assert_ne!(receipt_message(&[0; 16], &debit(), 98_500, 7), expected);
}

#[test]
fn top_up_and_voucher_message_layouts() {
    let expected = hex(&format!(
        "41494553494D2D544F5055502D5631 {EID} {} 000000000000C350 000000000001A5E0 00000008",
        "33".repeat(16)
    ));
    let message = top_up_message(&card_id(), &[0x33; 16], 50_000, 108_000, 8);
    assert_eq!(message, expected);
    assert_eq!(message.len(), TOP_UP_MESSAGE_LEN);

    let expected = hex(&format!(
        "41494553494D2D564F55434845522D5631 {} 000000000000C350 000000006955B900 {EID}",
        "33".repeat(16)
    ));
    let message = voucher_message(&voucher());
    assert_eq!(message, expected);
    assert_eq!(message.len(), VOUCHER_MESSAGE_LEN);
    // The signature is not part of what is signed.
    assert_eq!(
        voucher_message(&Voucher {
            signature: [0; 64],
            ..voucher()
        }),
        expected
    );
}

#[test]
fn commands_byte_for_byte_and_back() {
    for (request, expected) in [
        (Request::GetBalance, "8150000000".to_owned()),
        (
            Request::Debit(debit()),
            format!("8152000038 00000000000005DC {} {} 00", "11".repeat(32), "22".repeat(16)),
        ),
        (
            Request::TopUp {
                voucher: voucher(),
                host_time: 1_767_000_000,
            },
            format!(
                "8154000078 {} 000000000000C350 000000006955B900 {EID} {} 00000000695247C0 00",
                "33".repeat(16),
                "44".repeat(64)
            ),
        ),
        (Request::GetEndpoints, "8156000000".into()),
        (Request::GetAccountKey, "8158000000".into()),
        (Request::GetData, "81CA000100".into()),
    ] {
        let command = request.to_command(1).unwrap();
        assert_eq!(command.encode().unwrap(), hex(&expected), "{request:?}");
        assert_eq!(Request::from_command(&command), Ok(request));
    }
    // Channel 6 uses the further coding and keeps the proprietary bit.
    assert_eq!(Request::GetBalance.to_command(6).unwrap().cla, 0xC2);
    assert!(matches!(
        Request::GetBalance.to_command(20),
        Err(RequestError::Channel(_))
    ));
}

#[test]
fn malformed_commands() {
    let decode = |text: &str| Request::from_command(&Command::decode(&hex(text)).unwrap());
    assert_eq!(decode("0050000000"), Err(RequestError::Class { cla: 0x00 }));
    assert_eq!(
        decode("8060000000"),
        Err(RequestError::UnknownInstruction { ins: 0x60 })
    );
    assert_eq!(
        decode("8050010000"),
        Err(RequestError::Parameters {
            ins: 0x50,
            p1: 1,
            p2: 0
        })
    );
    assert_eq!(
        decode("80CA000000"),
        Err(RequestError::Parameters {
            ins: 0xCA,
            p1: 0,
            p2: 0
        })
    );
    assert_eq!(
        decode("8052000002 0102 00"),
        Err(RequestError::DataLength {
            ins: 0x52,
            len: 2,
            expected: 56
        })
    );
    assert_eq!(
        decode("8050000001 00 00"),
        Err(RequestError::DataLength {
            ins: 0x50,
            len: 1,
            expected: 0
        })
    );
}

fn endpoints() -> Endpoints {
    Endpoints {
        endpoints: vec![
            Endpoint {
                name: "metro-1".into(),
                url: "https://10.0.0.1:8443/v1".into(),
                tier: Tier::Metro,
                models: vec![
                    Model {
                        name: "tiny".into(),
                        context_window: 8192,
                        max_output: 1024,
                        price_per_1k: 2,
                    },
                    Model {
                        name: "large".into(),
                        context_window: 131_072,
                        max_output: 8192,
                        price_per_1k: 40,
                    },
                ],
            },
            Endpoint {
                name: "national".into(),
                url: "https://10.0.2.1/v1".into(),
                tier: Tier::National,
                models: vec![],
            },
        ],
    }
}

#[test]
fn responses_round_trip() {
    let balance = Balance {
        balance: 98_500,
        sequence: 7,
        unit: UNIT_TOKENS,
        state: CardState::Active,
    };
    assert_eq!(balance.encode(), hex("00000000000180C4 00000007 01 01"));
    assert_eq!(Balance::decode(&balance.encode()), Ok(balance));

    let receipt = Receipt {
        balance: 98_500,
        sequence: 7,
        signature: [0x55; 64],
    };
    let bytes = receipt.encode();
    assert_eq!(bytes[..12], hex("00000000000180C4 00000007"));
    assert_eq!(Receipt::decode(&bytes), Ok(receipt));

    let mut point = [0x66; 65];
    point[0] = 0x04;
    assert_eq!(AccountKey::decode(&AccountKey(point).encode()), Ok(AccountKey(point)));

    let info = AppletInfo {
        version: [1, 0],
        card_id: card_id(),
        max_debit: 100_000,
        offline_allowance: 20_000,
    };
    let bytes = info.encode().unwrap();
    assert_eq!(
        bytes,
        hex(&format!(
            "E02A 8002 0100 8110 {EID} 8208 00000000000186A0 8308 0000000000004E20"
        ))
    );
    assert_eq!(AppletInfo::decode(&bytes), Ok(info));

    let list = endpoints();
    let bytes = list.encode().unwrap();
    assert_eq!(Endpoints::decode(&bytes), Ok(list));
    assert_eq!(Endpoints::decode(&hex("E100")), Ok(Endpoints::default()));
}

#[test]
fn endpoint_list_by_hand() {
    // One endpoint, one model, an unknown field 9F01 in each, and an unknown entry B0.
    let bytes = hex("E1 35 A0 31 8001 65 8108 68747470733A2F2F 820102 9F0100 \
         A3 1C 8001 6D 8104 00002000 8204 00000400 8308 0000000000000003 9F0100 \
         B000");
    let list = Endpoints::decode(&bytes).unwrap();
    assert_eq!(
        list,
        Endpoints {
            endpoints: vec![Endpoint {
                name: "e".into(),
                url: "https://".into(),
                tier: Tier::Province,
                models: vec![Model {
                    name: "m".into(),
                    context_window: 0x2000,
                    max_output: 0x400,
                    price_per_1k: 3
                }],
            }]
        }
    );
    assert!(matches!(
        Endpoints::decode(&hex("E1 05 A0 03 800165")),
        Err(ResponseError::Missing { .. })
    ));
    assert!(matches!(
        Endpoints::decode(&hex("E1 0A A0 08 8001FF 8100 820101")),
        Err(ResponseError::Utf8 { .. })
    ));
}

#[test]
fn malformed_responses_and_status_words() {
    assert_eq!(
        Balance::decode(&[0; 13]),
        Err(ResponseError::Length { len: 13, expected: 14 })
    );
    assert_eq!(
        Receipt::decode(&[0; 77]),
        Err(ResponseError::Length { len: 77, expected: 76 })
    );
    assert_eq!(AccountKey::decode(&[2; 65]), Err(ResponseError::NotUncompressedPoint));
    assert!(matches!(
        AppletInfo::decode(&hex("E000")),
        Err(ResponseError::Missing { .. })
    ));
    assert!(matches!(
        AppletInfo::decode(&hex("E1 00")),
        Err(ResponseError::UnexpectedTag { .. })
    ));
    for error in [
        AppletError::InsufficientBalance,
        AppletError::NotActive,
        AppletError::IncorrectData,
        AppletError::BadSignature,
        AppletError::VoucherReplayed,
        AppletError::VoucherExpired,
        AppletError::BalanceOverflow,
        AppletError::WrongLength,
        AppletError::WrongParameters,
        AppletError::UnknownInstruction,
        AppletError::WrongClass,
        AppletError::Internal,
        AppletError::Other(StatusWord(0x6581)),
    ] {
        assert_eq!(AppletError::check(error.status_word()), Err(error));
    }
    assert_eq!(AppletError::check(StatusWord::OK), Ok(()));
    assert_eq!(AppletError::InsufficientBalance.status_word(), StatusWord(0x6985));
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let Self(state) = self;
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % bound as u64).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

fn decode_everything(bytes: &[u8]) {
    if let Ok(command) = Command::decode(bytes) {
        if let Ok(request) = Request::from_command(&command) {
            assert_eq!(Request::from_command(&request.to_command(0).unwrap()), Ok(request));
        }
    }
    if let Ok(balance) = Balance::decode(bytes) {
        assert_eq!(balance.encode(), bytes);
    }
    if let Ok(receipt) = Receipt::decode(bytes) {
        assert_eq!(receipt.encode(), bytes);
    }
    if let Ok(key) = AccountKey::decode(bytes) {
        assert_eq!(key.encode(), bytes);
    }
    if let Ok(info) = AppletInfo::decode(bytes) {
        assert_eq!(AppletInfo::decode(&info.encode().unwrap()), Ok(info));
    }
    if let Ok(list) = Endpoints::decode(bytes) {
        assert_eq!(Endpoints::decode(&list.encode().unwrap()), Ok(list));
    }
    if let [a, b, ..] = *bytes {
        let _ = AppletError::check(StatusWord::new(a, b));
    }
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let mut rng = XorShift(0xA1_A991);
    let seeds = [
        endpoints().encode().unwrap(),
        Request::Debit(debit()).to_command(1).unwrap().encode().unwrap(),
        Request::TopUp {
            voucher: voucher(),
            host_time: 1,
        }
        .to_command(1)
        .unwrap()
        .encode()
        .unwrap(),
        hex("E00A 8002 0100 8204 00000001"),
    ];
    for round in 0..30_000 {
        let bytes: Vec<u8> = if round % 2 == 0 {
            (0..rng.below(130)).map(|_| rng.byte()).collect()
        } else {
            let mut bytes = seeds[rng.below(seeds.len())].clone();
            for _ in 0..=rng.below(3) {
                match rng.below(3) {
                    0 if !bytes.is_empty() => {
                        let at = rng.below(bytes.len());
                        bytes[at] = rng.byte();
                    }
                    1 => bytes.truncate(rng.below(bytes.len() + 1)),
                    _ => bytes.push(rng.byte()),
                }
            }
            bytes
        };
        decode_everything(&bytes);
    }
}
