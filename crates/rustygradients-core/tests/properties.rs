//! Property tests: broadcasting, views and strided reads agree with a naive reference that
//! indexes element by element.

mod common;

use common::{t64, CPU};
use proptest::prelude::*;
use rustygradients_core::{DType, Tensor};

/// Row-major multi-index of linear position `p` in `dims`.
fn unravel(mut p: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for d in (0..dims.len()).rev() {
        idx[d] = p % dims[d];
        p /= dims[d];
    }
    idx
}

fn ravel(idx: &[usize], dims: &[usize]) -> usize {
    idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + i)
}

fn values(n: usize) -> Vec<f64> {
    (0..n).map(|i| (i as f64 * 0.37).sin() * 10.0).collect()
}

/// An output shape plus two input shapes that broadcast to it.
fn broadcast_shapes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>, Vec<usize>)> {
    prop::collection::vec(1usize..4, 0..4)
        .prop_flat_map(|out| {
            let n = out.len();
            (
                Just(out),
                prop::collection::vec(any::<bool>(), n),
                prop::collection::vec(any::<bool>(), n),
                0..=n,
                0..=n,
            )
        })
        .prop_map(|(out, ones_a, ones_b, drop_a, drop_b)| {
            let make = |ones: &[bool], drop: usize| {
                out.iter()
                    .zip(ones)
                    .skip(drop)
                    .map(|(&d, &one)| if one { 1 } else { d })
                    .collect::<Vec<_>>()
            };
            (out.clone(), make(&ones_a, drop_a), make(&ones_b, drop_b))
        })
}

proptest! {
    #[test]
    fn broadcasting_matches_naive((full, sa, sb) in broadcast_shapes()) {
        // The expected result shape, aligned from the right: the larger size of each pair.
        let rank = sa.len().max(sb.len());
        let at = |s: &[usize], i: usize| if i + s.len() >= rank { s[i + s.len() - rank] } else { 1 };
        let out: Vec<usize> = (0..rank).map(|i| at(&sa, i).max(at(&sb, i))).collect();
        prop_assert!(out.iter().zip(&full[full.len() - rank..]).all(|(a, b)| a == b || *a == 1));
        let (na, nb): (usize, usize) = (sa.iter().product(), sb.iter().product());
        let (va, vb) = (values(na), values(nb + 3)[3..].to_vec());
        let got = t64(&va, &sa).sub(&t64(&vb, &sb)).unwrap();
        let dims = got.dims().to_vec();
        let n_out: usize = out.iter().product();
        prop_assert_eq!(dims.clone(), out.clone());
        let read = |v: &[f64], s: &[usize], idx: &[usize]| {
            let off = idx.len() - s.len();
            let j: Vec<usize> = s.iter().enumerate().map(|(k, &d)| if d == 1 { 0 } else { idx[off + k] }).collect();
            v[ravel(&j, s)]
        };
        let want: Vec<f64> = (0..n_out).map(|p| { let idx = unravel(p, &out); read(&va, &sa, &idx) - read(&vb, &sb, &idx) }).collect();
        prop_assert_eq!(got.to_vec::<f64>().unwrap(), want);
    }

    #[test]
    fn permute_narrow_and_contiguous_match_naive(
        dims in prop::collection::vec(1usize..5, 1..5),
        seed in any::<u64>(),
    ) {
        let n: usize = dims.iter().product();
        let v = values(n);
        let x = t64(&v, &dims);
        // A permutation and a narrow on one dim, both chosen from the seed.
        let rank = dims.len();
        let mut perm: Vec<usize> = (0..rank).collect();
        let mut s = seed;
        for i in (1..rank).rev() { perm.swap(i, (s % (i as u64 + 1)) as usize); s /= 7; }
        let d = (s % rank as u64) as usize;
        let pd: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
        let start = (s / 3) as usize % pd[d];
        let len = 1 + (s / 11) as usize % (pd[d] - start);
        let view = x.permute(&perm).unwrap().narrow(d, start, len).unwrap();
        prop_assert!(view.same_storage(&x));
        let mut vd = pd.clone();
        vd[d] = len;
        let want: Vec<f64> = (0..vd.iter().product()).map(|p| {
            let mut idx = unravel(p, &vd);
            idx[d] += start;
            let mut src = vec![0; rank];
            for (k, &pk) in perm.iter().enumerate() { src[pk] = idx[k]; }
            v[ravel(&src, &dims)]
        }).collect();
        prop_assert_eq!(view.to_vec::<f64>().unwrap(), want.clone());
        prop_assert_eq!(view.contiguous().unwrap().to_vec::<f64>().unwrap(), want.clone());
        prop_assert_eq!(view.reshape(want.len()).unwrap().to_vec::<f64>().unwrap(), want.clone());
        // Strided reads in a kernel: an elementwise op and a full reduction on the view.
        prop_assert_eq!(view.neg().unwrap().to_vec::<f64>().unwrap(), want.iter().map(|x| -x).collect::<Vec<_>>());
        let total: f64 = want.iter().sum();
        prop_assert!((view.sum_all().unwrap().to_scalar::<f64>().unwrap() - total).abs() < 1e-9);
    }

    #[test]
    fn reductions_over_dim_sets_match_naive(
        dims in prop::collection::vec(1usize..4, 1..4),
        mask in prop::collection::vec(any::<bool>(), 3),
        keepdim in any::<bool>(),
    ) {
        let n: usize = dims.iter().product();
        let v = values(n);
        let red: Vec<usize> = (0..dims.len()).filter(|&d| mask[d]).collect();
        let x = t64(&v, &dims);
        let got_sum = x.sum(red.clone(), keepdim).unwrap();
        let got_max = x.max(red.clone(), true).unwrap();
        let kd: Vec<usize> = dims.iter().enumerate().map(|(i, &d)| if red.contains(&i) { 1 } else { d }).collect();
        let mut sum = vec![0.0; kd.iter().product()];
        let mut max = vec![f64::NEG_INFINITY; sum.len()];
        for (p, &x) in v.iter().enumerate() {
            let mut idx = unravel(p, &dims);
            for &r in &red { idx[r] = 0; }
            let o = ravel(&idx, &kd);
            sum[o] += x;
            max[o] = max[o].max(x);
        }
        let g = got_sum.to_vec::<f64>().unwrap();
        prop_assert!(g.iter().zip(&sum).all(|(a, b)| (a - b).abs() < 1e-9));
        prop_assert_eq!(got_max.to_vec::<f64>().unwrap(), max);
        let expect_dims: Vec<usize> = if keepdim { kd.clone() } else { dims.iter().enumerate().filter(|(i, _)| !red.contains(i)).map(|(_, &d)| d).collect() };
        prop_assert_eq!(got_sum.dims().to_vec(), expect_dims);
    }

    #[test]
    fn matmul_of_strided_views_matches_naive(m in 1usize..6, k in 1usize..6, n in 1usize..6, ta in any::<bool>(), tb in any::<bool>()) {
        let (va, vb) = (values(m * k), values(k * n + 5)[5..].to_vec());
        // Optionally store each operand transposed and multiply its transposed view.
        let a = if ta { t64(&transpose(&va, m, k), &[k, m]).t().unwrap() } else { t64(&va, &[m, k]) };
        let b = if tb { t64(&transpose(&vb, k, n), &[n, k]).t().unwrap() } else { t64(&vb, &[k, n]) };
        let got = a.matmul(&b).unwrap().to_vec::<f64>().unwrap();
        for i in 0..m { for j in 0..n {
            let want: f64 = (0..k).map(|p| va[i * k + p] * vb[p * n + j]).sum();
            prop_assert!((got[i * n + j] - want).abs() < 1e-9);
        }}
        // The same product in f32, against the f64 product of the f32-rounded operands: within
        // 4·k·eps·Σ|a||b| (the rounding-error bound of a k-term dot product, with margin).
        let af = a.to_dtype(DType::F32).unwrap();
        let bf = b.to_dtype(DType::F32).unwrap();
        let gf = af.matmul(&bf).unwrap().to_f64_vec().unwrap();
        let r32 = |v: f64| v as f32 as f64;
        for i in 0..m { for j in 0..n {
            let terms = (0..k).map(|p| r32(va[i * k + p]) * r32(vb[p * n + j]));
            let (want, mag) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
            let bound = 4.0 * k as f64 * f32::EPSILON as f64 * mag + 1e-30;
            let err = (gf[i * n + j] - want).abs();
            prop_assert!(err <= bound, "f32 ({i}, {j}): {} vs {want}, error {err:e} > {bound:e}", gf[i * n + j]);
        }}
    }
}

proptest! {
    #[test]
    fn reshape_views_agree_with_copies(
        dims in prop::collection::vec(1usize..4, 1..5),
        seed in any::<u64>(),
        split_at in 0usize..5,
    ) {
        let n: usize = dims.iter().product();
        let x = t64(&values(n), &dims);
        let rank = dims.len();
        let mut perm: Vec<usize> = (0..rank).collect();
        let mut s = seed;
        for i in (1..rank).rev() { if s % 3 == 0 { perm.swap(i, i - 1); } s /= 3; }
        let d = (s % rank as u64) as usize;
        let v = x.permute(&perm).unwrap();
        let v = if v.dims()[d] > 1 && s % 2 == 0 { v.narrow(d, 1, v.dims()[d] - 1).unwrap() } else { v };
        // Targets: merge all, merge a prefix, and split the first dim into its factors.
        let vd = v.dims().to_vec();
        let k = split_at.min(vd.len());
        let mut merged: Vec<usize> = vec![vd[..k].iter().product()];
        merged.extend_from_slice(&vd[k..]);
        let mut split = vec![1, vd[0]];
        split.extend_from_slice(&vd[1..]);
        for target in [vec![v.elem_count()], merged, split] {
            let want = v.contiguous().unwrap().to_vec::<f64>().unwrap();
            let r = v.reshape(target.clone()).unwrap();
            prop_assert_eq!(r.dims(), target.as_slice());
            prop_assert_eq!(r.to_vec::<f64>().unwrap(), want);
            if let Ok(view) = v.view(target.clone()) {
                prop_assert!(view.same_storage(&x));
                prop_assert_eq!(view.to_vec::<f64>().unwrap(), r.to_vec::<f64>().unwrap());
            }
        }
    }
}

#[test]
fn splitting_a_sliced_dim_is_a_view() {
    // The attention layout: (B, T, 3C) narrowed to C columns, then split into heads.
    let x = Tensor::arange(0.0, 2.0 * 3.0 * 12.0, 1.0, DType::F32, CPU)
        .unwrap()
        .reshape([2, 3, 12])
        .unwrap();
    let q = x.narrow(2, 4, 4).unwrap().reshape([2, 3, 2, 2]).unwrap();
    assert!(q.same_storage(&x));
    assert_eq!(
        q.to_vec::<f32>().unwrap(),
        x.narrow(2, 4, 4)
            .unwrap()
            .contiguous()
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    );
}

fn transpose(v: &[f64], r: usize, c: usize) -> Vec<f64> {
    (0..r * c)
        .map(|p| {
            let (j, i) = (p / r, p % r);
            v[i * c + j]
        })
        .collect()
}

#[test]
fn views_share_storage() {
    let x = Tensor::arange(0.0, 24.0, 1.0, DType::F32, CPU)
        .unwrap()
        .reshape([2, 3, 4])
        .unwrap();
    for v in [
        x.permute(&[2, 0, 1]).unwrap(),
        x.transpose(0, 1).unwrap(),
        x.narrow(2, 1, 2).unwrap(),
        x.unsqueeze(1).unwrap(),
        x.get(1).unwrap(),
        x.reshape([6, 4]).unwrap(),
        x.narrow(0, 0, 1).unwrap().squeeze(0).unwrap(),
        x.narrow(0, 0, 1).unwrap().expand([5, 3, 4]).unwrap(),
        x.split(2, 2).unwrap()[1].clone(),
    ] {
        assert!(v.same_storage(&x), "{v:?} copied");
    }
    // reshape of a non-contiguous view must copy.
    assert!(!x
        .transpose(0, 2)
        .unwrap()
        .reshape(24)
        .unwrap()
        .same_storage(&x));
}

/// Products large enough that the CPU backend splits their rows into one band per thread
/// (bands of a multiple of 16 rows and a shorter last one), with every operand layout.
#[test]
fn matmul_split_into_row_bands_matches_naive() {
    for (m, k, n) in [(100, 70, 50), (130, 64, 40), (768, 33, 17)] {
        let (va, vb) = (values(m * k), values(k * n + 3)[3..].to_vec());
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = if ta {
                t64(&transpose(&va, m, k), &[k, m]).t().unwrap()
            } else {
                t64(&va, &[m, k])
            };
            let b = if tb {
                t64(&transpose(&vb, k, n), &[n, k]).t().unwrap()
            } else {
                t64(&vb, &[k, n])
            };
            let got = a.matmul(&b).unwrap().to_vec::<f64>().unwrap();
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|p| va[i * k + p] * vb[p * n + j]).sum();
                    assert!(
                        (got[i * n + j] - want).abs() < 1e-9,
                        "{m}x{k}x{n} ta={ta} tb={tb} at ({i}, {j}): {} vs {want}",
                        got[i * n + j]
                    );
                }
            }
        }
    }
    // A batch of two such products.
    let (m, k, n) = (100, 70, 50);
    let (va, vb) = (values(2 * m * k), values(2 * k * n));
    let got = t64(&va, &[2, m, k])
        .matmul(&t64(&vb, &[2, k, n]))
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    for bi in 0..2 {
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|p| va[bi * m * k + i * k + p] * vb[bi * k * n + p * n + j])
                    .sum();
                assert!((got[bi * m * n + i * n + j] - want).abs() < 1e-9);
            }
        }
    }
}
