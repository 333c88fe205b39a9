//! `--plot out.png`: demand, forecast band, online capacity and batch replicas per strategy.
//! Three panels: the whole scored window, a zoom on the busiest day, and batch replicas.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::engine::{Outcome, Timeline};
use super::scenario::Scenario;

/// DejaVu Sans Mono (Bitstream Vera licence, data/fonts/LICENSE-DejaVu.txt): plotters draws
/// text with ab_glyph and needs a font; embedding one keeps the binary independent of the
/// system's fonts.
static FONT: &[u8] = include_bytes!("../../data/fonts/DejaVuSansMono.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if plotters::style::register_font(FAMILY, style, FONT).is_err() {
                result = Err("the embedded font could not be loaded".to_string());
            }
        }
    });
    result
}

fn color(name: &str) -> RGBColor {
    match name {
        "static" => RGBColor(127, 127, 127),
        "reactive" => RGBColor(230, 120, 20),
        "tideshift" => RGBColor(31, 100, 200),
        "oracle" => RGBColor(40, 160, 60),
        _ => RGBColor(150, 50, 150),
    }
}

/// Points `(day, value)` of one timeline field, skipping NaN and anything outside `range`.
fn points(t: &Timeline, field: &[f32], origin: i64, range: (f64, f64)) -> Vec<(f64, f64)> {
    field
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| {
            let time = t.start + t.step * i as i64 + t.step / 2;
            ((time - origin) as f64 / 86_400.0, f64::from(v))
        })
        .filter(|(x, _)| *x >= range.0 && *x <= range.1)
        .collect()
}

/// The band as closed polygons, one per stretch without gaps.
fn band_polygons(t: &Timeline, origin: i64, range: (f64, f64)) -> Vec<Vec<(f64, f64)>> {
    let mut polygons = Vec::new();
    let mut upper: Vec<(f64, f64)> = Vec::new();
    let mut lower: Vec<(f64, f64)> = Vec::new();
    let mut close = |upper: &mut Vec<(f64, f64)>, lower: &mut Vec<(f64, f64)>| {
        if upper.len() > 1 {
            let mut polygon = std::mem::take(upper);
            polygon.extend(lower.drain(..).rev());
            polygons.push(polygon);
        }
        upper.clear();
        lower.clear();
    };
    for i in 0..t.band_upper.len() {
        let (lo, hi) = (t.band_lower[i], t.band_upper[i]);
        let x = (t.start + t.step * i as i64 + t.step / 2 - origin) as f64 / 86_400.0;
        if lo.is_finite() && hi.is_finite() && x >= range.0 && x <= range.1 {
            upper.push((x, f64::from(hi)));
            lower.push((x, f64::from(lo)));
        } else {
            close(&mut upper, &mut lower);
        }
    }
    close(&mut upper, &mut lower);
    polygons
}

fn day_label(origin: i64, x: f64) -> String {
    let t = origin + (x * 86_400.0).round() as i64;
    chrono::DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn online_panel(
    area: &Area,
    title: &str,
    outcomes: &[Outcome],
    origin: i64,
    range: (f64, f64),
    zoomed: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let timeline = |o: &Outcome| -> Timeline {
        if zoomed {
            o.zoom.clone()
        } else {
            o.timeline.clone()
        }
    };
    let timelines: Vec<(&'static str, Timeline)> =
        outcomes.iter().map(|o| (o.name, timeline(o))).collect();
    let Some((_, first)) = timelines.first() else {
        return Ok(());
    };
    let mut top: f64 = 1.0;
    for (_, t) in &timelines {
        for field in [&t.online_ready, &t.need, &t.band_upper] {
            for (_, y) in points(t, field, origin, range) {
                top = top.max(y);
            }
        }
    }
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(range.0..range.1, 0.0..top * 1.08)?;
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&|x| day_label(origin, *x))
        .y_desc("online replicas")
        .label_style((FAMILY, 13))
        .draw()?;
    let band_color = RGBColor(31, 100, 200).mix(0.2);
    let mut band_labelled = false;
    for (_, t) in &timelines {
        for polygon in band_polygons(t, origin, range) {
            let series = chart.draw_series(std::iter::once(Polygon::new(polygon, band_color)))?;
            if !band_labelled {
                band_labelled = true;
                series
                    .label("forecast band (tideshift)")
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 20, y + 5)], band_color.filled())
                    });
            }
        }
    }
    // Width 1: plotters' wide lines grow miter spikes at sharp turns.
    chart
        .draw_series(LineSeries::new(
            points(first, &first.need, origin, range),
            BLACK.stroke_width(1),
        ))?
        .label("demand / perReplica")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    for (name, t) in &timelines {
        let c = color(name);
        chart
            .draw_series(LineSeries::new(
                points(t, &t.online_ready, origin, range),
                c.stroke_width(1),
            ))?
            .label(format!("{name} ready"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 13))
        .draw()?;
    Ok(())
}

fn batch_panel(
    area: &Area,
    outcomes: &[Outcome],
    origin: i64,
    range: (f64, f64),
) -> Result<(), Box<dyn std::error::Error>> {
    let mut top: f64 = 1.0;
    for o in outcomes {
        for (_, y) in points(&o.timeline, &o.timeline.batch_ready, origin, range) {
            top = top.max(y);
        }
    }
    let mut chart = ChartBuilder::on(area)
        .caption("batch replicas running", (FAMILY, 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(range.0..range.1, 0.0..top * 1.08)?;
    chart
        .configure_mesh()
        .x_labels(8)
        .x_label_formatter(&|x| day_label(origin, *x))
        .y_desc("offline replicas")
        .label_style((FAMILY, 13))
        .draw()?;
    for o in outcomes {
        let c = color(o.name);
        chart
            .draw_series(LineSeries::new(
                points(&o.timeline, &o.timeline.batch_ready, origin, range),
                c.stroke_width(1),
            ))?
            .label(o.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FAMILY, 13))
        .draw()?;
    Ok(())
}

pub fn draw(
    path: &Path,
    scenario: &Scenario,
    outcomes: &[Outcome],
    source: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    register_font()?;
    let origin = scenario.scored_from;
    let days = (scenario.end - origin) as f64 / 86_400.0;
    let full = (0.0, days.max(1e-3));
    let zoom = outcomes.first().map_or(full, |o| {
        let z = &o.zoom;
        let from = (z.start - origin) as f64 / 86_400.0;
        let to = from + (z.step * z.need.len() as i64) as f64 / 86_400.0;
        (from, to.max(from + 1e-3))
    });

    let root = BitMapBackend::new(path, (1600, 1400)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.draw_text(
        &format!("tideshift simulate: {} over {source}", scenario.policy_name),
        &(FAMILY, 20).into_font().color(&BLACK),
        (10, 10),
    )?;
    let panels = body.split_evenly((3, 1));
    online_panel(
        &panels[0],
        "online: demand vs ready capacity, whole scored window",
        outcomes,
        origin,
        full,
        false,
    )?;
    online_panel(
        &panels[1],
        "online: the day around the busiest moment (zoom)",
        outcomes,
        origin,
        zoom,
        true,
    )?;
    batch_panel(&panels[2], outcomes, origin, full)?;
    root.present()?;
    Ok(())
}
