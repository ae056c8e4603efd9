//! The loss curve as a PNG (plotters): training loss per step and the evaluated train/val
//! losses. Text needs a TrueType font; a system DejaVu/Liberation font is used when present,
//! otherwise the curve is drawn without labels.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use rustygradients_io::Record;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Registers the first font found, once per process; false when none exists.
fn have_font() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws the curves to `path` (written to a temporary file, then renamed). NaN and infinite
/// losses (a diverged step) are left out of the curves and of the axis range.
pub fn loss_curve(path: &Path, records: &[Record]) -> anyhow::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("loss.png");
    // Named like every other unfinished write, so a killed run's leftover is cleared at start.
    let tmp = path.with_file_name(format!(".{name}.tmp.{}.png", std::process::id()));
    {
        let root = BitMapBackend::new(&tmp, (900, 540)).into_drawing_area();
        root.fill(&WHITE)?;
        let last = records.last().map_or(1, |r| r.step.max(1));
        let losses = records
            .iter()
            .flat_map(|r| [Some(r.train_loss), r.val_loss, r.eval_train_loss])
            .flatten()
            .filter(|v| v.is_finite());
        let (lo, hi) = losses.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (lo, hi) = if !(lo.is_finite() && hi.is_finite()) {
            (0.0, 1.0) // nothing finite to show
        } else if hi > lo {
            (lo - 0.05 * lo.abs(), hi + 0.02 * hi.abs())
        } else {
            (lo - 0.5, hi + 0.5)
        };
        let text = have_font();
        let mut builder = ChartBuilder::on(&root);
        builder.margin(15);
        if text {
            builder
                .caption("RustyGradients training loss", ("sans-serif", 22))
                .x_label_area_size(40)
                .y_label_area_size(55);
        }
        let mut chart = builder.build_cartesian_2d(0..last, lo..hi)?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc("step").y_desc("loss");
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw()?;
        let train = chart.draw_series(LineSeries::new(
            records
                .iter()
                .filter(|r| r.train_loss.is_finite())
                .map(|r| (r.step, r.train_loss)),
            BLUE.mix(0.5),
        ))?;
        if text {
            train
                .label("train (per step)")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        }
        let val = chart.draw_series(LineSeries::new(
            records
                .iter()
                .filter_map(|r| Some((r.step, r.val_loss.filter(|v| v.is_finite())?))),
            RED.stroke_width(2),
        ))?;
        if text {
            val.label("val (evaluated)")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(step: usize, loss: f64) -> Record {
        Record {
            step,
            train_loss: loss,
            val_loss: step.is_multiple_of(2).then_some(loss),
            eval_train_loss: None,
            grad_norm: None,
            skipped: !loss.is_finite(),
            lr: 1e-3,
            tokens_per_s: 1.0,
            time_s: 1.0,
        }
    }

    /// All-NaN losses once looped forever in the axis computation.
    #[test]
    fn draws_non_finite_and_constant_losses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        for losses in [
            vec![f64::NAN; 5],
            vec![f64::INFINITY, f64::NAN, 2.0],
            vec![3.0; 4],
            vec![-1.0, f64::NEG_INFINITY, 4.0],
        ] {
            let records: Vec<Record> = losses
                .iter()
                .enumerate()
                .map(|(i, &l)| record(i, l))
                .collect();
            loss_curve(&path, &records).unwrap();
            assert!(std::fs::metadata(&path).unwrap().len() > 0);
        }
    }
}
