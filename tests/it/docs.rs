//! The two READMEs stay in step: every section heading, every `WAFER_*` setting the binary reads and every interface
//! name present in one is present in the other (the Chinese headings carry the English one in parentheses).

use std::collections::BTreeSet;

fn read(name: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

fn headings(text: &str, chinese: bool) -> BTreeSet<String> {
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if in_code || !(line.starts_with("## ") || line.starts_with("### ")) {
            continue;
        }
        let h = line.trim_start_matches('#').trim();
        let h = if chinese {
            // The English heading is the text inside the first "(" that closes at the end of the line.
            h.find(" (").map(|i| h[i + 2..].trim_end_matches(')').to_owned()).unwrap_or_else(|| h.to_owned())
        } else {
            h.to_owned()
        };
        out.insert(h);
    }
    out
}

#[test]
fn both_readmes_have_the_same_sections_settings_and_interfaces() {
    let (en, zh) = (read("README.md"), read("README.zh-CN.md"));
    assert!(
        en.lines().next().unwrap().contains("README.zh-CN.md"),
        "README.md links to the Chinese one first"
    );
    assert!(zh.lines().next().unwrap().contains("README.md"), "and back");
    let (he, hz) = (headings(&en, false), headings(&zh, true));
    assert_eq!(
        he.difference(&hz).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "sections missing in README.zh-CN.md"
    );
    assert_eq!(
        hz.difference(&he).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "sections missing in README.md"
    );

    let config = read("src/config.rs");
    let settings: Vec<&str> = config
        .split("env = \"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .filter(|v| v.starts_with("WAFER_"))
        .collect();
    assert!(settings.len() >= 25, "{settings:?}");
    for v in settings.iter().copied().chain(["WAFER_TEST_MYSQL_URL"]) {
        assert!(en.contains(v), "README.md does not mention {v}");
        assert!(zh.contains(v), "README.zh-CN.md does not mention {v}");
    }
    for name in wafer_scf::handlers::interface_names() {
        assert!(en.contains(name), "README.md does not mention {name}");
        assert!(zh.contains(name), "README.zh-CN.md does not mention {name}");
    }
}
