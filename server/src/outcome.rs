//! The `s2s` JSON answer of a conversion (SPEC 2.3), written by hand: it is the body of
//! every server post, and `serde_json` spent more on this small object (about 3,000
//! instructions) than the rest of the server's share of the request. The bytes are the
//! ones `serde_json::to_vec(outcome)` writes; a test holds the two together.

use bytes::Bytes;
use engine::ConversionOutcome;
use std::cell::RefCell;

/// Largest scratch buffer kept between answers, in bytes: a typical answer is under 200
/// bytes; one with a long refusal reason may grow the buffer, which is then dropped
/// rather than kept for ever.
const MAX_KEPT_SCRATCH_BYTES: usize = 4096;

thread_local! {
    /// Each worker thread writes its answers here, then copies them out in one allocation
    /// of the exact size.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The JSON body of `outcome`.
pub fn json(outcome: &ConversionOutcome) -> Bytes {
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        write(buf, outcome);
        let body = Bytes::copy_from_slice(buf);
        if buf.capacity() > MAX_KEPT_SCRATCH_BYTES {
            *buf = Vec::new();
        }
        body
    })
}

/// Fields in declaration order, `None`s skipped, as `#[derive(Serialize)]` writes them.
fn write(out: &mut Vec<u8>, o: &ConversionOutcome) {
    // Every field of the struct, so a new one is a compile error here, not a silent gap.
    let ConversionOutcome {
        status,
        reason,
        conversion_id,
        click_id,
        payout,
        revenue,
        currency,
        browser_pixels: _,
    } = o;
    // One reservation for the usual answer (under 200 bytes), not one per piece.
    out.reserve(TYPICAL_ANSWER_BYTES);
    out.extend_from_slice(b"{\"status\":\"");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b'"');
    let strings = [
        ("reason", reason),
        ("conversion_id", conversion_id),
        ("click_id", click_id),
    ];
    for (name, value) in strings {
        if let Some(value) = value {
            key(out, name);
            string(out, value);
        }
    }
    for (name, value) in [("payout", payout), ("revenue", revenue)] {
        if let Some(value) = value {
            key(out, name);
            // Numbers exactly as serde_json formats them (shortest round-trip, `4.0`).
            let _ = serde_json::to_writer(&mut *out, value);
        }
    }
    if let Some(currency) = currency {
        key(out, "currency");
        string(out, currency);
    }
    out.push(b'}');
}

/// Bytes reserved up front for an answer: a typical one is under 200 bytes.
const TYPICAL_ANSWER_BYTES: usize = 256;

/// The bytes a JSON string cannot hold as they are (control characters, `"`, `\`), as a
/// table: one load per byte of the value.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < table.len() {
        table[b] = b < 0x20 || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    table
};

/// `,"name":` (every key follows `status`).
fn key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// A JSON string. Click IDs and most reasons need no escaping and are copied; anything
/// else goes through serde_json's escaper.
fn string(out: &mut Vec<u8>, value: &str) {
    if value.bytes().any(|b| ESCAPED[usize::from(b)]) {
        let _ = serde_json::to_writer(&mut *out, value);
    } else {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::OutcomeStatus;
    use rand::Rng;

    const STATUSES: [OutcomeStatus; 10] = [
        OutcomeStatus::Approved,
        OutcomeStatus::Pending,
        OutcomeStatus::Rejected,
        OutcomeStatus::Duplicate,
        OutcomeStatus::UnknownClick,
        OutcomeStatus::Expired,
        OutcomeStatus::Unauthorized,
        OutcomeStatus::Forbidden,
        OutcomeStatus::Invalid,
        OutcomeStatus::Unavailable,
    ];

    fn check(outcome: &ConversionOutcome) {
        let want = serde_json::to_vec(outcome).unwrap();
        let got = json(outcome);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{outcome:?}"
        );
    }

    #[test]
    fn every_status_and_field_is_written_as_serde_writes_it() {
        for status in STATUSES {
            check(&ConversionOutcome::refused(status, "click_id"));
        }
        check(&ConversionOutcome {
            status: OutcomeStatus::Approved,
            reason: None,
            conversion_id: Some("AAAAAAAAAAAAAAAAAAAAAA".into()),
            click_id: Some("Ab3_x-9Ab3_x-9Ab3_x-9A".into()),
            payout: Some(4.0),
            revenue: Some(10.25),
            currency: Some("USD".into()),
            browser_pixels: vec![engine::BrowserPixel::Image {
                url: "https://p.example/".into(),
            }],
        });
    }

    /// Seeded random outcomes, strings full of what JSON must escape and numbers of every
    /// size, agree with serde_json byte for byte. `SEED=<n>` replays a run.
    #[test]
    fn random_outcomes_agree_with_serde_json() {
        let mut rng = crate::seed::seeded_rng();
        const CHARS: &[char] = &[
            'a', 'Z', '0', '"', '\\', '/', '\n', '\t', '\u{0}', '\u{1f}', '\u{7f}', 'é', '€',
            '\u{2028}', '😀', ' ',
        ];
        let text = |rng: &mut rand::rngs::StdRng| {
            rng.random_bool(0.7).then(|| {
                (0..rng.random_range(0..12))
                    .map(|_| CHARS[rng.random_range(0..CHARS.len())])
                    .collect::<String>()
            })
        };
        let number = |rng: &mut rand::rngs::StdRng| {
            rng.random_bool(0.7).then(|| match rng.random_range(0..4) {
                0 => f64::from(rng.random_range(0..100_000u32)),
                1 => f64::from(rng.random_range(0..100_000u32)) / 100.0,
                2 => rng.random::<f64>() * 10f64.powi(rng.random_range(-10..25)),
                _ => [0.0, 0.1, 1e21, 1e-7, f64::MAX, f64::NAN, f64::INFINITY]
                    [rng.random_range(0..7)],
            })
        };
        for _ in 0..2000 {
            check(&ConversionOutcome {
                status: STATUSES[rng.random_range(0..STATUSES.len())],
                reason: text(&mut rng),
                conversion_id: text(&mut rng),
                click_id: text(&mut rng),
                payout: number(&mut rng),
                revenue: number(&mut rng),
                currency: text(&mut rng),
                browser_pixels: Vec::new(),
            });
        }
    }

    #[test]
    fn a_grown_scratch_buffer_is_not_kept() {
        let long = ConversionOutcome::refused(OutcomeStatus::Invalid, "x".repeat(10_000));
        assert_eq!(json(&long).len(), serde_json::to_vec(&long).unwrap().len());
        SCRATCH.with_borrow(|buf| assert!(buf.capacity() <= MAX_KEPT_SCRATCH_BYTES));
    }
}
