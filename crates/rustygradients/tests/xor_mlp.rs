//! The README's MLP example reaches 100% accuracy on XOR.

#[path = "../examples/xor_mlp.rs"]
mod xor_mlp;

#[test]
fn mlp_learns_xor() {
    let (loss, acc) = xor_mlp::train(300).unwrap();
    assert_eq!(acc, 1.0, "accuracy {acc}, loss {loss}");
    assert!(loss < 0.1, "loss {loss}");
}
