//! `APP` and what names apps: an application's files (local, or downloaded within the
//! download limits) into a layer under `application/apps/<name>/`, declared in the
//! image's extension; `APPCMDS`, `APPENV` and `LAUNCH` set what runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::{Builder, Image, sources};
use crate::cloudimage::Application;
use crate::discover::{self, Discovery};
use crate::kubefile::{AppRole, AppSource};
use crate::layer::entries_for;

/// One `APP` line.
pub(super) struct App<'a> {
    pub name: &'a str,
    pub role: &'a AppRole,
    pub sources: &'a [AppSource],
}

impl Builder<'_> {
    pub(super) async fn app(
        &mut self,
        app: &App<'_>,
        image: &mut Image,
        found: &mut Discovery,
    ) -> anyhow::Result<()> {
        let (mut paths, remote_files) = self.app_sources(app).await?;
        let name = app.name;
        let mut inputs = Vec::new();
        let mut files = Vec::new();
        for p in &paths {
            let file = p
                .file_name()
                .and_then(|n| n.to_str())
                .context("an APP source needs a file name")?
                .to_string();
            inputs.extend(entries_for(p, &format!("application/apps/{name}/{file}"))?);
            found.merge(discover::scan_path(p)?);
            files.push(file);
        }
        let text = format!("APP {name} {}", written(app.sources));
        if !self.opts.dry_run {
            let layer = self.layer(&text, &inputs, |i| Ok(i.to_vec())).await?;
            image.push_layer(layer, &text);
        }
        files.extend(
            remote_files
                .iter()
                .map(|f| f.to_string_lossy().into_owned()),
        );
        paths.extend(remote_files);
        declare(image, app, files, &paths);
        Ok(())
    }

    /// The app's files on this machine, and (in a dry run) the names of the remote ones
    /// a build would download.
    async fn app_sources(&mut self, app: &App<'_>) -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
        let mut paths = Vec::new();
        let mut remote_files = Vec::new();
        for s in app.sources {
            match s {
                AppSource::Local(p) => {
                    let written = p.to_string_lossy();
                    let found = sources::resolve(&self.opts.context, &written);
                    paths.extend(found.map_err(anyhow::Error::msg)?);
                }
                AppSource::Remote(url) if self.opts.dry_run => {
                    let (parsed, _) = sources::app_url(url).map_err(anyhow::Error::msg)?;
                    let file = sources::url_file_name(&parsed).map_err(anyhow::Error::msg)?;
                    let name = app.name;
                    let note = format!("APP {name}: a build downloads {url} (not scanned)");
                    self.progress.message(&note);
                    remote_files.push(PathBuf::from(file));
                }
                AppSource::Remote(url) => {
                    self.progress.message(&format!("downloading {url}"));
                    let dir = self.work.join(format!("app-{}", app.name));
                    let file = sources::download(url, &dir, &self.opts.download).await;
                    paths.push(file.map_err(anyhow::Error::msg)?);
                }
            }
        }
        Ok((paths, remote_files))
    }
}

/// An `APP` line's sources as the build history shows them.
fn written(sources: &[AppSource]) -> String {
    let each = sources.iter().map(|s| match s {
        AppSource::Local(p) => format!("local://{}", p.display()),
        AppSource::Remote(u) => u.clone(),
    });
    each.collect::<Vec<_>>().join(" ")
}

/// The app in the image's extension (replacing one of the same name), and the label of
/// its role for CNI and CSI apps.
fn declare(image: &mut Image, app: &App<'_>, files: Vec<String>, paths: &[PathBuf]) {
    let role = match app.role {
        AppRole::App => None,
        AppRole::Cni => Some("cni"),
        AppRole::Csi => Some("csi"),
    };
    if let Some(r) = role {
        let label = format!("cluster.alpha.sealer.io/kube-{r}-{}", app.name);
        image.labels.insert(label, "true".into());
    }
    image.ext.applications.retain(|a| a.name != app.name);
    image.ext.applications.push(Application {
        name: app.name.to_string(),
        kind: sources::app_type(paths),
        files,
        version: "v1".into(),
        env: BTreeMap::new(),
        cmds: Vec::new(),
        role: role.map(str::to_string),
    });
}

/// `LAUNCH`: the apps that run, each declared by an `APP` here or in the base image.
pub(super) fn launch(image: &mut Image, names: &[String]) -> anyhow::Result<()> {
    for n in names {
        if !image.ext.applications.iter().any(|a| &a.name == n) {
            bail!("LAUNCH names {n:?}, which no APP (here or in the base image) declares");
        }
    }
    image.ext.launch.app_names = names.to_vec();
    Ok(())
}

/// The app `name` declared so far (for `APPCMDS` and `APPENV`).
pub(super) fn app_mut<'a>(image: &'a mut Image, name: &str) -> anyhow::Result<&'a mut Application> {
    image
        .ext
        .applications
        .iter_mut()
        .find(|a| a.name == name)
        .with_context(|| format!("no APP named {name:?} is declared before this line"))
}

/// The app whose files name an image: the one whose name is a folder of the file's path
/// under `application/apps/`, or whose files include the file.
pub(super) fn app_of(file: &Path, images: &[Image]) -> Option<String> {
    let text = file.to_string_lossy();
    images
        .iter()
        .flat_map(|i| &i.ext.applications)
        .find_map(|a| {
            a.files
                .iter()
                .any(|f| text.ends_with(f.as_str()) || text.contains(&format!("/{f}/")))
                .then(|| a.name.clone())
        })
}
