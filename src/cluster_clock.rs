//! The API server's wall clock, as learnt from the `Date` header of its responses.
//!
//! The operator compares times it takes with times the API server sets (a restart's start with
//! the creation time of the pods it made), so it reads the time as the server would: its own
//! clock moved by the offset last seen. The offset is process-wide, like the clock it corrects,
//! and is learnt from every response the clients get, so it costs no request of its own.

use std::sync::atomic::{AtomicI64, Ordering};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The server's clock minus this process's, in whole seconds.
static OFFSET_SECS: AtomicI64 = AtomicI64::new(0);

/// How far a new reading must be from the offset in use before it replaces it. A `Date` header
/// is cut to the second, so readings of clocks that agree land up to a second either side;
/// without this margin the offset would flicker between them, and the time read go backwards.
const MARGIN_SECS: f64 = 1.5;

/// Now, by the API server's clock (this process's own until a response has told otherwise).
pub fn now() -> Timestamp {
    Timestamp::now() + SignedDuration::from_secs(OFFSET_SECS.load(Ordering::Relaxed))
}

/// Learns from the headers of a response that has just arrived. Called by the clients' traffic
/// layer ([`crate::api_traffic`]) for every response.
pub fn learn(headers: &http::HeaderMap) {
    let local = Timestamp::now();
    let Some(server) = headers
        .get(http::header::DATE)
        .and_then(|date| date.to_str().ok())
        .and_then(parse_http_date)
    else {
        return;
    };
    let current = OFFSET_SECS.load(Ordering::Relaxed);
    if let Some(next) = next_offset(current, server, local) {
        OFFSET_SECS.store(next, Ordering::Relaxed);
        tracing::info!(
            offset_secs = next,
            "the API server's clock differs from this process's: times the operator compares with the server's are read on the server's"
        );
    }
}

/// An HTTP date (`Mon, 07 Dec 2026 15:58:00 GMT`).
fn parse_http_date(text: &str) -> Option<Timestamp> {
    static PARSER: k8s_openapi::jiff::fmt::rfc2822::DateTimeParser =
        k8s_openapi::jiff::fmt::rfc2822::DateTimeParser::new();
    PARSER.parse_timestamp(text).ok()
}

/// The offset to use after a response dated `server` (cut to the second) arrived at `local`,
/// if it should change from `current`. The server's time then lay within the second after
/// `server`, so the reading is taken from the middle of it.
fn next_offset(current: i64, server: Timestamp, local: Timestamp) -> Option<i64> {
    let reading = (server + SignedDuration::from_millis(500))
        .duration_since(local)
        .as_secs_f64();
    let moved = (reading - current as f64).abs() > MARGIN_SECS;
    moved.then(|| reading.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64, millis: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap() + SignedDuration::from_millis(millis)
    }

    #[test]
    fn an_http_date_is_read_to_the_second() {
        assert_eq!(
            parse_http_date("Mon, 07 Dec 2026 15:58:00 GMT"),
            Some("2026-12-07T15:58:00Z".parse().unwrap())
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn clocks_that_agree_keep_an_offset_of_zero() {
        // The header is cut to the second; the response arrives in the same second or the next.
        for (server, local) in [
            (at(0, 0), at(0, 10)),
            (at(0, 0), at(0, 990)),
            (at(0, 0), at(1, 400)),
        ] {
            assert_eq!(next_offset(0, server, local), None, "{server} {local}");
        }
    }

    #[test]
    fn a_skewed_clock_is_corrected_either_way_and_then_held() {
        // This process 300 s ahead of the server: the server's time is ours minus 300 s.
        let ahead = next_offset(0, at(0, 0), at(300, 200));
        assert_eq!(ahead, Some(-300));
        assert_eq!(next_offset(-300, at(10, 0), at(310, 900)), None);
        // 45 s behind.
        assert_eq!(next_offset(0, at(45, 0), at(0, 300)), Some(45));
        // A clock stepped back to agree again.
        assert_eq!(next_offset(45, at(60, 0), at(60, 100)), Some(0));
    }
}
