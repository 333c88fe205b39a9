//! `tideshift` and `oracle`: the daemon's planner (`plan::plan`, the same code), fed either by
//! the daemon's forecaster on the past only (`tideshift`) or by the true future demand with
//! no error (`oracle`, the limit of what any forecaster could give this planner).
//!
//! Like the daemon, `tideshift` refits the forecaster every `forecast.retrain` on the last
//! `forecast.history` of finished buckets, predicts when a new bucket has finished (the same
//! history gives the same forecast), and plans every `interval` with the latest observed demand.

use std::sync::Arc;

use super::{Action, Strategy};
use crate::forecast::{
    self, FittedModel, Forecast, ForecastMethod, ForecastRecord, ForecastSpec, Forecaster,
    RecentAccuracy, RefitSchedule,
};
use crate::plan::{self, OfflineState, OnlineState, Plan, PlanInput, PlanMemory};
use crate::sim::cluster::Cluster;
use crate::sim::scenario::Scenario;

/// The oracle's forecast step: fine enough that its plan is not widened by a coarse grid.
const ORACLE_STEP: i64 = 60;

/// Where forecasts come from. One of each per run, so the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Foresight {
    /// The daemon's forecaster, on the past only.
    Forecaster {
        forecaster: Box<dyn Forecaster>,
        spec: ForecastSpec,
        horizon: usize,
        history_len: usize,
        refits: RefitSchedule,
        models: Vec<Option<Box<dyn FittedModel>>>,
        fitted_at: Vec<i64>,
        /// End of the history each model was fitted on.
        fitted_end: Vec<i64>,
        /// End of the history the current forecast was made from.
        predicted_from: Vec<i64>,
        warned: Vec<bool>,
    },
    /// The true demand ahead, exactly.
    Oracle { horizon: i64 },
}

pub struct Planned {
    name: &'static str,
    scenario: Arc<Scenario>,
    foresight: Foresight,
    forecasts: Vec<Option<Forecast>>,
    /// Per online workload, the forecasts planned on and how they did (the daemon's record).
    records: Vec<ForecastRecord>,
    memory: PlanMemory,
    next_decision: i64,
    /// Decisions start here (a day before scoring starts).
    quiet_until: i64,
}

/// How far ahead a plan at any instant may look: the planner looks `startup + interval +`
/// [`plan::ACTUATION_ALLOWANCE_SECS`] ahead from `now`, and a forecast starts up to one step
/// before `now` (at the end of the last finished bucket).
fn lead_seconds(scenario: &Scenario) -> i64 {
    let startup = scenario.online.iter().map(|w| w.startup).max().unwrap_or(0);
    startup + scenario.interval + plan::ACTUATION_ALLOWANCE_SECS
}

impl Planned {
    pub fn tideshift(scenario: Arc<Scenario>) -> Self {
        let step = scenario.forecast_step;
        let settings = &scenario.spec.forecast;
        let lead = lead_seconds(&scenario);
        // Only the steps the planner looks at: a forecast starts up to one step before `now`
        // and the plan looks `lead` ahead. The rest of `forecast.horizon` (next-peak status
        // in the daemon) does not change a plan, and a shorter horizon fits much faster.
        let horizon = ((lead + 2 * step - 1) / step + 1).max(1) as usize;
        let seasons: Vec<usize> = settings
            .seasonality
            .iter()
            .map(|p| p.as_secs() as i64)
            .filter(|p| p % step == 0 && p / step >= 2)
            .map(|p| (p / step) as usize)
            .collect();
        let events = match crate::policy::events::expand(
            &scenario.spec.events,
            scenario.start - settings.history.as_secs() as i64,
            scenario.end + horizon as i64 * step,
        ) {
            Ok(windows) => windows,
            Err(e) => {
                tracing::warn!(error = %e, "events could not be expanded; forecasting without them");
                Vec::new()
            }
        };
        let count = scenario.online.len();
        let history_len = ((settings.history.as_secs() as i64 / step).max(1)) as usize;
        let refits = RefitSchedule::new(settings.retrain.0, step);
        Self {
            name: "tideshift",
            foresight: Foresight::Forecaster {
                forecaster: forecast::default_forecaster(),
                spec: ForecastSpec {
                    seasons,
                    events,
                    horizon,
                    band_quantile: None,
                },
                horizon,
                history_len,
                refits,
                models: (0..count).map(|_| None).collect(),
                fitted_at: vec![i64::MIN; count],
                fitted_end: vec![i64::MIN; count],
                predicted_from: vec![i64::MIN; count],
                warned: vec![false; count],
            },
            forecasts: vec![None; count],
            records: vec![ForecastRecord::default(); count],
            memory: PlanMemory::default(),
            next_decision: scenario.start,
            quiet_until: scenario.scored_from - 86_400,
            scenario,
        }
    }

    pub fn oracle(scenario: Arc<Scenario>) -> Self {
        let count = scenario.online.len();
        let horizon = lead_seconds(&scenario) + 2 * ORACLE_STEP;
        Self {
            name: "oracle",
            foresight: Foresight::Oracle { horizon },
            forecasts: vec![None; count],
            records: vec![ForecastRecord::default(); count],
            memory: PlanMemory::default(),
            next_decision: scenario.start,
            quiet_until: scenario.scored_from - 86_400,
            scenario,
        }
    }

    fn refresh_forecasts(&mut self, now: i64) {
        let scenario = &self.scenario;
        match &mut self.foresight {
            Foresight::Oracle { horizon } => {
                let from = now.div_euclid(ORACLE_STEP) * ORACLE_STEP;
                let steps = (*horizon / ORACLE_STEP + 1) as usize;
                for (w, demand) in scenario.demand.iter().enumerate() {
                    let values: Vec<f64> = (0..steps)
                        .map(|i| {
                            let at = from + i as i64 * ORACLE_STEP;
                            demand
                                .as_ref()
                                .map_or(Some(0.0), |d| d.max_over(at.max(now), at + ORACLE_STEP))
                                .unwrap_or(f64::NAN)
                        })
                        .collect();
                    self.forecasts[w] = Some(exact(from, ORACLE_STEP, values, "perfect foresight"));
                }
            }
            Foresight::Forecaster {
                forecaster,
                spec,
                horizon,
                history_len,
                refits,
                models,
                fitted_at,
                fitted_end,
                predicted_from,
                warned,
            } => {
                for (w, demand) in scenario.demand.iter().enumerate() {
                    let Some(demand) = demand else {
                        let step = scenario.forecast_step;
                        let from = now.div_euclid(step) * step;
                        self.forecasts[w] =
                            Some(exact(from, step, vec![0.0; *horizon], "no demand trace"));
                        continue;
                    };
                    let Some(history) = demand.history_until(now, *history_len) else {
                        self.forecasts[w] = None;
                        continue;
                    };
                    let mut refitted = false;
                    // Refitting on the very same history would give the same model.
                    let stale =
                        refits.due(Some(fitted_at[w]), now) && history.end() > fitted_end[w];
                    if models[w].is_none() || stale {
                        match forecaster.fit(&history, spec) {
                            Ok(model) => {
                                models[w] = Some(model);
                                refitted = true;
                            }
                            Err(e) => {
                                if !warned[w] {
                                    warned[w] = true;
                                    tracing::warn!(
                                        workload = %scenario.online[w].name,
                                        error = %e,
                                        "forecaster fit failed; the planner holds"
                                    );
                                }
                            }
                        }
                        fitted_at[w] = now;
                        fitted_end[w] = history.end();
                    }
                    if !refitted && predicted_from[w] == history.end() {
                        continue;
                    }
                    let quantile = scenario.spec.online[w].quantile;
                    self.forecasts[w] = models[w].as_ref().and_then(|model| {
                        match model.predict(&history, *horizon, quantile) {
                            Ok(f) => Some(f),
                            Err(e) => {
                                tracing::debug!(workload = %scenario.online[w].name, error = %e, "no forecast");
                                None
                            }
                        }
                    });
                    predicted_from[w] = history.end();
                }
            }
        }
    }

    /// As the daemon does every cycle: keep the forecast made `startup` ahead of each time and
    /// judge the recent ones against the demand of finished buckets. The oracle is not judged.
    fn judge_forecasts(&mut self, now: i64) -> Vec<Option<RecentAccuracy>> {
        let scenario = &self.scenario;
        if matches!(self.foresight, Foresight::Oracle { .. }) {
            return vec![None; scenario.online.len()];
        }
        let mut judged = Vec::with_capacity(scenario.online.len());
        for (w, record) in self.records.iter_mut().enumerate() {
            let (Some(forecast), Some(demand)) = (&self.forecasts[w], &scenario.demand[w]) else {
                judged.push(None);
                continue;
            };
            let window = plan::trust_window(forecast.step);
            record.record(forecast, now, scenario.online[w].startup, window);
            let steps = (window / forecast.step.max(1)) as usize + 2;
            judged.push(
                demand
                    .history_until(now, steps)
                    .map(|actual| record.accuracy(&actual, now, window)),
            );
        }
        judged
    }

    fn to_actions(&self, plan: &Plan) -> Vec<Action> {
        let index = |name: &str| {
            self.scenario
                .online
                .iter()
                .position(|w| w.name == name)
                .or_else(|| {
                    self.scenario
                        .offline
                        .iter()
                        .position(|w| w.name == name)
                        .map(|k| self.scenario.offline_index(k))
                })
        };
        plan.shrinks()
            .chain(plan.grows())
            .filter_map(|a| index(a.name).map(|w| (w, a.to)))
            .collect()
    }
}

fn exact(start: i64, step: i64, values: Vec<f64>, reason: &str) -> Forecast {
    Forecast {
        start,
        step,
        point: values.clone(),
        lower: values.clone(),
        upper: values,
        quantile: 0.5,
        method: ForecastMethod::SeasonalNaive {
            reason: reason.to_string(),
        },
    }
}

impl Strategy for Planned {
    fn name(&self) -> &'static str {
        self.name
    }

    fn decide(&mut self, now: i64, cluster: &Cluster, observed: &[Option<f64>]) -> Vec<Action> {
        if now < self.next_decision {
            return Vec::new();
        }
        if now < self.quiet_until {
            // Early warm-up: nothing is scored yet; skip the forecaster's cost until a day
            // before scoring starts, enough to settle the plan and the stabilization windows.
            return Vec::new();
        }
        self.next_decision = now + self.scenario.interval;
        self.refresh_forecasts(now);
        let accuracy = self.judge_forecasts(now);
        let scenario = &self.scenario;
        let input = PlanInput {
            now,
            capacity: scenario.capacity,
            online: scenario
                .online
                .iter()
                .enumerate()
                .map(|(w, spec)| OnlineState {
                    name: spec.name.clone(),
                    forecast: self.forecasts[w].clone(),
                    observed_demand: observed[w],
                    accuracy: accuracy[w],
                    current: cluster.spec(w),
                    pod: spec.pod,
                })
                .collect(),
            offline: scenario
                .offline
                .iter()
                .enumerate()
                .map(|(k, spec)| OfflineState {
                    name: spec.name.clone(),
                    current: cluster.spec(scenario.offline_index(k)),
                    pod: spec.pod,
                })
                .collect(),
        };
        let (plan, memory) = plan::plan(&scenario.spec, &input, &self.memory);
        self.memory = memory;
        self.to_actions(&plan)
    }

    fn band_at(&self, t: i64) -> Option<(f64, f64)> {
        let mut band = (0.0, 0.0);
        let mut any = false;
        for (f, spec) in self.forecasts.iter().zip(&self.scenario.online) {
            let Some(f) = f else { continue };
            if t < f.start || f.step <= 0 {
                continue;
            }
            let i = ((t - f.start) / f.step) as usize;
            if let (Some(lo), Some(hi)) = (f.lower.get(i), f.upper.get(i))
                && lo.is_finite()
                && hi.is_finite()
            {
                band.0 += lo / spec.per_replica;
                band.1 += hi / spec.per_replica;
                any = true;
            }
        }
        any.then_some(band)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::Series;
    use crate::sim::demand::Demand;
    use crate::sim::engine::{self, TimelinePlan};
    use crate::sim::strategy::Action;

    const POLICY: &str = r#"
apiVersion: tideshift.io/v1alpha1
kind: ShiftPolicy
metadata: {name: leak, namespace: default}
spec:
  interval: 30s
  capacity: {cpu: "40", memory: 160Gi}
  forecast: {step: 5m, seasonality: [1d], history: 3d, retrain: 1h}
  online:
    - name: payment
      target: {kind: Deployment, name: payment}
      demand: {query: 'sum(rate(payments_total[1m]))'}
      perReplica: 100
      headroom: 0.2
      startup: 30s
      replicas: {min: 1, max: 30}
      resources: {cpu: "1", memory: 2Gi}
  offline:
    - name: batch
      target: {kind: Deployment, name: batch}
      replicas: {min: 0, max: 40}
      resources: {cpu: "1", memory: 2Gi}
"#;
    const STEP: i64 = 300;
    const DAY: i64 = 86_400;
    const WARMUP: i64 = 2 * DAY;

    /// Every decision of the strategy, and the method of each forecast it planned on.
    struct Recording<'a> {
        inner: &'a mut Planned,
        log: Vec<(i64, Vec<Action>)>,
        methods: Vec<(i64, &'static str)>,
    }

    impl Strategy for Recording<'_> {
        fn name(&self) -> &'static str {
            self.inner.name()
        }
        fn decide(&mut self, now: i64, cluster: &Cluster, observed: &[Option<f64>]) -> Vec<Action> {
            let actions = self.inner.decide(now, cluster, observed);
            if !actions.is_empty() {
                self.log.push((now, actions.clone()));
            }
            if let Some(f) = &self.inner.forecasts[0] {
                self.methods.push((now, f.method.name()));
            }
            actions
        }
    }

    type Log = Vec<(i64, Vec<Action>)>;

    fn decisions(values: Vec<f64>) -> (Log, Vec<(i64, &'static str)>) {
        let policy = crate::policy::load_str(POLICY, "leak.yaml").expect("policy");
        let series = Series::new(1_800_000_000 - 1_800_000_000 % DAY, STEP, values);
        let demand = vec![Some(Demand::from_series(series, STEP))];
        let scenario = Arc::new(Scenario::new(&policy, demand, STEP, WARMUP).expect("scenario"));
        let plan = TimelinePlan {
            step: 3_600,
            zoom_from: scenario.scored_from,
            zoom_to: scenario.scored_from,
            zoom_step: 3_600,
        };
        let mut strategy = Planned::tideshift(Arc::clone(&scenario));
        let mut recording = Recording {
            inner: &mut strategy,
            log: Vec::new(),
            methods: Vec::new(),
        };
        engine::run(&scenario, &mut recording, &plan, &|_| {});
        (recording.log, recording.methods)
    }

    /// A day-seasonal demand with an evening peak, four days at 5-minute steps.
    fn daily_demand() -> Vec<f64> {
        (0..4 * DAY / STEP)
            .map(|i| {
                let hour = (i * STEP % DAY) as f64 / 3_600.0;
                let evening = (-(hour - 20.0).powi(2) / 2.0).exp();
                300.0 + 1_500.0 * evening + 40.0 * ((i as f64) * 0.7).sin()
            })
            .collect()
    }

    #[test]
    fn demand_after_t_leaves_every_decision_before_t_unchanged() {
        let base = daily_demand();
        // T: day 3, 18:00, two hours before the evening peak the forecaster has learned.
        let t_index = ((3 * DAY + 18 * 3_600) / STEP) as usize;
        let t = 1_800_000_000 - 1_800_000_000 % DAY + t_index as i64 * STEP;
        let mut changed = base.clone();
        for v in &mut changed[t_index..] {
            *v *= 3.0;
        }
        let (before, methods) = decisions(base);
        let (after, _) = decisions(changed);
        // Planned on the regression before T, so a forecast that peeked would show.
        assert!(
            methods
                .iter()
                .any(|&(now, method)| now < t && method == "regression"),
            "the regression never planned before T: {methods:?}"
        );
        let until_t = |log: &[(i64, Vec<Action>)]| -> Vec<(i64, Vec<Action>)> {
            log.iter().filter(|(now, _)| *now < t).cloned().collect()
        };
        assert!(
            !until_t(&before).is_empty(),
            "no decision before T: the test would prove nothing"
        );
        assert_eq!(until_t(&before), until_t(&after));
        // And the change is seen once it has happened: the runs differ after T.
        assert_ne!(before, after, "tripled demand after T changed nothing");
    }
}
