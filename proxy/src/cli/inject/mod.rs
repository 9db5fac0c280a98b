//! `coremesh inject FILE|-` and `coremesh uninject FILE|-`: Kubernetes YAML in (a file
//! or standard input, any number of documents), the same YAML out on standard output with
//! the sidecar added to (or taken out of) every Pod, Deployment, StatefulSet, DaemonSet,
//! ReplicaSet, Job and CronJob, and one line per workload on standard error saying what
//! was done. Other documents pass through unchanged.
//!
//! What is added is described in `docs/kubernetes.md`: [`sidecar`] builds it from the
//! flags, [`template`] puts it in a pod template and takes it out, [`workload`] finds the
//! template of each kind, [`yaml`] and [`node`] read and write the documents in order.

pub mod node;
pub mod probes;
pub mod sidecar;
pub mod template;
pub mod workload;
pub mod yaml;

#[cfg(test)]
mod tests;

use anyhow::Context;
use node::Node;
use sidecar::{Sidecar, SidecarArgs};
use std::io::{Read, Write};
use template::Outcome;
use workload::Shape;

/// `coremesh inject [FLAGS] FILE|-`.
#[derive(clap::Args, Debug, Clone)]
pub struct InjectArgs {
    /// Kubernetes YAML to read; `-` for standard input.
    pub input: String,
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// `coremesh uninject FILE|-`.
#[derive(clap::Args, Debug, Clone)]
pub struct UninjectArgs {
    /// Kubernetes YAML to read; `-` for standard input.
    pub input: String,
}

/// What happened to one workload: `deployment/orders: injected`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub object: String,
    pub outcome: String,
}

pub fn run_inject(args: InjectArgs) -> anyhow::Result<()> {
    let sidecar = args.sidecar.build()?;
    let text = read_input(&args.input)?;
    let (output, reports) = inject_text(&text, &sidecar)?;
    finish(&output, &reports)
}

pub fn run_uninject(args: UninjectArgs) -> anyhow::Result<()> {
    let text = read_input(&args.input)?;
    let (output, reports) = uninject_text(&text)?;
    finish(&output, &reports)
}

/// `text` with `sidecar` added to every workload that has not opted out.
pub fn inject_text(text: &str, sidecar: &Sidecar) -> anyhow::Result<(String, Vec<Report>)> {
    transform(text, &mut |template| {
        Ok(match template::inject(template, sidecar)? {
            Outcome::Injected => "injected".to_owned(),
            Outcome::Skipped(why) => format!("skipped: {why}"),
        })
    })
}

/// `text` with every sidecar `inject` added taken out again.
pub fn uninject_text(text: &str) -> anyhow::Result<(String, Vec<Report>)> {
    transform(text, &mut |template| {
        Ok(match template::uninject(template)? {
            true => "uninjected".to_owned(),
            false => "skipped: not injected".to_owned(),
        })
    })
}

type Edit<'a> = dyn FnMut(&mut Node) -> Result<String, String> + 'a;

fn transform(text: &str, edit: &mut Edit<'_>) -> anyhow::Result<(String, Vec<Report>)> {
    let mut documents = yaml::read_documents(text)?;
    let mut reports = Vec::new();
    for (index, document) in documents.iter_mut().enumerate() {
        visit(document, index + 1, edit, &mut reports)?;
    }
    Ok((yaml::write_documents(&documents)?, reports))
}

/// Applies `edit` to `object`'s pod template, or to the templates of a list's items.
fn visit(
    object: &mut Node,
    index: usize,
    edit: &mut Edit<'_>,
    reports: &mut Vec<Report>,
) -> anyhow::Result<()> {
    let name = workload::label(object, index);
    match workload::shape(object) {
        Shape::Other => {}
        Shape::List(items) => {
            for item in items {
                visit(item, index, edit, reports)?;
            }
        }
        Shape::MissingTemplate => reports.push(Report {
            object: name,
            outcome: "skipped: no pod template".to_owned(),
        }),
        Shape::Template(template) => {
            let outcome = edit(template)
                .map_err(|why| anyhow::anyhow!(why))
                .with_context(|| format!("{name}: pod template"))?;
            reports.push(Report {
                object: name,
                outcome,
            });
        }
    }
    Ok(())
}

fn read_input(input: &str) -> anyhow::Result<String> {
    if input == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(input).with_context(|| format!("cannot read {input}"))
}

fn finish(output: &str, reports: &[Report]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write standard output")?;
    let mut stderr = std::io::stderr().lock();
    for report in reports {
        let _ = writeln!(stderr, "{}: {}", report.object, report.outcome);
    }
    Ok(())
}
