//! Results: a table on stdout, JSON for programs, and an HTML page with SVG
//! plots (throughput and latency over time, the latency distribution) for
//! people.

use std::fmt::Write as _;

use super::{BenchError, Report};

pub fn write(report: &Report) -> Result<(), BenchError> {
    std::fs::create_dir_all(&report.config.out_dir)?;
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let base = report.config.out_dir.join(format!("bench-{stamp}"));
    let json = serde_json::to_string_pretty(report).map_err(std::io::Error::other)?;
    std::fs::write(base.with_extension("json"), json)?;
    std::fs::write(base.with_extension("html"), html(report))?;
    println!("{}", table(report));
    println!("report: {}.{{json,html}}", base.display());
    Ok(())
}

pub fn table(report: &Report) -> String {
    let s = &report.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "op", "count", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    for (name, o) in s
        .per_op
        .iter()
        .map(|(n, o)| (n.as_str(), o))
        .chain([("total", &s.total)])
    {
        let _ = writeln!(
            out,
            "{name:<8} {:>9} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            o.count, o.per_sec, o.p50_ms, o.p90_ms, o.p99_ms, o.p999_ms, o.max_ms
        );
    }
    for (what, n) in &s.errors {
        let _ = writeln!(out, "errors: {what}: {n}");
    }
    if let Some(met) = report.rate_met {
        let _ = writeln!(
            out,
            "target rate {}: {}",
            report.config.rate.unwrap_or(0),
            if met {
                "met".to_owned()
            } else {
                format!("NOT met ({} requests could not start on time)", s.missed)
            }
        );
    }
    if let Some(l) = &report.live {
        let _ = writeln!(
            out,
            "live: {} subscribers, {} pushes ({:.0}/s), like-to-push p50 {:.2} ms p99 {:.2} ms ({} samples)",
            l.subscribers_connected,
            l.pushes_received,
            l.pushes_per_sec,
            l.like_to_push_p50_ms,
            l.like_to_push_p99_ms,
            l.like_to_push_samples
        );
    }
    let c = &report.consistency;
    let _ = writeln!(
        out,
        "consistency: {} ({} pairs, {} likes over {} posts, {} unknown outcomes read back, {:.1} s to drain)",
        c.verdict, c.pairs, c.likes_expected, c.posts_checked, c.resolved_unknown, c.drain_seconds
    );
    for d in &c.differences {
        let _ = writeln!(out, "  {d}");
    }
    out
}

/// A minimal line chart.
fn svg(title: &str, unit: &str, points: &[(f64, f64)]) -> String {
    let (w, h, pad) = (640.0, 240.0, 40.0);
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_y = points.iter().map(|p| p.1).fold(1e-9, f64::max);
    let path: Vec<String> = points
        .iter()
        .map(|(x, y)| {
            format!(
                "{:.1},{:.1}",
                pad + x / max_x * (w - 2.0 * pad),
                h - pad - y / max_y * (h - 2.0 * pad)
            )
        })
        .collect();
    format!(
        r##"<figure><figcaption>{title}</figcaption><svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{title}">
<rect x="0" y="0" width="{w}" height="{h}" fill="#fff"/>
<line x1="{pad}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/><line x1="{pad}" y1="{pad}" x2="{pad}" y2="{b}" stroke="#999"/>
<text x="{pad}" y="{t}" font-size="11">{max_y:.2} {unit}</text><text x="{r}" y="{lb}" font-size="11" text-anchor="end">{max_x:.0}</text>
<polyline fill="none" stroke="#c03" stroke-width="1.5" points="{}"/></svg></figure>"##,
        path.join(" "),
        b = h - pad,
        r = w - pad,
        t = pad - 8.0,
        lb = h - pad + 16.0,
    )
}

fn html(report: &Report) -> String {
    let s = &report.summary;
    let throughput: Vec<(f64, f64)> = s
        .timeline
        .iter()
        .map(|t| (t.second as f64, t.ops as f64))
        .collect();
    let p99: Vec<(f64, f64)> = s
        .timeline
        .iter()
        .map(|t| (t.second as f64, t.p99_ms))
        .collect();
    let dist: Vec<(f64, f64)> = s.distribution.clone();
    format!(
        "<!doctype html><meta charset=utf-8><title>Tally bench</title>\
         <style>body{{font:14px system-ui;margin:2em}}pre{{background:#f6f6f6;padding:1em}}</style>\
         <h1>Tally bench: {}</h1><pre>{}</pre>{}{}{}",
        report.config.target,
        table(report).replace('<', "&lt;"),
        svg(
            "Throughput (requests/s) per second of the run",
            "req/s",
            &throughput
        ),
        svg("p99 latency per second of the run", "ms", &p99),
        svg("Latency distribution (x: percentile)", "ms", &dist),
    )
}
