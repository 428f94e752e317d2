//! The docs against the tree: a path the architecture names must exist, and every
//! command the README, the guide and the reference show runs.
//!
//! The rule for the commands: every fenced block whose info string is `sh` is run, on its
//! own, against the built-in server (see [`run_block`]); there is no mark that makes an
//! `sh` block runnable, so none can escape by leaving it out. Two blocks of the guide need
//! a cluster: `sh slurm` and `sh ssh`; scripts/test-cluster.sh runs those word for word,
//! and here they are checked to parse and to be run there. Output goes in `text` blocks,
//! which may not show a `$ command` line: a command shown is a command run.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt as _;

use crate::common::{Server, eventually, path_with_binary, wait_within};

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

/// The docs whose `sh` blocks run and whose blocks keep to the rule above: the README and
/// the user's docs (the architecture shows no commands).
const DOCS: [&str; 3] = ["README.md", "docs/guide.md", "docs/reference.md"];

/// The `sh` blocks that need a cluster, by their info string's second word; each is run
/// by scripts/test-cluster.sh's `run_guide_block TAG`, in the step of that name.
const CLUSTER_TAGS: [&str; 2] = ["slurm", "ssh"];

/// How long one block may run before it is killed and its test fails.
const BLOCK_LIMIT: Duration = Duration::from_secs(60);

/// A fenced code block of a markdown file.
#[derive(Debug)]
struct Block {
    /// The info string after the opening fence: `sh`, `sh slurm`, `text`, … (empty when
    /// there is none).
    info: String,
    /// The line of the opening fence, from 1.
    line: usize,
    /// The `##` heading the block is under (empty before the first one).
    section: String,
    /// The lines between the fences, without the opening fence's indentation.
    text: String,
}

/// Every fenced code block of `markdown`, in order.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        if line.starts_with("## ") {
            section = line.to_owned();
        }
        let fence = line.trim_start();
        let Some(info) = fence.strip_prefix("```") else {
            continue;
        };
        let indent = line.len() - fence.len();
        let mut text = String::new();
        let mut closed = false;
        for (_, line) in lines.by_ref() {
            if line.trim() == "```" {
                closed = true;
                break;
            }
            let cut = line.len() - line.trim_start().len();
            text.push_str(&line[cut.min(indent)..]);
            text.push('\n');
        }
        assert!(closed, "line {}: a fence that is never closed", i + 1);
        blocks.push(Block {
            info: info.trim().to_owned(),
            line: i + 1,
            section: section.clone(),
            text,
        });
    }
    blocks
}

/// The blocks of `file` (a path from the repository's root), checked against the rule
/// above: every block says what it holds, a shell block is `sh` (run here) or `sh TAG`
/// for a tag of [`CLUSTER_TAGS`] (in the guide only), and no other block shows a command.
fn blocks_of(file: &str) -> Vec<Block> {
    let text = fs::read_to_string(root().join(file)).unwrap();
    let blocks = blocks(&text);
    for block in &blocks {
        let at = format!("{file}:{}", block.line);
        let mut words = block.info.split_whitespace();
        let lang = words.next().unwrap_or("");
        let tag: Vec<&str> = words.collect();
        assert!(
            !lang.is_empty(),
            "{at}: a code block with no info string: say `sh` (run by tests/docs.rs) or `text`"
        );
        assert!(
            !["bash", "shell", "console", "zsh", "shell-session"].contains(&lang),
            "{at}: a `{lang}` block: commands go in `sh` blocks, which tests/docs.rs runs"
        );
        if lang == "sh" {
            assert!(
                tag.is_empty()
                    || (file == "docs/guide.md"
                        && tag.len() == 1
                        && CLUSTER_TAGS.contains(&tag[0])),
                "{at}: `{}`: an `sh` block is run as it is; only the guide's `sh slurm` and \
                 `sh ssh` blocks are run elsewhere (scripts/test-cluster.sh)",
                block.info
            );
        } else {
            let prompt = block.text.lines().find(|l| l.starts_with("$ "));
            assert!(
                prompt.is_none(),
                "{at}: a `{lang}` block shows the command {prompt:?}: put it in an `sh` block \
                 of its own (it is then run), and only its output here"
            );
        }
    }
    blocks
}

/// Runs every `sh` block of `file` that `skip` does not pick, each by [`run_block`],
/// against one built-in server (started only when there is a block to run); returns how
/// many ran.
fn run_sh_blocks(file: &str, skip: impl Fn(&Block) -> bool) -> usize {
    let blocks: Vec<Block> = blocks_of(file)
        .into_iter()
        .filter(|b| b.info == "sh" && !skip(b))
        .collect();
    if !blocks.is_empty() {
        let server = Server::start(&[]);
        for block in &blocks {
            run_block(file, block, &server.base);
        }
    }
    blocks.len()
}

/// Runs `block` with `sh -e -c` in a fresh empty directory, in which `scripts` is the
/// repository's scripts directory (as in a checkout), with the built binary first on
/// PATH, `$BASE` the built-in server's root (`http://127.0.0.1:PORT`), `$API` its
/// tickers API (`$BASE/api/tickers/`) and `$ECHO` its echo route (`$BASE/echo`). It must exit 0 within [`BLOCK_LIMIT`], with no
/// `error:` on stderr and no process left behind: whatever it starts in the background it
/// must stop. A block that fails is shown with its stderr and stdout.
fn run_block(file: &str, block: &Block, base: &str) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir(&work).unwrap();
    std::os::unix::fs::symlink(root().join("scripts"), work.join("scripts")).unwrap();
    let path = path_with_binary();
    // Every process the block starts inherits this, which is how those left behind are
    // found, wherever they went (the coordinator's workers have process groups of their
    // own).
    let marker = format!("DOCS_BLOCK_RUN={}", dir.path().display());
    let started = Instant::now();
    let mut child = Command::new("sh")
        .args(["-e", "-c", &block.text])
        .current_dir(&work)
        .env("PATH", path)
        .env("BASE", base)
        .env("API", format!("{base}/api/tickers/"))
        .env("ECHO", format!("{base}/echo"))
        .env("DOCS_BLOCK_RUN", dir.path())
        // Scripts would take it for the binary to run.
        .env_remove("COORDINATOR")
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.path().join("stdout")).unwrap())
        .stderr(fs::File::create(dir.path().join("stderr")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let status = wait_within(&mut child, BLOCK_LIMIT);
    let elapsed = started.elapsed();
    let mut left = Vec::new();
    let gone = eventually(Duration::from_secs(10), || {
        left = processes_with(&marker);
        left.is_empty()
    });
    if !gone {
        for pid in &left {
            let _ = Command::new("kill")
                .args(["-s", "KILL", &pid.to_string()])
                .status();
        }
    }
    let read = |name: &str| {
        String::from_utf8_lossy(&fs::read(dir.path().join(name)).unwrap()).into_owned()
    };
    let (stdout, stderr) = (read("stdout"), read("stderr"));
    let what = format!(
        "{file}:{} (under `{}`), run in {}:\n{}",
        block.line,
        block.section,
        work.display(),
        block.text
    );
    let Some(status) = status else {
        panic!("{what}\nstill ran after {BLOCK_LIMIT:?}: killed it; its stderr:\n{stderr}");
    };
    eprintln!(
        "{file}:{}: {status} in {:.1} s",
        block.line,
        elapsed.as_secs_f64()
    );
    assert!(
        gone,
        "{what}\nleft processes behind (now killed): {left:?}; stop what the block starts"
    );
    assert!(
        status.success(),
        "{what}\n{status}; its stderr:\n{stderr}\nits stdout:\n{stdout}"
    );
    assert!(
        !stderr.contains("error:"),
        "{what}\nan error on stderr:\n{stderr}"
    );
}

/// The live processes whose environment holds the entry `marker` (`NAME=value`).
fn processes_with(marker: &str) -> Vec<u32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == marker.as_bytes()))
        })
        .collect()
}

#[test]
fn every_sh_block_of_the_readme_runs_against_the_built_in_api() {
    // "## Two commands" is the set-up: `cargo run --release -p coordinator` (a release
    // build, then the default job) and `scripts/test` (every test, this one among them).
    // CI runs `scripts/test` itself (.ci/run), and the default job is run by
    // e2e::the_readme_default_command_scrapes_the_builtin_target_and_exits_zero; a release
    // build from inside a test would take minutes. So that block, and only it, is not run
    // here, and it must stay those two commands.
    const SET_UP: &str = "## Two commands";
    let blocks = blocks_of("README.md");
    let set_up: Vec<&Block> = blocks.iter().filter(|b| b.section == SET_UP).collect();
    assert_eq!(set_up.len(), 1, "{set_up:?}");
    assert_eq!(
        set_up[0].text, "cargo run --release -p coordinator\nscripts/test\n",
        "README.md:{}: the set-up block may hold only the two commands CI runs",
        set_up[0].line
    );
    let ran = run_sh_blocks("README.md", |b| b.section == SET_UP);
    assert!(ran >= 7, "only {ran} blocks of README.md ran");
}

#[test]
fn every_sh_block_of_the_guide_runs_against_the_built_in_api() {
    let ran = run_sh_blocks("docs/guide.md", |_| false);
    assert!(ran >= 20, "only {ran} blocks of docs/guide.md ran");
}

#[test]
fn every_sh_block_of_the_reference_runs_against_the_built_in_api() {
    // None today: the reference names commands in its prose.
    run_sh_blocks("docs/reference.md", |_| false);
}

#[test]
fn every_code_block_of_the_docs_says_what_it_holds_and_shows_no_command_it_does_not_run() {
    for file in DOCS {
        assert!(!blocks_of(file).is_empty(), "{file}: no code blocks");
    }
}

/// The guide's cluster blocks parse, and scripts/test-cluster.sh runs each of them.
#[test]
fn the_cluster_blocks_of_the_guide_parse_and_test_cluster_runs_them() {
    let script = fs::read_to_string(root().join("scripts/test-cluster.sh")).unwrap();
    let blocks = blocks_of("docs/guide.md");
    for tag in CLUSTER_TAGS {
        let info = format!("sh {tag}");
        let found: Vec<&Block> = blocks.iter().filter(|b| b.info == info).collect();
        assert_eq!(
            found.len(),
            1,
            "docs/guide.md: one `{info}` block, which scripts/test-cluster.sh runs"
        );
        let check = crate::common::output_of(Command::new("sh").args(["-n", "-c", &found[0].text]));
        assert!(
            check.status.success(),
            "docs/guide.md:{}: sh -n: {}",
            found[0].line,
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(
            script.contains(&format!("run_guide_block {tag} ")),
            "scripts/test-cluster.sh does not run the guide's `{info}` block"
        );
    }
}
