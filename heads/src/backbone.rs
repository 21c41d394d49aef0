//! The backbone a head was trained on, as its folder and feature files record it.

use serde::{Deserialize, Serialize};

/// The backbone a head was trained on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backbone {
    pub model: String,
    pub checkpoint_sha256: String,
    pub architecture: serde_json::Value,
}
