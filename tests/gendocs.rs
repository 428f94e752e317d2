//! The generated documents: the man pages committed in docs/man/ are what the command
//! line's definition makes today, and `coordinator completions SHELL` prints a script.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::run;

/// How to bring docs/man/ up to date, said by every failure.
const REGENERATE: &str = "regenerate them with `cargo run -p coordinator -- __man docs/man` \
     (after removing docs/man/*.1 if a subcommand went away) and commit the result";

fn pages_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}; {REGENERATE}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "1"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect()
}

#[test]
fn committed_man_pages_are_what_the_command_line_generates() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["__man", &dir.path().to_string_lossy()], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = pages_in(dir.path());
    assert!(generated.contains_key("coordinator.1"), "{generated:?}");
    assert!(generated.contains_key("coordinator-load.1"));
    assert!(!generated.keys().any(|name| name.contains("__")));
    let committed = pages_in(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/man"));
    let names = |pages: &BTreeMap<String, Vec<u8>>| pages.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&committed),
        names(&generated),
        "docs/man/ holds other pages than the command line makes: {REGENERATE}"
    );
    for (name, page) in &generated {
        assert!(
            committed[name] == *page,
            "docs/man/{name} differs from what the command line makes: {REGENERATE}"
        );
    }
}

#[test]
fn completions_are_printed_for_every_shell_without_hidden_commands() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef coordinator"),
        ("fish", "complete -c coordinator"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = run(&["completions", shell], dir.path());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("retry-failed"), "{shell}");
        assert!(script.contains("serve"), "{shell}");
        assert!(!script.contains("__worker"), "{shell} completes __worker");
        assert!(!script.contains("__man"), "{shell} completes __man");
    }
    let out = run(&["completions", "tcsh"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_completion_script_loads_in_bash() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["completions", "bash"], dir.path());
    let file = dir.path().join("coordinator.bash");
    std::fs::write(&file, &out.stdout).unwrap();
    // Completing `coordinator load --ra` in a real bash, through the function the
    // script registered.
    let probe = format!(
        "source {}; COMP_WORDS=(coordinator load --ra); COMP_CWORD=2; \
         _coordinator coordinator --ra load; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        file.display()
    );
    let out = crate::common::output_of(std::process::Command::new("bash").args(["-c", &probe]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.lines().any(|l| l == "--rate"),
        "bash completed `coordinator load --ra` to {stdout:?}"
    );
}
