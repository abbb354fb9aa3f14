//! Latents files (`--from-latents`): `latents::load`, and for a file it accepts, a save and a
//! second load that must give back the same tensors, bit for bit, and the same metadata.

use ditail::pipeline::latents;

fn bits(t: &burn::prelude::Tensor<4>) -> (Vec<usize>, Vec<u32>) {
    let data = t.clone().into_data().convert::<f32>();
    let shape = data.shape().to_vec();
    let values = data.try_into_vec::<f32>().expect("f32 data");
    (shape, values.iter().map(|v| v.to_bits()).collect())
}

pub fn run(data: &[u8]) {
    let device = super::device();
    let path = super::input_file("in.latents.safetensors", data);
    let Ok((inv, last)) = latents::load(&path, &device) else {
        return;
    };
    let again = super::scratch().join("again.latents.safetensors");
    latents::save(&again, &inv, last.as_ref()).expect("an accepted latents file saves");
    let (inv2, last2) = latents::load(&again, &device).expect("a saved latents file loads");
    assert_eq!(inv.meta(), inv2.meta());
    assert_eq!(bits(inv.z0()), bits(inv2.z0()));
    assert_eq!(
        inv.latents().keys().collect::<Vec<_>>(),
        inv2.latents().keys().collect::<Vec<_>>()
    );
    for (t, z) in inv.latents() {
        assert_eq!(bits(z), bits(&inv2.latents()[t]));
    }
    assert_eq!(last.as_ref().map(bits), last2.as_ref().map(bits));
}
