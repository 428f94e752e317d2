//! Sets of batch indices (done, failed) for `--resume`, `--retry-failed` and `verify`.

use std::collections::BTreeMap;

/// A set of batch indices, kept as disjoint runs of consecutive indices: its size
/// follows the number of runs, never the largest index, so that one batch near
/// `u64::MAX` costs as little as batch 0 (a bitmap there would take terabytes).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IndexSet {
    /// First index of each run to its last (inclusive: a run may end at `u64::MAX`).
    /// Runs never overlap or touch: neighbours are merged.
    runs: BTreeMap<u64, u64>,
    len: u64,
}

impl IndexSet {
    /// Adds `index`.
    pub fn insert(&mut self, index: u64) {
        self.insert_run(index, index);
    }

    /// Adds every index of `first..=last`.
    fn insert_run(&mut self, mut first: u64, mut last: u64) {
        // The run that starts at or before `first` may overlap or touch it.
        if let Some((&start, &end)) = self.runs.range(..=first).next_back()
            && end.saturating_add(1) >= first
        {
            if end >= last {
                return;
            }
            first = start;
            self.runs.remove(&start);
            self.len -= end - start + 1;
        }
        // Runs that start inside `first..=last + 1` are swallowed.
        let reach = last.saturating_add(1);
        while let Some((&start, &end)) = self.runs.range(first..=reach).next() {
            self.runs.remove(&start);
            self.len -= end - start + 1;
            last = last.max(end);
        }
        self.runs.insert(first, last);
        self.len += last - first + 1;
    }

    /// Adds every index of `other`.
    pub fn extend(&mut self, other: &IndexSet) {
        for (&first, &last) in &other.runs {
            self.insert_run(first, last);
        }
    }

    /// Whether `index` is in the set.
    pub fn contains(&self, index: u64) -> bool {
        self.runs
            .range(..=index)
            .next_back()
            .is_some_and(|(_, &last)| last >= index)
    }

    /// The first index at or after `from` that is not in the set, if there is one.
    pub fn next_absent(&self, from: u64) -> Option<u64> {
        match self.runs.range(..=from).next_back() {
            Some((_, &last)) if last >= from => last.checked_add(1),
            _ => Some(from),
        }
    }

    /// The first index at or after `from` that is in the set, if there is one.
    pub fn next_present(&self, from: u64) -> Option<u64> {
        if self.contains(from) {
            return Some(from);
        }
        self.runs.range(from..).next().map(|(&first, _)| first)
    }

    /// Number of indices in the set.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The indices, in order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.runs.iter().flat_map(|(&first, &last)| first..=last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_sets_count_each_index_once() {
        let mut set = IndexSet::default();
        for i in [5, 5, 64, 1_000_000] {
            set.insert(i);
        }
        assert_eq!(set.len(), 3);
        assert!(set.contains(64) && set.contains(1_000_000) && !set.contains(63));
    }

    #[test]
    fn index_sets_merge_runs_and_stay_small_near_the_top_of_u64() {
        let mut set = IndexSet::default();
        // A bitmap sized by these indices would take terabytes.
        for i in [u64::MAX, u64::MAX - 2, 1 << 62, u64::MAX - 1, 3, 5, 4] {
            set.insert(i);
        }
        assert_eq!(set.len(), 7);
        assert_eq!(set.runs.len(), 3, "{:?}", set.runs);
        assert!(set.contains(u64::MAX) && set.contains(4) && !set.contains(6));
        assert_eq!(set.next_absent(3), Some(6));
        assert_eq!(set.next_absent(0), Some(0));
        assert_eq!(set.next_absent(u64::MAX - 2), None);
        let mut other = IndexSet::default();
        for i in [2, 6, 7, 100] {
            other.insert(i);
        }
        set.extend(&other);
        assert_eq!(set.len(), 11);
        assert_eq!(
            set.iter().take(7).collect::<Vec<_>>(),
            [2, 3, 4, 5, 6, 7, 100]
        );
        assert_eq!(set.runs.len(), 4, "{:?}", set.runs);
    }
}
