//! `routes[].resume`: off when left out, its defaults, and errors that name the key.

use super::*;

/// `GOOD` with `block` in its route, just before `fallback` (line 30).
fn with_resume(block: &str) -> String {
    GOOD.replacen("    fallback:\n", &format!("{block}    fallback:\n"), 1)
}

#[test]
fn resume_is_off_unless_asked_for() {
    assert_eq!(parse(GOOD, "x").unwrap().routes[0].resume, None);
    let c = parse(&with_resume("    resume: {}\n"), "x").unwrap();
    assert_eq!(c.routes[0].resume, Some(ResumeConfig::default()));
    assert_eq!(
        ResumeConfig::default(),
        ResumeConfig {
            mode: ResumeMode::Continue,
            max: 1
        }
    );
    let c = parse(
        &with_resume("    resume: { mode: continue, max: 3 }\n"),
        "x",
    )
    .unwrap();
    assert_eq!(c.routes[0].resume.map(|r| r.max), Some(3));
}

#[test]
fn bad_resume_settings_name_the_key_and_line() {
    for (block, path) in [
        ("    resume: { max: 0 }\n", "routes[0].resume.max"),
        ("    resume: { max: 11 }\n", "routes[0].resume.max"),
        ("    resume: { mode: replay }\n", "routes[0].resume.mode"),
        ("    resume: { tries: 1 }\n", "routes[0].resume.tries"),
    ] {
        let e = parse(&with_resume(block), "bad.yaml").expect_err(block);
        let ConfigError::Invalid(inv) = &e else {
            panic!("unexpected error {e}")
        };
        assert_eq!(inv.path, path, "for {block:?}: {e}");
        assert_eq!(inv.line, Some(30), "for {block:?}: {e}");
    }
}
