//! Printing tensors the way PyTorch does: aligned values, `...` past 1000 elements (3 per edge),
//! and the shape, dtype and device after the values.

use std::fmt;

use crate::Tensor;

const THRESHOLD: usize = 1000;
const EDGE: usize = 3;

enum Style {
    Int,
    /// Whole floats print as `1.`.
    WholeFloat,
    Fixed,
    Sci,
}

fn style(values: &[f64], is_float: bool) -> Style {
    if !is_float {
        return Style::Int;
    }
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.iter().all(|v| v.fract() == 0.0) && finite.iter().all(|v| v.abs() < 1e8) {
        return Style::WholeFloat;
    }
    let max = finite.iter().fold(0f64, |m, v| m.max(v.abs()));
    let min = finite
        .iter()
        .filter(|v| **v != 0.0)
        .fold(f64::INFINITY, |m, v| m.min(v.abs()));
    if max >= 1e8 || min < 1e-4 || (min.is_finite() && max / min > 1e3) {
        Style::Sci
    } else {
        Style::Fixed
    }
}

fn fmt_value(v: f64, s: &Style) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    match s {
        Style::Int => format!("{}", v as i64),
        Style::WholeFloat => format!("{v:.0}."),
        Style::Fixed => format!("{v:.4}"),
        Style::Sci => format!("{v:.4e}"),
    }
}

/// Indices to print along a dim of `n` elements (`None` marks the `...`).
fn shown(n: usize, summarize: bool) -> Vec<Option<usize>> {
    if summarize && n > 2 * EDGE {
        (0..EDGE)
            .map(Some)
            .chain([None])
            .chain((n - EDGE..n).map(Some))
            .collect()
    } else {
        (0..n).map(Some).collect()
    }
}

struct Printer<'a> {
    dims: &'a [usize],
    strides: Vec<usize>,
    cells: Vec<String>,
    width: usize,
    summarize: bool,
}

impl Printer<'_> {
    fn write(&self, out: &mut String, depth: usize, base: usize, indent: usize) {
        if depth == self.dims.len() {
            out.push_str(&format!("{:>w$}", self.cells[base], w = self.width));
            return;
        }
        out.push('[');
        let items = shown(self.dims[depth], self.summarize);
        let last = depth + 1 == self.dims.len();
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                if last {
                    out.push_str(", ");
                } else {
                    out.push(',');
                    out.push_str(&"\n".repeat(self.dims.len() - depth - 1));
                    out.push_str(&" ".repeat(indent + depth + 1));
                }
            }
            match item {
                Some(j) => self.write(out, depth + 1, base + j * self.strides[depth], indent),
                None => out.push_str("..."),
            }
        }
        out.push(']');
    }
}

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = match self.to_f64_vec() {
            Ok(v) => v,
            Err(e) => return write!(f, "tensor(<unreadable: {e}>)"),
        };
        let summarize = values.len() > THRESHOLD;
        let dims = self.dims();
        // Only the printed elements decide the number format, as in PyTorch.
        let strides = crate::Shape::from(dims).stride_contiguous();
        let mut picked = Vec::new();
        collect(dims, &strides, 0, 0, summarize, &values, &mut picked);
        let st = style(&picked, self.dtype().is_float());
        let cells: Vec<String> = values.iter().map(|&v| fmt_value(v, &st)).collect();
        let width = picked
            .iter()
            .map(|&v| fmt_value(v, &st).len())
            .max()
            .unwrap_or(0);
        let mut body = String::new();
        let p = Printer {
            dims,
            strides,
            cells,
            width,
            summarize,
        };
        p.write(&mut body, 0, 0, "tensor(".len());
        write!(
            f,
            "tensor({body}, shape={}, dtype={}, device={}",
            self.shape(),
            self.dtype().as_str(),
            self.device()
        )?;
        if self.requires_grad() {
            write!(f, ", requires_grad=True")?;
        }
        write!(f, ")")
    }
}

fn collect(
    dims: &[usize],
    strides: &[usize],
    depth: usize,
    base: usize,
    summarize: bool,
    v: &[f64],
    out: &mut Vec<f64>,
) {
    if depth == dims.len() {
        if let Some(&x) = v.get(base) {
            out.push(x);
        }
        return;
    }
    for j in shown(dims[depth], summarize).into_iter().flatten() {
        collect(
            dims,
            strides,
            depth + 1,
            base + j * strides[depth],
            summarize,
            v,
            out,
        );
    }
}
