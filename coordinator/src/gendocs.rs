//! Documents generated from the command line's definition in [`crate::cli`]: shell
//! completions (`coordinator completions SHELL`) and the man pages in `docs/man/`
//! (`coordinator __man DIR`, checked against the committed pages by a test). Hidden
//! subcommands (the worker's, this one) appear in neither.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::exit::{Exit, print_stdout};

/// The command line as users see it: [`Cli`] without its hidden subcommands.
pub fn public_command() -> clap::Command {
    let full = Cli::command();
    let mut public = clap::Command::new("coordinator")
        .args(full.get_arguments().cloned())
        .groups(full.get_groups().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
        .args_conflicts_with_subcommands(true);
    if full.get_version().is_some() {
        public = public.version(env!("CARGO_PKG_VERSION"));
    }
    if let Some(about) = full.get_about() {
        public = public.about(about.clone());
    }
    if let Some(long_about) = full.get_long_about() {
        public = public.long_about(long_about.clone());
    }
    public
}

/// `coordinator completions SHELL`: the script on stdout.
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<Exit> {
    let mut cmd = public_command();
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, name, &mut script);
    print_stdout(&String::from_utf8_lossy(&script)).context("printing the completions")?;
    Ok(Exit::Ok)
}

/// `coordinator __man DIR`: one page for the command and one per subcommand.
pub fn man(args: &ManArgs) -> anyhow::Result<Exit> {
    for (file, page) in man_pages().context("rendering the man pages")? {
        let path = args.dir.join(&file);
        write_file(&path, &page).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Exit::Ok)
}

/// The man pages, file name and text: `coordinator.1`, then `coordinator-SUB.1` for
/// each visible subcommand.
pub fn man_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut root = public_command().disable_help_subcommand(true);
    root.build();
    let mut pages = Vec::new();
    let mut commands = vec![root];
    while let Some(cmd) = commands.pop() {
        commands.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        let man = clap_mangen::Man::new(cmd)
            .source(concat!("coordinator ", env!("CARGO_PKG_VERSION")))
            .manual("User Commands");
        let mut page = Vec::new();
        man.render(&mut page)?;
        pages.push((man.get_filename(), page));
    }
    pages.sort();
    Ok(pages)
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.flush()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cli::MAN_COMMAND;

    /// Long names that mean the same thing although spelled apart, so that they may
    /// share a short flag: the output, and how many requests run at once.
    const SYNONYMS: [(&str, &str); 2] = [("output", "out"), ("connections", "concurrency")];

    fn meaning(long: &str) -> &str {
        SYNONYMS
            .iter()
            .find(|(alias, _)| *alias == long)
            .map_or(long, |(_, canonical)| canonical)
    }

    #[test]
    fn every_short_flag_means_one_thing_in_every_subcommand() {
        let mut root = Cli::command();
        root.build();
        let mut commands = vec![root];
        let mut seen: BTreeMap<char, Vec<(String, String)>> = BTreeMap::new();
        while let Some(cmd) = commands.pop() {
            commands.extend(cmd.get_subcommands().cloned());
            for arg in cmd.get_arguments() {
                if let (Some(short), Some(long)) = (arg.get_short(), arg.get_long()) {
                    seen.entry(short)
                        .or_default()
                        .push((cmd.get_name().to_owned(), long.to_owned()));
                }
            }
        }
        assert_eq!(
            seen[&'q'].len(),
            2,
            "-q in the scrape and in load: {seen:?}"
        );
        for (short, uses) in &seen {
            let first = meaning(&uses[0].1);
            for (command, long) in uses {
                assert_eq!(
                    meaning(long),
                    first,
                    "-{short} is --{long} in `{command}` but --{} elsewhere: {uses:?}",
                    uses[0].1
                );
            }
        }
    }

    #[test]
    fn hidden_subcommands_are_in_no_generated_document() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "coordinator-completions.1",
                "coordinator-load.1",
                "coordinator-report.1",
                "coordinator-serve.1",
                "coordinator-verify.1",
                "coordinator.1",
            ]
        );
        for (name, page) in &pages {
            let text = String::from_utf8_lossy(page);
            assert!(!text.contains("__"), "{name} names a hidden command");
        }
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
            clap_complete::Shell::PowerShell,
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut public_command(), "coordinator", &mut script);
            let text = String::from_utf8_lossy(&script);
            assert!(text.contains("--retry-on"), "{shell}: {text}");
            assert!(text.contains("load"), "{shell}");
            assert!(!text.contains("__worker"), "{shell} completes __worker");
            assert!(
                !text.contains(MAN_COMMAND),
                "{shell} completes {MAN_COMMAND}"
            );
        }
    }
}
