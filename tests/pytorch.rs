//! Convolutions against PyTorch's semantics, written here independently from
//! its documentation (plain loops, zero padding by bounds checks, output
//! sizes by its formulas), for strides, paddings, dilations, groups and
//! output paddings; and transposed convolution as the exact adjoint of
//! convolution: <conv(x), y> == <x, conv_transpose(y)>.

mod common;
use common::*;
use einjit::Formula;

#[derive(Clone, Copy, Debug)]
struct Params {
    stride: usize,
    pad: usize,
    dilation: usize,
    groups: usize,
}

/// torch.nn.functional.conv2d(x, w, stride, padding, dilation, groups).
fn torch_conv2d(x: &ArrayD<f32>, w: &ArrayD<f32>, p: Params) -> ArrayD<f32> {
    let (b, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (k, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    assert_eq!(c, cg * p.groups);
    let kg = k / p.groups;
    let oh = (h + 2 * p.pad - p.dilation * (kh - 1) - 1) / p.stride + 1;
    let ow = (wd + 2 * p.pad - p.dilation * (kw - 1) - 1) / p.stride + 1;
    let mut out = ArrayD::zeros(IxDyn(&[b, k, oh, ow]));
    for n in 0..b {
        for o in 0..k {
            let g = o / kg;
            for y in 0..oh {
                for xx in 0..ow {
                    let mut acc = 0.0f64;
                    for ci in 0..cg {
                        for r in 0..kh {
                            for s in 0..kw {
                                let iy = (y * p.stride + r * p.dilation) as isize - p.pad as isize;
                                let ix = (xx * p.stride + s * p.dilation) as isize - p.pad as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    acc += f64::from(x[[n, g * cg + ci, iy as usize, ix as usize]])
                                        * f64::from(w[[o, ci, r, s]]);
                                }
                            }
                        }
                    }
                    out[[n, o, y, xx]] = acc as f32;
                }
            }
        }
    }
    out
}

/// torch.nn.functional.conv_transpose2d(x, w, stride, padding, output_padding, groups, dilation).
fn torch_conv_transpose2d(
    x: &ArrayD<f32>,
    w: &ArrayD<f32>,
    p: Params,
    out_pad: usize,
) -> ArrayD<f32> {
    let (b, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (c2, kg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    assert_eq!(c, c2);
    let cg = c / p.groups;
    let oh = (h - 1) * p.stride - 2 * p.pad + p.dilation * (kh - 1) + out_pad + 1;
    let ow = (wd - 1) * p.stride - 2 * p.pad + p.dilation * (kw - 1) + out_pad + 1;
    let mut out = ArrayD::<f64>::zeros(IxDyn(&[b, kg * p.groups, oh, ow]));
    for n in 0..b {
        for ci in 0..c {
            let g = ci / cg;
            for y in 0..h {
                for xx in 0..wd {
                    for o in 0..kg {
                        for r in 0..kh {
                            for s in 0..kw {
                                let oy = (y * p.stride + r * p.dilation) as isize - p.pad as isize;
                                let ox = (xx * p.stride + s * p.dilation) as isize - p.pad as isize;
                                if oy >= 0 && ox >= 0 && (oy as usize) < oh && (ox as usize) < ow {
                                    out[[n, g * kg + o, oy as usize, ox as usize]] +=
                                        f64::from(x[[n, ci, y, xx]]) * f64::from(w[[ci, o, r, s]]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out.mapv(|v| v as f32)
}

/// The einjit formula of a PyTorch conv2d.
fn conv_formula(p: Params, cg: usize, kg: usize, oh: usize, ow: usize) -> String {
    let (s, d, pad, g) = (p.stride, p.dilation, p.pad, p.groups);
    format!(
        "O[b,{kg}*g+k,i,j] = I[b,{cg}*g+c,{s}*i+{d}*rx-{pad},{s}*j+{d}*ry-{pad}] * W[{kg}*g+k,c,rx,ry] where g in 0..{g}, k in 0..{kg}, i in 0..{oh}, j in 0..{ow}"
    )
}

/// The einjit formula of a PyTorch conv_transpose2d (scatter form, into zeros).
fn conv_transpose_formula(p: Params, cg: usize) -> String {
    let (s, d, pad, g) = (p.stride, p.dilation, p.pad, p.groups);
    format!("O[b,{{kg}}*g+k,{s}*i+{d}*rx-{pad},{s}*j+{d}*ry-{pad}] += I[b,{cg}*g+c,i,j] * W[{cg}*g+c,k,rx,ry] where g in 0..{g}, c in 0..{cg}")
}

fn run(src: &str, list: &[(&str, &ArrayD<f32>)]) -> ArrayD<f32> {
    let views: Vec<(&str, ndarray::ArrayViewD<f32>)> =
        list.iter().map(|(n, a)| (*n, a.view())).collect();
    let out = Formula::new(src)
        .unwrap()
        .run(&views)
        .unwrap_or_else(|e| panic!("{e}"));
    out["O"].clone()
}

const CASES: [(Params, usize, usize); 7] = [
    // (params, input size, kernel size)
    (
        Params {
            stride: 1,
            pad: 0,
            dilation: 1,
            groups: 1,
        },
        7,
        3,
    ),
    (
        Params {
            stride: 1,
            pad: 1,
            dilation: 1,
            groups: 1,
        },
        9,
        3,
    ),
    (
        Params {
            stride: 2,
            pad: 1,
            dilation: 1,
            groups: 1,
        },
        9,
        3,
    ),
    (
        Params {
            stride: 1,
            pad: 2,
            dilation: 2,
            groups: 1,
        },
        8,
        3,
    ),
    (
        Params {
            stride: 2,
            pad: 0,
            dilation: 1,
            groups: 2,
        },
        10,
        4,
    ),
    (
        Params {
            stride: 3,
            pad: 2,
            dilation: 2,
            groups: 2,
        },
        11,
        3,
    ),
    (
        Params {
            stride: 1,
            pad: 1,
            dilation: 1,
            groups: 4,
        },
        6,
        3,
    ),
];

#[test]
fn conv2d_matches_pytorch() {
    for (p, n, ks) in CASES {
        let (cg, kg) = (2, 3);
        let x = rand(&[2, cg * p.groups, n, n + 1], 1);
        let w = rand(&[kg * p.groups, cg, ks, ks], 2);
        let want = torch_conv2d(&x, &w, p);
        let (oh, ow) = (want.shape()[2], want.shape()[3]);
        let got = run(&conv_formula(p, cg, kg, oh, ow), &[("I", &x), ("W", &w)]);
        assert_close(&got, &want, 1e-4);
    }
}

#[test]
fn conv_transpose2d_matches_pytorch_including_output_padding() {
    for (p, n, ks) in CASES {
        for out_pad in 0..p.stride.min(2) {
            let (cg, kg) = (2, 3);
            let x = rand(&[1, cg * p.groups, n, n - 1], 3);
            let w = rand(&[cg * p.groups, kg, ks, ks], 4);
            let want = torch_conv_transpose2d(&x, &w, p, out_pad);
            let zeros = ArrayD::zeros(IxDyn(want.shape()));
            let src = conv_transpose_formula(p, cg).replace("{kg}", &kg.to_string());
            let got = run(&src, &[("I", &x), ("W", &w), ("O", &zeros)]);
            assert_close(&got, &want, 1e-4);
        }
    }
}

#[test]
fn transposed_convolution_is_the_adjoint_of_convolution() {
    for (p, n, ks) in CASES {
        let (cg, kg) = (2, 3);
        let x = rand(&[1, cg * p.groups, n, n + 2], 5);
        let w = rand(&[kg * p.groups, cg, ks, ks], 6);
        let conv = torch_conv2d(&x, &w, p);
        let (oh, ow) = (conv.shape()[2], conv.shape()[3]);
        let y = rand(conv.shape(), 7);
        let cx = run(&conv_formula(p, cg, kg, oh, ow), &[("I", &x), ("W", &w)]);
        // The transpose maps y back with the same weights, read as
        // conv_transpose's [C_in, C_out/groups, kh, kw] (here C_in = K).
        let zeros = ArrayD::zeros(IxDyn(x.shape()));
        let src = format!(
            "O[b,{cg}*g+c,{s}*i+{d}*rx-{pad},{s}*j+{d}*ry-{pad}] += I[b,{kg}*g+k,i,j] * W[{kg}*g+k,c,rx,ry] where g in 0..{gs}, k in 0..{kg}",
            s = p.stride,
            d = p.dilation,
            pad = p.pad,
            gs = p.groups
        );
        let ty = run(&src, &[("I", &y), ("W", &w), ("O", &zeros)]);
        let lhs: f64 = cx
            .iter()
            .zip(y.iter())
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let rhs: f64 = x
            .iter()
            .zip(ty.iter())
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        assert!(
            (lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()),
            "{p:?}: <conv x, y> = {lhs}, <x, convT y> = {rhs}"
        );
    }
}
