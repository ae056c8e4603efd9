//! The spiral example fits its data (accuracy > 95%) and its checkpoint reloads into a model
//! and optimizer whose next step is bit-identical (the example asserts both).

#[path = "../examples/spiral_mlp.rs"]
mod spiral_mlp;

#[test]
fn spiral_mlp_learns_and_resumes_identically() {
    spiral_mlp::main().unwrap();
}
