//! A gauge family kept compactly, for the families with a series per workload.
//!
//! The `prometheus` crate's `GaugeVec` makes each series a child that copies the family's
//! description, help text and label names, and every label as a name/value pair of strings:
//! about 1.2 KB a series. At 500 policies (1,500 workloads, a dozen such families) heaptrack
//! counted 18 MB there. Here a series is one map entry: its label values joined, and its value.
//! The family is a `Collector` like any other, so registering, gathering and the text
//! exposition are the crate's own.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// Joins a series' label values into its key: a control character no label value of the
/// daemon holds (names of Kubernetes objects, fixed words). The order series are written in is
/// the encoder's business (`Registry::gather` and `Metrics::render` sort them).
const SEPARATOR: char = '\u{1f}';

/// A gauge per combination of label values, like `prometheus::GaugeVec`.
#[derive(Clone)]
pub struct LabelledGauges(Arc<Family>);

struct Family {
    desc: Desc,
    series: Mutex<BTreeMap<Box<str>, f64>>,
}

impl LabelledGauges {
    pub fn new(name: &str, help: &str, labels: &[&str]) -> prometheus::Result<Self> {
        let labels = labels.iter().map(ToString::to_string).collect();
        let desc = Desc::new(name.into(), help.into(), labels, HashMap::new())?;
        Ok(Self(Arc::new(Family {
            desc,
            series: Mutex::default(),
        })))
    }

    /// The series of these label values (one per label, in the order the family names them).
    pub fn with_label_values<'a>(&'a self, values: &'a [&'a str]) -> Series<'a> {
        Series {
            family: self,
            values,
        }
    }

    /// Drops the series of these label values; an error when there is none.
    pub fn remove_label_values(&self, values: &[&str]) -> prometheus::Result<()> {
        let key = self.key(values)?;
        match self.lock().remove(key.as_str()) {
            Some(_) => Ok(()),
            None => Err(prometheus::Error::Msg(format!(
                "{}: no series {values:?}",
                self.0.desc.fq_name
            ))),
        }
    }

    fn key(&self, values: &[&str]) -> prometheus::Result<String> {
        let expected = self.0.desc.variable_labels.len();
        if values.len() != expected {
            return Err(prometheus::Error::InconsistentCardinality {
                expect: expected,
                got: values.len(),
            });
        }
        let length = values.iter().map(|v| v.len()).sum::<usize>() + values.len().saturating_sub(1);
        let mut key = String::with_capacity(length);
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                key.push(SEPARATOR);
            }
            key.push_str(value);
        }
        Ok(key)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Box<str>, f64>> {
        // A panic while holding the lock leaves a map that is still whole: keep using it.
        self.0
            .series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One series of a [`LabelledGauges`].
pub struct Series<'a> {
    family: &'a LabelledGauges,
    values: &'a [&'a str],
}

impl Series<'_> {
    /// Panics on a wrong number of label values, as `GaugeVec::with_label_values` does: the
    /// label lists are the daemon's own code, not input.
    pub fn set(&self, value: f64) {
        let key = self.key();
        let mut series = self.family.lock();
        match series.get_mut(key.as_str()) {
            Some(held) => *held = value,
            None => {
                series.insert(key.into_boxed_str(), value);
            }
        }
    }

    /// The value; 0 for a series never set, as a new `Gauge` reads.
    pub fn get(&self) -> f64 {
        let key = self.key();
        self.family.lock().get(key.as_str()).copied().unwrap_or(0.0)
    }

    fn key(&self) -> String {
        match self.family.key(self.values) {
            Ok(key) => key,
            Err(e) => panic!("{}: {e}", self.family.0.desc.fq_name),
        }
    }
}

impl Collector for LabelledGauges {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.0.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let desc = &self.0.desc;
        let mut family = MetricFamily::default();
        family.set_name(desc.fq_name.clone());
        family.set_help(desc.help.clone());
        family.set_field_type(MetricType::GAUGE);
        let series = self.lock();
        let metrics = family.mut_metric();
        metrics.reserve(series.len());
        // The crate writes a series' labels in order of their names.
        let mut by_name: Vec<usize> = (0..desc.variable_labels.len()).collect();
        by_name.sort_by_key(|&i| &desc.variable_labels[i]);
        let mut values = Vec::with_capacity(by_name.len());
        for (key, value) in series.iter() {
            values.clear();
            values.extend(key.split(SEPARATOR));
            let labels = by_name
                .iter()
                .map(|&i| {
                    let mut pair = LabelPair::default();
                    pair.set_name(desc.variable_labels[i].clone());
                    pair.set_value(values[i].to_string());
                    pair
                })
                .collect();
            let mut gauge = Gauge::default();
            gauge.set_value(*value);
            let mut metric = Metric::default();
            metric.set_label(labels);
            metric.set_gauge(gauge);
            metrics.push(metric);
        }
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{Encoder, GaugeVec, Opts, Registry, TextEncoder};

    use super::*;

    fn text(collector: Box<dyn Collector>) -> String {
        let registry = Registry::new();
        registry.register(collector).expect("registered");
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buffer)
            .expect("encoded");
        String::from_utf8(buffer).expect("utf-8")
    }

    #[test]
    fn exposes_what_the_crates_gauge_vec_exposes() {
        // Label names out of order: the crate writes them sorted.
        let labels = ["workload", "policy"];
        let ours = LabelledGauges::new("g", "help", &labels).unwrap();
        let theirs = GaugeVec::new(Opts::new("g", "help"), &labels).unwrap();
        for (values, value) in [
            (["a-b", "x"], 1.5),
            (["a", "z"], 2.0),
            (["a-b.c", "y"], 3.0),
            (["a", "y"], f64::NAN),
            (["b", ""], 0.0),
        ] {
            ours.with_label_values(&values).set(value);
            theirs.with_label_values(&values).set(value);
        }
        ours.with_label_values(&["a", "z"]).set(-4.0);
        theirs.with_label_values(&["a", "z"]).set(-4.0);
        ours.remove_label_values(&["b", ""]).unwrap();
        theirs.remove_label_values(&["b", ""]).unwrap();
        assert_eq!(text(Box::new(ours.clone())), text(Box::new(theirs)));
        assert_eq!(ours.with_label_values(&["a", "z"]).get(), -4.0);
        assert!(
            ours.remove_label_values(&["b", ""]).is_err(),
            "already gone"
        );
        assert!(ours.remove_label_values(&["a"]).is_err(), "one value short");
    }
}
