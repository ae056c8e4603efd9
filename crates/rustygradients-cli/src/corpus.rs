//! The corpus compiled into the binary, so `train` works offline with no `--data`: the project's
//! own writing (its README and the source of its core and models), nothing third-party.

pub const BUILTIN: &[&str] = &[
    include_str!("../../../README.md"),
    include_str!("../../rustygradients-core/src/tensor.rs"),
    include_str!("../../rustygradients-core/src/backprop.rs"),
    include_str!("../../rustygradients-core/src/layout.rs"),
    include_str!("../../rustygradients-core/src/ops/nn.rs"),
    include_str!("../../rustygradients-core/src/ops/views.rs"),
    include_str!("../../rustygradients-nn/src/attention.rs"),
    include_str!("../../rustygradients-models/src/gpt.rs"),
    include_str!("../../rustygradients-models/src/data.rs"),
];

/// The built-in corpus as one text.
pub fn builtin() -> String {
    BUILTIN.join("\n\n")
}
