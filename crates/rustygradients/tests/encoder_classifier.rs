//! The encoder-classifier example (bidirectional attention with a key-padding mask, derived
//! modules) learns its task.

#[path = "../examples/encoder_classifier.rs"]
mod encoder_classifier;

#[test]
fn encoder_classifier_learns() {
    let acc = encoder_classifier::run(300).unwrap();
    assert!(acc > 0.9, "accuracy {acc}");
}
