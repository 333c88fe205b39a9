//! Who writes a target: tideshift's baseline per object (written, agreed or adopted), and
//! the conflict an HPA or another writer makes, held for `conflict_hold`.

use super::*;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum ConflictKind {
    Autoscaler,
    ForeignWrite,
}

#[derive(Clone, Debug)]
pub(super) struct Conflict {
    /// Wall clock, so that a successor can carry the hold on from the policy's status.
    pub(super) since: SystemTime,
    pub(super) kind: ConflictKind,
    pub(super) reason: String,
}

#[derive(Clone, Debug, Default)]
pub(super) struct TargetMemory {
    /// Per object (the Deployment, or each Job of a selector): what tideshift last asked for,
    /// or last saw and agreed with.
    pub(super) written: BTreeMap<String, u32>,
    /// Objects sent a scale to zero (through `/scale`) not seen to land yet, and when: a zero
    /// read there within `PENDING_ZERO_TTL` is tideshift's, though no field manager owns it.
    /// Marked right before the request is sent, so a write whose answer was lost counts too;
    /// settled by a read of zero, the next write to the object, a refusal (the zero did not
    /// land), or the TTL.
    pub(super) pending_zero: BTreeMap<String, SystemTime>,
    pub(super) conflict: Option<Conflict>,
    /// Per object: the replicas of the last read (what `adopt` takes as the baseline).
    pub(super) last_read: BTreeMap<String, u32>,
    /// Objects whose baseline was adopted (`adopt`) and not written or agreed with since. Kept
    /// out of the status: a successor's baseline is only what tideshift wrote. A leader that
    /// adopted 8 and then wrote 0 may die before its status says so, and a scale to 0 through
    /// the `scale` subresource leaves no field manager owning `spec.replicas` (the Scale's
    /// zero is omitted), so the successor could not tell that write from another writer's.
    pub(super) adopted: BTreeSet<String>,
}

/// How long a zero sent to an object vouches for a zero read there. A zero lands within the
/// request's timeout or not at all; this covers that, a takeover, and a watch that lags (the
/// `watch_lag` fault class runs 30 s behind). Afterwards a zero with no owner is another
/// writer's again: a person's `kubectl scale --replicas=0` long after tideshift's last zero
/// attempt must not pass for tideshift's.
pub const PENDING_ZERO_TTL: Duration = Duration::from_secs(120);

pub(super) fn unix_seconds(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// [`unix_seconds`] back to a time (before 1970 as 1970).
pub(super) fn from_unix_seconds(seconds: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64)
}

impl KubeActuator {
    /// Whether a watched view's `read` disagrees with tideshift's baseline: an object whose
    /// replicas differ from what tideshift wrote, agreed with or adopted. Either someone else
    /// wrote it, or the view lags behind tideshift's own last write (it would show the value
    /// from before, and `judge` would take an older write of tideshift's for the baseline);
    /// only the server can tell which. It changes nothing.
    pub(super) fn disagrees_with_baseline(&self, target: &Target, read: &Read) -> bool {
        let memory = self.lock_memory();
        let Some(entry) = memory.get(&target.to_string()) else {
            return false;
        };
        read.objects.iter().any(|object| {
            entry
                .written
                .get(&object.name)
                .is_some_and(|&written| written != object.replicas)
        })
    }

    /// Update what is known about the target's writers; returns the conflict, if any.
    pub(super) fn judge(
        &self,
        target: &Target,
        read: &Read,
        autoscaler: Option<String>,
    ) -> Option<String> {
        let mut memory = self.lock_memory();
        let entry = memory.entry(target.to_string()).or_default();
        entry
            .pending_zero
            .retain(|_, sent| sent.elapsed().unwrap_or(Duration::ZERO) < PENDING_ZERO_TTL);
        entry.last_read = read
            .objects
            .iter()
            .map(|o| (o.name.clone(), o.replicas))
            .collect();
        if let Some(reason) = autoscaler {
            let since = match &entry.conflict {
                Some(c) if c.kind == ConflictKind::Autoscaler => c.since,
                _ => SystemTime::now(),
            };
            entry.conflict = Some(Conflict {
                since,
                kind: ConflictKind::Autoscaler,
                reason: reason.clone(),
            });
            entry.written.clear();
            entry.adopted.clear();
            entry.pending_zero.clear();
            return Some(reason);
        }
        // A replica count that is not what tideshift wrote, last written by someone else. One
        // last written by tideshift is a predecessor's write (another replica of the daemon,
        // or this one before a restart): the new baseline.
        let field = if target.kind == WorkloadKind::Job {
            "parallelism"
        } else {
            "replicas"
        };
        let mut foreign = None;
        for object in &read.objects {
            let Some(&written) = entry.written.get(&object.name) else {
                continue;
            };
            if written == object.replicas {
                continue;
            }
            // Tideshift's own zero through `/scale`: no owner (or tideshift, after a write that
            // named it), and sent within the TTL.
            let unowned = object
                .last_writer
                .as_deref()
                .is_none_or(|w| w == FIELD_MANAGER);
            if object.replicas == 0 && unowned && entry.pending_zero.remove(&object.name).is_some()
            {
                entry.written.insert(object.name.clone(), 0);
                entry.adopted.remove(&object.name);
                continue;
            }
            if object.last_writer.as_deref() == Some(FIELD_MANAGER) {
                entry.written.insert(object.name.clone(), object.replicas);
                entry.adopted.remove(&object.name);
                continue;
            }
            let what = match (&target.name, target.kind) {
                (Some(_), _) => target.to_string(),
                (None, kind) => format!("{} {}/{}", kind_name(kind), target.namespace, object.name),
            };
            // The API server names no owner of the replicas after a scale to zero through
            // `/scale` (the Scale object leaves a zero out, so the field is nobody's): tideshift's
            // own predecessor, cut short after such a shrink, cannot be told from anyone else.
            let by = object
                .last_writer
                .as_deref()
                .unwrap_or("unnamed: a scale to zero through /scale records no owner");
            foreign.get_or_insert(format!(
                "{field} of {what} changed from {written} (tideshift's baseline) to {} by another writer ({by})",
                object.replicas
            ));
        }
        // Jobs that finished or went away are no longer anyone's.
        entry
            .written
            .retain(|name, _| read.objects.iter().any(|o| &o.name == name));
        entry
            .pending_zero
            .retain(|name, _| read.objects.iter().any(|o| &o.name == name));
        if let Some(reason) = foreign {
            entry.conflict = Some(Conflict {
                since: SystemTime::now(),
                kind: ConflictKind::ForeignWrite,
                reason: reason.clone(),
            });
            // After the hold, the other writer's value is the new baseline.
            entry.written.clear();
            entry.adopted.clear();
            entry.pending_zero.clear();
            return Some(reason);
        }
        match &entry.conflict {
            Some(c) if c.kind == ConflictKind::Autoscaler => {
                entry.conflict = None;
                None
            }
            Some(c) => {
                let held = SystemTime::now()
                    .duration_since(c.since)
                    .unwrap_or(Duration::ZERO);
                if held < self.conflict_hold {
                    Some(c.reason.clone())
                } else {
                    entry.conflict = None;
                    None
                }
            }
            None => None,
        }
    }

    /// Remember that tideshift asked for (or agrees with) these replicas per object.
    pub(super) fn agree(&self, target: &Target, written: impl IntoIterator<Item = (String, u32)>) {
        let mut memory = self.lock_memory();
        let entry = memory.entry(target.to_string()).or_default();
        for (name, replicas) in written {
            entry.adopted.remove(&name);
            entry.pending_zero.remove(&name);
            entry.written.insert(name, replicas);
        }
    }

    /// Remember, right before sending it, that a scale to zero goes to `object`.
    pub(super) fn zero_pending(&self, target: &Target, object: &str) {
        let mut memory = self.lock_memory();
        let entry = memory.entry(target.to_string()).or_default();
        entry
            .pending_zero
            .insert(object.to_string(), SystemTime::now());
    }

    /// A scale to zero of `object` that the API server refused: it did not land.
    pub(super) fn zero_refused(&self, target: &Target, object: &str) {
        if let Some(entry) = self.lock_memory().get_mut(&target.to_string()) {
            entry.pending_zero.remove(object);
        }
    }
}
