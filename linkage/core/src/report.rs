//! `report.html`: the quality report of a scored link run (SPEC.md §9.7). One standalone
//! file: inline CSS and SVG, no script from elsewhere, no network. Built from the
//! `summary.json` value only, so the report shows exactly what the summary says.

use std::fmt::Write as _;

use serde_json::Value;

/// HTML-escapes text for element content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// A ratio to four places, or "not identifiable" for a withheld estimate (SPEC.md §9.4).
fn ratio(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "not identifiable".to_owned(), |x| format!("{x:.4}"))
}

/// The recall of an estimate object (`estimated` or one `by_holder_pair[]` entry): the
/// figure, or "not identifiable (≤ upper bound)" where the model cannot see the matches.
fn recall_cell(est: &Value) -> String {
    match (est["recall"].as_f64(), est["recall_upper_bound"].as_f64()) {
        (Some(x), _) => format!("{x:.4}"),
        (None, Some(b)) => format!("not identifiable (≤ {b:.4})"),
        (None, None) => "not identifiable".to_owned(),
    }
}

fn fmt_count(n: f64) -> String {
    let s = format!("{}", n.round() as i64);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const W: f64 = 640.0;
const H: f64 = 240.0;
const ML: f64 = 56.0;
const MB: f64 = 36.0;
const MT: f64 = 12.0;
const MR: f64 = 16.0;

/// Vertical bar chart; `log` uses log10(1 + value) heights. `marker`: an x value to draw as a
/// dashed line (bars are placed by `x`).
fn bars(
    id: &str,
    title: &str,
    data: &[(f64, f64, String)],
    log: bool,
    marker: Option<f64>,
    xlabel: &str,
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="{id}" role="img" aria-label="{t}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
        t = esc(title)
    );
    if data.is_empty() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return s;
    }
    let (x0, x1) = data.iter().fold((f64::MAX, f64::MIN), |(a, b), d| {
        (a.min(d.0), b.max(d.0 + 1.0))
    });
    let (x0, x1) = match marker {
        Some(m) => (x0.min(m), x1.max(m)),
        None => (x0, x1),
    };
    let h = |v: f64| if log { (1.0 + v).log10() } else { v };
    let ymax = data.iter().map(|d| h(d.1)).fold(0.0f64, f64::max).max(1e-9);
    let pw = W - ML - MR;
    let ph = H - MT - MB;
    let sx = |x: f64| ML + (x - x0) / (x1 - x0).max(1e-9) * pw;
    let bw = (pw / (x1 - x0).max(1.0)).max(1.0);
    let _ = write!(
        s,
        r##"<line x1="{ML}" y1="{y}" x2="{x2}" y2="{y}" stroke="#444"/>"##,
        y = MT + ph,
        x2 = W - MR
    );
    let _ = write!(
        s,
        r##"<line x1="{ML}" y1="{MT}" x2="{ML}" y2="{y}" stroke="#444"/>"##,
        y = MT + ph
    );
    for d in data {
        let bh = h(d.1) / ymax * ph;
        let _ = write!(
            s,
            r##"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="#3b6ea5"><title>{}: {}</title></rect>"##,
            sx(d.0),
            MT + ph - bh,
            (bw - 0.5).max(0.5),
            bh,
            esc(&d.2),
            fmt_count(d.1)
        );
    }
    // Axis labels: a few x ticks, y max.
    let ticks = 6;
    for i in 0..=ticks {
        let x = x0 + (x1 - x0) * f64::from(i) / f64::from(ticks);
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{:.0}</text>"#,
            sx(x),
            MT + ph + 14.0,
            x
        );
    }
    let top = if log { 10f64.powf(ymax) - 1.0 } else { ymax };
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">0</text>"#,
        ML - 4.0,
        MT + 10.0,
        fmt_count(top),
        ML - 4.0,
        MT + ph
    );
    if log {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="start">log scale</text>"#,
            ML + 6.0,
            MT + 10.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        ML + pw / 2.0,
        H - 4.0,
        esc(xlabel)
    );
    if let Some(m) = marker {
        let _ = write!(
            s,
            r##"<line x1="{x:.2}" y1="{MT}" x2="{x:.2}" y2="{y:.2}" stroke="#c0392b" stroke-dasharray="4 3"/><text x="{x:.2}" y="{ty:.1}" font-size="11" fill="#c0392b" text-anchor="start"> threshold</text>"##,
            x = sx(m),
            y = MT + ph,
            ty = MT + 22.0
        );
    }
    s.push_str("</svg>");
    s
}

/// Line chart of estimated precision and recall against the match-weight threshold.
fn pr_chart(curve: &[Value], threshold: f64) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg id="pr-curve" role="img" aria-label="estimated precision and recall vs threshold" viewBox="0 0 {W} {H}" width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg"><title>estimated precision and recall vs threshold</title>"#
    );
    let pts: Vec<(f64, f64, f64)> = curve
        .iter()
        .map(|p| (num(&p["weight"]), num(&p["precision"]), num(&p["recall"])))
        .collect();
    if pts.is_empty() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">no data</text></svg>"#,
            W / 2.0,
            H / 2.0
        );
        return s;
    }
    let x0 = pts
        .iter()
        .map(|p| p.0)
        .fold(f64::MAX, f64::min)
        .max(-40.0)
        .min(threshold - 1.0);
    let x1 = pts
        .iter()
        .map(|p| p.0)
        .fold(f64::MIN, f64::max)
        .max(threshold + 1.0);
    let pw = W - ML - MR;
    let ph = H - MT - MB;
    let sx = |x: f64| ML + (x.clamp(x0, x1) - x0) / (x1 - x0).max(1e-9) * pw;
    let sy = |y: f64| MT + (1.0 - y) * ph;
    let _ = write!(
        s,
        r##"<line x1="{ML}" y1="{y}" x2="{x2}" y2="{y}" stroke="#444"/><line x1="{ML}" y1="{MT}" x2="{ML}" y2="{y}" stroke="#444"/>"##,
        y = MT + ph,
        x2 = W - MR
    );
    for (k, color, name) in [(1usize, "#2e7d32", "precision"), (2, "#6a1b9a", "recall")] {
        let mut d = String::new();
        for (i, p) in pts.iter().enumerate() {
            let y = if k == 1 { p.1 } else { p.2 };
            let _ = write!(
                d,
                "{}{:.2},{:.2}",
                if i == 0 { "M" } else { " L" },
                sx(p.0),
                sy(y)
            );
        }
        let _ = write!(
            s,
            r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="2"><title>estimated {name}</title></path>"#
        );
    }
    for i in 0..=4 {
        let y = f64::from(i) / 4.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{y:.2}</text>"#,
            ML - 4.0,
            sy(y) + 4.0
        );
    }
    for i in 0..=6 {
        let x = x0 + (x1 - x0) * f64::from(i) / 6.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{x:.0}</text>"#,
            sx(x),
            MT + ph + 14.0
        );
    }
    let _ = write!(
        s,
        r##"<line x1="{x:.2}" y1="{MT}" x2="{x:.2}" y2="{y:.2}" stroke="#c0392b" stroke-dasharray="4 3"/><text x="{lx:.1}" y="{ly:.1}" font-size="12" fill="#2e7d32">— precision</text><text x="{lx:.1}" y="{ly2:.1}" font-size="12" fill="#6a1b9a">— recall</text><text x="{cx:.1}" y="{by:.1}" font-size="12" text-anchor="middle">match weight threshold (bits)</text></svg>"##,
        x = sx(threshold),
        y = MT + ph,
        lx = ML + 10.0,
        ly = MT + ph - 30.0,
        ly2 = MT + ph - 14.0,
        cx = ML + pw / 2.0,
        by = H - 4.0
    );
    s
}

/// Horizontal bars of m and u for each level of one comparison, with the weight.
fn mu_chart(i: usize, c: &Value) -> String {
    let levels = c["levels"].as_array().cloned().unwrap_or_default();
    let rows: Vec<&Value> = levels.iter().filter(|l| !l["m"].is_null()).collect();
    let row_h = 22.0;
    let lw = 200.0;
    let h = MT + row_h * rows.len() as f64 + 28.0;
    let mut s = String::new();
    let name = esc(c["name"].as_str().unwrap_or(""));
    let _ = write!(
        s,
        r#"<svg id="mu-{i}" role="img" aria-label="m and u of {name}" viewBox="0 0 {W} {h}" width="{W}" height="{h}" xmlns="http://www.w3.org/2000/svg"><title>m and u probabilities of comparison {name}</title>"#
    );
    let bw = W - lw - 110.0;
    for (k, l) in rows.iter().enumerate() {
        let y = MT + row_h * k as f64;
        let (m, u) = (num(&l["m"]), num(&l["u"]));
        let _ = write!(
            s,
            r##"<text x="{tx:.1}" y="{ty:.1}" font-size="11" text-anchor="end">{label}</text><rect x="{lw}" y="{y1:.1}" width="{mw:.2}" height="8" fill="#2e7d32"><title>m = {m:.6}</title></rect><rect x="{lw}" y="{y2:.1}" width="{uw:.2}" height="8" fill="#e67e22"><title>u = {u:.3e}</title></rect><text x="{wx:.1}" y="{ty:.1}" font-size="11">{w:+.2} bits</text>"##,
            tx = lw - 6.0,
            ty = y + 13.0,
            label = esc(l["label"].as_str().unwrap_or("")),
            y1 = y + 2.0,
            y2 = y + 10.0,
            mw = (m * bw).max(0.5),
            uw = (u * bw).max(0.5),
            wx = lw + bw + 8.0,
            w = num(&l["weight"])
        );
    }
    let _ = write!(
        s,
        r##"<text x="{lw}" y="{y:.1}" font-size="11"><tspan fill="#2e7d32">■ m (matches)</tspan>  <tspan fill="#e67e22">■ u (non-matches)</tspan></text></svg>"##,
        y = h - 8.0
    );
    s
}

/// The report of a scored run as one HTML document (a run without `[scoring]` has none: the
/// page then says so).
pub fn render(summary: &crate::engine::Summary) -> String {
    render_json(&summary.to_json())
}

/// The report from a `summary.json` value (as [`crate::engine::Summary::to_json`] gives it, or
/// as read back from the file).
pub fn render_json(summary: &Value) -> String {
    let sc = &summary["scoring"];
    let est = &sc["estimated"];
    let threshold = num(&sc["threshold"]["weight"]);
    let mut h = String::new();
    h.push_str(r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>renketsu linkage report</title>"#);
    h.push_str(r#"<script>window.__errors=[];window.addEventListener("error",function(e){window.__errors.push(String(e.message));document.documentElement.setAttribute("data-js-errors",String(window.__errors.length));});</script>"#);
    h.push_str("<style>body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:980px;color:#222}h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}.big{font-size:20px;font-weight:600}.note{color:#555;font-size:12px}svg{display:block;margin:6px 0}</style></head><body>");
    let _ = write!(
        h,
        "<h1>renketsu linkage report</h1><p>project <b>{}</b> · schema <b>{}</b> v{} · renketsu {} · today {}</p>",
        esc(summary["project"].as_str().unwrap_or("")),
        esc(summary["schema"]["name"].as_str().unwrap_or("")),
        summary["schema"]["version"],
        esc(summary["renketsu_version"].as_str().unwrap_or("")),
        esc(summary["today"].as_str().unwrap_or(""))
    );
    let _ = write!(
        h,
        r#"<h2>Estimated quality (from the model, no ground truth)</h2><table id="estimated"><tr><th>precision</th><th>recall</th><th>F1</th><th>output pairs</th><th>expected true pairs</th><th>expected matches</th></tr><tr><td class="big">{:.4}</td><td class="big">{}</td><td class="big">{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>"#,
        num(&est["precision"]),
        recall_cell(est),
        ratio(&est["f1"]),
        fmt_count(num(&est["output_pairs"])),
        fmt_count(num(&est["expected_true_pairs"])),
        fmt_count(num(&est["matches"]))
    );
    if let Some(note) = est["recall_note"].as_str() {
        let _ = write!(
            h,
            r#"<p class="note" id="recall-note">Recall: {}.</p>"#,
            esc(note)
        );
    }
    let _ = write!(
        h,
        r#"<p>Threshold <b>{:.2} bits</b> (match probability {:.4}; {}). Prior log-odds {:.2} bits; EM {} iterations over {} patterns{}; u from {} random pairs; {} candidate pairs, {} above the threshold; clustering {} ({} merges, {} vetoed: same holder, {} vetoed: conflict).</p>"#,
        threshold,
        num(&sc["threshold"]["probability"]),
        esc(sc["threshold"]["source"].as_str().unwrap_or("")),
        num(&sc["prior_bits"]),
        sc["em"]["iterations"],
        sc["em"]["patterns"],
        if sc["em"]["converged"].as_bool() == Some(false) {
            " (not converged)"
        } else {
            ""
        },
        fmt_count(num(&sc["random_pairs"])),
        fmt_count(num(&sc["candidates"]["pairs"])),
        fmt_count(num(&sc["links_above_threshold"])),
        esc(sc["clustering"]["mode"].as_str().unwrap_or("")),
        fmt_count(num(&sc["clustering"]["merges"])),
        fmt_count(num(&sc["clustering"]["vetoed_same_holder"])),
        fmt_count(num(&sc["clustering"]["vetoed_conflict"]))
    );
    if let Some(pairs) = est["by_holder_pair"].as_array() {
        h.push_str(r#"<table id="holder-pairs"><tr><th class="l">holders</th><th>output pairs</th><th>est. precision</th><th>est. recall</th><th>est. F1</th></tr>"#);
        for p in pairs {
            let _ = write!(
                h,
                r#"<tr><td class="l">{} – {}</td><td>{}</td><td>{:.4}</td><td>{}</td><td>{}</td></tr>"#,
                esc(p["party_a"].as_str().unwrap_or("")),
                esc(p["party_b"].as_str().unwrap_or("")),
                fmt_count(num(&p["output_pairs"])),
                num(&p["precision"]),
                recall_cell(p),
                ratio(&p["f1"])
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Match weights of the candidate pairs</h2>");
    let hist: Vec<(f64, f64, String)> = sc["weight_histogram"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| {
                    let x = num(&b[0]);
                    (x, num(&b[1]), format!("[{x}, {}) bits", x + 1.0))
                })
                .collect()
        })
        .unwrap_or_default();
    h.push_str(&bars(
        "weight-histogram",
        "match weight histogram",
        &hist,
        true,
        Some(threshold),
        "match weight (bits, prior included)",
    ));
    h.push_str("<h2>Estimated precision and recall vs threshold</h2>");
    h.push_str(&pr_chart(
        sc["curve"].as_array().map_or(&[][..], |v| v.as_slice()),
        threshold,
    ));
    h.push_str(r#"<p class="note">Precision: Σ P(match) / links above the threshold; recall: Σ P(match) above the threshold / all expected matches (Fellegi–Sunter posterior, SPEC.md §9.4).</p>"#);
    h.push_str("<h2>m and u per comparison level</h2>");
    if let Some(cs) = sc["comparisons"].as_array() {
        for (i, c) in cs.iter().enumerate() {
            let _ = write!(
                h,
                "<h3>{}{}{}</h3>",
                esc(c["name"].as_str().unwrap_or("")),
                if c["tf"].as_bool() == Some(true) {
                    " · term-frequency adjusted"
                } else {
                    ""
                },
                if c["conflict"].as_bool() == Some(true) {
                    " · conflict guard"
                } else {
                    ""
                }
            );
            h.push_str(&mu_chart(i, c));
            h.push_str(r#"<table><tr><th class="l">level</th><th>m</th><th>u</th><th>weight (bits)</th><th>candidates</th><th>random pairs</th></tr>"#);
            for l in c["levels"].as_array().map_or(&[][..], |v| v.as_slice()) {
                let f = |v: &Value, e: bool| {
                    if v.is_null() {
                        "–".to_owned()
                    } else if e {
                        format!("{:.3e}", num(v))
                    } else {
                        format!("{:.4}", num(v))
                    }
                };
                let _ = write!(
                    h,
                    r#"<tr><td class="l">{}</td><td>{}</td><td>{}</td><td>{:+.2}</td><td>{}</td><td>{}</td></tr>"#,
                    esc(l["label"].as_str().unwrap_or("")),
                    f(&l["m"], false),
                    f(&l["u"], true),
                    num(&l["weight"]),
                    fmt_count(num(&l["candidates"])),
                    fmt_count(num(&l["random_pairs"]))
                );
            }
            h.push_str("</table>");
        }
    }
    h.push_str("<h2>Cluster sizes</h2>");
    let sizes: Vec<(f64, f64, String)> = sc["cluster_sizes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| (num(&b[0]), num(&b[1]), format!("{} records", b[0])))
                .collect()
        })
        .unwrap_or_default();
    h.push_str(&bars(
        "cluster-sizes",
        "cluster size distribution",
        &sizes,
        true,
        None,
        "records per cluster",
    ));
    h.push_str("<h2>Holders</h2>");
    h.push_str(r#"<table id="holders"><tr><th class="l">holder</th><th>read</th><th>tokenized</th><th>rejected</th><th class="l">encoding</th></tr>"#);
    let mut rejects: Vec<(String, f64)> = Vec::new();
    for p in summary["parties"]
        .as_array()
        .map_or(&[][..], |v| v.as_slice())
    {
        let party = p["party"].as_str().unwrap_or("");
        let _ = write!(
            h,
            r#"<tr><td class="l">{}</td><td>{}</td><td>{}</td><td>{}</td><td class="l">{}</td></tr>"#,
            esc(party),
            fmt_count(num(&p["read"])),
            fmt_count(num(&p["tokenized"])),
            fmt_count(num(&p["rejected"])),
            esc(p["encoding"].as_str().unwrap_or(""))
        );
        if let Some(m) = p["rejects_by_reason"].as_object() {
            for (k, v) in m {
                rejects.push((format!("{party}: {k}"), num(v)));
            }
        }
    }
    h.push_str("</table><h2>Rejected rows by reason</h2>");
    if rejects.is_empty() {
        h.push_str(r#"<p id="rejects">No row was rejected.</p>"#);
    } else {
        let max = rejects.iter().map(|r| r.1).fold(1.0f64, f64::max);
        let rh = 22.0;
        let hh = rh * rejects.len() as f64 + 8.0;
        let _ = write!(
            h,
            r#"<svg id="rejects" role="img" aria-label="rejects by reason" viewBox="0 0 {W} {hh}" width="{W}" height="{hh}" xmlns="http://www.w3.org/2000/svg"><title>rejected rows by holder and reason</title>"#
        );
        for (i, (label, n)) in rejects.iter().enumerate() {
            let y = 4.0 + rh * i as f64;
            let _ = write!(
                h,
                r##"<text x="236" y="{ty:.1}" font-size="11" text-anchor="end">{l}</text><rect x="242" y="{y:.1}" width="{w:.2}" height="14" fill="#8e44ad"/><text x="{nx:.1}" y="{ty:.1}" font-size="11">{n}</text>"##,
                ty = y + 11.0,
                l = esc(label),
                w = (n / max * 300.0).max(1.0),
                nx = 248.0 + n / max * 300.0,
                n = fmt_count(*n)
            );
        }
        h.push_str("</svg>");
    }
    h.push_str(r#"<p class="note">This report contains counts and model parameters only: no identifier, token or record id. Sources: Fellegi &amp; Sunter (1969); Winkler (1988, 2000); Enamorado, Fifield &amp; Imai (2019).</p>"#);
    h.push_str(r#"<script>document.documentElement.setAttribute("data-svg-count",String(document.querySelectorAll("svg").length));</script></body></html>"#);
    h.push('\n');
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_in_names() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let summary = serde_json::json!({
            "project": "<script>", "schema": {"name": "s", "version": 1},
            "scoring": {"threshold": {"weight": 3.0}, "estimated": {}},
            "parties": [{"party": "a&b", "read": 2, "tokenized": 1, "rejected": 1, "rejects_by_reason": {"no_token": 1}}],
        });
        let html = render_json(&summary);
        assert!(!html.contains("<script>\""));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("a&amp;b: no_token"));
        assert_eq!(fmt_count(1234567.0), "1,234,567");
    }

    #[test]
    fn a_recall_that_is_not_identifiable_shows_its_bound_and_reason() {
        let pair = serde_json::json!({"party_a": "a", "party_b": "b", "output_pairs": 10,
            "precision": 0.99, "recall": null, "f1": null, "recall_identifiable": false,
            "recall_upper_bound": 0.9497, "recall_note": "matches that share no digest leave no evidence"});
        let mut est = pair.clone();
        est["by_holder_pair"] = serde_json::json!([pair]);
        let summary = serde_json::json!({
            "project": "p", "schema": {"name": "s", "version": 1},
            "scoring": {"threshold": {"weight": 3.0}, "estimated": est}, "parties": [],
        });
        let html = render_json(&summary);
        assert_eq!(
            html.matches("not identifiable (≤ 0.9497)").count(),
            2,
            "{html}"
        );
        assert!(html.contains(r#"id="recall-note">Recall: matches that share no digest"#));
        let known = serde_json::json!({"recall": 0.97, "recall_upper_bound": null});
        assert_eq!(recall_cell(&known), "0.9700");
    }
}
