//! The CloudImage format (docs/design.md, contract 4, documented in `docs/cloudimage.md`): an OCI
//! image index over, per platform, a rootfs image manifest (the Kubefile's layers; its
//! config holds ENV and labels, its annotations the applications and launch) and the
//! manifests of every container image it carries, each annotated with its reference.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reference::Platform;
use crate::shell::quote;

/// On the rootfs manifest (and the index): the [`ImageExtension`] as JSON, as sealer 0.9+.
pub const ANNOTATION_EXTENSION: &str = "sealer.image.extension";
/// On the rootfs manifest (and the index): the [`ContainerImage`] list as JSON, as sealer.
pub const ANNOTATION_CONTAINER_IMAGES: &str = "sealer.image.container.images";
pub use sealer_registry::oci::annotations::{
    CONTAINER_REFERENCE as ANNOTATION_REFERENCE, REF_NAME as ANNOTATION_REF_NAME,
    ROLE as ANNOTATION_ROLE, ROLE_CONTAINER_IMAGE, ROLE_ROOTFS,
};
/// The index's `artifactType`-like marker in the rootfs config's labels.
pub const LABEL_VERSION: &str = "io.sealer.version";
pub const LABEL_KUBE_VERSION: &str = "app.alpha.sealer.io/supported-kube-version";

pub const SCHEMA_VERSION: &str = "v1alpha1";

/// What sealer records about the image beyond its files.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ImageExtension {
    pub build_client: BuildClient,
    pub schema_version: String,
    /// `kube-installer` (the image brings Kubernetes) or `app-installer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Global env (`ENV`); a Clusterfile may override it.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub applications: Vec<Application>,
    #[serde(default)]
    pub launch: Launch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_version: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BuildClient {
    pub sealer_version: String,
}

/// An `APP` (or `CNI`/`CSI`): its files under `application/apps/<name>/`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    pub name: String,
    /// `helm`, `shell` or `kube`; empty when unknown (then `cmds` say how to launch it).
    #[serde(rename = "type")]
    pub kind: String,
    pub files: Vec<String>,
    pub version: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cmds: Vec<String>,
    /// `cni` or `csi` for those instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Launch {
    #[serde(default)]
    pub cmds: Vec<String>,
    #[serde(default)]
    pub app_names: Vec<String>,
}

/// One carried container image, as listed in [`ANNOTATION_CONTAINER_IMAGES`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerImage {
    pub image: String,
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// The launch commands of an application, as `sealer run` runs them from the rootfs
/// folder: its `APPCMDS`, else its type's default; each with its `APPENV` exported in a
/// subshell of its own. Fails for an `APPENV` key that is not a shell variable name (an
/// image is anyone's).
pub fn app_launch(app: &Application) -> Result<Vec<String>, String> {
    let mut exports = String::new();
    for (k, v) in &app.env {
        if !crate::shell::is_env_name(k) {
            return Err(format!(
                "application {:?}: its env key {k:?} is not a variable name",
                app.name
            ));
        }
        exports.push_str(&format!(" {k}={}", quote(v)));
    }
    let cmds = default_launch(app);
    if exports.is_empty() {
        return Ok(cmds);
    }
    Ok(cmds
        .into_iter()
        .map(|c| format!("(export{exports}; {c})"))
        .collect())
}

/// The command that launches an application: its `APPCMDS`, else its type's default.
fn default_launch(app: &Application) -> Vec<String> {
    if !app.cmds.is_empty() {
        return app.cmds.clone();
    }
    // Names come from the image (anyone's): each reaches the shell as one quoted word.
    let path = |f: &str| quote(&format!("application/apps/{}/{f}", app.name));
    match app.kind.as_str() {
        "kube" => app
            .files
            .iter()
            .map(|f| format!("kubectl apply -f {}", path(f)))
            .collect(),
        "helm" => app
            .files
            .iter()
            .map(|f| format!("helm upgrade --install {} {}", quote(&app.name), path(f)))
            .collect(),
        "shell" => app
            .files
            .iter()
            .map(|f| format!("bash {}", path(f)))
            .collect(),
        _ => Vec::new(),
    }
}
