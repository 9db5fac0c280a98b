//! Multi-document YAML text to [`Node`]s and back (`serde-saphyr` both ways).
//!
//! Comments and the exact spelling of scalars are not kept (the values are); empty
//! documents (a stray `---`) are dropped. Strings that a YAML 1.1 reader would take for
//! something else (`on`, `y`, `0755`, `1e3`) are written quoted, as Kubernetes needs.

use super::node::Node;
use anyhow::Context;

/// Every non-empty document of `text`, in order.
pub fn read_documents(text: &str) -> anyhow::Result<Vec<Node>> {
    serde_saphyr::from_multiple(text).context("invalid YAML")
}

/// `documents` as YAML, separated by `---`.
pub fn write_documents(documents: &[Node]) -> anyhow::Result<String> {
    serde_saphyr::to_string_multiple(documents).context("cannot write YAML")
}
