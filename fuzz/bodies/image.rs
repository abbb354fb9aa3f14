//! Content and mask images: `preprocess::load_rgb` (header size check, decode, EXIF
//! orientation) then `preprocess` at a working size between 8 and 128 (chosen from the
//! input's length; larger sizes only cost time), and `Mask::from_image` laid on the latent grids of that size. A mask's
//! grid values stay in [0, 1].

use ditail::pipeline::{Mask, preprocess};

pub fn run(data: &[u8]) {
    let device = super::device();
    let path = super::input_file("image", data);
    let size = 8 * (1 + (data.len() % 16) as u32);
    // The latent grid of a square content at this size, unless the content says otherwise.
    let mut grid = (size as usize / 8, size as usize / 8);
    if let Ok(img) = preprocess::load_rgb(&path)
        && let Ok(x) = preprocess::preprocess(&img, size, &device)
    {
        let [_, c, h, w] = x.dims();
        assert_eq!(c, 3);
        assert!(h % 8 == 0 && w % 8 == 0 && h > 0 && w > 0, "{h}x{w}");
        grid = (h / 8, w / 8);
    }
    if let Ok(mask) = Mask::from_image(&path) {
        let (h, w) = grid;
        // The U-Net's resolutions: the latents' grid and its halvings.
        for div in [1, 2, 4, 8] {
            let (gh, gw) = (h.div_ceil(div), w.div_ceil(div));
            let g = mask.grid(gh, gw);
            assert_eq!(g.len(), gh * gw);
            assert!(g.iter().all(|v| (0.0..=1.0).contains(v)), "{g:?}");
        }
    }
}
