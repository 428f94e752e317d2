//! The batch plan: a range of items cut into batches, computed by arithmetic on demand
//! so that ten million batches cost no more memory than ten.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A half-open span `start..end` of integers, written `START..END` on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// First value (inclusive).
    pub start: u64,
    /// Last value (exclusive).
    pub end: u64,
}

/// Why a `START..END` argument was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SpanError {
    /// Not of the form `START..END` with two whole numbers.
    #[error("`{0}` is not of the form START..END (two whole numbers, e.g. 0..1000)")]
    Malformed(String),
    /// `START` is larger than `END`.
    #[error("`{0}` is reversed: START must not be larger than END")]
    Reversed(String),
}

impl FromStr for Span {
    type Err = SpanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || SpanError::Malformed(s.to_owned());
        let (a, b) = s.split_once("..").ok_or_else(malformed)?;
        let start: u64 = a.trim().parse().map_err(|_| malformed())?;
        let end: u64 = b.trim().parse().map_err(|_| malformed())?;
        if start > end {
            return Err(SpanError::Reversed(s.to_owned()));
        }
        Ok(Span { start, end })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.start, self.end)
    }
}

impl Span {
    /// Number of values in the span.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the span holds no value.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// One batch of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Batch {
    /// Position in the plan, from 0.
    pub index: u64,
    /// First item (inclusive).
    pub start: u64,
    /// Last item (exclusive).
    pub end: u64,
}

impl Batch {
    /// The batch of a one-URL-per-line list: line `index` is the item `index..index+1`.
    pub fn single(index: u64) -> Batch {
        Batch {
            index,
            start: index,
            end: index.saturating_add(1),
        }
    }

    /// The values its templates are rendered with.
    pub fn values(&self) -> crate::template::Values {
        crate::template::Values {
            index: self.index,
            start: self.start,
            end: self.end,
            page: 1,
        }
    }
}

/// One of `count` disjoint slices of a plan: the batches whose index is `index` modulo
/// `count`. Interleaving keeps the slices even however cost varies along the plan, and
/// the slices together cover the plan exactly once whatever `count` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Which slice, from 0.
    pub index: u64,
    /// How many slices.
    pub count: u64,
}

/// Why a `K/M` shard was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ShardError {
    /// Not of the form `K/M`.
    #[error("`{0}` is not of the form K/M (e.g. 0/4: the first of four shards)")]
    Malformed(String),
    /// `K` is not below `M`, or `M` is 0.
    #[error("`{0}`: K counts from 0 and must be below M, and M must be at least 1")]
    OutOfRange(String),
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (k, m) = s
            .split_once('/')
            .ok_or_else(|| ShardError::Malformed(s.to_owned()))?;
        let parse = |x: &str| {
            x.trim()
                .parse::<u64>()
                .map_err(|_| ShardError::Malformed(s.to_owned()))
        };
        Shard::new(parse(k)?, parse(m)?).ok_or_else(|| ShardError::OutOfRange(s.to_owned()))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Slice `index` of `count`, if that is a slice.
    pub fn new(index: u64, count: u64) -> Option<Shard> {
        (count > 0 && index < count).then_some(Shard { index, count })
    }

    /// The whole plan as one slice.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// Whether batch `index` belongs to this slice.
    pub fn contains(&self, index: u64) -> bool {
        index % self.count == self.index
    }

    /// How many of the batches `0..total` belong to this slice.
    pub fn len_of(&self, total: u64) -> u64 {
        if total > self.index {
            (total - self.index - 1) / self.count + 1
        } else {
            0
        }
    }
}

/// Why a plan was rejected.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    /// `--batch 0`.
    #[error("--batch must be at least 1")]
    ZeroBatch,
    /// An empty `--range`.
    #[error("`{0}` is empty: END must be larger than START")]
    EmptyRange(Span),
}

/// A range cut into batches of `size` items; the last batch may be shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchPlan {
    span: Span,
    size: u64,
}

impl BatchPlan {
    /// Cuts `span` into batches of `size` items.
    pub fn new(span: Span, size: u64) -> Result<Self, PlanError> {
        if size == 0 {
            return Err(PlanError::ZeroBatch);
        }
        if span.is_empty() {
            return Err(PlanError::EmptyRange(span));
        }
        Ok(BatchPlan { span, size })
    }

    /// Number of batches.
    pub fn len(&self) -> u64 {
        self.span.len().div_ceil(self.size)
    }

    /// Whether the plan has no batch (never true for a plan built by [`BatchPlan::new`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The range the plan covers.
    pub fn span(&self) -> Span {
        self.span
    }

    /// Items per batch.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Batch number `index`, if the plan has it.
    pub fn batch(&self, index: u64) -> Option<Batch> {
        if index >= self.len() {
            return None;
        }
        // index < len, so index * size < span.len() and nothing below overflows.
        let start = self.span.start + index * self.size;
        let end = start.saturating_add(self.size).min(self.span.end);
        Some(Batch { index, start, end })
    }

    /// The batches in order, computed one at a time.
    pub fn iter(&self) -> impl Iterator<Item = Batch> + '_ {
        (0..self.len()).filter_map(|i| self.batch(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(s: &str) -> Span {
        s.parse().unwrap()
    }

    #[test]
    fn range_is_cut_into_equal_batches() {
        let plan = BatchPlan::new(span("0..100"), 10).unwrap();
        assert_eq!(plan.len(), 10);
        let batches: Vec<_> = plan.iter().collect();
        assert_eq!(
            batches[0],
            Batch {
                index: 0,
                start: 0,
                end: 10
            }
        );
        assert_eq!(
            batches[9],
            Batch {
                index: 9,
                start: 90,
                end: 100
            }
        );
    }

    #[test]
    fn last_batch_is_shorter_when_the_range_does_not_divide() {
        let plan = BatchPlan::new(span("5..28"), 10).unwrap();
        let batches: Vec<_> = plan.iter().collect();
        assert_eq!(batches.len(), 3);
        assert_eq!(
            batches[2],
            Batch {
                index: 2,
                start: 25,
                end: 28
            }
        );
    }

    #[test]
    fn batches_cover_the_range_exactly_once() {
        for (range, size) in [("0..1", 1), ("0..1", 7), ("3..1000", 7), ("0..10000", 10)] {
            let plan = BatchPlan::new(span(range), size).unwrap();
            let mut next = plan.span().start;
            for b in plan.iter() {
                assert_eq!(b.start, next);
                assert!(b.end > b.start && b.end - b.start <= size);
                next = b.end;
            }
            assert_eq!(next, plan.span().end);
        }
    }

    #[test]
    fn empty_range_and_zero_batch_are_rejected() {
        assert_eq!(
            BatchPlan::new(span("7..7"), 10).unwrap_err(),
            PlanError::EmptyRange(span("7..7"))
        );
        assert_eq!(
            BatchPlan::new(span("0..10"), 0).unwrap_err(),
            PlanError::ZeroBatch
        );
    }

    #[test]
    fn huge_ranges_are_planned_without_materialising_batches() {
        let plan = BatchPlan::new(span("0..18446744073709551615"), 1).unwrap();
        assert_eq!(plan.len(), u64::MAX);
        let last = plan.batch(u64::MAX - 1).unwrap();
        assert_eq!(last.end, u64::MAX);
        assert_eq!(plan.batch(u64::MAX), None);
        let ten_million = BatchPlan::new(span("0..100000000"), 10).unwrap();
        assert_eq!(ten_million.len(), 10_000_000);
        assert_eq!(ten_million.iter().nth(9_999_999).unwrap().start, 99_999_990);
    }

    #[test]
    fn shards_parse_and_reject_what_is_not_a_slice() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert!(matches!(
            "4/4".parse::<Shard>(),
            Err(ShardError::OutOfRange(_))
        ));
        assert!(matches!(
            "0/0".parse::<Shard>(),
            Err(ShardError::OutOfRange(_))
        ));
        for bad in ["", "1", "a/b", "1/", "/2", "-1/2"] {
            assert!(
                matches!(bad.parse::<Shard>(), Err(ShardError::Malformed(_))),
                "{bad}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn shards_cover_the_plan_exactly_once(total in 0u64..5_000, count in 1u64..40) {
            let mut seen = vec![0u8; total as usize];
            let mut sum = 0;
            for k in 0..count {
                let shard = Shard::new(k, count).unwrap();
                let mine: Vec<u64> = (0..total).filter(|i| shard.contains(*i)).collect();
                proptest::prop_assert_eq!(mine.len() as u64, shard.len_of(total));
                sum += shard.len_of(total);
                for i in mine {
                    seen[i as usize] += 1;
                }
            }
            proptest::prop_assert_eq!(sum, total);
            proptest::prop_assert!(seen.iter().all(|&n| n == 1));
        }
    }

    #[test]
    fn malformed_and_reversed_spans_are_rejected() {
        for bad in ["", "10", "a..b", "1..", "..5", "1...5", "-1..5"] {
            assert!(
                matches!(bad.parse::<Span>(), Err(SpanError::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(
            "9..3".parse::<Span>(),
            Err(SpanError::Reversed("9..3".into()))
        );
    }
}
