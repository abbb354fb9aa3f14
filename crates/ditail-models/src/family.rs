//! The model families ditail runs: Stable Diffusion 1.x and Stable Diffusion XL.
//!
//! A family fixes what the networks expect from each other: the latent space (the VAE's
//! scaling factor and what its latents mean), the text encoders and the U-Net's
//! conditioning. Two models of different families cannot share latents, so Ditail cannot
//! invert with one and sample with the other.

/// A Stable Diffusion model family (`sd1` / `sdxl` in saved files).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// SD 1.x (1.4, 1.5 and their fine-tunes): one CLIP ViT-L/14 text encoder, 512 px.
    Sd1,
    /// SDXL (1.0, Pony, Illustrious, NoobAI and their fine-tunes): CLIP ViT-L/14 and
    /// OpenCLIP ViT-bigG/14, pooled-text and size conditioning, 1024 px.
    Sdxl,
}

impl Family {
    /// The family's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::Sd1 => "Stable Diffusion 1.x",
            Family::Sdxl => "Stable Diffusion XL",
        }
    }

    /// The image side the family was trained at (the default working size).
    pub fn native_size(self) -> u32 {
        match self {
            Family::Sd1 => 512,
            Family::Sdxl => 1024,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
