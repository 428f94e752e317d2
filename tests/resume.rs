//! `--resume` as people use it: the plan comes from `run.json`, flags given again must
//! agree with it, the whole plan is counted, and a finished run starts nothing.

use crate::common::*;

#[test]
fn a_resume_alone_takes_the_plan_from_run_json_and_counts_the_whole_plan() {
    let server = Server::start(&["--delay", "10..20"]);
    let dir = tempfile::tempdir().unwrap();
    let template = server.tickers_template();
    // Cut short: the deadline stops it with part of the plan done.
    let first = scrape(
        &template,
        "0..20000",
        &["-w", "2", "-c", "4", "--deadline", "1s"],
        dir.path(),
    );
    assert_exit(&first, 4);
    let before = manifest_lines(&dir.path().join("out"));
    assert!(
        before > 0 && before < 2000,
        "{before} batches before the resume"
    );

    // No --url, --range or --batch: they come from run.json.
    let resumed = run(&["--resume", "-o", "out", "-w", "2"], dir.path());
    assert_exit(&resumed, 0);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    let this = 2000 - before;
    assert!(
        stderr.contains(&format!(
            "plan: 2000 of 2000 batches done; {this} in this invocation"
        )),
        "{stderr}"
    );
    assert_complete_run(&dir.path().join("out"), 20_000);

    // Finished: it says so, and starts no worker (there is no worker line).
    let again = run(&["--resume", "-o", "out"], dir.path());
    assert_exit(&again, 0);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("nothing to fetch: all 2000 batches"),
        "{stderr}"
    );
    assert!(!stderr.contains("worker 0"), "{stderr}");
    assert_eq!(manifest_lines(&dir.path().join("out")), 2000);
}

#[test]
fn flags_given_again_must_agree_with_run_json_and_the_error_names_the_difference() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let template = server.tickers_template();
    assert_exit(&scrape(&template, "0..100", &["-q"], dir.path()), 0);
    let other = scrape(&template, "0..200", &["--resume"], dir.path());
    assert_exit(&other, 2);
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        stderr.contains("--range 0..200 here, 0..100 in run.json"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // The same flags again are fine, and there is nothing left to do.
    let same = scrape(&template, "0..100", &["--resume"], dir.path());
    assert_exit(&same, 0);
}
