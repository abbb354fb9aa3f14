//! One message, each face's names: the checks shared by every face name a setting by its
//! command-line flag (`--steps 7 needs timestep 721, which --inv-steps 4 does not
//! produce`), and [`reword`] turns those flags into what the other faces' users know: the
//! web page's field labels and the C API's struct fields in words (`sampling steps 7 needs
//! ...`), Python's keyword arguments (`steps 7 needs ..., which inv_steps 4 ...`).
//!
//! One table holds every flag the application layer's messages name, so a new check reads
//! right everywhere once its flag is in it; a flag missing here stays a flag.

/// How a face names settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// The command line's flags (`--inv-steps`): messages as they are.
    Flags,
    /// Words, as the web page labels its fields (`inversion steps`); the C API's errors
    /// use them too, its struct fields being documented by the same words.
    Labels,
    /// Python's keyword arguments (`inv_steps`).
    Keywords,
}

/// Every flag the shared checks name: `(flag, label, keyword)`.
const SETTINGS: &[(&str, &str, &str)] = &[
    ("--prompt", "prompt", "prompt"),
    ("--negative-prompt", "negative prompt", "negative_prompt"),
    ("--inv-prompt", "inversion prompt", "inv_prompt"),
    (
        "--inv-negative-prompt",
        "inversion negative prompt",
        "inv_negative_prompt",
    ),
    ("--inv-steps", "inversion steps", "inv_steps"),
    ("--steps", "sampling steps", "steps"),
    ("--conv-ratio", "conv ratio", "conv_ratio"),
    ("--attn-ratio", "attn ratio", "attn_ratio"),
    ("--clip-skip", "clip skip", "clip_skip"),
    ("--omega", "omega", "omega"),
    ("--alpha", "alpha", "alpha"),
    ("--beta", "beta", "beta"),
    ("--size", "size", "size"),
    ("--mask", "mask", "mask"),
    ("--sites", "injection sites", "sites"),
    ("--no-injection", "no injection", "no_injection"),
    ("--source", "source", "source"),
    ("--target", "target", "target"),
    ("--lora", "LoRA", "loras"),
    ("--embeddings", "embeddings", "embeddings"),
    ("--dtype", "dtype", "dtype"),
    // Python's `device` names both ("cpu", "wgpu:1").
    ("--backend", "backend", "device"),
    ("--device", "device", "device"),
    // Evaluation.
    (
        "--from-metadata",
        "prompts from the metadata",
        "prompts=True",
    ),
    ("--prompts", "prompts", "prompts"),
    ("--content", "content images", "content"),
    ("--reference", "reference images", "reference"),
    ("--inception", "InceptionV3 weights", "inception"),
    ("--clip", "CLIP model", "clip"),
    ("--dino", "DINO model", "dino"),
];

/// `message` with the flags of `SETTINGS` named as `naming` names them. A flag is a
/// whole word: `--` not preceded by a letter, digit or `-` (so a Hugging Face cache folder
/// such as `models--org--name` is left alone), and not followed by one (`--steps` is not
/// the start of `--steps-x`).
pub fn reword(message: &str, naming: Naming) -> String {
    if naming == Naming::Flags {
        return message.to_string();
    }
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-';
    let mut out = String::with_capacity(message.len());
    // `message[..copied]` is in `out`, reworded; the search goes on from `next`.
    let (mut copied, mut next) = (0, 0);
    while let Some(found) = message[next..].find("--") {
        let at = next + found;
        let end = message[at + 2..]
            .find(|c: char| !word(c))
            .map_or(message.len(), |n| at + 2 + n);
        let whole = !message[..at].chars().next_back().is_some_and(word);
        let named = SETTINGS.iter().find(|(f, ..)| *f == &message[at..end]);
        if let (true, Some((_, label, keyword))) = (whole, named) {
            out.push_str(&message[copied..at]);
            out.push_str(if naming == Naming::Labels {
                label
            } else {
                keyword
            });
            copied = end;
        }
        next = end;
    }
    out.push_str(&message[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHECK: &str =
        "--steps 7 needs timestep 721, which --inv-steps 4 does not produce (--sites: x)";

    #[test]
    fn each_face_reads_its_own_names() {
        assert_eq!(reword(CHECK, Naming::Flags), CHECK);
        assert_eq!(
            reword(CHECK, Naming::Labels),
            "sampling steps 7 needs timestep 721, which inversion steps 4 does not produce \
             (injection sites: x)"
        );
        assert_eq!(
            reword(CHECK, Naming::Keywords),
            "steps 7 needs timestep 721, which inv_steps 4 does not produce (sites: x)"
        );
        assert_eq!(
            reword(
                "--from-metadata: the content image is not in the --content folder",
                Naming::Keywords
            ),
            "prompts=True: the content image is not in the content folder"
        );
    }

    #[test]
    fn only_whole_known_flags_change() {
        for untouched in [
            "/cache/hub/models--org--steps/snapshots/x",
            "a--steps",
            "--steps-x 3",
            "--offline or HF_HUB_OFFLINE=1",
            "- -steps and -- alone --",
            "ends in --",
        ] {
            assert_eq!(reword(untouched, Naming::Keywords), untouched);
        }
        assert_eq!(reword("(`--dtype f32`)", Naming::Labels), "(`dtype f32`)");
        assert_eq!(
            reword("--lora x.safetensors", Naming::Keywords),
            "loras x.safetensors"
        );
        // Non-ASCII text around a flag survives the cut.
        assert_eq!(reword("é --mask é", Naming::Labels), "é mask é");
    }

    #[test]
    fn every_flag_has_one_entry_and_names() {
        let mut flags: Vec<_> = SETTINGS.iter().map(|(f, ..)| *f).collect();
        flags.sort_unstable();
        flags.dedup();
        assert_eq!(flags.len(), SETTINGS.len(), "a flag is listed twice");
        for (flag, label, keyword) in SETTINGS {
            assert!(flag.starts_with("--") && !label.is_empty() && !keyword.is_empty());
            assert!(!label.contains("--") && !keyword.contains("--"), "{flag}");
        }
    }
}
