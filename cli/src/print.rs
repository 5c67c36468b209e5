//! What `sealer` prints: tables, reports and sizes for people, JSON where asked.

use sealer_builder::{discover, inspect};

/// The report as the last JSON line (`--json`).
pub(crate) fn print_report_json(
    cluster: &sealer_installer::clusterfile::Cluster,
    r: &sealer_installer::run::Report,
) {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["event"] = "summary".into();
    v["image"] = cluster.image.clone().into();
    println!("{v}");
}

/// The report for people: one line, then (unless `quiet`) one per host that was sent
/// something: how much, how long, and from whom.
pub(crate) fn print_report(
    cluster: &sealer_installer::clusterfile::Cluster,
    r: &sealer_installer::run::Report,
    quiet: bool,
) {
    eprintln!(
        "{} on {} host(s): {} blob(s) sent ({}), {} loaded into the registry{}; {} left this machine; {:.1}s",
        cluster.image,
        r.hosts,
        r.blobs_sent,
        human_size(r.bytes_sent),
        r.registry_blobs_loaded,
        if r.launched { ", launched" } else { "" },
        human_size(r.bytes_from_control),
        r.seconds,
    );
    if quiet {
        return;
    }
    for (ip, t) in r.per_host.iter().filter(|(_, t)| t.bytes > 0) {
        let from = t.from.map_or("this machine".to_string(), |f| f.to_string());
        eprintln!(
            "  {ip}: {} in {:.1}s, from {from}",
            human_size(t.bytes),
            t.seconds
        );
    }
}

pub(crate) fn print_images(rows: &[inspect::ImageSummary]) {
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let tag_w = rows.iter().map(|r| r.tag.len()).max().unwrap_or(3).max(3);
    println!(
        "{:name_w$}  {:tag_w$}  {:12}  {:24}  {:>10}  IMAGES",
        "NAME", "TAG", "DIGEST", "PLATFORMS", "SIZE"
    );
    for r in rows {
        let digest = r
            .digest
            .split(':')
            .nth(1)
            .unwrap_or("")
            .get(..12)
            .unwrap_or("");
        let images = if r.cloud_image {
            r.container_images.to_string()
        } else {
            "-".into()
        };
        println!(
            "{:name_w$}  {:tag_w$}  {digest:12}  {:24}  {:>10}  {images}",
            r.name,
            r.tag,
            r.platforms.join(","),
            human_size(r.size),
        );
    }
}

pub(crate) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn print_discovery(found: &discover::Discovery, json: bool) -> anyhow::Result<()> {
    let place = discover::Place::to_string;
    if json {
        let images: Vec<_> = found
            .images
            .iter()
            .map(|(image, places)| {
                serde_json::json!({
                    "image": image,
                    "places": places,
                })
            })
            .collect();
        let problems: Vec<_> = found
            .problems
            .iter()
            .map(|p| {
                serde_json::json!({
                    "file": sealer_builder::printable::path(&p.place.file),
                    "line": p.place.line,
                    "message": p.message,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"images": images, "problems": problems})
            )?
        );
        return Ok(());
    }
    let width = found
        .images
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(5)
        .max(5);
    println!("{:width$}  FROM", "IMAGE");
    for (image, places) in &found.images {
        let more = match places.len() {
            1 => String::new(),
            n => format!(" (+{} more)", n - 1),
        };
        println!("{image:width$}  {}{more}", place(&places[0]));
    }
    for p in &found.problems {
        eprintln!("{p}");
    }
    Ok(())
}
