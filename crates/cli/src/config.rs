//! `weft analyze`, `weft apply -f`, `weft delete -f`: Istio YAML in directory mode.
//!
//! `apply` validates the file against what the config directory already holds and writes each resource to
//! `<config-dir>/applied/<kind>-<namespace>-<name>.yaml` (atomically); weftd's watcher picks it up.
//! `delete` removes those files. Resources written by hand elsewhere in the directory are left to the user.

use anyhow::{bail, Context};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use weft_api::{analyze, parse_file, Diagnostic, Resource, ResourceKey};
use weft_control::config::dir::list_files;

/// The subdirectory `apply` writes into.
pub const APPLIED_DIR: &str = "applied";

/// Reads files and directories (recursively) into resources, collecting parse problems.
pub fn read_paths(paths: &[PathBuf]) -> anyhow::Result<(Vec<Resource>, Vec<Diagnostic>)> {
    let mut resources = Vec::new();
    let mut diags = Vec::new();
    for p in paths {
        let files = if p.is_dir() {
            list_files(p).with_context(|| format!("cannot list {}", p.display()))?
        } else {
            vec![p.clone()]
        };
        for f in files {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            let parsed = parse_file(&f.display().to_string(), &text);
            resources.extend(parsed.resources);
            diags.extend(parsed.diagnostics);
        }
    }
    Ok((resources, diags))
}

/// The MeshConfig among `paths` (a `mesh.yaml` file, or one in a directory), if one reads cleanly.
fn read_mesh(paths: &[PathBuf]) -> anyhow::Result<Option<weft_api::MeshConfig>> {
    for p in paths {
        let files = if p.is_dir() {
            list_files(p).with_context(|| format!("cannot list {}", p.display()))?
        } else {
            vec![p.clone()]
        };
        for f in files {
            let base = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if !weft_api::mesh::is_mesh_file(base) {
                continue;
            }
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            if let Some(m) = parse_file(&f.display().to_string(), &text).mesh {
                return Ok(Some(m));
            }
        }
    }
    Ok(None)
}

/// `weft analyze`: prints every problem; returns the number of errors.
pub fn analyze_paths(paths: &[PathBuf]) -> anyhow::Result<usize> {
    let (resources, mut diags) = read_paths(paths)?;
    diags.extend(analyze(&resources));
    // CUSTOM policies against the MeshConfig among the paths (weftd's defaults without one).
    let mesh = read_mesh(paths)?.unwrap_or_default();
    diags.extend(weft_api::analyze::check_custom_providers(&resources, &mesh));
    diags.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    for d in &diags {
        println!("{d}");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    if diags.is_empty() {
        println!(
            "no validation issues found in {} resource(s)",
            resources.len()
        );
    }
    Ok(errors)
}

fn applied_path(dir: &Path, key: &ResourceKey) -> PathBuf {
    dir.join(APPLIED_DIR).join(format!(
        "{}-{}-{}.yaml",
        key.kind.file_stem(),
        key.namespace,
        key.name
    ))
}

fn kubectl_name(key: &ResourceKey) -> String {
    format!("{}.networking.istio.io/{}", key.kind.file_stem(), key.name)
}

/// Reads the `-f` files, failing (and printing every problem) if any does not parse.
fn read_inputs(files: &[PathBuf]) -> anyhow::Result<Vec<Resource>> {
    let (resources, diags) = read_paths(files)?;
    let errors: Vec<&Diagnostic> = diags.iter().filter(|d| d.is_error()).collect();
    if !errors.is_empty() {
        for d in &errors {
            eprintln!("{d}");
        }
        bail!("{} problem(s) in the input; nothing applied", errors.len());
    }
    Ok(resources)
}

/// `weft apply -f`.
pub fn apply(config_dir: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let incoming = read_inputs(files)?;
    let keys: BTreeSet<ResourceKey> = incoming.iter().map(Resource::key).collect();
    let (existing, _) = read_paths(&[config_dir.to_path_buf()])?;
    let applied_root = config_dir.join(APPLIED_DIR);
    for r in &existing {
        if keys.contains(&r.key()) && !Path::new(&r.file).starts_with(&applied_root) {
            bail!(
                "{} is already defined at {}:{}, outside {}; edit it there",
                r.key(),
                r.file,
                r.line,
                applied_root.display()
            );
        }
    }
    let mut union: Vec<Resource> = existing
        .into_iter()
        .filter(|r| !keys.contains(&r.key()))
        .collect();
    union.extend(incoming.iter().cloned());
    let inputs: BTreeSet<String> = incoming.iter().map(|r| r.file.clone()).collect();
    let problems: Vec<Diagnostic> = analyze(&union)
        .into_iter()
        .filter(|d| inputs.contains(&d.file))
        .collect();
    for d in &problems {
        eprintln!("{d}");
    }
    let errors = problems.iter().filter(|d| d.is_error()).count();
    if errors > 0 {
        bail!("{errors} error(s); nothing applied");
    }
    std::fs::create_dir_all(&applied_root)
        .with_context(|| format!("cannot create {}", applied_root.display()))?;
    for r in &incoming {
        let key = r.key();
        let path = applied_path(config_dir, &key);
        let verb = if path.exists() {
            "configured"
        } else {
            "created"
        };
        let mut text = r.text.clone();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        // Hidden temporary name: weftd skips dot-files, so it never reads a half-written file.
        let tmp = applied_root.join(format!(".{}.tmp", key.name));
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot move {} into place", path.display()))?;
        println!("{} {verb}", kubectl_name(&key));
    }
    Ok(())
}

/// `weft delete -f`.
pub fn delete(config_dir: &Path, files: &[PathBuf]) -> anyhow::Result<()> {
    let incoming = read_inputs(files)?;
    let (existing, _) = read_paths(&[config_dir.to_path_buf()])?;
    let mut failed = 0;
    for r in &incoming {
        let key = r.key();
        let path = applied_path(config_dir, &key);
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            println!("{} deleted", kubectl_name(&key));
        } else if let Some(other) = existing.iter().find(|e| e.key() == key) {
            eprintln!(
                "{} was not applied with weft apply: it is defined at {}:{}; remove it there",
                key, other.file, other.line
            );
            failed += 1;
        } else {
            eprintln!("{key} not found");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!("{failed} resource(s) not deleted");
    }
    Ok(())
}
