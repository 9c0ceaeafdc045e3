use std::sync::Arc;

use super::*;

const D: [u8; 32] = [7; 32];
const CARD: [u8; 16] = [0x89; 16];

fn budgets(app: u64, device: u64) -> Budgets {
    Budgets {
        app_tokens: app,
        device_tokens: device,
        ..Budgets::default()
    }
}

fn card(balance: u64, allowance: u64) -> CardView {
    CardView {
        card_id: CARD,
        balance,
        sequence: 0,
        allowance,
        max_debit: 50_000,
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn reserve_then_commit_charges_usage_and_releases_the_rest() {
    block(async {
        let l = Ledger::in_memory(budgets(100, 1000));
        let r = l.reserve("a", 60, 1000, D).unwrap();
        assert_eq!(
            l.balance("a"),
            Balance {
                limit: 100,
                spent: 0,
                reserved: 60
            }
        );
        assert!(matches!(
            l.reserve("a", 50, 1000, D).unwrap_err(),
            LedgerError::AppExhausted {
                available: 40,
                needed: 50,
                ..
            }
        ));
        assert_eq!(r.commit(25).await, 25);
        assert_eq!(
            l.balance("a"),
            Balance {
                limit: 100,
                spent: 25,
                reserved: 0
            }
        );
        assert_eq!(l.device_available(), 975);
        let r = l.reserve("a", 75, 1000, D).unwrap();
        assert_eq!(r.commit(500).await, 75, "a charge never exceeds its reservation");
        assert_eq!(l.balance("a").spent, 100);
    });
}

#[test]
fn reloaded_budgets_bind_at_once_and_keep_what_was_spent() {
    block(async {
        let l = Ledger::in_memory(budgets(100, 1000));
        assert_eq!(l.reserve("a", 60, 1000, D).unwrap().commit(60).await, 60);
        let held = l.reserve("a", 30, 1000, D).unwrap();
        // Lowered under what is spent and held: new requests are refused, the held one ends.
        l.set_budgets(budgets(50, 1000));
        assert!(matches!(
            l.reserve("a", 1, 1000, D).unwrap_err(),
            LedgerError::AppExhausted { available: 0, .. }
        ));
        assert_eq!(held.commit(30).await, 30);
        assert_eq!(
            l.balance("a"),
            Balance {
                limit: 50,
                spent: 90,
                reserved: 0
            }
        );
        // Raised: the spending carries over.
        l.set_budgets(budgets(200, 1000));
        assert!(matches!(
            l.reserve("a", 111, 1000, D).unwrap_err(),
            LedgerError::AppExhausted { available: 110, .. }
        ));
        let _held = l.reserve("a", 110, 1000, D).unwrap();
        assert_eq!(l.device_available(), 1000 - 90 - 110);
    });
}

#[test]
fn device_limit_binds_across_apps() {
    let l = Ledger::in_memory(budgets(100, 150));
    let _a = l.reserve("a", 100, 1000, D).unwrap();
    assert!(matches!(
        l.reserve("b", 60, 1000, D).unwrap_err(),
        LedgerError::DeviceExhausted {
            available: 50,
            needed: 60
        }
    ));
}

#[test]
fn a_dropped_reservation_charges_its_progress_and_releases_the_rest() {
    block(async {
        let l = Ledger::in_memory(budgets(100, 1000));
        let mut r = l.reserve("a", 60, 1000, D).unwrap();
        r.progress(12).await.unwrap();
        drop(r);
        assert_eq!(
            l.balance("a"),
            Balance {
                limit: 100,
                spent: 12,
                reserved: 0
            }
        );
        drop(l.reserve("a", 10, 1000, D).unwrap());
        assert_eq!(l.balance("a").reserved, 0, "nothing stays reserved");
        assert_eq!(l.open_requests(), 0);
    });
}

#[test]
fn concurrent_reservations_never_overshoot() {
    let l = Arc::new(Ledger::in_memory(budgets(1_000, 1_000_000)));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let l = Arc::clone(&l);
            std::thread::spawn(move || {
                block(async {
                    let mut granted = 0u64;
                    for _ in 0..200 {
                        if let Ok(r) = l.reserve("app", 7, 1000, D) {
                            granted += r.commit(7).await;
                        }
                    }
                    granted
                })
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(total <= 1_000, "granted {total}");
    assert_eq!(total, 994, "every affordable reservation is granted");
    assert_eq!(l.balance("app").spent, total);
}

#[test]
fn the_journal_survives_a_restart_and_settles_open_requests_at_their_progress() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.journal");
    block(async {
        let l = Ledger::open(&path, budgets(1_000, 10_000)).unwrap();
        let r = l.reserve("a", 100, 1000, D).unwrap();
        assert_eq!(r.commit(30).await, 30);
        let mut open = l.reserve("b", 200, 1000, D).unwrap();
        open.progress(17).await.unwrap();
        // A crash: the reservation is never committed nor dropped.
        std::mem::forget(open);
        let unused = l.reserve("c", 50, 1000, D).unwrap();
        std::mem::forget(unused);
    });
    let l = Ledger::open(&path, budgets(1_000, 10_000)).unwrap();
    assert_eq!(l.balance("a").spent, 30);
    assert_eq!(l.balance("b").spent, 17, "an open request is charged what it delivered");
    assert_eq!(l.balance("c").spent, 0, "one that delivered nothing costs nothing");
    assert_eq!(l.open_requests(), 0);
    assert_eq!(l.device_available(), 10_000 - 47);
    // Replayed once, not again: a second restart changes nothing.
    drop(l);
    let l = Ledger::open(&path, budgets(1_000, 10_000)).unwrap();
    assert_eq!(l.device_available(), 10_000 - 47);
    assert_eq!(l.balance("b").spent, 17);
}

#[test]
fn a_torn_tail_loses_only_the_record_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.journal");
    block(async {
        let l = Ledger::open(&path, budgets(1_000, 10_000)).unwrap();
        for _ in 0..5 {
            let r = l.reserve("a", 10, 1000, D).unwrap();
            r.commit(10).await;
        }
    });
    let len = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let l = Ledger::open(&path, budgets(1_000, 10_000)).unwrap();
    // The last commit was cut: its request is settled from its (zero) progress.
    assert_eq!(l.balance("a").spent, 40);
}

#[test]
fn a_journal_of_another_kind_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.journal");
    std::fs::write(&path, b"not a journal at all").unwrap();
    let Err(e) = Ledger::open(&path, budgets(1, 1)) else {
        panic!("opened a file that is no journal")
    };
    assert!(
        crate::broker::chain(&e).contains("ledger.journal"),
        "{}",
        crate::broker::chain(&e)
    );
}

#[test]
fn the_card_bounds_admission_and_is_owed_every_commit() {
    block(async {
        let l = Ledger::in_memory(budgets(100_000, 100_000));
        l.card_online(card(1_000, 300));
        // 400 model tokens at 1999 per 1k cost 799.6, so 800 account tokens.
        let r = l.reserve("a", 400, 1_999, D).unwrap();
        assert!(matches!(
            l.reserve("a", 200, 1_999, D).unwrap_err(),
            LedgerError::CardExhausted {
                available: 200,
                needed: 400
            }
        ));
        assert_eq!(r.commit(101).await, 101);
        let book = l.card();
        assert_eq!(
            (book.owed, book.pending),
            (202, 1),
            "ceil(101 × 1.999) account tokens are owed"
        );
        let d = l.next_debit(&CARD).unwrap();
        assert_eq!((d.amount, d.digest, d.nonce), (202, D, None));
        l.debit_sent(d.id, [1; 16]).await.unwrap();
        assert_eq!(l.next_debit(&CARD).unwrap().nonce, Some([1; 16]));
        l.debit_done(
            d.id,
            JournalledReceipt {
                id: d.id,
                amount: 202,
                balance: 798,
                sequence: 1,
                signature: vec![9; 64],
            },
        )
        .await
        .unwrap();
        let book = l.card();
        assert_eq!((book.owed, book.pending, book.receipts), (0, 0, 1));
        assert_eq!(book.card.unwrap().balance, 798);
    });
}

#[test]
fn offline_spending_stops_at_the_allowance_and_resumes_online() {
    block(async {
        let l = Ledger::in_memory(budgets(100_000, 100_000));
        l.card_online(card(10_000, 300));
        l.card_offline();
        let r = l.reserve("a", 200, 1_000, D).unwrap();
        r.commit(200).await;
        assert!(matches!(
            l.reserve("a", 200, 1_000, D).unwrap_err(),
            LedgerError::OfflineAllowance {
                available: 100,
                needed: 200
            }
        ));
        assert_eq!(l.card().owed, 200, "the offline debit is kept for the card");
        l.card_online(card(10_000, 300));
        assert!(
            l.reserve("a", 200, 1_000, D).is_ok(),
            "back online, the balance decides"
        );
    });
}

#[test]
fn a_fault_or_an_exhausted_card_stops_spending() {
    let l = Ledger::in_memory(budgets(100_000, 100_000));
    l.card_online(card(10_000, 300));
    l.card_exhausted();
    assert!(matches!(
        l.reserve("a", 1, 1_000, D).unwrap_err(),
        LedgerError::CardExhausted { available: 0, .. }
    ));
    l.card_online(card(20_000, 300));
    assert!(l.reserve("a", 1, 1_000, D).is_ok(), "a top-up lifts it");
    l.card_fault("a receipt does not verify".into());
    assert!(matches!(
        l.reserve("a", 1, 1_000, D).unwrap_err(),
        LedgerError::CardFault(_)
    ));
}

#[test]
fn pending_debits_and_sent_nonces_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.journal");
    block(async {
        let l = Ledger::open(&path, budgets(100_000, 100_000)).unwrap();
        l.card_online(card(10_000, 300));
        l.reserve("a", 50, 1_000, D).unwrap().commit(50).await;
        l.reserve("a", 60, 1_000, D).unwrap().commit(60).await;
        let first = l.next_debit(&CARD).unwrap();
        l.debit_sent(first.id, [5; 16]).await.unwrap();
    });
    let l = Ledger::open(&path, budgets(100_000, 100_000)).unwrap();
    let book = l.card();
    assert_eq!((book.owed, book.pending, book.online), (110, 2, false));
    let first = l.next_debit(&CARD).unwrap();
    assert_eq!((first.amount, first.nonce), (50, Some([5; 16])));
    assert!(
        matches!(
            l.reserve("a", 300, 1_000, D).unwrap_err(),
            LedgerError::OfflineAllowance { available: 190, .. }
        ),
        "after a restart the card is out of reach until read"
    );
}

#[test]
fn compaction_keeps_the_totals() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.journal");
    block(async {
        let l = Ledger::open(&path, budgets(u64::MAX, u64::MAX)).unwrap();
        let app = "x".repeat(1000);
        // Each round writes over 1 KiB, so compaction runs several times.
        for _ in 0..3_000 {
            l.reserve(&app, 10, 1_000, D).unwrap().commit(3).await;
        }
        assert_eq!(l.balance(&app).spent, 9_000);
    });
    assert!(std::fs::metadata(&path).unwrap().len() < 2 * COMPACT_AT);
    let l = Ledger::open(&path, budgets(u64::MAX, u64::MAX)).unwrap();
    assert_eq!(l.balance(&"x".repeat(1000)).spent, 9_000);
}

#[test]
fn replay_of_arbitrary_records_does_not_panic() {
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..2_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = usize::try_from(seed % 64).unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| seed.to_le_bytes()[i % 8]).collect();
        let _ = replay_for_fuzzing(&[&bytes, &bytes[..len / 2]]);
    }
}

#[test]
fn apps_in_a_users_tree_also_spend_from_the_user() {
    block(async {
        let l = Ledger::in_memory(budgets(100, 10_000));
        l.reserve("uid-1000/run-a.scope", 60, 1000, D).unwrap().commit(60).await;
        // A fresh scope name is a fresh app, but the user's account is the same.
        let refused = l.reserve("uid-1000/run-b.scope", 60, 1000, D).unwrap_err();
        assert!(
            matches!(&refused, LedgerError::AppExhausted { app, available: 40, .. } if app == "uid-1000"),
            "{refused}"
        );
        let held = l.reserve("uid-1000/run-b.scope", 40, 1000, D).unwrap();
        assert_eq!(l.balance("uid-1000").reserved, 40);
        assert_eq!(l.balance("uid-1000/run-b.scope").reserved, 40);
        drop(held);
        assert!(
            l.reserve("uid-1001/run-a.scope", 60, 1000, D).is_ok(),
            "another user is another account"
        );
        assert!(l.reserve("glasses.service", 100, 1000, D).is_ok());
    });
}
