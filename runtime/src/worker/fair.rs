//! Sharing one worker's capacity between tenants, then between a tenant's
//! queues.
//!
//! Across tenants, deficit round robin: each claim round, first every
//! tenant with work still owed its guaranteed minimum gets it; then each
//! tenant with work and room under its burst ceiling earns credit in
//! proportion to its weight, and gets as many slots as its credit covers.
//! Credit left over (a fraction of a slot) carries to the next round, so
//! over many rounds the split follows the weights exactly even when a
//! round's room does not divide; a tenant that runs out of work loses its
//! credit, so none is banked while idle (work-conserving: what one leaves
//! goes to the others). Deficit round robin rather than virtual time: it
//! needs one integer per tenant and no clock, costs O(tenants) per round,
//! and a round's outcome follows from its inputs alone, which the tests
//! check exactly.
//!
//! Within a tenant, each round splits its slots between its queues that are
//! under their cap, in proportion to their weights, starting from a queue
//! that moves one step every round, so that a queue with a million jobs
//! waiting cannot starve one with ten. Room a queue leaves unused (it had
//! fewer jobs than its share) goes to the others in a second pass.

/// Credit for one slot, in the units deficits are kept in: fractions of a
/// slot carry from round to round.
pub(crate) const SLOT: i64 = 1000;

/// One tenant's standing in a claim round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TenantStanding {
    /// Its relative share (at least 1).
    pub weight: u32,
    /// How many more of its jobs may start now: its queues' free room,
    /// within its burst ceiling.
    pub free: usize,
    /// Slots of its guaranteed minimum it is not using.
    pub owed: usize,
}

/// Slots of `room` for tenants in `order`, updating their `deficits` (in
/// [`SLOT`] units, one per tenant in the same order): guaranteed minimums
/// first; then every tenant with room earns credit by its weight, and the
/// slots go, `chunk` at a time, to the tenant with the most credit (the
/// earliest in order on a tie), each slot paid for. Handing out chunks
/// rather than single slots lets a claim take several jobs of one queue
/// at once when many tenants share a round; the credit a chunk costs
/// makes the split follow the weights over rounds all the same.
pub(crate) fn tenant_shares(
    room: usize,
    order: &[TenantStanding],
    deficits: &mut [i64],
    chunk: usize,
) -> Vec<usize> {
    let mut grants = vec![0usize; order.len()];
    let mut left = room;
    for (t, grant) in order.iter().zip(&mut grants) {
        let owed = t.owed.min(t.free).min(left);
        *grant += owed;
        left -= owed;
    }
    let open = |i: usize, grants: &[usize]| order[i].free > grants[i];
    let total: i64 = (0..order.len())
        .filter(|&i| open(i, &grants))
        .map(|i| i64::from(order[i].weight.max(1)))
        .sum();
    if total == 0 || left == 0 {
        return grants;
    }
    let pool = i64::try_from(left).unwrap_or(i64::MAX / SLOT / 4);
    let chunk = chunk.max(1);
    // Credit beyond a round's room would only be a burst later; debt
    // beyond a round and a chunk, a tenant shut out for long.
    let most = pool.saturating_mul(SLOT);
    let least = -(pool + i64::try_from(chunk).unwrap_or(0)).saturating_mul(SLOT);
    for i in 0..order.len() {
        if open(i, &grants) {
            let quantum = pool.saturating_mul(SLOT) * i64::from(order[i].weight.max(1)) / total;
            deficits[i] = deficits[i].saturating_add(quantum).clamp(least, most);
        }
    }
    while left > 0 {
        let Some(i) = (0..order.len())
            .filter(|&i| open(i, &grants))
            .max_by_key(|&i| (deficits[i], std::cmp::Reverse(i)))
        else {
            break;
        };
        let take = chunk.min(order[i].free - grants[i]).min(left);
        grants[i] += take;
        left -= take;
        deficits[i] = (deficits[i] - i64::try_from(take).unwrap_or(0) * SLOT).max(least);
    }
    grants
}

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

    fn tenant(weight: u32) -> TenantStanding {
        TenantStanding {
            weight,
            free: usize::MAX,
            owed: 0,
        }
    }

    /// Slots each tenant gets over `rounds` rounds of `room`.
    fn over_rounds(rounds: usize, room: usize, order: &[TenantStanding]) -> Vec<usize> {
        in_chunks(rounds, room, order, 1)
    }

    /// [`over_rounds`], slots handed out `chunk` at a time.
    fn in_chunks(rounds: usize, room: usize, order: &[TenantStanding], chunk: usize) -> Vec<usize> {
        let mut deficits = vec![0; order.len()];
        let mut total = vec![0; order.len()];
        for _ in 0..rounds {
            let grants = tenant_shares(room, order, &mut deficits, chunk);
            assert!(
                grants.iter().all(|&g| g == 0 || g >= chunk.min(room)),
                "{grants:?}"
            );
            assert_eq!(grants.iter().sum::<usize>(), room, "work-conserving");
            for (t, g) in total.iter_mut().zip(grants) {
                *t += g;
            }
        }
        total
    }

    #[test]
    fn tenant_weights_hold_exactly_over_rounds_whose_room_does_not_divide() {
        // 9 slots a round split 3:1 is 6.75 : 2.25; credit carries.
        assert_eq!(over_rounds(4, 9, &[tenant(3), tenant(1)]), vec![27, 9]);
        assert_eq!(
            over_rounds(100, 7, &[tenant(1), tenant(1), tenant(1)]),
            vec![234, 233, 233]
        );
    }

    #[test]
    fn slots_in_chunks_follow_the_weights_to_within_a_chunk() {
        // 100 tenants, 8 slots a round, 4 at a time: two tenants a round.
        let many = vec![tenant(1); 100];
        let got = in_chunks(100, 8, &many, 4);
        assert!(got.iter().all(|&g| (4..=12).contains(&g)), "{got:?}");
        let got = in_chunks(100, 8, &[tenant(3), tenant(1)], 4);
        assert!((596..=604).contains(&got[0]), "{got:?}");
    }

    #[test]
    fn one_slot_a_round_still_follows_the_weights() {
        assert_eq!(over_rounds(40, 1, &[tenant(3), tenant(1)]), vec![30, 10]);
    }

    #[test]
    fn a_tenant_without_room_earns_nothing_and_leaves_its_share() {
        let full = TenantStanding {
            weight: 5,
            free: 0,
            owed: 0,
        };
        let mut deficits = vec![0; 3];
        assert_eq!(
            tenant_shares(6, &[full, tenant(1), tenant(1)], &mut deficits, 1),
            vec![0, 3, 3]
        );
        assert_eq!(deficits[0], 0);
    }

    #[test]
    fn the_burst_ceiling_caps_and_the_rest_goes_to_others() {
        let capped = TenantStanding {
            weight: 10,
            free: 2,
            owed: 0,
        };
        let mut deficits = vec![0; 2];
        assert_eq!(
            tenant_shares(16, &[capped, tenant(1)], &mut deficits, 1),
            vec![2, 14]
        );
        // Credit it could not use is bounded by one round's room.
        assert!(deficits[0] <= 16 * SLOT);
    }

    #[test]
    fn a_guaranteed_minimum_comes_before_weights() {
        let small = TenantStanding {
            weight: 1,
            free: usize::MAX,
            owed: 4,
        };
        let mut deficits = vec![0; 2];
        // 4 owed first, then the remaining 4 split 1:99.
        let grants = tenant_shares(8, &[tenant(99), small], &mut deficits, 1);
        assert_eq!(grants[1], 4);
        assert_eq!(grants[0], 4);
    }

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
