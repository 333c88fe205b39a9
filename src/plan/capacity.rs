//! Resource arithmetic and the priority split of capacity between online workloads.

use super::Resources;

/// Float slack for "does it fit": quantities like `0.1` cores do not add up exactly, and a
/// replica must not be refused because 10 x 0.1 came to 1.0000000000000002.
const FIT_SLACK: f64 = 1e-7;

impl Resources {
    pub fn new(cpu: f64, memory: f64) -> Self {
        Self { cpu, memory }
    }

    pub fn plus(self, other: Resources) -> Resources {
        Resources::new(self.cpu + other.cpu, self.memory + other.memory)
    }

    pub fn minus(self, other: Resources) -> Resources {
        Resources::new(self.cpu - other.cpu, self.memory - other.memory)
    }

    /// `n` pods of this size.
    pub fn times(self, n: u32) -> Resources {
        Resources::new(self.cpu * f64::from(n), self.memory * f64::from(n))
    }

    /// How many pods of size `pod` fit in `self` (free capacity). A pod that requests nothing
    /// of a resource is not limited by it; a pod that requests nothing at all fits without
    /// end (`u32::MAX`).
    pub fn fits(self, pod: Resources) -> u32 {
        let cpu = count(self.cpu, pod.cpu);
        let memory = count(self.memory, pod.memory);
        cpu.min(memory)
    }

    /// Whether `self` is within `capacity` in both resources (up to float slack).
    pub fn within(self, capacity: Resources) -> bool {
        self.cpu <= capacity.cpu + FIT_SLACK * capacity.cpu.abs().max(1.0)
            && self.memory <= capacity.memory + FIT_SLACK * capacity.memory.abs().max(1.0)
    }
}

fn count(free: f64, per_pod: f64) -> u32 {
    // Negative, zero or NaN requests take nothing of this resource.
    if per_pod.is_nan() || per_pod <= 0.0 {
        return u32::MAX;
    }
    if free.is_nan() || free <= 0.0 {
        return 0;
    }
    let n = (free / per_pod + FIT_SLACK).floor();
    if n >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        n as u32
    }
}

/// What an online workload asks of the capacity, in rising order of how much it matters
/// less: `min` always, `need` (what demand needs), `want` (what the guardrails hold).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Claim {
    pub pod: Resources,
    pub min: u32,
    pub need: u32,
    pub want: u32,
}

/// Split `capacity` among online claims: every `min` first (even beyond capacity: a policy
/// whose online minimums do not fit is infeasible and the minimums still stand), then each
/// `need` in `order` (priority order), then each guardrail hold in the same order, so that a
/// workload kept up by stabilization never takes capacity another workload's demand needs.
/// Writes the granted replicas into `grants` (indexed like `claims`).
pub(crate) fn allocate_online(
    capacity: Resources,
    claims: &[Claim],
    order: &[usize],
    grants: &mut [u32],
) {
    let mut free = capacity;
    for (grant, claim) in grants.iter_mut().zip(claims) {
        *grant = claim.min;
        free = free.minus(claim.pod.times(claim.min));
    }
    for level in [Level::Need, Level::Want] {
        for &i in order {
            let claim = &claims[i];
            let target = match level {
                Level::Need => claim.need,
                Level::Want => claim.want.max(claim.need),
            };
            let extra = target.saturating_sub(grants[i]).min(free.fits(claim.pod));
            grants[i] += extra;
            free = free.minus(claim.pod.times(extra));
        }
    }
}

#[derive(Clone, Copy)]
enum Level {
    Need,
    Want,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(min: u32, need: u32, want: u32) -> Claim {
        Claim {
            pod: Resources::new(1.0, 1.0),
            min,
            need,
            want,
        }
    }

    #[test]
    fn fits_counts_the_scarcer_resource() {
        let free = Resources::new(10.0, 4.0);
        assert_eq!(free.fits(Resources::new(1.0, 1.0)), 4);
        assert_eq!(free.fits(Resources::new(2.0, 0.0)), 5);
        assert_eq!(free.fits(Resources::new(0.0, 0.0)), u32::MAX);
        assert_eq!(Resources::new(-1.0, 4.0).fits(Resources::new(1.0, 1.0)), 0);
    }

    #[test]
    fn fits_forgives_float_rounding() {
        // 0.1 * 10 is 1.0000000000000002 in floating point; ten 0.1-core pods fit in 1 core.
        let free = Resources::new(1.0, 1.0);
        assert_eq!(free.fits(Resources::new(0.1, 0.1)), 10);
    }

    #[test]
    fn higher_priority_need_is_served_first() {
        let claims = [claim(1, 8, 8), claim(1, 8, 8)];
        let mut grants = [0; 2];
        allocate_online(Resources::new(10.0, 10.0), &claims, &[1, 0], &mut grants);
        assert_eq!(grants, [2, 8]);
    }

    #[test]
    fn guardrail_holds_yield_to_other_workloads_need() {
        // Workload 0 is first in priority but only held up by stabilization (need 2, want 8);
        // workload 1 needs 8. Needs come first: 1 gets its 8, 0 keeps 2.
        let claims = [claim(1, 2, 8), claim(1, 8, 8)];
        let mut grants = [0; 2];
        allocate_online(Resources::new(10.0, 10.0), &claims, &[0, 1], &mut grants);
        assert_eq!(grants, [2, 8]);
    }

    #[test]
    fn minimums_stand_even_when_they_do_not_fit() {
        let claims = [claim(6, 6, 6), claim(6, 6, 6)];
        let mut grants = [0; 2];
        allocate_online(Resources::new(10.0, 10.0), &claims, &[0, 1], &mut grants);
        assert_eq!(grants, [6, 6]);
    }
}
