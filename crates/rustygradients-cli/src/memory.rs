//! The up-front memory check: a model (and, for training, its corpus) is refused with the
//! numbers when it cannot fit, before anything large is allocated — an allocation that fails
//! aborts the process, and one that succeeds on an overcommitted machine brings it to a crawl.

use anyhow::bail;
use rustygradients_core::Device;
use rustygradients_models::MemoryEstimate;

const GIB: f64 = (1u64 << 30) as f64;

/// Refuses `what` when `estimate` plus `data_bytes` exceeds `device`'s available memory (no
/// check where the device does not report it); `hint` ends the message.
pub fn check(
    estimate: &MemoryEstimate,
    data_bytes: f64,
    device: Device,
    what: &str,
    hint: &str,
) -> anyhow::Result<()> {
    let Some(avail) = device.available_memory() else {
        return Ok(());
    };
    let need = estimate.total() + data_bytes;
    if need > avail as f64 {
        let mut parts = vec![format!("weights {:.2} GiB", estimate.parameters / GIB)];
        if estimate.training_state > 0.0 {
            parts.push(format!(
                "gradients and AdamW state {:.2} GiB",
                estimate.training_state / GIB
            ));
        }
        parts.push(format!("activations {:.2} GiB", estimate.activations / GIB));
        if data_bytes > 0.0 {
            parts.push(format!("tokenized data {:.2} GiB", data_bytes / GIB));
        }
        bail!(
            "{what} needs about {:.1} GiB ({}) but {device} has {:.1} GiB available{hint}",
            need / GIB,
            parts.join(", "),
            avail as f64 / GIB
        );
    }
    Ok(())
}
