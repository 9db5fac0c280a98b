//! The latency-versus-load plot and the knee table drawn from a fixed results file
//! (`tests/data/sweep/results.json`), as `coremesh-bench report DIR` does.

use std::path::Path;

#[test]
fn the_sweep_plot_and_knee_table_are_drawn_from_a_results_file() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/sweep/results.json");
    let dir =
        std::env::temp_dir().join(format!("coremesh-bench-sweep-plot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::copy(&fixture, dir.join("results.json")).expect("copy fixture");
    coremesh_bench::compare::rerender(&dir).expect("render");

    let svg = std::fs::read_to_string(dir.join("latency-vs-load.svg")).expect("plot drawn");
    assert!(svg.starts_with("<svg"));
    for name in ["direct", "coremesh", "nginx", "haproxy"] {
        // plotters writes each text on a line of its own.
        assert!(
            svg.lines().any(|l| l.trim() == name),
            "no legend entry for {name}"
        );
    }
    // One marker per step and contender: 11 steps × 4 contenders.
    assert_eq!(svg.matches("<circle").count(), 44);
    assert!(svg.lines().any(|l| l.trim() == "knee bound 5000"));

    let report = std::fs::read_to_string(dir.join("report.md")).expect("report");
    assert!(
        report.contains("| % of saturated | contender |"),
        "{report}"
    );
    assert!(
        report.contains("## Knee: highest rate with p99 under 5.0 ms"),
        "{report}"
    );
    // coremesh's knee: 90% of 70,000 req/s (p99 2400 µs; the next step is 6500 µs).
    assert!(
        report.contains("| coremesh | 70.0k | 63.0k | 90.0 | 2400 |"),
        "{report}"
    );
    assert!(
        report.contains("![latency-vs-load.svg](latency-vs-load.svg)"),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
