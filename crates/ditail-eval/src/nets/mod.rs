//! The metrics' networks in burn, named and keyed like their transformers and pytorch-fid
//! counterparts: [`clip_model`] (CLIP ViT-L/14, its vision tower [`clip_vision`] beside the
//! text tower Stable Diffusion shares, `ditail_models::clip`), [`vit`] (DINO ViT-B/8) and
//! [`inception`] (pytorch-fid's InceptionV3), and how each is found and loaded ([`load`],
//! on the models crate's weight loader).

pub mod clip_model;
pub mod clip_vision;
pub mod inception;
pub mod load;
pub mod vit;
