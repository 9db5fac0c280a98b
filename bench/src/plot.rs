//! SVG plots of a comparison with `plotters`' SVG backend: bars (throughput, CPU per request,
//! memory) and latency by percentile on log scales. Text is written as SVG `<text>`
//! elements, so no font files or C libraries are needed to draw them.

use crate::compare::report::{Results, ScenarioResult};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (860, 500);
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Colours of contenders without one of their own, in the order they appear in a plot.
const EXTRA: [RGBColor; 8] = [
    RGBColor(148, 103, 189),
    RGBColor(214, 39, 40),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(31, 60, 110),
    RGBColor(255, 187, 120),
];

fn own_color(name: &str) -> Option<RGBColor> {
    match name {
        "direct" => Some(RGBColor(120, 120, 120)),
        "coremesh" => Some(PALETTE[0]),
        "nginx" => Some(PALETTE[2]),
        "haproxy" => Some(PALETTE[1]),
        _ => None,
    }
}

/// The colour of `name` among the contenders `names` of one plot: the built-in ones keep
/// theirs, the others take distinct ones by their position among the others.
fn color_of(name: &str, names: &[&str]) -> RGBColor {
    own_color(name).unwrap_or_else(|| {
        let i = names
            .iter()
            .filter(|n| own_color(n).is_none())
            .position(|n| *n == name)
            .unwrap_or(0);
        EXTRA[i % EXTRA.len()]
    })
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Grouped bars: one group per label, one bar per series (`None` = no bar).
pub fn bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    groups: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> Result<(), String> {
    let root: Area = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(0.0f64, |m, v| m.max(*v));
    let top = if max > 0.0 { max * 1.2 } else { 1.0 };
    let n = groups.len().max(1);
    let group_names: Vec<&str> = groups.iter().map(String::as_str).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(y_desc)
        .y_label_formatter(&|v| short(*v))
        .draw()
        .map_err(err)?;
    let k = series.len().max(1) as f64;
    let width = 0.8 / k;
    for (s, (name, values)) in series.iter().enumerate() {
        let color = if series.len() == 1 {
            PALETTE[0]
        } else {
            PALETTE[s % PALETTE.len()]
        };
        let rects: Vec<Rectangle<(f64, f64)>> = values
            .iter()
            .enumerate()
            .filter_map(|(g, v)| {
                let v = (*v)?;
                let x0 = g as f64 + 0.1 + width * s as f64;
                let bar_color = if series.len() == 1 {
                    color_of(&groups[g], &group_names)
                } else {
                    color
                };
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.92, v)],
                    bar_color.filled(),
                ))
            })
            .collect();
        let drawn = chart.draw_series(rects).map_err(err)?;
        if series.len() > 1 {
            drawn.label(name.as_str()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
            });
        }
        let labels: Vec<Text<(f64, f64), String>> = values
            .iter()
            .enumerate()
            .filter_map(|(g, v)| {
                let v = (*v)?;
                let x = g as f64 + 0.1 + width * s as f64 + width * 0.1;
                Some(Text::new(
                    short(v),
                    (x, v + top * 0.01),
                    ("sans-serif", 13).into_font(),
                ))
            })
            .collect();
        chart.draw_series(labels).map_err(err)?;
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
    }
    for (g, name) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(g as f64 + 0.4, 0.0));
        root.draw(&Text::new(
            name.clone(),
            (px - 4 * name.len() as i32, py + 12),
            ("sans-serif", 15).into_font(),
        ))
        .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).log10()
}

fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    if (x - x.round()).abs() < 1e-9 {
        let digits = (x.round() as usize).saturating_sub(2);
        format!("{p:.digits$}%")
    } else {
        format!("{p:.2}%")
    }
}

/// Latency by percentile, one line per series; both axes logarithmic (x in "nines").
pub fn percentiles(
    path: &Path,
    title: &str,
    series: &[(String, Vec<[f64; 2]>)],
) -> Result<(), String> {
    let root: Area = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let points: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, curve)| {
            let pts = curve
                .iter()
                .filter(|p| p[0] < 100.0 && p[1] > 0.0)
                .map(|p| (nines(p[0]), p[1]))
                .collect();
            (n.clone(), pts)
        })
        .collect();
    let all = points.iter().flat_map(|(_, p)| p.iter());
    let (mut lo, mut hi, mut xmax) = (f64::INFINITY, 0.0f64, 1.0f64);
    for (x, y) in all {
        lo = lo.min(*y);
        hi = hi.max(*y);
        xmax = xmax.max(*x);
    }
    if !lo.is_finite() || hi <= 0.0 {
        lo = 1.0;
        hi = 10.0;
    }
    let xmax = xmax.ceil();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..xmax, (lo * 0.8..hi * 1.25).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(xmax as usize + 1)
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|v| short(*v))
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .draw()
        .map_err(err)?;
    let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    for (name, pts) in points {
        let color = color_of(&name, &names);
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Lines of `y` (log scale) against `x`, one per series, with an optional dashed
/// horizontal bound and its label.
pub fn lines(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
    bound: Option<(f64, &str)>,
) -> Result<(), String> {
    let root: Area = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let pts = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && *y > 0.0);
    let (mut xmax, mut lo, mut hi) = (0.0f64, f64::INFINITY, 0.0f64);
    for (x, y) in pts {
        xmax = xmax.max(*x);
        lo = lo.min(*y);
        hi = hi.max(*y);
    }
    if let Some((b, _)) = bound {
        lo = lo.min(b);
        hi = hi.max(b);
    }
    if !lo.is_finite() || hi <= 0.0 {
        return Err(format!("{}: no points to draw", path.display()));
    }
    let xmax = if xmax > 0.0 { xmax * 1.05 } else { 1.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..xmax, (lo * 0.8..hi * 1.25).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| short(*x))
        .y_label_formatter(&|v| short(*v))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(err)?;
    if let Some((b, label)) = bound {
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, b), (xmax, b)],
                6,
                4,
                grey.stroke_width(1),
            ))
            .map_err(err)?
            .label(label.to_string())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], grey));
    }
    let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    for (name, p) in series {
        let color = color_of(name, &names);
        let p: Vec<(f64, f64)> = p.iter().copied().filter(|(_, y)| *y > 0.0).collect();
        chart
            .draw_series(LineSeries::new(p.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(p.into_iter().map(|xy| Circle::new(xy, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// A number in few characters: 61234 -> "61.2k".
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn find<'a>(results: &'a Results, key: &str) -> Option<&'a ScenarioResult> {
    results.scenarios.iter().find(|s| s.key == key)
}

fn figure_bars(
    out: &Path,
    file: &str,
    title: &str,
    y_desc: &str,
    scenario: &ScenarioResult,
    keys: &[(&str, &str)],
) -> Result<String, String> {
    let rows: Vec<_> = scenario
        .rows
        .iter()
        .filter(|r| r.skipped.is_none())
        .collect();
    let groups: Vec<String> = rows
        .iter()
        .map(|r| r.contender.name().to_string())
        .collect();
    let series: Vec<(String, Vec<Option<f64>>)> = keys
        .iter()
        .map(|(k, label)| (label.to_string(), rows.iter().map(|r| r.get(k)).collect()))
        .collect();
    bars(&out.join(file), title, y_desc, &groups, &series)?;
    Ok(file.to_string())
}

fn latency_plot(
    out: &Path,
    file: &str,
    title: &str,
    scenario: &ScenarioResult,
    load: &str,
) -> Result<String, String> {
    let series: Vec<(String, Vec<[f64; 2]>)> = scenario
        .rows
        .iter()
        .filter_map(|r| {
            let l = r.loads.get(load)?;
            Some((r.contender.name().to_string(), l.latency_curve.clone()))
        })
        .collect();
    if series.is_empty() {
        return Err(format!("{file}: no contender has data"));
    }
    percentiles(&out.join(file), title, &series)?;
    Ok(file.to_string())
}

/// Every plot that the results have data for; each entry is the file name or why not.
pub fn draw_all(out: &Path, results: &Results) -> Vec<Result<String, String>> {
    let mut plots = Vec::new();
    if let Some(s) = find(results, "overhead-saturated") {
        plots.push(figure_bars(
            out,
            "throughput.svg",
            "Saturated throughput (higher is better)",
            "requests / s",
            s,
            &[("rps", "coremesh-bench load"), ("wrk_rps", "wrk")],
        ));
    }
    if let Some(s) = find(results, "overhead-fixed-rate") {
        plots.push(latency_plot(
            out,
            "latency-fixed-rate.svg",
            "Latency at a fixed rate, by percentile",
            s,
            "fixed_rate",
        ));
    }
    if let Some(s) = find(results, "cpu") {
        plots.push(figure_bars(
            out,
            "cpu-per-request.svg",
            "Proxy CPU time per request (lower is better)",
            "µs of CPU / request",
            s,
            &[("cpu_us_per_req", "CPU µs / request")],
        ));
    }
    if let Some(s) = find(results, "shared-core") {
        plots.push(figure_bars(
            out,
            "shared-core-cpu.svg",
            "Shared core: proxy CPU time per request (lower is better)",
            "µs of CPU / request",
            s,
            &[("cpu_us_per_req", "CPU µs / request")],
        ));
    }
    for (key, title) in [
        ("slow", "Slow endpoint: client latency by percentile"),
        ("flaky", "Flaky endpoint: client latency by percentile"),
        ("dead", "Dead endpoint: client latency by percentile"),
    ] {
        if let Some(s) = find(results, key) {
            plots.push(latency_plot(
                out,
                &format!("latency-{key}.svg"),
                title,
                s,
                key,
            ));
        }
    }
    if let Some(s) = find(results, crate::compare::load_sweep::KEY) {
        let file = "latency-vs-load.svg";
        let bound = results.plan.knee_p99_us;
        let label = format!("knee bound {}", short(bound));
        plots.push(
            lines(
                &out.join(file),
                "p99 against offered rate (open loop, coordinated omission corrected)",
                "offered requests / s",
                "p99 latency (µs)",
                &crate::compare::load_sweep::p99_series(s),
                Some((bound, &label)),
            )
            .map(|()| file.to_string()),
        );
    }
    if let Some(s) = find(results, "memory") {
        plots.push(figure_bars(
            out,
            "memory.svg",
            "Resident memory (lower is better)",
            "MiB",
            s,
            &[
                ("rss_idle_mib", "idle"),
                ("rss_conns_mib", "with idle connections"),
            ],
        ));
    }
    plots
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_contenders_get_distinct_colours() {
        let names = ["direct", "coremesh", "pingora", "nginx", "envoy", "haproxy"];
        let colours: Vec<RGBColor> = names.iter().map(|n| color_of(n, &names)).collect();
        for (i, a) in colours.iter().enumerate() {
            for (j, b) in colours.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "{} and {} share a colour", names[i], names[j]);
            }
        }
        // The built-in contenders keep theirs.
        assert_eq!(color_of("coremesh", &names), PALETTE[0]);
        assert_eq!(color_of("nginx", &names), PALETTE[2]);
        assert_eq!(color_of("haproxy", &names), PALETTE[1]);
    }

    #[test]
    fn labels() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(short(61234.0), "61.2k");
        assert_eq!(short(5.0), "5.00");
    }

    #[test]
    fn draws_svg_without_fonts() {
        let dir = std::env::temp_dir().join(format!("coremesh-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let b = dir.join("b.svg");
        bars(
            &b,
            "t",
            "y",
            &["coremesh".into(), "nginx".into()],
            &[
                ("a".into(), vec![Some(1.0), Some(2.0)]),
                ("b".into(), vec![None, Some(3.0)]),
            ],
        )
        .expect("bars");
        let p = dir.join("p.svg");
        percentiles(
            &p,
            "t",
            &[(
                "coremesh".into(),
                vec![[0.0, 10.0], [90.0, 20.0], [99.0, 40.0], [100.0, 50.0]],
            )],
        )
        .expect("percentiles");
        for f in [b, p] {
            let text = std::fs::read_to_string(&f).expect("svg");
            assert!(text.starts_with("<svg"));
            assert!(text.contains("<text"));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
