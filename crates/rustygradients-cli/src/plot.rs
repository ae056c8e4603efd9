//! The loss curve as a PNG (plotters): training loss per step and the evaluated train/val
//! losses. Text needs a TrueType font; a system DejaVu/Liberation font is used when present,
//! otherwise the curve is drawn without labels.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::metrics::Record;

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

/// Draws the curves to `path` (written to a temporary file, then renamed).
pub fn loss_curve(path: &Path, records: &[Record]) -> anyhow::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (900, 540)).into_drawing_area();
        root.fill(&WHITE)?;
        let last = records.last().map_or(1, |r| r.step.max(1));
        let losses = records
            .iter()
            .flat_map(|r| [Some(r.train_loss), r.val_loss, r.eval_train_loss])
            .flatten();
        let (lo, hi) = losses.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (lo, hi) = if hi > lo {
            (lo * 0.95, hi * 1.02)
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
            records.iter().map(|r| (r.step, r.train_loss)),
            BLUE.mix(0.5),
        ))?;
        if text {
            train
                .label("train (per step)")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
        }
        let evals: Vec<&Record> = records.iter().filter(|r| r.val_loss.is_some()).collect();
        let val = chart.draw_series(LineSeries::new(
            evals
                .iter()
                .map(|r| (r.step, r.val_loss.unwrap_or(f64::NAN))),
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
