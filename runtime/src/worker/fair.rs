//! Sharing one worker's capacity between the queues it serves.
//!
//! Each claim round splits the free room between the queues that are under
//! their cap, in proportion to their weights, starting from a queue that
//! moves one step every round, so that a queue with a million jobs waiting
//! cannot starve one with ten. Room a queue leaves unused (it had fewer
//! jobs than its share) goes to the others in a second pass.

/// One queue's standing in a claim round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    /// Its relative share (at least 1).
    pub weight: u32,
    /// How many more of its jobs may run now (its cap minus in flight).
    pub free: usize,
}

/// First-pass shares of `room` for queues in `order`: each gets its
/// weighted share (at least 1, at most its free room), taken in order
/// until the room runs out.
pub(crate) fn shares(room: usize, order: &[Standing]) -> Vec<usize> {
    let total: u64 = order
        .iter()
        .filter(|s| s.free > 0)
        .map(|s| u64::from(s.weight.max(1)))
        .sum();
    let mut left = room;
    order
        .iter()
        .map(|s| {
            if s.free == 0 || left == 0 || total == 0 {
                return 0;
            }
            let weighted = (room as u64).saturating_mul(u64::from(s.weight.max(1))) / total;
            let share = usize::try_from(weighted)
                .unwrap_or(usize::MAX)
                .max(1)
                .min(s.free)
                .min(left);
            left -= share;
            share
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(weight: u32) -> Standing {
        Standing {
            weight,
            free: usize::MAX,
        }
    }

    #[test]
    fn equal_weights_split_evenly() {
        assert_eq!(shares(16, &[open(1), open(1)]), vec![8, 8]);
    }

    #[test]
    fn weights_skew_the_split() {
        assert_eq!(shares(12, &[open(2), open(1)]), vec![8, 4]);
    }

    #[test]
    fn a_cap_limits_a_share() {
        let capped = Standing { weight: 1, free: 2 };
        assert_eq!(shares(16, &[capped, open(1)]), vec![2, 8]);
    }

    #[test]
    fn a_full_queue_gets_nothing_and_counts_for_nothing() {
        let full = Standing { weight: 5, free: 0 };
        assert_eq!(shares(6, &[full, open(1), open(1)]), vec![0, 3, 3]);
    }

    #[test]
    fn scarce_room_goes_in_order() {
        // One slot, three queues: the first in the (rotating) order gets it.
        assert_eq!(shares(1, &[open(1), open(1), open(1)]), vec![1, 0, 0]);
        assert_eq!(shares(2, &[open(1), open(1), open(1)]), vec![1, 1, 0]);
    }
}
