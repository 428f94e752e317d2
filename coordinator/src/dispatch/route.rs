//! Which worker fetches a job, when per-host limits are set: each host (scheme, host
//! and port of the job's URL) belongs to one worker, which alone sends to it, so that
//! `--per-host-rate` and `--per-host-concurrency` hold for the run as a whole with no
//! message per request.
//!
//! Hosts are given out in the order they come, each to the worker with the fewest so
//! far (two hosts over four workers land on two workers, not by chance on one); past
//! [`REMEMBERED`] hosts, a hash of the host decides, so that a run over a million hosts
//! keeps a bounded map.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// Hosts whose worker is remembered; later ones are hashed.
const REMEMBERED: usize = 10_000;

/// The host-to-worker map of a run.
pub struct Router {
    workers: usize,
    owners: HashMap<String, usize>,
    counts: Vec<usize>,
    hasher: RandomState,
    /// The host of jobs that carry no URL of their own (a `--url` template).
    template_host: Option<String>,
}

impl Router {
    /// A router over `workers` workers; `template` is the run's URL template, if any.
    pub fn new(workers: usize, template: Option<&str>) -> Router {
        Router {
            workers: workers.max(1),
            owners: HashMap::new(),
            counts: vec![0; workers.max(1)],
            hasher: RandomState::new(),
            template_host: template.map(origin_of),
        }
    }

    /// The worker slot of a job whose URL is `url` (`None`: the template's).
    pub fn owner(&mut self, url: Option<&str>) -> usize {
        let origin = match url {
            Some(url) => origin_of(url),
            None => self.template_host.clone().unwrap_or_default(),
        };
        if let Some(&slot) = self.owners.get(&origin) {
            return slot;
        }
        if self.owners.len() >= REMEMBERED {
            return (self.hasher.hash_one(&origin) % self.workers as u64) as usize;
        }
        let slot = (0..self.workers)
            .min_by_key(|&s| self.counts[s])
            .unwrap_or(0);
        self.counts[slot] += 1;
        self.owners.insert(origin, slot);
        slot
    }
}

/// `scheme://host:port` of `url`, the port spelled out, as workers name hosts; the
/// text up to its path when it is not an http(s) URL.
pub fn origin_of(url: &str) -> String {
    match shared::http_url::split_http_url(url) {
        Ok(split) => {
            let scheme = if split.tls { "https" } else { "http" };
            format!("{scheme}://{}", split.authority)
        }
        Err(_) => {
            let after = url.find("://").map_or(0, |i| i + 3);
            let end = url[after..]
                .find(['/', '?'])
                .map_or(url.len(), |i| after + i);
            url[..end].to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_spread_over_workers_and_stay_with_theirs() {
        let mut r = Router::new(4, None);
        let a = r.owner(Some("http://a.example/x?1"));
        let b = r.owner(Some("http://b.example:80/y"));
        assert_ne!(a, b);
        assert_eq!(r.owner(Some("http://a.example:80/other")), a);
        assert_ne!(
            r.owner(Some("https://a.example/x")),
            a,
            "another scheme, another host"
        );
        let mut t = Router::new(2, Some("http://t.example/p?s={start}"));
        assert_eq!(t.owner(None), t.owner(None));
    }
}
