//! Self-contained HTML reports of scrape and load runs. A report is one file with its
//! charts drawn as inline SVG: it needs no script and no network when opened, so it
//! can be mailed, archived or opened on a machine with no internet.
//!
//! [`Run`] is what a report shows; it is built from a scrape run's manifest
//! ([`Run::from_manifest`]) or from a load test's per-second timeline
//! ([`Run::from_timeline`]), and [`render`] turns it into the page.

mod chart;
mod model;
mod page;

pub use model::{Host, Kind, Run, Second};
pub use page::render;
