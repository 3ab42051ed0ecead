//! The route-file compiler: any text either compiles or fails with errors that point at lines
//! of that text; it never panics, and what compiles is reachable by the paths it names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scopegate::path::normalise;
use scopegate::routes::{CompileOptions, RouteSource, compile};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = RouteSource {
        name: "fuzz.toml".into(),
        text: text.into(),
    };
    let lines = text.lines().count().max(1);
    match compile(std::slice::from_ref(&source), &CompileOptions::default()) {
        Err(errors) => {
            assert!(!errors.is_empty(), "a failed compile names no error");
            for e in &errors {
                assert_eq!(e.file, "fuzz.toml");
                assert!(!e.message.is_empty());
                if let Some(line) = e.line {
                    assert!(
                        (1..=lines + 1).contains(&line),
                        "{e} (text has {lines} lines)"
                    );
                }
            }
        }
        Ok(table) => {
            for route in table.routes() {
                let template = &*route.template;
                assert!(template.starts_with('/'), "{template:?}");
                if template.contains('{') {
                    continue;
                }
                // A fixed path must be canonical, or no request could ever reach its rules...
                assert_eq!(
                    normalise(template).as_deref(),
                    Ok(template),
                    "route {template:?} is not canonical"
                );
                // ...and looking it up finds exactly that route.
                let found = table.find(template).expect("a compiled route is found");
                assert_eq!(&*found.route.template, template);
            }
        }
    }
});
