//! The cocktail's contact sheet: a grid of images with labels on both axes (rows: the
//! content's source model, columns: the target model), drawn with an 8x8 bitmap font.

use image::{Rgb, RgbImage, imageops};

const SCALE: u32 = 2;
const GLYPH: u32 = 8 * SCALE;
const PAD: u32 = 8;

/// Draws `text` at (x, y), clipped to `max_width` pixels.
fn draw_text(img: &mut RgbImage, text: &str, x: u32, y: u32, max_width: u32) {
    let max_chars = (max_width / GLYPH) as usize;
    let text: String = if text.chars().count() > max_chars && max_chars > 1 {
        let keep: String = text.chars().take(max_chars - 1).collect();
        keep + "~"
    } else {
        text.chars().take(max_chars).collect()
    };
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY
            .get(ch as usize)
            .copied()
            .unwrap_or(font8x8::legacy::BASIC_LEGACY['?' as usize]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits >> col & 1 == 1 {
                    for dy in 0..SCALE {
                        for dx in 0..SCALE {
                            let px = x + i as u32 * GLYPH + col * SCALE + dx;
                            let py = y + row as u32 * SCALE + dy;
                            if px < img.width() && py < img.height() {
                                img.put_pixel(px, py, Rgb([20, 20, 20]));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A grid of `cells[row][col]` (each scaled to fit `cell` pixels square) with row and
/// column labels.
pub fn contact_sheet(
    cells: &[Vec<RgbImage>],
    rows: &[String],
    cols: &[String],
    cell: u32,
) -> RgbImage {
    let label_w = rows
        .iter()
        .map(|r| r.chars().count() as u32)
        .max()
        .unwrap_or(0)
        .clamp(4, 24)
        * GLYPH
        + 2 * PAD;
    let label_h = GLYPH + 2 * PAD;
    let width = label_w + cols.len() as u32 * (cell + PAD) + PAD;
    let height = label_h + rows.len() as u32 * (cell + PAD) + PAD;
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    for (c, name) in cols.iter().enumerate() {
        let x = label_w + c as u32 * (cell + PAD);
        draw_text(&mut sheet, name, x, PAD, cell);
    }
    for (r, name) in rows.iter().enumerate() {
        let y = label_h + r as u32 * (cell + PAD);
        draw_text(
            &mut sheet,
            name,
            PAD,
            y + cell / 2 - GLYPH / 2,
            label_w - PAD,
        );
        for (c, img) in cells[r].iter().enumerate() {
            let (w, h) = img.dimensions();
            let s = cell as f64 / w.max(h) as f64;
            let (tw, th) = (
                ((w as f64 * s).round() as u32).max(1),
                ((h as f64 * s).round() as u32).max(1),
            );
            let thumb = imageops::resize(img, tw, th, imageops::FilterType::Triangle);
            let x = label_w + c as u32 * (cell + PAD) + (cell - tw) / 2;
            imageops::replace(&mut sheet, &thumb, x as i64, (y + (cell - th) / 2) as i64);
        }
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_cells_land_where_the_layout_says() {
        let red = RgbImage::from_pixel(16, 16, Rgb([255, 0, 0]));
        let blue = RgbImage::from_pixel(16, 8, Rgb([0, 0, 255]));
        let sheet = contact_sheet(
            &[vec![red.clone(), blue.clone()], vec![blue, red]],
            &["a".into(), "b".into()],
            &["x".into(), "y".into()],
            32,
        );
        let label_w = 4 * GLYPH + 2 * PAD;
        let label_h = GLYPH + 2 * PAD;
        assert_eq!(sheet.width(), label_w + 2 * (32 + PAD) + PAD);
        // Cell (0, 0) is red at its centre; cell (0, 1) is blue, letterboxed vertically.
        assert_eq!(
            sheet.get_pixel(label_w + 16, label_h + 16),
            &Rgb([255, 0, 0])
        );
        let x1 = label_w + 32 + PAD + 16;
        assert_eq!(sheet.get_pixel(x1, label_h + 16), &Rgb([0, 0, 255]));
        assert_eq!(sheet.get_pixel(x1, label_h + 2), &Rgb([255, 255, 255]));
        // Some label ink in the header and in the row-label column.
        let ink = |x0: u32, y0: u32, w: u32, h: u32| {
            (x0..x0 + w).any(|x| (y0..y0 + h).any(|y| sheet.get_pixel(x, y).0 == [20, 20, 20]))
        };
        assert!(ink(label_w, PAD, GLYPH, GLYPH), "column label");
        assert!(ink(PAD, label_h, GLYPH, 32), "row label");
    }
}
