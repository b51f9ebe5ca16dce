//! `switchboard-bench report DIR`: merges the runs `scripts/bench.sh` wrote
//! (`DIR/<target>-<scenario>-<run>.json`) into `DIR/report.json` with
//! medians and switchboard/baseline ratios, and draws `DIR/report.svg`.
//!
//! A ratio is the median of the runs' own ratios: run N of switchboard
//! against run N of the baseline, measured a minute apart, so that the
//! machine's changing load cancels out where a ratio of medians over the
//! whole suite would not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;
use serde_json::{Map, Value, json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory holding the runs.
    dir: PathBuf,
}

/// target → scenario → field → run → value.
type Runs = BTreeMap<String, BTreeMap<String, BTreeMap<String, BTreeMap<u32, f64>>>>;

/// Figures compared between switchboard and the baseline, and whether more is better.
const COMPARED: [(&str, &str, bool); 19] = [
    ("fanout-rate", "latency_p99", false),
    ("fanout-rate", "server_cpu_per_delivery", false),
    ("fanout-flat", "deliveries_per_sec", true),
    ("fanout-flat", "server_cpu_per_delivery", false),
    ("fanout-flat-1x64-t1", "deliveries_per_sec", true),
    ("fanout-flat-1x64-t1", "server_cpu_per_delivery", false),
    ("fanout-flat-1x64-t1", "server_cpu_share", true),
    ("fanout-flat-1x64-t2", "deliveries_per_sec", true),
    ("fanout-flat-1x64-t2", "server_cpu_per_delivery", false),
    ("fanout-flat-1x64-t2", "server_cpu_share", true),
    ("fanout-flat-4x256-t1", "deliveries_per_sec", true),
    ("fanout-flat-4x256-t1", "server_cpu_per_delivery", false),
    ("fanout-flat-4x256-t1", "server_cpu_share", true),
    ("fanout-flat-4x256-t2", "deliveries_per_sec", true),
    ("fanout-flat-4x256-t2", "server_cpu_per_delivery", false),
    ("fanout-flat-4x256-t2", "server_cpu_share", true),
    ("echo", "round_trips_per_sec", true),
    ("echo", "latency_p99", false),
    ("idle", "server_rss_per_connection", false),
];

/// The Socket.IO peers, as `scripts/bench.sh` names them.
const SOCKETIO_PEERS: [&str; 2] = ["socketioxide", "nodesocketio"];

/// Socket.IO figures compared between switchboard and each peer, and
/// whether more is better.
const SOCKETIO_COMPARED: [(&str, &str, bool); 9] = [
    ("socketio-flat", "deliveries_per_sec", true),
    ("socketio-flat", "server_cpu_per_delivery", false),
    ("socketio-flat", "lost", false),
    ("socketio-rate", "latency_p99", false),
    ("socketio-rate", "server_cpu_per_delivery", false),
    ("socketio-rate", "lost", false),
    ("socketio-idle", "server_rss_per_connection", false),
    ("socketio-polling-rate", "latency_p99", false),
    ("socketio-polling-rate", "server_cpu_per_delivery", false),
];

/// Flat-out setups whose generator side is reported beside the ratios.
const FLAT_SETUPS: [&str; 5] = [
    "fanout-flat",
    "fanout-flat-1x64-t1",
    "fanout-flat-1x64-t2",
    "fanout-flat-4x256-t1",
    "fanout-flat-4x256-t2",
];

pub fn run(args: Args) -> anyhow::Result<()> {
    let runs = read_runs(&args.dir)?;
    let mut medians = Map::new();
    for (target, scenarios) in &runs {
        let mut per_scenario = Map::new();
        for (scenario, fields) in scenarios {
            let values: Map<String, Value> = fields
                .iter()
                .map(|(field, values)| {
                    let values: Vec<f64> = values.values().copied().collect();
                    (field.clone(), json!(median(&values)))
                })
                .collect();
            per_scenario.insert(scenario.clone(), Value::Object(values));
        }
        medians.insert(target.clone(), Value::Object(per_scenario));
    }
    let mut ratios = Map::new();
    println!(
        "{:<44} {:>14} {:>14} {:>8}",
        "figure (median of runs)", "switchboard", "baseline", "ratio"
    );
    for (scenario, field, _) in COMPARED {
        let ours = figure(&medians, "switchboard", scenario, field);
        let theirs = figure(&medians, "baseline", scenario, field);
        if let (Some(ours), Some(theirs), Some(ratio)) =
            (ours, theirs, paired_ratio(&runs, scenario, scenario, field))
        {
            println!(
                "{:<44} {ours:>14.2} {theirs:>14.2} {ratio:>8.2}",
                format!("{scenario} {field}")
            );
            ratios.insert(format!("{scenario}.{field}"), json!(ratio));
        }
    }
    if let Some(floor) = figure(&medians, "floor", "fanout-rate", "cpu_per_write") {
        let baseline = figure(
            &medians,
            "baseline",
            "fanout-rate",
            "server_cpu_per_delivery",
        );
        println!(
            "floor (one loopback write per delivery, no server): {floor:.2} µs CPU per write{}",
            baseline
                .map(|b| format!(
                    "; half the baseline's CPU per delivery is {:.2} µs",
                    b / 2.0
                ))
                .unwrap_or_default()
        );
    }
    // The fixed-rate fan-out again against switchboard, differently set up.
    for (scenario, setup) in [
        (
            "fanout-rate-tmpfs",
            "with the data dir on tmpfs (fsync costs nothing)",
        ),
        ("fanout-rate-before-ack", "with --sync before-ack"),
        (
            "fanout-rate-commit-interval",
            "with --commit-interval 10ms (about two messages per send)",
        ),
    ] {
        if let Some(rate) = medians.get("switchboard").and_then(|s| s.get(scenario)) {
            let field = "server_cpu_per_delivery";
            let ratio = paired_ratio(&runs, scenario, "fanout-rate", field);
            if let Some(ratio) = ratio {
                ratios.insert(format!("{scenario}.{field}"), json!(ratio));
            }
            println!(
                "fanout-rate {setup}: p50 {:.2} ms, p99 {:.2} ms, lost {}, {:.2} µs server CPU/delivery{}",
                rate["latency_p50"].as_f64().unwrap_or(0.0),
                rate["latency_p99"].as_f64().unwrap_or(0.0),
                rate["lost"],
                rate[field].as_f64().unwrap_or(0.0),
                ratio
                    .map(|r| format!(" ({r:.2} × the baseline's)"))
                    .unwrap_or_default(),
            );
        }
    }
    // What depends on the generator (its CPU, the bytes it reads) and the
    // server's own account of where a message spends its time.
    for scenario in FLAT_SETUPS.iter().chain(&["fanout-rate"]) {
        for target in ["switchboard", "baseline"] {
            let Some(run) = medians.get(target).and_then(|s| s.get(*scenario)) else {
                continue;
            };
            let value = |field: &str| run[field].as_f64().unwrap_or(0.0);
            let mut line = format!(
                "{scenario} {target}: server {:.2} cores, generator {:.2} cores, {:.0} B/delivery",
                value("server_cpu_share"),
                value("bench_cpu_share"),
                value("bytes_per_delivery"),
            );
            if run.get("hop_commit_p50").is_some() {
                line += &format!(
                    "; publish→commit p50/p99 {:.2}/{:.2} ms, commit→first write {:.2}/{:.2} ms, first→last write {:.2}/{:.2} ms, {:.1} msgs/commit",
                    value("hop_publish_to_commit_p50"),
                    value("hop_publish_to_commit_p99"),
                    value("hop_commit_to_first_write_p50"),
                    value("hop_commit_to_first_write_p99"),
                    value("hop_first_to_last_write_p50"),
                    value("hop_first_to_last_write_p99"),
                    value("batch_size_mean"),
                );
            }
            println!("{line}");
        }
    }
    if let Some(idle) = medians.get("switchboard").and_then(|s| s.get("idle-sse")) {
        println!(
            "idle SSE streams: {:.0} bytes per stream",
            idle["server_rss_per_connection"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(idle) = medians.get("switchboard").and_then(|s| s.get("idle-token")) {
        println!(
            "idle WebSockets with connection tokens (--auth token): {:.0} bytes per connection",
            idle["server_rss_per_connection"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(history) = medians.get("switchboard").and_then(|s| s.get("history")) {
        println!("durable publish: {} acked msgs/s", history["acked_per_sec"]);
    }
    // SSE subscribers, switchboard only (the baseline speaks WebSocket).
    for scenario in ["fanout-sse-rate", "fanout-sse-flat"] {
        if let Some(sse) = medians.get("switchboard").and_then(|s| s.get(scenario)) {
            println!(
                "{scenario}: {:.0} deliveries/s, p50 {:.2} ms, p99 {:.2} ms, lost {}, {:.2} µs server CPU/delivery",
                sse["deliveries_per_sec"].as_f64().unwrap_or(0.0),
                sse["latency_p50"].as_f64().unwrap_or(0.0),
                sse["latency_p99"].as_f64().unwrap_or(0.0),
                sse["lost"],
                sse["server_cpu_per_delivery"].as_f64().unwrap_or(0.0),
            );
        }
    }
    let socketio_ratios = socketio_section(&runs, &medians);
    let cluster = cluster_section(&runs, &medians);
    let report = json!({
        "runs": runs.values().flat_map(|s| s.values()).flat_map(|f| f.values()).map(BTreeMap::len).max().unwrap_or(0),
        "medians": medians,
        "ratios_switchboard_over_baseline": ratios,
        "socketio_ratios_switchboard_over": socketio_ratios,
        "cluster": cluster,
    });
    let json_path = args.dir.join("report.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)?;
    let svg_path = args.dir.join("report.svg");
    draw(&report["medians"], &svg_path)?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    if report["medians"]["switchboard"]
        .get("socketio-flat")
        .is_some()
    {
        let svg_path = args.dir.join("socketio.svg");
        draw_socketio(&report["medians"], &svg_path)?;
        println!("wrote {}", svg_path.display());
    }
    Ok(())
}

/// Socket.IO: switchboard beside the Socket.IO servers its users would
/// otherwise pick, and beside its own native protocol. Returns the ratios
/// (peer → figure → switchboard/peer, paired run by run).
fn socketio_section(runs: &Runs, medians: &Map<String, Value>) -> Map<String, Value> {
    let mut ratios = Map::new();
    if figure(
        medians,
        "switchboard",
        "socketio-flat",
        "deliveries_per_sec",
    )
    .is_none()
    {
        return ratios;
    }
    println!(
        "\n{:<44} {:>14} {:>14} {:>14} {:>9} {:>9}",
        "Socket.IO (median of runs)",
        "switchboard",
        "socketioxide",
        "node socket.io",
        "÷ sx",
        "÷ node"
    );
    for (scenario, field, _) in SOCKETIO_COMPARED {
        let cell = |target: &str| {
            figure(medians, target, scenario, field).map_or("-".to_owned(), |v| format!("{v:.2}"))
        };
        let mut line = format!(
            "{:<44} {:>14} {:>14} {:>14}",
            format!("{scenario} {field}"),
            cell("switchboard"),
            cell("socketioxide"),
            cell("nodesocketio"),
        );
        for peer in SOCKETIO_PEERS {
            let ratio = paired_ratio_of(runs, ("switchboard", scenario), (peer, scenario), field);
            line += &ratio.map_or(format!(" {:>9}", "-"), |r| format!(" {r:>9.3}"));
            if let Some(ratio) = ratio {
                let entry = ratios.entry(peer).or_insert_with(|| json!({}));
                entry[format!("{scenario}.{field}")] = json!(ratio);
            }
        }
        println!("{line}");
    }
    // Socket.IO over WebSocket against the native protocol, same process.
    for (scenario, native) in [
        ("socketio-flat", "fanout-flat"),
        ("socketio-rate", "fanout-rate"),
    ] {
        let field = "server_cpu_per_delivery";
        if let Some(ratio) = paired_ratio_of(
            runs,
            ("switchboard", scenario),
            ("switchboard", native),
            field,
        ) {
            println!("{scenario}: CPU per delivery {ratio:.3} × the native protocol's ({native})");
            let entry = ratios.entry("native").or_insert_with(|| json!({}));
            entry[format!("{scenario}.{field}")] = json!(ratio);
        }
    }
    ratios
}

/// The cross-node deployments, as `scripts/bench.sh` names them: one node
/// on the embedded engine, two on Redis, and two Node socket.io servers on
/// Redis (`@socket.io/redis-adapter`).
const CLUSTER_TARGETS: [(&str, &str); 3] = [
    ("switchboard", "1 node, embedded"),
    ("switchboard-redis", "2 nodes, Redis"),
    ("nodesocketio-redis", "node socket.io ×2"),
];

/// Cross-node figures, and the same load on one node.
const CLUSTER_FIGURES: [(&str, &str); 12] = [
    ("cluster-rate", "latency_p50"),
    ("cluster-rate", "latency_p99"),
    ("cluster-rate", "server_cpu_per_delivery"),
    ("cluster-rate", "lost"),
    ("cluster-rate", "redis_scripts_per_message"),
    ("cluster-flat", "deliveries_per_sec"),
    ("cluster-flat", "lost"),
    ("cluster-flat", "redis_scripts_per_message"),
    ("cluster-socketio-rate", "latency_p99"),
    ("cluster-socketio-flat", "deliveries_per_sec"),
    ("cluster-socketio-flat", "lost"),
    ("cluster-socketio-flat", "out_of_order"),
];

/// Many nodes on Redis beside one node and beside the Node pair: the table,
/// and the figures the targets are set on (p99 above one node's, paired
/// run by run; deliveries/s over the Node pair's; Redis scripts per
/// published message).
fn cluster_section(runs: &Runs, medians: &Map<String, Value>) -> Map<String, Value> {
    let mut cluster = Map::new();
    if figure(medians, "switchboard-redis", "cluster-rate", "latency_p99").is_none() {
        return cluster;
    }
    let mut header = format!("\n{:<44}", "cross-node (median of runs)");
    for (_, name) in CLUSTER_TARGETS {
        header += &format!(" {name:>18}");
    }
    println!("{header}");
    for (scenario, field) in CLUSTER_FIGURES {
        let mut line = format!("{:<44}", format!("{scenario} {field}"));
        for (target, _) in CLUSTER_TARGETS {
            let cell = figure(medians, target, scenario, field)
                .map_or("-".to_owned(), |v| format!("{v:.2}"));
            line += &format!(" {cell:>18}");
        }
        println!("{line}");
    }
    // p99 above one node's, run by run.
    let of = |target: &str, scenario: &str, field: &str| {
        runs.get(target)?.get(scenario)?.get(field).cloned()
    };
    if let (Some(redis), Some(single)) = (
        of("switchboard-redis", "cluster-rate", "latency_p99"),
        of("switchboard", "cluster-rate", "latency_p99"),
    ) {
        let above: Vec<f64> = redis
            .iter()
            .filter_map(|(run, p99)| Some(p99 - single.get(run)?))
            .collect();
        if !above.is_empty() {
            let above = median(&above);
            println!("cross-node p99 above one node's: {above:.2} ms (target ≤ 2 ms)");
            cluster.insert("p99_above_single_node_ms".into(), json!(above));
        }
    }
    if let Some(ratio) = paired_ratio_of(
        runs,
        ("switchboard-redis", "cluster-socketio-flat"),
        ("nodesocketio-redis", "cluster-socketio-flat"),
        "deliveries_per_sec",
    ) {
        println!("cross-node Socket.IO deliveries/s: {ratio:.2} × the Node pair's (target ≥ 5)");
        cluster.insert("socketio_flat_over_node_pair".into(), json!(ratio));
    }
    for scenario in ["cluster-rate", "cluster-flat"] {
        if let Some(scripts) = figure(
            medians,
            "switchboard-redis",
            scenario,
            "redis_scripts_per_message",
        ) {
            println!(
                "{scenario}: {scripts:.3} Redis round trips (appends) per published message (target ≤ 1)"
            );
            cluster.insert(
                format!("{scenario}.redis_scripts_per_message"),
                json!(scripts),
            );
        }
    }
    cluster
}

/// Two panels: flat-out deliveries/s and fixed-rate CPU per delivery, for
/// switchboard and the two Socket.IO peers.
fn draw_socketio(medians: &Value, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let targets = [
        ("switchboard", RGBColor(31, 119, 180)),
        ("socketioxide", RGBColor(44, 160, 44)),
        ("nodesocketio", RGBColor(214, 39, 40)),
    ];
    let figures = [
        (
            "Socket.IO fan-out flat out, 1,000 subscribers (M deliveries/s)",
            "socketio-flat",
            "deliveries_per_sec",
            1e6,
        ),
        (
            "server CPU per delivery at 200 msgs/s (µs)",
            "socketio-rate",
            "server_cpu_per_delivery",
            1.0,
        ),
    ];
    for (panel, (caption, scenario, field, scale)) in panels.iter().zip(figures) {
        let value = |t: &str| medians[t][scenario][field].as_f64().unwrap_or(0.0) / scale;
        let max = targets.iter().map(|(t, _)| value(t)).fold(0.001, f64::max);
        let mut chart = ChartBuilder::on(panel)
            .caption(caption, ("sans-serif", 15))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..3.0, 0.0..max * 1.15)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(3)
            .x_label_formatter(&|x| {
                targets.get(*x as usize).map_or(String::new(), |(t, _)| {
                    t.replace("nodesocketio", "node socket.io")
                })
            })
            .draw()?;
        chart.draw_series(targets.iter().enumerate().map(|(x, (target, color))| {
            let x0 = x as f64 + 0.2;
            Rectangle::new([(x0, 0.0), (x0 + 0.6, value(target))], color.filled())
        }))?;
    }
    root.present()?;
    Ok(())
}

fn read_runs(dir: &Path) -> anyhow::Result<Runs> {
    let mut runs = Runs::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        // <target>-<scenario>-<run>, where scenario may hold a dash, and
        // so may the targets of the cross-node deployments.
        let split = CLUSTER_TARGETS
            .iter()
            .find_map(|(target, _)| {
                let rest = name.strip_prefix(target)?.strip_prefix('-')?;
                target.contains('-').then_some((*target, rest))
            })
            .or_else(|| name.split_once('-'));
        let Some((target, rest)) = split else {
            continue;
        };
        let Some((scenario, run)) = rest.rsplit_once('-') else {
            continue;
        };
        let Ok(run) = run.parse::<u32>() else {
            continue;
        };
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let result: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let fields = runs
            .entry(target.into())
            .or_default()
            .entry(scenario.into())
            .or_default();
        for (field, value) in result.as_object().into_iter().flatten() {
            if let Some(v) = value.as_f64() {
                fields.entry(field.clone()).or_default().insert(run, v);
            }
        }
    }
    Ok(runs)
}

/// The median over runs of switchboard's figure in `scenario` over the
/// baseline's in `against` in the same run; `None` if no run has both.
fn paired_ratio(runs: &Runs, scenario: &str, against: &str, field: &str) -> Option<f64> {
    paired_ratio_of(
        runs,
        ("switchboard", scenario),
        ("baseline", against),
        field,
    )
}

/// The median over runs of `ours` (target, scenario) over `theirs` in the
/// same run; `None` if no run has both.
fn paired_ratio_of(
    runs: &Runs,
    ours: (&str, &str),
    theirs: (&str, &str),
    field: &str,
) -> Option<f64> {
    let of = |(target, scenario): (&str, &str)| runs.get(target)?.get(scenario)?.get(field);
    let (ours, theirs) = (of(ours)?, of(theirs)?);
    // A figure of zero on their side (no loss) has no ratio.
    let ratios: Vec<f64> = ours
        .iter()
        .filter_map(|(run, ours)| Some(ours / theirs.get(run).filter(|t| **t != 0.0)?))
        .collect();
    (!ratios.is_empty()).then(|| median(&ratios))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

fn figure(medians: &Map<String, Value>, target: &str, scenario: &str, field: &str) -> Option<f64> {
    medians.get(target)?.get(scenario)?.get(field)?.as_f64()
}

/// Two panels: fan-out latency percentiles at a fixed rate, and throughput
/// per scenario, switchboard beside the baseline.
fn draw(medians: &Value, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let targets = [
        ("switchboard", RGBColor(31, 119, 180)),
        ("baseline", RGBColor(255, 127, 14)),
    ];

    let percentiles = ["latency_p50", "latency_p90", "latency_p99", "latency_p999"];
    let latency = |t: &str, p: &str| medians[t]["fanout-rate"][p].as_f64().unwrap_or(0.0);
    let max_latency = targets
        .iter()
        .flat_map(|(t, _)| percentiles.iter().map(move |p| latency(t, p)))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&left)
        .caption(
            "fan-out latency, 1,000 subscribers, 200 msgs/s (ms)",
            ("sans-serif", 16),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(0.0..4.0, 0.0..max_latency * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| {
            percentiles
                .get(*x as usize)
                .map_or(String::new(), |p| p.replace("latency_", ""))
        })
        .draw()?;
    for (i, (target, color)) in targets.iter().enumerate() {
        let offset = 0.1 + 0.4 * i as f64;
        chart
            .draw_series(percentiles.iter().enumerate().map(|(x, p)| {
                let x0 = x as f64 + offset;
                Rectangle::new([(x0, 0.0), (x0 + 0.38, latency(target, p))], color.filled())
            }))?
            .label(*target)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;

    let throughput = [
        (
            "fan-out flat out\n(M deliveries/s)",
            "fanout-flat",
            "deliveries_per_sec",
            1e6,
        ),
        (
            "echo\n(100k round trips/s)",
            "echo",
            "round_trips_per_sec",
            1e5,
        ),
    ];
    let value =
        |t: &str, s: &str, f: &str, scale: f64| medians[t][s][f].as_f64().unwrap_or(0.0) / scale;
    let max_value = targets
        .iter()
        .flat_map(|(t, _)| {
            throughput
                .iter()
                .map(move |(_, s, f, k)| value(t, s, f, *k))
        })
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&right)
        .caption("throughput (higher is better)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(0.0..2.0, 0.0..max_value * 1.15)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(2)
        .x_label_formatter(&|x| {
            throughput
                .get(*x as usize)
                .map_or(String::new(), |t| t.0.replace('\n', " "))
        })
        .draw()?;
    for (i, (target, color)) in targets.iter().enumerate() {
        let offset = 0.1 + 0.4 * i as f64;
        chart.draw_series(throughput.iter().enumerate().map(|(x, (_, s, f, k))| {
            let x0 = x as f64 + offset;
            Rectangle::new(
                [(x0, 0.0), (x0 + 0.38, value(target, s, f, *k))],
                color.filled(),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_runs() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn a_variant_is_paired_with_the_baselines_run_of_the_same_number() {
        let mut runs = Runs::new();
        let mut put = |target: &str, scenario: &str, values: [f64; 3]| {
            let field = runs
                .entry(target.into())
                .or_default()
                .entry(scenario.into())
                .or_default()
                .entry("server_cpu_per_delivery".into())
                .or_default();
            field.extend((1..).zip(values));
        };
        put(
            "switchboard",
            "fanout-rate-commit-interval",
            [2.0, 3.0, 1.0],
        );
        put("baseline", "fanout-rate", [4.0, 4.0, 4.0]);
        put("baseline", "fanout-rate-commit-interval", [1.0, 1.0, 1.0]);
        let ratio = paired_ratio(
            &runs,
            "fanout-rate-commit-interval",
            "fanout-rate",
            "server_cpu_per_delivery",
        );
        assert_eq!(ratio, Some(0.5));
        let missing = paired_ratio(
            &runs,
            "fanout-rate",
            "fanout-rate",
            "server_cpu_per_delivery",
        );
        assert_eq!(missing, None);
    }

    #[test]
    fn merges_runs_into_medians_ratios_and_a_chart() {
        let dir = std::env::temp_dir().join(format!("bench-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Run by run switchboard is 4, 1.5 and 1.67 times the baseline: the
        // ratio is the median of those, 1.67, not the ratio of the two
        // medians (4e6 over 2e6, taken from different runs).
        for (target, values) in [
            ("switchboard", [4e6, 3e6, 5e6]),
            ("baseline", [1e6, 2e6, 3e6]),
        ] {
            for (run, value) in values.iter().enumerate() {
                let f = json!({"deliveries_per_sec": value, "latency_p99": 5.0});
                std::fs::write(
                    dir.join(format!("{target}-fanout-flat-{}.json", run + 1)),
                    f.to_string(),
                )
                .unwrap();
            }
        }
        run(Args { dir: dir.clone() }).unwrap();
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap())
                .unwrap();
        assert_eq!(
            report["medians"]["switchboard"]["fanout-flat"]["deliveries_per_sec"],
            4e6
        );
        assert_eq!(
            report["medians"]["baseline"]["fanout-flat"]["deliveries_per_sec"],
            2e6
        );
        let ratio = report["ratios_switchboard_over_baseline"]["fanout-flat.deliveries_per_sec"]
            .as_f64()
            .unwrap();
        assert!((ratio - 5.0 / 3.0).abs() < 1e-9, "{ratio}");
        assert!(
            std::fs::read_to_string(dir.join("report.svg"))
                .unwrap()
                .starts_with("<svg")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
