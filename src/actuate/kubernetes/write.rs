//! Writing replicas: a fenced, conditional patch per object, read again right before it.

use super::*;

/// Why a write attempt did not happen.
pub(super) enum WriteFailure {
    /// The object changed since it was read (409): read again.
    Changed,
    Fenced(WriteRefused),
    Error(ActuateError),
}

/// Split `total` replicas over `count` Jobs: equal shares, the remainder to the first ones.
pub fn spread(total: u32, count: usize) -> Vec<u32> {
    if count == 0 {
        return Vec::new();
    }
    let base = total / count as u32;
    let extra = (total % count as u32) as usize;
    (0..count).map(|i| base + u32::from(i < extra)).collect()
}

impl KubeActuator {
    /// One merge patch carrying the read's `resourceVersion`, sent only if the fence allows.
    pub(super) async fn patch_object<K>(
        &self,
        target: &Target,
        api: &Api<K>,
        object: &ObjectRead,
        scale: bool,
        spec: serde_json::Value,
        fence: Fence<'_>,
    ) -> Result<(), WriteFailure>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let patch = Patch::Merge(json!({
            "metadata": {"resourceVersion": object.resource_version},
            "spec": spec,
        }));
        // Leadership may have ended during the read (a stall, a pause): asked again right
        // before sending, with the time the request may take.
        fence(self.timeout).map_err(WriteFailure::Fenced)?;
        // A zero through `/scale` leaves no owner of the replicas: marked here, right before
        // it is sent, so that a zero read later is known for tideshift's (`judge`).
        let zero = scale && spec.get("replicas") == Some(&json!(0));
        if zero {
            self.zero_pending(target, &object.name);
        }
        let written = if scale {
            self.call(
                &target.to_string(),
                "patch",
                api.patch_scale(&object.name, &params, &patch),
            )
            .await
            .map(|r| r.map(|_| ()))
        } else {
            self.call(
                &target.to_string(),
                "patch",
                api.patch(&object.name, &params, &patch),
            )
            .await
            .map(|r| r.map(|_| ()))
        };
        // Refused (409, another 4xx): the zero did not land. Unanswered or 5xx: it may have.
        if zero
            && matches!(&written, Ok(Err(kube::Error::Api(status))) if (400..500).contains(&status.code))
        {
            self.zero_refused(target, &object.name);
        }
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(kube::Error::Api(status))) if status.is_conflict() => Err(WriteFailure::Changed),
            Ok(Err(e)) => Err(WriteFailure::Error(api_error(target, "patch", e))),
            Err(e) => Err(WriteFailure::Error(e)),
        }
    }

    /// Write `replicas` as decided on `read`: the objects that need it, each with its
    /// precondition. Returns what tideshift now asks per object.
    pub(super) async fn write(
        &self,
        target: &Target,
        read: &Read,
        replicas: u32,
        fence: Fence<'_>,
    ) -> Result<Vec<(String, u32)>, WriteFailure> {
        match target.kind {
            WorkloadKind::Deployment | WorkloadKind::StatefulSet => {
                let Some(object) = read.objects.first() else {
                    return Err(WriteFailure::Error(ActuateError::NotFound {
                        target: target.to_string(),
                    }));
                };
                let spec = json!({"replicas": replicas});
                if target.kind == WorkloadKind::Deployment {
                    let api: Api<Deployment> =
                        Api::namespaced(self.client.clone(), &target.namespace);
                    self.patch_object(target, &api, object, true, spec, fence)
                        .await?;
                } else {
                    let api: Api<StatefulSet> =
                        Api::namespaced(self.client.clone(), &target.namespace);
                    self.patch_object(target, &api, object, true, spec, fence)
                        .await?;
                }
                Ok(vec![(object.name.clone(), replicas)])
            }
            WorkloadKind::Job => {
                if read.objects.is_empty() && replicas > 0 {
                    return Err(WriteFailure::Error(ActuateError::NotFound {
                        target: target.to_string(),
                    }));
                }
                let api: Api<Job> = Api::namespaced(self.client.clone(), &target.namespace);
                let mut now_asked = Vec::new();
                for (object, share) in read
                    .objects
                    .iter()
                    .zip(spread(replicas, read.objects.len()))
                {
                    if object.replicas != share {
                        let spec = if share == 0 {
                            json!({"suspend": true})
                        } else {
                            json!({"parallelism": share, "suspend": false})
                        };
                        if let Err(failure) = self
                            .patch_object(target, &api, object, false, spec, fence)
                            .await
                        {
                            // What was written so far stays tideshift's.
                            self.agree(target, now_asked);
                            return Err(failure);
                        }
                    }
                    now_asked.push((object.name.clone(), share));
                }
                Ok(now_asked)
            }
        }
    }

    pub(super) async fn scale_target(
        &self,
        target: &Target,
        replicas: u32,
        fence: Fence<'_>,
    ) -> Result<ScaleOutcome, ActuateError> {
        // The replicas the write is decided on, per object, as first read.
        let mut basis: Option<BTreeMap<String, u32>> = None;
        for _ in 0..WRITE_ATTEMPTS {
            // Read again right before writing: the value may have moved since the cycle
            // observed it, and the write is conditional on this read.
            let (read, conflict) = self.observe_read(target, true).await?;
            if let Some(reason) = conflict {
                return Ok(ScaleOutcome::Conflict(reason));
            }
            let now: BTreeMap<String, u32> = read
                .objects
                .iter()
                .map(|o| (o.name.clone(), o.replicas))
                .collect();
            match &basis {
                None => basis = Some(now),
                // After a 409, a change of the other fields (status, labels) is retried; a
                // change of the replicas (a successor's write, say) means the decision was
                // made on a world that is gone: the next cycle decides again.
                Some(basis) if *basis != now => {
                    return Err(ActuateError::Api {
                        target: target.to_string(),
                        verb: "patch",
                        cause: format!(
                            "replicas changed from {basis:?} to {now:?} since they were read (409); \
                             not written, the next cycle decides again"
                        ),
                    });
                }
                Some(_) => {}
            }
            if read.replicas == replicas {
                self.agree(
                    target,
                    read.objects.iter().map(|o| (o.name.clone(), o.replicas)),
                );
                return Ok(ScaleOutcome::Unchanged);
            }
            match self.write(target, &read, replicas, fence).await {
                Ok(asked) => {
                    self.agree(target, asked);
                    tracing::info!(%target, from = read.replicas, to = replicas, "scaled");
                    return Ok(ScaleOutcome::Scaled {
                        from: read.replicas,
                        to: replicas,
                    });
                }
                Err(WriteFailure::Fenced(refused)) => {
                    tracing::warn!(%target, to = replicas, ?refused, "not written: fenced");
                    return Ok(ScaleOutcome::Fenced(refused));
                }
                Err(WriteFailure::Error(e)) => return Err(e),
                Err(WriteFailure::Changed) => {
                    tracing::info!(%target, "changed since it was read (409); reading again");
                }
            }
        }
        Err(ActuateError::Api {
            target: target.to_string(),
            verb: "patch",
            cause: format!(
                "the object changed between read and write {WRITE_ATTEMPTS} times in a row (409)"
            ),
        })
    }
}
