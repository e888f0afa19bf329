//! `switchyard_requests_total{route,cluster,code}` without a label lookup per request: the
//! counter of one (route, cluster) is resolved per status code on first use and kept, for as
//! long as the snapshot that holds it. A label lookup hashes three strings and takes the family's
//! lock; this is an index into a small array. Codes are resolved lazily, so a code no request
//! has been answered with does not appear as a zero series.

use prometheus::{IntCounter, IntCounterVec};
use std::sync::OnceLock;

/// The status codes kept resolved; any other is looked up by label each time.
const CODES: [u16; 16] = [
    200, 201, 204, 400, 401, 403, 404, 408, 413, 429, 500, 502, 503, 504, 499, 0,
];

/// The request counters of one (route, cluster), by status code.
pub struct RequestCounts {
    family: IntCounterVec,
    route: String,
    cluster: String,
    by_code: [OnceLock<IntCounter>; CODES.len()],
}

impl RequestCounts {
    /// The counters of `route` and `cluster` (`none` when the request never reached one) in
    /// `family`.
    pub fn new(family: &IntCounterVec, route: &str, cluster: &str) -> RequestCounts {
        RequestCounts {
            family: family.clone(),
            route: route.to_string(),
            cluster: cluster.to_string(),
            by_code: Default::default(),
        }
    }

    /// Count one request answered with `status` (0: none was sent).
    pub fn inc(&self, status: u16) {
        let resolve = || {
            let mut buf = [0u8; 3];
            let code = code_str(&mut buf, status);
            (self.family).with_label_values(&[self.route.as_str(), self.cluster.as_str(), code])
        };
        match CODES.iter().position(|&c| c == status) {
            Some(i) => self.by_code[i].get_or_init(resolve).inc(),
            None => resolve().inc(),
        }
    }
}

/// The status code as text, without allocating (0 is "000").
pub fn code_str(buf: &mut [u8; 3], status: u16) -> &str {
    let s = status.min(999);
    buf[0] = b'0' + (s / 100) as u8;
    buf[1] = b'0' + (s / 10 % 10) as u8;
    buf[2] = b'0' + (s % 10) as u8;
    std::str::from_utf8(buf).unwrap_or("000")
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    #[test]
    fn counts_land_on_the_labelled_series() {
        let family = IntCounterVec::new(
            Opts::new("t_requests_total", "t"),
            &["route", "cluster", "code"],
        )
        .unwrap();
        let c = RequestCounts::new(&family, "chat", "primary");
        for s in [200, 200, 429, 0, 418, 418] {
            c.inc(s);
        }
        let get = |code: &str| family.with_label_values(&["chat", "primary", code]).get();
        assert_eq!(
            (get("200"), get("429"), get("000"), get("418")),
            (2, 1, 1, 2)
        );
        // A second handle (a reloaded snapshot's) counts on the same series.
        RequestCounts::new(&family, "chat", "primary").inc(200);
        assert_eq!(get("200"), 3);
        assert_eq!(get("503"), 0);
    }

    #[test]
    fn codes_as_text() {
        let mut b = [0u8; 3];
        assert_eq!(code_str(&mut b, 0), "000");
        assert_eq!(code_str(&mut b, 204), "204");
        assert_eq!(code_str(&mut b, 1200), "999");
    }
}
