//! Known promotions (`spec.events`) expanded into concrete time windows for the forecaster's
//! event regressors and for the planner's guards.

/// One occurrence of a known event, as unix seconds `[start, end)`.
#[derive(Clone, Debug, PartialEq)]
pub struct EventWindow {
    pub name: String,
    pub start: i64,
    pub end: i64,
}
