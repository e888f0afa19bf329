//! The chart of the report: one SVG, drawn here, with no dependency.
//!
//! Two panels, one row per target: the share of requests answered correctly (a linear axis from 0
//! to 100 %), and the share that was not, errors and fallbacks stacked, on a logarithmic axis from
//! 0.01 % to 100 %, because the systems worth comparing differ by factors there, not by points.

use std::fmt::Write;

/// One row of the chart.
pub struct Bar {
    /// The target's name as the table gives it.
    pub label: String,
    /// Shares of all requests, each in `0..=1`.
    pub ok: f64,
    pub fallback: f64,
    pub error: f64,
}

const WIDTH: f64 = 820.0;
const LEFT: f64 = 260.0;
const PLOT: f64 = 440.0;
const ROW: f64 = 30.0;
const OK: &str = "#2e7d32";
const ERROR: &str = "#c62828";
const FALLBACK: &str = "#f0a500";

/// Smallest share the log axis shows (0.01 %).
const LOG_MIN: f64 = 1e-4;

/// The SVG document for `bars`, titled `title`.
pub fn svg(title: &str, bars: &[Bar]) -> String {
    let rows = bars.len() as f64;
    let panel = 46.0 + rows * ROW + 34.0;
    let height = 40.0 + 2.0 * panel + 24.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{x}" y="24" font-size="15" font-weight="bold">{title}</text>
"#,
        x = 12,
        title = escape(title),
    );
    let top = 40.0;
    panel_ok(&mut s, top, bars);
    panel_failed(&mut s, top + panel, bars);
    let _ = write!(
        s,
        r#"<rect x="{LEFT}" y="{y}" width="12" height="12" fill="{ERROR}"/><text x="{a}" y="{t}">errors</text>
<rect x="{b}" y="{y}" width="12" height="12" fill="{FALLBACK}"/><text x="{c}" y="{t}">fallback answers</text>
</svg>
"#,
        y = height - 26.0,
        t = height - 16.0,
        a = LEFT + 17.0,
        b = LEFT + 80.0,
        c = LEFT + 97.0,
    );
    s
}

fn panel_ok(s: &mut String, top: f64, bars: &[Bar]) {
    heading(s, top, "Answered correctly and completely (% of requests)");
    let y0 = top + 28.0;
    let axis_y = y0 + bars.len() as f64 * ROW + 4.0;
    for pct in [0.0, 25.0, 50.0, 75.0, 100.0] {
        let x = LEFT + PLOT * pct / 100.0;
        tick(s, x, y0, axis_y, &format!("{pct:.0}"));
    }
    for (i, b) in bars.iter().enumerate() {
        let y = y0 + i as f64 * ROW;
        label(s, y, &b.label);
        let w = PLOT * b.ok.clamp(0.0, 1.0);
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{y}" width="{w:.1}" height="{h}" fill="{OK}"/><text x="{tx:.1}" y="{ty}">{v}</text>"#,
            h = ROW - 10.0,
            tx = LEFT + w + 6.0,
            ty = y + 15.0,
            v = pct_text(b.ok),
        );
    }
}

fn panel_failed(s: &mut String, top: f64, bars: &[Bar]) {
    heading(
        s,
        top,
        "Not answered correctly (% of requests, log scale): errors, then fallbacks",
    );
    let y0 = top + 28.0;
    let axis_y = y0 + bars.len() as f64 * ROW + 4.0;
    for (share, text) in [
        (1e-4, "0.01"),
        (1e-3, "0.1"),
        (1e-2, "1"),
        (1e-1, "10"),
        (1.0, "100"),
    ] {
        tick(s, log_x(share), y0, axis_y, text);
    }
    for (i, b) in bars.iter().enumerate() {
        let y = y0 + i as f64 * ROW;
        label(s, y, &b.label);
        let failed = b.error + b.fallback;
        let end = if failed > 0.0 { log_x(failed) } else { LEFT };
        // Stacked on a log axis: the bar's end is the total; errors take their share of its length.
        let error_w = if failed > 0.0 {
            (end - LEFT) * b.error / failed
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            r#"<rect x="{LEFT}" y="{y}" width="{ew:.1}" height="{h}" fill="{ERROR}"/><rect x="{fx:.1}" y="{y}" width="{fw:.1}" height="{h}" fill="{FALLBACK}"/><text x="{tx:.1}" y="{ty}">{v}</text>"#,
            ew = error_w,
            fx = LEFT + error_w,
            fw = end - LEFT - error_w,
            h = ROW - 10.0,
            tx = end + 6.0,
            ty = y + 15.0,
            v = failed_text(b),
        );
    }
}

/// Where `share` sits on the log axis (shares below the axis sit at its start).
fn log_x(share: f64) -> f64 {
    let decades = (share.max(LOG_MIN) / LOG_MIN).log10() / (1.0 / LOG_MIN).log10();
    LEFT + PLOT * decades
}

fn heading(s: &mut String, top: f64, text: &str) {
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{y}" font-weight="bold">{t}</text>"#,
        y = top + 16.0,
        t = escape(text),
    );
}

fn tick(s: &mut String, x: f64, y0: f64, axis_y: f64, text: &str) {
    let _ = writeln!(
        s,
        r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{axis_y}" stroke="#ddd"/><text x="{x:.1}" y="{ty}" text-anchor="middle" fill="#555">{text}</text>"##,
        ty = axis_y + 15.0,
    );
}

fn label(s: &mut String, y: f64, text: &str) {
    let _ = writeln!(
        s,
        r#"<text x="{x}" y="{ty}" text-anchor="end">{t}</text>"#,
        x = LEFT - 8.0,
        ty = y + 15.0,
        t = escape(text),
    );
}

fn pct_text(share: f64) -> String {
    format!("{:.2} %", share * 100.0)
}

fn failed_text(b: &Bar) -> String {
    let failed = b.error + b.fallback;
    if failed == 0.0 {
        return "none".into();
    }
    if b.fallback == 0.0 {
        return pct_text(failed);
    }
    format!(
        "{} ({} errors, {} fallbacks)",
        pct_text(failed),
        pct_text(b.error),
        pct_text(b.fallback)
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
