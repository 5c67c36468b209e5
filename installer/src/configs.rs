//! The Clusterfile's `Config` documents applied to the image's files on a host: a file
//! written whole (`overwrite`), or a YAML or JSON file's keys merged into what the image
//! has (`merge`, the Config's values winning, maps merged key by key).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::clusterfile::{ConfigSpec, ConfigStrategy};

/// `sealer unpack-layers` on a host: each `(blob, media type)` layer unpacked into `dir`
/// in order, then the Config documents in the JSON file `configs` applied over them.
pub fn unpack(
    dir: &Path,
    layers: &[(PathBuf, String)],
    configs: Option<&Path>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (blob, media_type) in layers {
        sealer_builder::steps::rootfs::unpack_layer(blob, media_type, dir)
            .with_context(|| format!("unpacking {}", blob.display()))?;
    }
    if let Some(file) = configs {
        let text =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let specs: Vec<ConfigSpec> =
            serde_json::from_slice(&text).context("the Config documents")?;
        apply(dir, &specs)?;
    }
    Ok(())
}

pub fn apply(dir: &Path, configs: &[ConfigSpec]) -> anyhow::Result<()> {
    for c in configs {
        // Checked when the Clusterfile was read; checked again as this runs on a host.
        if c.path.is_absolute()
            || c.path
                .components()
                .any(|p| matches!(p, std::path::Component::ParentDir))
        {
            bail!(
                "{}: a Config path must stay inside the image's files",
                c.path.display()
            );
        }
        // Never through a link of the image's: it may point anywhere on the host.
        sealer_builder::steps::rootfs::beneath(dir, &c.path)
            .with_context(|| format!("the Config for {}", c.path.display()))?;
        let target = dir.join(&c.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let content = match c.strategy {
            ConfigStrategy::Overwrite => c.data.clone(),
            ConfigStrategy::Merge => merge_file(&target, &c.data)
                .with_context(|| format!("merging the Config into {}", c.path.display()))?,
        };
        write_no_follow(&target, content.as_bytes())
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    Ok(())
}

/// Writes `path` whole, refusing (`ELOOP`) if it is a symlink.
fn write_no_follow(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(content)
}

fn parse(text: &str) -> anyhow::Result<serde_json::Value> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))
}

fn merge_file(target: &Path, data: &str) -> anyhow::Result<String> {
    let ours = parse(data).context("the Config's data is not YAML or JSON")?;
    let merged = match std::fs::read_to_string(target) {
        Ok(text) => {
            let mut theirs = parse(&text).context("the image's file is not YAML or JSON")?;
            merge(&mut theirs, ours);
            theirs
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ours,
        Err(e) => return Err(e.into()),
    };
    if target.extension().is_some_and(|e| e == "json") {
        Ok(serde_json::to_string_pretty(&merged)? + "\n")
    } else {
        serde_saphyr::to_string(&merged).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Maps merge key by key; anything else in `ours` replaces what was there.
fn merge(theirs: &mut serde_json::Value, ours: serde_json::Value) {
    match (theirs, ours) {
        (serde_json::Value::Object(t), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match t.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        t.insert(k, v);
                    }
                }
            }
        }
        (t, o) => *t = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, data: &str, strategy: ConfigStrategy) -> ConfigSpec {
        ConfigSpec {
            path: path.into(),
            data: data.into(),
            strategy,
            process: None,
        }
    }

    #[test]
    fn overwrite_writes_and_merge_keeps_the_image_s_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/values.yaml"),
            "replicas: 1\nimage: {repo: app, tag: \"1\"}\nports: [80]\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/app.json"),
            r#"{"a": 1, "b": {"c": 2}}"#,
        )
        .unwrap();
        apply(
            dir.path(),
            &[
                spec(
                    "etc/values.yaml",
                    "replicas: 3\nimage: {tag: \"2\"}\n",
                    ConfigStrategy::Merge,
                ),
                spec("etc/app.json", r#"{"b": {"d": 4}}"#, ConfigStrategy::Merge),
                spec("new/file.txt", "hello\n", ConfigStrategy::Overwrite),
            ],
        )
        .unwrap();
        let v: serde_json::Value = serde_saphyr::from_str(
            &std::fs::read_to_string(dir.path().join("etc/values.yaml")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"replicas": 3, "image": {"repo": "app", "tag": "2"}, "ports": [80]})
        );
        let j: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("etc/app.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(j, serde_json::json!({"a": 1, "b": {"c": 2, "d": 4}}));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("new/file.txt")).unwrap(),
            "hello\n"
        );
        let err = apply(dir.path(), &[spec("../x", "", ConfigStrategy::Overwrite)]).unwrap_err();
        assert!(err.to_string().contains("inside the image's files"));
        std::fs::write(dir.path().join("bad.yaml"), "a: [1\n").unwrap();
        let err = apply(
            dir.path(),
            &[spec("bad.yaml", "a: 1", ConfigStrategy::Merge)],
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("merging the Config into bad.yaml"),
            "{err:#}"
        );
    }

    #[test]
    fn a_config_never_writes_through_a_link_of_the_image() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("shadow"), "root:secret").unwrap();
        let dir = tmp.path().join("rootfs");
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        // The image's file is a link out, and so is one of its folders.
        std::os::unix::fs::symlink(outside.join("shadow"), dir.join("etc/app.yaml")).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("conf")).unwrap();
        for (path, strategy) in [
            ("etc/app.yaml", ConfigStrategy::Overwrite),
            ("etc/app.yaml", ConfigStrategy::Merge),
            ("conf/shadow", ConfigStrategy::Overwrite),
            ("conf/new/x.yaml", ConfigStrategy::Overwrite),
        ] {
            let err = apply(&dir, &[spec(path, "a: 1\n", strategy)]).unwrap_err();
            assert!(format!("{err:#}").contains("symlink"), "{path}: {err:#}");
        }
        assert_eq!(
            std::fs::read_to_string(outside.join("shadow")).unwrap(),
            "root:secret"
        );
        assert!(!outside.join("new").exists());
    }
}
