//! The docs against the tree: a path the architecture names must exist.

use std::path::Path;

/// The repository's root.
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Every `code span` of `text` that names a path in the repository: it has a `/` and
/// ends in a file name with an extension, or in `/`.
fn paths_named(text: &str) -> Vec<&str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| !span.contains(' ') && span.contains('/') && !span.starts_with('/'))
        .filter(|span| {
            span.ends_with('/') || span.rsplit('/').next().is_some_and(|f| f.contains('.'))
        })
        .collect()
}

#[test]
fn every_path_the_architecture_names_exists() {
    let text = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let paths = paths_named(&text);
    assert!(paths.len() > 40, "too few paths found: {paths:?}");
    let missing: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| !root().join(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn every_source_file_of_the_data_path_is_named_in_the_architecture() {
    let text = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    for dir in ["coordinator/src", "worker/src"] {
        let mut files = Vec::new();
        let mut stack = vec![root().join(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        // Entry points, tests beside the code and small helpers need no mention.
        let exempt = [
            "main.rs",
            "lib.rs",
            "tests.rs",
            "oracle.rs",
            "lag.rs",
            "fault.rs",
            "cpus.rs",
            "lines.rs",
            "scheduler.rs",
            "signals.rs",
            "headers.rs",
            "error.rs",
        ];
        for file in files {
            let rel = file
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .replace("/../", "/");
            let name = file.file_name().unwrap().to_string_lossy();
            if exempt.contains(&name.as_ref()) {
                continue;
            }
            let rel = rel.trim_start_matches("./");
            assert!(
                text.contains(rel),
                "docs/architecture.md does not name {rel}"
            );
        }
    }
}

/// The ```sh blocks of the README's "Examples" section.
fn readme_examples() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = text.find("## Examples").expect("an Examples section");
    let section = &text[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    section
        .split("```sh\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn every_example_of_the_readme_runs_against_the_built_in_api() {
    let server = crate::common::Server::start(&[]);
    let api = format!("{}/api/tickers/", server.base);
    let echo = format!("{}/echo", server.base);
    let bin = Path::new(env!("CARGO_BIN_EXE_coordinator"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let examples = readme_examples();
    assert!(examples.len() >= 6, "{examples:?}");
    for example in examples {
        let dir = tempfile::tempdir().unwrap();
        let out = crate::common::output_of(
            std::process::Command::new("sh")
                .args(["-e", "-c", &example])
                .env("PATH", &path)
                .env("API", &api)
                .env("ECHO", &echo)
                .current_dir(dir.path()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{example}\nfailed: {stderr}");
        assert!(!stderr.contains("error:"), "{example}\n{stderr}");
    }
}
