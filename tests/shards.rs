//! End-to-end tests of shards, `verify` and the orchestration scripts in scripts/, and
//! of the checks the benchmark scripts make of their runs.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn script(name: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("scripts").join(name))
        .env("COORDINATOR", env!("CARGO_BIN_EXE_coordinator"));
    without_scheduler(&mut cmd);
    cmd
}

/// Removes every variable `--shard auto` reads (and all of Slurm's), so that a test
/// run inside a real Kubernetes pod or Slurm job sees only what it sets itself.
fn without_scheduler(cmd: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("SLURM_")
            || name.starts_with("COORDINATOR_SHARD_")
            || name.starts_with("JOB_COMPLETION")
        {
            cmd.env_remove(&*name);
        }
    }
    for name in [
        "COORDINATOR_SHARD_INDEX",
        "COORDINATOR_SHARD_COUNT",
        "JOB_COMPLETION_INDEX",
        "JOB_COMPLETIONS",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_CPUS_PER_TASK",
    ] {
        cmd.env_remove(name);
    }
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn shard_dirs(root: &Path, m: u64) -> Vec<String> {
    (0..m)
        .map(|k| root.join(format!("shard-{k}")).display().to_string())
        .collect()
}

fn verify(dirs: &[String], extra: &[&str]) -> Output {
    output_of(coordinator().arg("verify").args(dirs).args(extra))
}

/// Every batch file of 0..items in batches of 10, across the shard dirs, with its bytes.
fn assert_union_complete(dirs: &[String], items: u64) {
    let mut names = BTreeSet::new();
    for dir in dirs {
        for name in file_names(Path::new(dir)) {
            if name.starts_with("batch") {
                let body = fs::read(Path::new(dir).join(&name)).unwrap();
                let start: u64 = name[5..name.find('-').unwrap()].parse().unwrap();
                assert_eq!(
                    body,
                    tickers::tickers_json(start, 10, 1_000_000_000).into_bytes(),
                    "{name}"
                );
                assert!(names.insert(name), "a batch file in two shards");
            }
        }
    }
    assert_eq!(names.len() as u64, items / 10);
}

#[test]
fn four_local_shards_verify_and_a_gap_is_found_and_fixed_by_the_printed_commands() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("out");
    let url = server.tickers_template();
    let run = output_of(script("shards-local.sh").args([
        "4",
        root.to_str().unwrap(),
        "--url",
        &url,
        "--range",
        "0..2000",
        "--workers",
        "1",
    ]));
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert!(text(&run.stderr).contains("complete"));
    let dirs = shard_dirs(&root, 4);
    assert_union_complete(&dirs, 2000);
    for (k, d) in dirs.iter().enumerate() {
        let indices: Vec<u64> = manifest(Path::new(d))
            .iter()
            .map(|l| l["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indices.len(), 50);
        assert!(
            indices.iter().all(|i| i % 4 == k as u64),
            "shard {k} holds only its slice"
        );
        let record = fs::read_to_string(Path::new(d).join("run.json")).unwrap();
        assert!(
            record.contains(&format!("\"shard\": \"{k}/4\"")),
            "{record}"
        );
    }

    // Break two batches: a file goes (shard 1), a manifest line goes (shard 2).
    let shard1 = Path::new(&dirs[1]);
    let victim = manifest(shard1)[7].clone();
    fs::remove_file(shard1.join(victim["file"].as_str().unwrap())).unwrap();
    let shard2 = Path::new(&dirs[2]);
    let mut lines: Vec<String> = fs::read_to_string(shard2.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let dropped = lines.remove(3);
    let dropped_index = serde_json::from_str::<serde_json::Value>(&dropped).unwrap()["index"]
        .as_u64()
        .unwrap();
    fs::write(shard2.join("manifest.jsonl"), lines.join("\n") + "\n").unwrap();

    let check = verify(&dirs, &["--print-command"]);
    let report = text(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{report}");
    assert!(
        report
            .contains("gaps: 2 (1 not in any manifest, 0 failed, 1 with a missing or changed file"),
        "{report}"
    );
    assert!(
        report.contains(&format!("batch {} (shard 1/4", victim["index"])),
        "{report}"
    );
    assert!(
        report.contains(&format!("batch {dropped_index} (shard 2/4")),
        "{report}"
    );
    let commands = text(&check.stdout);
    assert_eq!(commands.lines().count(), 2, "{commands}");

    let urls = text(&verify(&dirs, &["--print-urls"]).stdout);
    let expected: BTreeSet<String> = [victim["index"].as_u64().unwrap(), dropped_index]
        .iter()
        .map(|i| format!("{}/api/tickers/?start={}&limit=10", server.base, i * 10))
        .collect();
    assert_eq!(
        urls.lines().map(str::to_owned).collect::<BTreeSet<_>>(),
        expected
    );

    for command in commands.lines() {
        let command = command.replacen("coordinator", env!("CARGO_BIN_EXE_coordinator"), 1);
        let fix = output_of(Command::new("sh").args(["-c", &command]));
        assert_eq!(
            fix.status.code(),
            Some(0),
            "{command}: {}",
            text(&fix.stderr)
        );
        assert!(
            text(&fix.stderr).contains("done: 1 batches ok"),
            "{}",
            text(&fix.stderr)
        );
    }
    let again = verify(&dirs, &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("ok: 200 batches"));
    assert_union_complete(&dirs, 2000);
}

#[test]
fn verify_names_a_missing_shard_and_refuses_mixed_plans() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    for k in [0, 2] {
        let out = dir.path().join(format!("shard-{k}"));
        let shard = format!("{k}/3");
        let r = run(
            &[
                "--url",
                &url,
                "--range",
                "0..300",
                "--shard",
                &shard,
                "--out",
                out.to_str().unwrap(),
                "--quiet",
            ],
            dir.path(),
        );
        assert_eq!(r.status.code(), Some(0));
    }
    let dirs = [0, 2].map(|k| dir.path().join(format!("shard-{k}")).display().to_string());
    let check = verify(&dirs, &["--print-command"]);
    let report = text(&check.stderr);
    assert_eq!(check.status.code(), Some(1));
    assert!(report.contains("gaps: 10 (0 not in any manifest, 0 failed, 0 with a missing or changed file, 10 in shards with no directory)"), "{report}");
    let command = text(&check.stdout);
    assert!(
        command.contains("--shard 1/3")
            && command.contains("shard-1'")
            && !command.contains("--resume"),
        "{command}"
    );
    let command = command
        .trim()
        .replacen("coordinator", env!("CARGO_BIN_EXE_coordinator"), 1);
    let fix = output_of(
        Command::new("sh")
            .args(["-c", &command])
            .current_dir(dir.path()),
    );
    assert_eq!(
        fix.status.code(),
        Some(0),
        "{command}: {}",
        text(&fix.stderr)
    );
    let all = [0, 1, 2].map(|k| dir.path().join(format!("shard-{k}")).display().to_string());
    assert_eq!(verify(&all, &[]).status.code(), Some(0));
    let twice = verify(
        &[
            all[0].clone(),
            all[0].clone(),
            all[1].clone(),
            all[2].clone(),
        ],
        &[],
    );
    assert_eq!(
        twice.status.code(),
        Some(1),
        "a shard given twice is not a complete set"
    );

    let other = dir.path().join("other");
    let r = run(
        &[
            "--url",
            &url,
            "--range",
            "0..200",
            "--shard",
            "1/3",
            "--out",
            other.to_str().unwrap(),
            "--quiet",
        ],
        dir.path(),
    );
    assert_eq!(r.status.code(), Some(0));
    let mixed = verify(&[dirs[0].clone(), other.display().to_string()], &[]);
    assert_eq!(mixed.status.code(), Some(2));
    assert!(text(&mixed.stderr).contains("different plans"));
}

fn auto_shard_run(env: &[(&str, &str)]) -> (Output, PathBuf, tempfile::TempDir, Server) {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let url = server.tickers_template();
    let mut cmd = coordinator();
    cmd.args([
        "--url",
        &url,
        "--range",
        "0..300",
        "--shard",
        "auto",
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    without_scheduler(&mut cmd).envs(env.iter().copied());
    (output_of(&mut cmd), out, dir, server)
}

fn indices(out: &Path) -> BTreeSet<u64> {
    manifest(out)
        .iter()
        .map(|l| l["index"].as_u64().unwrap())
        .collect()
}

#[test]
fn shard_auto_reads_a_kubernetes_indexed_job() {
    let (output, out, _dir, _server) =
        auto_shard_run(&[("JOB_COMPLETION_INDEX", "1"), ("JOB_COMPLETIONS", "3")]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(indices(&out), (0..30).filter(|i| i % 3 == 1).collect());
}

#[test]
fn shard_auto_reads_a_slurm_array_task() {
    let env = [
        ("SLURM_ARRAY_TASK_ID", "3"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
    ];
    let (output, out, _dir, _server) = auto_shard_run(&env);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_eq!(indices(&out), (0..30).filter(|i| i % 4 == 2).collect());
}

#[test]
fn shard_auto_without_a_scheduler_is_a_usage_error() {
    let (output, out, _dir, _server) = auto_shard_run(&[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("no shard in the environment"));
    assert!(!out.exists());
}

#[test]
fn the_slurm_script_runs_its_shard_under_a_simulated_array_task_and_resumes_when_requeued() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let task = |id: &str| {
        output_of(script("slurm-array.sh").envs([
            ("SCRAPE_URL", url.as_str()),
            ("SCRAPE_RANGE", "0..200"),
            ("OUT_ROOT", dir.path().to_str().unwrap()),
            ("SLURM_ARRAY_TASK_ID", id),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
            ("SLURM_CPUS_PER_TASK", "2"),
        ]))
    };
    // First runs: no run.json yet, so no --resume (which would refuse a fresh
    // directory with exit 2).
    for id in ["1", "2"] {
        let output = task(id);
        assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    }
    let dirs = shard_dirs(dir.path(), 2);
    assert_union_complete(&dirs, 200);

    // Task 2 is requeued after losing a file: its run.json is there, so the script adds
    // --resume (a plain second run into the directory would be refused with exit 2),
    // and only that batch is fetched again.
    let shard1 = Path::new(&dirs[1]);
    let lost = manifest(shard1)[3]["file"].as_str().unwrap().to_owned();
    fs::remove_file(shard1.join(&lost)).unwrap();
    let before = manifest(shard1).len();
    let requeued = task("2");
    assert_eq!(
        requeued.status.code(),
        Some(0),
        "{}",
        text(&requeued.stderr)
    );
    assert_eq!(
        manifest(shard1).len(),
        before,
        "one line replaced, none added"
    );
    assert!(shard1.join(&lost).exists(), "{lost} fetched again");
    let check = verify(&dirs, &[]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert_union_complete(&dirs, 200);
}

/// The pod command of scripts/k8s-indexed-job.yaml: the container's `command` and its
/// one argument, the shell script, with `swaps` (text, replacement) made in the
/// script, each of which must be found there. Also returns `.spec.completions` and the
/// pod's environment.
fn k8s_pod_command(swaps: &[(&str, &str)]) -> (Vec<String>, u64, Vec<(String, String)>) {
    let yaml = fs::read_to_string(repo().join("scripts/k8s-indexed-job.yaml")).unwrap();
    let job: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    let completions = job["spec"]["completions"].as_u64().unwrap();
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let mut command: Vec<String> = container["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let args = container["args"].as_sequence().unwrap();
    assert_eq!(args.len(), 1, "one script for sh -c");
    let mut script = args[0].as_str().unwrap().to_owned();
    for (from, to) in swaps {
        assert!(
            script.contains(from),
            "{from:?} is not in the pod's script: {script}"
        );
        script = script.replace(from, to);
    }
    command.push(script);
    let env = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (command, completions, env)
}

#[test]
fn the_kubernetes_pod_command_runs_every_index_then_resumes_and_verifies() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let url = server.tickers_template();
    let root = dir.path().display().to_string();
    let (command, completions, env) = k8s_pod_command(&[
        (
            "exec coordinator ",
            &format!("exec '{}' ", env!("CARGO_BIN_EXE_coordinator")),
        ),
        (
            "http://api.example/tickers/?start={start}&limit={limit}",
            &url,
        ),
        ("--range 0..1000000", "--range 0..800"),
        ("=/out/", &format!("='{root}'/")),
    ]);
    assert_eq!(command[..2], ["/bin/sh", "-c"], "{command:?}");
    let pod = |index: u64| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &command[2]]);
        without_scheduler(&mut cmd)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("JOB_COMPLETION_INDEX", index.to_string());
        output_of(&mut cmd)
    };
    let every_pod = || {
        for index in 0..completions {
            let output = pod(index);
            assert_eq!(
                output.status.code(),
                Some(0),
                "index {index}: {}",
                text(&output.stderr)
            );
        }
    };
    // First pass: each shard starts fresh (with --resume it would be refused, exit 2).
    every_pod();
    let dirs = shard_dirs(dir.path(), completions);
    assert_union_complete(&dirs, 800);

    // Second pass, as after pods were restarted: every shard has its run.json, so the
    // command adds --resume (without it a second run would be refused, exit 2); the
    // shard that lost a file fetches it again.
    let shard3 = Path::new(&dirs[3]);
    let lost = manifest(shard3)[0]["file"].as_str().unwrap().to_owned();
    fs::remove_file(shard3.join(&lost)).unwrap();
    every_pod();
    assert!(shard3.join(&lost).exists(), "{lost} fetched again");
    let check = verify(&dirs, &[]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
    assert!(
        text(&check.stderr).contains("ok: 80 batches"),
        "{}",
        text(&check.stderr)
    );
    assert_union_complete(&dirs, 800);
}

#[test]
fn the_orchestration_examples_parse() {
    for name in [
        "shards-local.sh",
        "slurm-array.sh",
        "parallel-ssh.sh",
        "bench.sh",
        "test",
    ] {
        let check = output_of(
            Command::new("bash")
                .arg("-n")
                .arg(repo().join("scripts").join(name)),
        );
        assert!(
            check.status.success(),
            "bash -n {name}: {}",
            text(&check.stderr)
        );
    }
    let yaml = fs::read_to_string(repo().join("scripts/k8s-indexed-job.yaml")).unwrap();
    let job: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    let completions = job["spec"]["completions"].as_u64().unwrap();
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_sequence().unwrap();
    let declared = env.iter().find(|e| e["name"] == "JOB_COMPLETIONS").unwrap();
    assert_eq!(
        declared["value"].as_str().unwrap(),
        completions.to_string(),
        "JOB_COMPLETIONS matches completions"
    );
    assert!(
        container["args"][0]
            .as_str()
            .unwrap()
            .contains("--shard auto")
    );
}

/// `python3 scripts/bench/NAME ARGS` within the time limit.
fn bench_python(name: &str, args: &[&str]) -> Output {
    output_of(
        Command::new("python3")
            .arg(repo().join("scripts/bench").join(name))
            .args(args),
    )
}

#[test]
fn the_benchmark_scripts_check_their_runs() {
    for name in ["validate.py", "report.py"] {
        let check = bench_python(name, &["--self-test"]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "{name} --self-test: {}",
            text(&check.stderr)
        );
    }
    // rusage.py passes the command's exit code on and records it.
    for (script, code) in [("exit 0", 0), ("exit 3", 3), ("kill -TERM $$", 143)] {
        let measured = bench_python("rusage.py", &["--", "sh", "-c", script]);
        assert_eq!(measured.status.code(), Some(code), "{script}");
        let usage: serde_json::Value = serde_json::from_slice(&measured.stdout).unwrap();
        assert_eq!(usage["exit_code"], code, "{script}");
    }
    let bogus = output_of(script("bench.sh").env("BENCH_ONLY", "bogus"));
    assert_eq!(bogus.status.code(), Some(2), "{}", text(&bogus.stderr));

    // One group of the suite for real, with this build: its row must be valid (exit 0,
    // every page file there with the server's bytes).
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("bench.md");
    let smoke = output_of(script("bench.sh").envs([
        ("BENCH_ONLY", "scrape_rate"),
        ("BENCH_BIN", env!("CARGO_BIN_EXE_coordinator")),
        ("BENCH_REPS", "1"),
        ("BENCH_OUT", report.to_str().unwrap()),
    ]));
    assert_eq!(smoke.status.code(), Some(0), "{}", text(&smoke.stderr));
    let report = fs::read_to_string(report).unwrap();
    assert!(
        report.contains("2,000 requests, all stored with the server's bytes"),
        "{report}"
    );
    assert!(
        report.contains("None: every run exited 0 and its output checked out."),
        "{report}"
    );
}
