//! The end-to-end tests, one binary (one link step): the real `coordinator` binary,
//! real worker processes, real servers on loopback sockets, real files. One module per
//! area; the helpers they share are in `common`.

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod chains;
mod common;
mod docs;
mod e2e;
mod faults;
mod gendocs;
mod http2;
mod http_trust;
mod input_trust;
mod load;
mod methods;
mod metrics;
mod pipelines;
mod politeness;
mod proxy;
mod refresh;
mod report;
mod resume;
mod robots;
mod shards;
mod terminal;
mod tls;
