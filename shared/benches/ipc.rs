#![allow(missing_docs, clippy::unwrap_used)] // A benchmark binary.

//! Micro-benchmarks of the hot paths in the coordinator: encoding and decoding the
//! frames that carry jobs and reports, and computing batches of a plan.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shared::frame::{decode, encode, encode_into};
use shared::plan::{Batch, BatchPlan, Shard, Span};
use shared::protocol::{FromWorker, Job, JobReport, Outcome, ToWorker};
use std::hint::black_box;

fn report(i: u64) -> FromWorker {
    FromWorker::Done(JobReport {
        batch: Batch {
            index: i,
            start: i * 10,
            end: i * 10 + 10,
        },
        url: format!(
            "http://127.0.0.1:8080/api/tickers/?start={}&limit=10",
            i * 10
        ),
        status: Some(200),
        bytes: 2_700,
        elapsed_us: 1_234,
        attempts: 1,
        outcome: Outcome::Saved {
            file: format!("batch{}-{}.json", i * 10, i * 10 + 10),
        },
        chain: None,
        validators: Default::default(),
    })
}

fn frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("frames");
    g.throughput(Throughput::Elements(1));
    let msg = report(123_456);
    g.bench_function("encode report", |b| {
        let mut buf = Vec::with_capacity(256);
        b.iter(|| {
            buf.clear();
            encode_into(black_box(&msg), &mut buf).unwrap();
        })
    });
    let frame = encode(&msg).unwrap();
    g.bench_function("decode report", |b| {
        b.iter(|| decode::<FromWorker>(black_box(&frame)).unwrap())
    });

    let plan = BatchPlan::new(
        Span {
            start: 0,
            end: 10_000_000,
        },
        10,
    )
    .unwrap();
    let jobs = ToWorker::Jobs(
        plan.iter()
            .take(128)
            .map(|batch| Job {
                batch,
                url: None,
                page: None,
                stored: None,
            })
            .collect(),
    );
    g.throughput(Throughput::Elements(128));
    g.bench_function("encode 128-job chunk", |b| {
        b.iter(|| encode(black_box(&jobs)).unwrap())
    });
    let chunk = encode(&jobs).unwrap();
    g.bench_function("decode 128-job chunk", |b| {
        b.iter(|| decode::<ToWorker>(black_box(&chunk)).unwrap())
    });
    g.finish();
}

fn planning(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan");
    let plan = BatchPlan::new(
        Span {
            start: 0,
            end: 100_000_000,
        },
        10,
    )
    .unwrap();
    g.throughput(Throughput::Elements(1));
    g.bench_function("batch by index", |b| {
        b.iter(|| plan.batch(black_box(7_654_321)).unwrap())
    });
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("iterate 10k batches", |b| {
        b.iter(|| plan.iter().take(10_000).map(|b| b.end).sum::<u64>())
    });
    let shard = Shard::new(3, 16).unwrap();
    g.bench_function("shard membership 10k", |b| {
        b.iter(|| (0..10_000u64).filter(|i| shard.contains(*i)).count())
    });
    g.finish();
}

criterion_group!(benches, frames, planning);
criterion_main!(benches);
