//! `sluice catalog`: write the event catalog, `asyncapi.json` (AsyncAPI
//! 3.0) and `index.html`, from a schema directory and module manifests
//! (offline), or from what a running host has registered and deployed
//! (`--host`), or both (the directory's types with the host's modules, plus
//! any manifests given: "what if I deployed this").

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::ApiArgs;
use super::client::Api;
use crate::config::Manifest;
use crate::schema::catalog::{Catalog, ModuleUse, asyncapi, html};
use crate::schema::dir;

/// What to write the catalog from, and where.
pub(super) struct Args {
    pub dir: Option<PathBuf>,
    pub manifests: Vec<PathBuf>,
    pub host: Option<ApiArgs>,
    pub title: Option<String>,
    pub out: PathBuf,
}

pub(super) fn run(a: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.dir.is_some() || a.host.is_some(),
        "give the schemas: --dir <schema directory>, or --host <address> for a running host's"
    );
    let mut c = match &a.host {
        Some(api) => {
            let v = Api::new(api).get("/v1/catalog")?;
            serde_json::from_value::<Catalog>(v)
                .with_context(|| format!("{} answered /v1/catalog with something else", api.addr))?
        }
        None => Catalog::of_dir("Sluice", &[]),
    };
    if let Some(d) = &a.dir {
        let (types, problems) = dir::read(d);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            anyhow::bail!(
                "the schema directory has problems (`sluice schema check` says more):\n  {}",
                list.join("\n  ")
            );
        }
        let from_dir = Catalog::of_dir(&c.title, &types);
        c.types = from_dir.types;
    }
    for m in &a.manifests {
        let file = if m.is_dir() {
            m.join("module.toml")
        } else {
            m.clone()
        };
        let manifest = Manifest::load(&file).map_err(anyhow::Error::msg)?;
        c.put_module(ModuleUse::from(&manifest));
    }
    if let Some(t) = a.title {
        c.title = t;
    }
    write(&c, &a.out)?;
    let versions: usize = c.types.iter().map(|t| t.versions.len()).sum();
    println!(
        "wrote {} and {}: {} topics, {} event types, {versions} versions, {} modules",
        a.out.join("asyncapi.json").display(),
        a.out.join("index.html").display(),
        c.topics().len(),
        c.types.len(),
        c.modules.len(),
    );
    Ok(())
}

/// `out/asyncapi.json` and `out/index.html` (which links to the former).
fn write(c: &Catalog, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let doc = serde_json::to_string_pretty(&asyncapi::document(c))?;
    std::fs::write(out.join("asyncapi.json"), doc + "\n")
        .with_context(|| format!("cannot write {}", out.join("asyncapi.json").display()))?;
    std::fs::write(out.join("index.html"), html::page(c, "asyncapi.json"))
        .with_context(|| format!("cannot write {}", out.join("index.html").display()))?;
    Ok(())
}
