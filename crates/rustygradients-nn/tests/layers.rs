//! Layers as a user meets them: bidirectional and causal self-attention with a key-padding mask,
//! an Mlp of any width and activation, and errors that name the layer and its sizes.

use rustygradients_core::{manual_seed, DType, Device, Tensor};
use rustygradients_nn::{Activation, Embedding, Forward, Linear, Mlp, Module, SelfAttention};

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
    }
}

/// Padded keys are invisible: the first `len` outputs of a padded sequence equal the outputs
/// of the unpadded sequence, for encoders and decoders.
#[test]
fn key_padding_mask_hides_padding() {
    manual_seed(3);
    let (t, len, c) = (7, 4, 16);
    for causal in [false, true] {
        let attn = SelfAttention::new(c, 4, causal).unwrap();
        let x = Tensor::randn([1, t, c], DType::F32, Device::Cpu).unwrap();
        let mask: Vec<u8> = (0..t).map(|i| u8::from(i >= len)).collect();
        let mask = Tensor::from_vec(mask, [1, t], Device::Cpu).unwrap();
        let padded = attn.forward_masked(&x, Some(&mask)).unwrap();
        let short = attn.forward(&x.narrow(1, 0, len).unwrap()).unwrap();
        close(
            &padded.narrow(1, 0, len).unwrap().to_vec::<f32>().unwrap(),
            &short.to_vec::<f32>().unwrap(),
        );
        // An all-zero mask is the unmasked (fused) attention.
        let none = Tensor::zeros([1, t], DType::I64, Device::Cpu).unwrap();
        close(
            &attn
                .forward_masked(&x, Some(&none))
                .unwrap()
                .to_vec::<f32>()
                .unwrap(),
            &attn.forward(&x).unwrap().to_vec::<f32>().unwrap(),
        );
    }
    // Bidirectional attention sees the future: changing the last token changes the first output.
    let enc = SelfAttention::new(c, 4, false).unwrap();
    let x = Tensor::randn([1, t, c], DType::F32, Device::Cpu).unwrap();
    let y = Tensor::cat(
        &[
            x.narrow(1, 0, t - 1).unwrap(),
            x.narrow(1, t - 1, 1).unwrap().mul_scalar(2.0).unwrap(),
        ],
        1,
    )
    .unwrap();
    let first = |z: &Tensor| {
        enc.forward(z)
            .unwrap()
            .narrow(1, 0, 1)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    };
    assert_ne!(first(&x), first(&y));
    let e = enc
        .forward_masked(
            &x,
            Some(&Tensor::zeros([1, t + 1], DType::U8, Device::Cpu).unwrap()),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("key_padding_mask") && e.contains("[1, 8]"),
        "{e}"
    );
}

#[test]
fn mlp_width_and_activation() {
    manual_seed(4);
    let x = Tensor::randn([5, 6], DType::F32, Device::Cpu).unwrap();
    for act in [
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Relu,
        Activation::Silu,
        Activation::Tanh,
    ] {
        let m = Mlp::new(6, 10, act).unwrap();
        assert_eq!(m.c_fc.weight.dims(), [10, 6]);
        let expect = m
            .c_proj
            .forward(&act.apply(&m.c_fc.forward(&x).unwrap()).unwrap())
            .unwrap();
        assert_eq!(
            m.forward(&x).unwrap().to_vec::<f32>().unwrap(),
            expect.to_vec::<f32>().unwrap()
        );
    }
    assert_eq!(
        Mlp::new(6, 10, Activation::Relu).unwrap().num_parameters(),
        6 * 10 + 10 + 10 * 6 + 6
    );
}

#[test]
fn errors_name_the_layer_and_its_sizes() {
    let lin = Linear::new(3, 5, true).unwrap();
    let e = lin
        .forward(&Tensor::zeros([4, 4], DType::F32, Device::Cpu).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Linear(in 3, out 5)") && e.contains("[4, 4]"),
        "{e}"
    );
    let emb = Embedding::new(10, 4).unwrap();
    let ids = Tensor::from_vec(vec![1i64, 10], 2, Device::Cpu).unwrap();
    let e = emb.forward(&ids).unwrap_err().to_string();
    assert!(e.contains("Embedding(10, 4)") && e.contains("10"), "{e}");
    let e = SelfAttention::new(10, 3, true).err().unwrap().to_string();
    assert!(e.contains("n_embd 10") && e.contains("n_head 3"), "{e}");
    let attn = SelfAttention::new(8, 2, true).unwrap();
    let e = attn
        .forward(&Tensor::zeros([1, 3, 6], DType::F32, Device::Cpu).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("8 channels") && e.contains("[1, 3, 6]"), "{e}");
}
