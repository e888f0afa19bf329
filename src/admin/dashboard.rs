//! The live dashboard at `GET /` on the admin listener: one self-contained page (inline CSS and
//! script, no external script, font or image, so it works offline and behind an air gap) that
//! polls `/status` and `/dashboard.json` every second. When the admin token protects reads, the
//! page sends it as a bearer header: it takes it from a `#token=…` fragment (which never leaves
//! the browser) or asks for it, and keeps it in the tab's `sessionStorage`.
//!
//! The page carries a content security policy that allows nothing from elsewhere, and draws
//! every name from the config with `textContent`, never as markup.

use http::{Response, StatusCode};

/// The page.
const PAGE: &str = include_str!("dashboard.html");

/// Only this page's own inline script and style, and fetches to this listener.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// `GET /`.
pub fn page() -> Response<Vec<u8>> {
    let body = PAGE.as_bytes().to_vec();
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/html; charset=utf-8")
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .header("content-security-policy", CSP)
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        let text = PAGE.replace("http://www.w3.org/2000/svg", "");
        for outside in ["http://", "https://", "//cdn", "src=", "@import", "url("] {
            assert!(!text.contains(outside), "the page refers to {outside}");
        }
        let links: Vec<&str> = text
            .match_indices("<link")
            .map(|(i, _)| &text[i..])
            .collect();
        assert!(links
            .iter()
            .all(|l| l.starts_with(r#"<link rel="icon" href="data:,">"#)));
        let resp = page();
        let csp = resp.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none'") && csp.contains("connect-src 'self'"));
    }
}
