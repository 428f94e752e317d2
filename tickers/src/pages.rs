//! The bytes of the API's pages: deterministic JSON and CSV, the same query always
//! getting the same bytes, so that a run can be verified against them.

use std::fmt::Write as _;

/// Fixed `info.time` so that responses are byte-for-byte reproducible.
pub(crate) const EPOCH: u64 = 1_700_000_000;

/// The exact body served for `?start=start&limit=limit` when `coins` coins exist.
pub fn tickers_json(start: u64, limit: u64, coins: u64) -> String {
    let end = start.saturating_add(limit).min(coins);
    let mut out = String::with_capacity(320 * (end.saturating_sub(start) as usize) + 64);
    out.push_str("{\"data\":[");
    for (i, n) in (start..end).enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_coin(&mut out, n);
    }
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "],\"info\":{{\"coins_num\":{coins},\"time\":{EPOCH}}}}}"
    );
    out
}

/// splitmix64: a fixed, well-mixed function of the coin number.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn symbol(h: u64) -> String {
    (0..3 + (h % 2) as u32)
        .map(|i| char::from(b'A' + ((h >> (8 * i + 8)) % 26) as u8))
        .collect()
}

/// The exact body served for `?start=start&limit=limit&format=csv`.
pub fn tickers_csv(start: u64, limit: u64, coins: u64) -> String {
    let end = start.saturating_add(limit).min(coins);
    let mut out = String::from("rank,nameid,symbol\n");
    for n in start..end {
        let _ = writeln!(out, "{},coin-{n},{}", n + 1, symbol(mix(n)));
    }
    out
}

/// One coin's object. Written with `itoa` rather than `format!`: the server answers
/// tens of thousands of pages a second here, and formatting was a third of its user time.
pub(crate) fn write_coin(out: &mut String, n: u64) {
    let h = mix(n);
    let cents = h % 10_000_000 + 1;
    let supply = (h >> 20) % 1_000_000_000 + 1_000;
    let change = |shift: u32| ((h >> shift) % 2001) as i64 - 1000;
    let mut num = itoa::Buffer::new();
    out.push_str("{\"id\":\"");
    out.push_str(num.format(n + 90));
    out.push_str("\",\"symbol\":\"");
    for i in 0..3 + (h % 2) as u32 {
        out.push(char::from(b'A' + ((h >> (8 * i + 8)) % 26) as u8));
    }
    out.push_str("\",\"name\":\"Coin ");
    out.push_str(num.format(n));
    out.push_str("\",\"nameid\":\"coin-");
    out.push_str(num.format(n));
    out.push_str("\",\"rank\":");
    out.push_str(num.format(n + 1));
    out.push_str(",\"price_usd\":\"");
    push_hundredths(out, cents as i64);
    out.push_str("\",\"percent_change_24h\":\"");
    push_hundredths(out, change(11));
    out.push_str("\",\"percent_change_1h\":\"");
    push_hundredths(out, change(23));
    out.push_str("\",\"percent_change_7d\":\"");
    push_hundredths(out, change(37));
    out.push_str("\",\"market_cap_usd\":\"");
    out.push_str(num.format((cents / 100).saturating_mul(supply)));
    out.push_str(".00\",\"csupply\":\"");
    out.push_str(num.format(supply));
    out.push_str(".00\",\"tsupply\":\"");
    out.push_str(num.format(supply));
    out.push_str("\"}");
}

/// `v` hundredths as a decimal with two places: `-5.07`, `0.40`, `216.39`.
fn push_hundredths(out: &mut String, v: i64) {
    if v < 0 {
        out.push('-');
    }
    let v = v.unsigned_abs();
    out.push_str(itoa::Buffer::new().format(v / 100));
    out.push('.');
    out.push(char::from(b'0' + (v % 100 / 10) as u8));
    out.push(char::from(b'0' + (v % 10) as u8));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of every page are part of the API: runs are verified against them.
    #[test]
    fn pages_keep_their_exact_bytes() {
        let fnv = |b: &[u8]| {
            b.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &x| {
                (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
            })
        };
        let big = tickers_json(0, 100_000, 1_000_000_000);
        assert_eq!(
            (big.len(), fnv(big.as_bytes())),
            (27_483_346, 0xad4b_69f1_27fa_927e)
        );
        assert_eq!(
            tickers_json(998, 10, 1000),
            r#"{"data":[{"id":"1088","symbol":"ZWX","name":"Coin 998","nameid":"coin-998","rank":999,"price_usd":"21670.39","percent_change_24h":"-5.67","percent_change_1h":"-0.47","percent_change_7d":"2.39","market_cap_usd":"13937699613310.00","csupply":"643179493.00","tsupply":"643179493"},{"id":"1089","symbol":"HWU","name":"Coin 999","nameid":"coin-999","rank":1000,"price_usd":"49520.93","percent_change_24h":"-4.60","percent_change_1h":"-7.47","percent_change_7d":"-7.72","market_cap_usd":"5182353223920.00","csupply":"104651721.00","tsupply":"104651721"}],"info":{"coins_num":1000,"time":1700000000}}"#
        );
    }

    #[test]
    fn same_page_gives_the_same_bytes() {
        assert_eq!(tickers_json(100, 10, 1_000), tickers_json(100, 10, 1_000));
        assert_ne!(tickers_json(100, 10, 1_000), tickers_json(110, 10, 1_000));
    }

    #[test]
    fn page_holds_limit_coins_and_stops_at_the_end() {
        let page = tickers_json(0, 10, 1_000);
        assert_eq!(page.matches("\"nameid\"").count(), 10);
        assert!(page.contains("\"nameid\":\"coin-9\"") && !page.contains("coin-10\""));
        assert_eq!(
            tickers_json(995, 10, 1_000).matches("\"nameid\"").count(),
            5
        );
        assert_eq!(
            tickers_json(2_000, 10, 1_000).matches("\"nameid\"").count(),
            0
        );
    }

    #[test]
    fn csv_pages_list_the_same_coins() {
        let csv = tickers_csv(5, 3, 1_000);
        assert_eq!(csv.lines().count(), 4);
        assert!(csv.starts_with("rank,nameid,symbol\n6,coin-5,"));
        assert!(
            tickers_json(5, 3, 1_000)
                .contains(csv.lines().nth(1).unwrap().rsplit(',').next().unwrap())
        );
    }
}
