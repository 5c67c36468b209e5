//! Container-image discovery: every image a CloudImage's files need, with the file and
//! line each one comes from.
//!
//! Sources, by file:
//! - `imageList` files: one image per line, `#` comments;
//! - YAML files (`*.yaml`, `*.yml`): every document; an `image:` field holding a reference
//!   (every container, init and ephemeral container of every workload kind, and custom
//!   resources), and the Helm values conventions: `image: {registry, repository, tag |
//!   digest}` and a mapping with `repository` plus `tag` or `digest`;
//! - a chart's `Chart.yaml`: the `helm.sh/images` and `artifacthub.io/images`
//!   annotations (a YAML list of `image:` entries); a chart's `values.yaml` uses the
//!   chart's `appVersion` for an empty tag;
//! - a chart's templates (Go templates, not YAML): `image:` lines holding a literal.
//!
//! What looks like an image but is not a valid reference, or is templated where nothing
//! renders it, is a [`Problem`]: nothing is dropped silently.

mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::distribution::Reference;

use yaml::Node;

/// Where an image was found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Place {
    /// Shown (and written as JSON) escaped by [`crate::printable::path`].
    #[serde(serialize_with = "crate::printable::serialize_path")]
    pub file: PathBuf,
    pub line: usize,
}

/// Something that names an image but cannot be used as one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    pub place: Place,
    pub message: String,
}

/// `file:line`, the file name escaped.
impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", crate::printable::path(&self.file), self.line)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.place, self.message)
    }
}

#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct Discovery {
    /// Fully qualified reference (`docker.io/library/nginx:1.25`) → every place naming it.
    pub images: BTreeMap<String, Vec<Place>>,
    pub problems: Vec<Problem>,
}

impl Discovery {
    fn found(&mut self, written: &str, place: Place) {
        let written = written.trim();
        if written.is_empty() {
            return;
        }
        if written.contains("{{") || written.contains("${") {
            self.problems.push(Problem {
                place,
                message: format!(
                    "templated image reference {written:?}: give the image in an imageList or with --image-list"
                ),
            });
            return;
        }
        match normalize(written) {
            Ok(reference) => {
                // An alias names its anchor's place again: list each place once.
                let places = self.images.entry(reference).or_default();
                if !places.contains(&place) {
                    places.push(place);
                }
            }
            Err(e) => self.problems.push(Problem {
                place,
                message: format!("{written:?} is not an image reference: {e}"),
            }),
        }
    }

    /// Adds what another discovery found.
    pub fn merge(&mut self, other: Discovery) {
        for (image, places) in other.images {
            self.images.entry(image).or_default().extend(places);
        }
        self.problems.extend(other.problems);
    }

    /// Renames places under the scratch folder `dir` (an unpacked archive, the root
    /// folder of a `RUN`) to `label` + their path in the image, which users recognise.
    pub fn relocate(&mut self, dir: &Path, label: &str) {
        let rename = |p: &mut Place| {
            if let Ok(rel) = p.file.strip_prefix(dir) {
                p.file = PathBuf::from(format!("{label}/{}", rel.display()));
            }
        };
        self.images.values_mut().flatten().for_each(rename);
        self.problems.iter_mut().for_each(|p| rename(&mut p.place));
    }

    /// Drops the images `ignored` names (in any form: `nginx` is `docker.io/library/nginx:latest`).
    pub fn ignore(&mut self, ignored: &[String]) -> Result<(), String> {
        for i in ignored {
            let reference = normalize(i).map_err(|e| format!("--ignore-image {i:?}: {e}"))?;
            self.images.remove(&reference);
        }
        Ok(())
    }
}

/// The fully qualified form of an image reference: registry, repository (Docker Hub's
/// `library/` included), tag (default `latest`) and/or digest.
pub fn normalize(written: &str) -> Result<String, String> {
    let r = Reference::try_from(written).map_err(|e| e.to_string())?;
    let mut out = format!("{}/{}", r.registry(), r.repository());
    if let Some(tag) = r.tag() {
        out.push(':');
        out.push_str(tag);
    }
    if let Some(digest) = r.digest() {
        out.push('@');
        out.push_str(digest);
    }
    Ok(out)
}

/// Scans every file under `root` (in name order, so the result is stable).
pub fn scan_dir(root: &Path) -> std::io::Result<Discovery> {
    let mut files = Vec::new();
    walk(root, &mut files)?;
    scan_files(files)
}

/// Scans a file or, for a folder, every file under it.
pub fn scan_path(path: &Path) -> std::io::Result<Discovery> {
    if path.is_dir() {
        scan_dir(path)
    } else {
        scan_files(vec![path.to_path_buf()])
    }
}

/// Scans the given files (in name order); each is read as what its name and place say it
/// is (an `imageList`, a chart's `Chart.yaml`, values or template, or a YAML manifest).
pub fn scan_files(mut files: Vec<PathBuf>) -> std::io::Result<Discovery> {
    let mut found = Discovery::default();
    let mut charts = Vec::new();
    files.sort();
    for file in files {
        let Some(name) = file.file_name().map(|n| n.to_string_lossy()) else {
            continue;
        };
        let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        let chart = chart_root(&file);
        let in_templates = chart.is_some()
            && file
                .parent()
                .is_some_and(|p| p.ancestors().any(|a| a.ends_with("templates")));
        let kind = if name == "imageList" {
            Kind::ImageList
        } else if name == "Chart.yaml" {
            Kind::ChartYaml
        } else if in_templates && (is_yaml || name.ends_with(".tpl")) {
            Kind::Template
        } else if is_yaml {
            Kind::Yaml
        } else {
            continue;
        };
        let Some(text) = read_text(&file, &mut found)? else {
            continue;
        };
        let app_version = match (&kind, &chart) {
            (Kind::Yaml, Some(c)) if name == "values.yaml" => app_version(c),
            _ => None,
        };
        if matches!(kind, Kind::ChartYaml)
            && let Some(chart) = file.parent()
        {
            charts.push(chart.to_path_buf());
        }
        found.merge(match kind {
            Kind::ImageList => scan_image_list(&file, &text),
            Kind::ChartYaml => scan_chart_yaml(&file, &text),
            Kind::Template => scan_template(&file, &text),
            Kind::Yaml => scan_yaml(&file, &text, app_version.as_deref()),
        });
    }
    if let Some(helm) = helm_binary() {
        for chart in charts {
            found.merge(render_chart(&helm, &chart));
        }
    }
    Ok(found)
}

/// A file's text; one that is not UTF-8 is a problem naming it (its images cannot be
/// read), and an I/O error names the file.
fn read_text(file: &Path, found: &mut Discovery) -> std::io::Result<Option<String>> {
    let bytes = std::fs::read(file).map_err(|e| {
        std::io::Error::new(e.kind(), format!("{}: {e}", crate::printable::path(file)))
    })?;
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(e) => {
            let at = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = at.iter().filter(|b| **b == b'\n').count() + 1;
            found.problems.push(Problem {
                place: place(file, line),
                message: "not UTF-8 text; its images cannot be read".into(),
            });
            Ok(None)
        }
    }
}

/// `helm` on PATH, if any: charts are then also rendered.
fn helm_binary() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("helm"))
        .find(|p| p.is_file())
}

/// Renders a chart with its default values (`helm template`) and scans the output, so
/// images that only templates compute are found too. Places name the chart and the line
/// in the rendered output.
fn render_chart(helm: &Path, chart: &Path) -> Discovery {
    let label = PathBuf::from(format!("{} (helm template)", chart.display()));
    let out = std::process::Command::new(helm)
        .args(["template", "sealer-discover"])
        .arg(chart)
        .output();
    match out {
        Ok(o) if o.status.success() => scan_yaml(&label, &String::from_utf8_lossy(&o.stdout), None),
        Ok(o) => Discovery {
            problems: vec![Problem {
                place: place(&label, 0),
                message: format!(
                    "helm template failed: {}",
                    crate::printable::text(String::from_utf8_lossy(&o.stderr).trim())
                ),
            }],
            ..Default::default()
        },
        Err(e) => Discovery {
            problems: vec![Problem {
                place: place(&label, 0),
                message: format!("cannot run {}: {e}", helm.display()),
            }],
            ..Default::default()
        },
    }
}

enum Kind {
    ImageList,
    ChartYaml,
    Template,
    Yaml,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let named = |e: std::io::Error| {
        std::io::Error::new(e.kind(), format!("{}: {e}", crate::printable::path(dir)))
    };
    for entry in std::fs::read_dir(dir).map_err(named)? {
        let entry = entry.map_err(named)?;
        let path = entry.path();
        let kind = entry.file_type().map_err(named)?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// The chart folder a file belongs to: the nearest ancestor holding `Chart.yaml`.
fn chart_root(file: &Path) -> Option<PathBuf> {
    file.ancestors()
        .skip(1)
        .find(|a| a.join("Chart.yaml").is_file())
        .map(Path::to_path_buf)
}

fn app_version(chart: &Path) -> Option<String> {
    let text = std::fs::read_to_string(chart.join("Chart.yaml")).ok()?;
    let docs = yaml::documents(&text).ok()?;
    let (v, _) = docs.first()?.get("appVersion")?;
    v.text().map(str::to_string)
}

/// One image per line; `#` starts a comment.
pub fn scan_image_list(file: &Path, text: &str) -> Discovery {
    let mut found = Discovery::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if !line.is_empty() {
            found.found(line, place(file, i + 1));
        }
    }
    found
}

/// Every document of a YAML file; `app_version` fills an empty Helm values tag.
pub fn scan_yaml(file: &Path, text: &str, app_version: Option<&str>) -> Discovery {
    let mut found = Discovery::default();
    match yaml::documents(text) {
        Ok(docs) => {
            for doc in &docs {
                visit(doc, file, app_version, &mut found);
            }
        }
        Err((line, message)) => found.problems.push(Problem {
            place: place(file, line),
            message: format!("{message}; its images cannot be read"),
        }),
    }
    found
}

/// `Chart.yaml`: images listed in the chart's annotations.
pub fn scan_chart_yaml(file: &Path, text: &str) -> Discovery {
    let mut found = Discovery::default();
    let docs = match yaml::documents(text) {
        Ok(d) => d,
        Err((line, message)) => {
            found.problems.push(Problem {
                place: place(file, line),
                message,
            });
            return found;
        }
    };
    let Some((annotations, _)) = docs.first().and_then(|d| d.get("annotations")) else {
        return found;
    };
    for key in ["helm.sh/images", "artifacthub.io/images"] {
        let Some((Node::Scalar { text, line }, _)) = annotations.get(key) else {
            continue;
        };
        // The annotation is itself YAML; its lines count from the annotation's value.
        let inner = scan_yaml(file, text, None);
        for (image, places) in inner.images {
            for p in places {
                found
                    .images
                    .entry(image.clone())
                    .or_default()
                    .push(place(file, line + p.line - 1));
            }
        }
        for mut p in inner.problems {
            p.place.line = line + p.place.line - 1;
            found.problems.push(p);
        }
    }
    found
}

/// A chart template: `image:` lines holding a literal reference. Values-driven ones
/// (`{{ … }}`) come from values.yaml, scanned on its own.
pub fn scan_template(file: &Path, text: &str) -> Discovery {
    let mut found = Discovery::default();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start().trim_start_matches("- ").trim_start();
        let Some(value) = t.strip_prefix("image:") else {
            continue;
        };
        let value = value.split(" #").next().unwrap_or("").trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        if value.is_empty() || value.contains("{{") {
            continue;
        }
        found.found(value, place(file, i + 1));
    }
    found
}

fn place(file: &Path, line: usize) -> Place {
    Place {
        file: file.to_path_buf(),
        line,
    }
}

fn visit(node: &Node, file: &Path, app_version: Option<&str>, found: &mut Discovery) {
    match node {
        Node::Map(entries) => {
            for (key, _, value) in entries {
                if key == "image" {
                    match value {
                        Node::Scalar { text, line } => {
                            found.found(text, place(file, *line));
                            continue;
                        }
                        Node::Map(_) => {
                            if let Some((written, line)) = compose(value, app_version) {
                                found.found(&written, place(file, line));
                            }
                            continue;
                        }
                        _ => {}
                    }
                }
                visit(value, file, app_version, found);
            }
            // A mapping with `repository` and a tag or digest (e.g. `controller:
            // {repository: …, tag: …}`), unless it was an `image:` value handled above.
            if node.get("image").is_none()
                && (node.get("tag").is_some() || node.get("digest").is_some())
                && node
                    .get("repository")
                    .is_some_and(|(r, _)| r.text().is_some())
                && let Some((written, line)) = compose(node, app_version)
            {
                found.found(&written, place(file, line));
            }
        }
        Node::Seq(items) => {
            for item in items {
                visit(item, file, app_version, found);
            }
        }
        Node::Scalar { .. } | Node::Other => {}
    }
}

/// An image from Helm values parts: `registry`, `repository`, `tag` or `digest`.
fn compose(map: &Node, app_version: Option<&str>) -> Option<(String, usize)> {
    let text = |k: &str| {
        map.get(k)
            .and_then(|(v, _)| v.text())
            .map(str::trim)
            .filter(|s| !s.is_empty() && *s != "~" && *s != "null")
    };
    let (repo_node, repo_line) = map.get("repository").or_else(|| map.get("name"))?;
    let repository = repo_node.text()?.trim();
    if repository.is_empty() {
        return None;
    }
    let mut written = match text("registry") {
        Some(registry) => format!("{}/{repository}", registry.trim_end_matches('/')),
        None => repository.to_string(),
    };
    match (text("digest"), text("tag").or(app_version)) {
        (Some(d), _) => {
            written.push('@');
            written.push_str(d);
        }
        (None, Some(t)) => {
            written.push(':');
            written.push_str(t);
        }
        (None, None) => {}
    }
    Some((written, repo_line))
}

#[cfg(test)]
mod tests;
