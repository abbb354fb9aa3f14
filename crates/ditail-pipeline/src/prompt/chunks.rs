//! Long prompts in 75-token chunks, as AUTOMATIC1111 encodes them
//! ([`modules/sd_hijack_clip.py`](https://github.com/AUTOMATIC1111/stable-diffusion-webui/blob/82a973c04367123ae98bd9abdf80d9eda9b910e2/modules/sd_hijack_clip.py),
//! `tokenize_line`): each chunk holds up to 75 of the prompt's tokens, wrapped in the
//! start and end tokens and padded to 77, so the text encoder sees each chunk as a prompt
//! of its own; the chunks' encodings are then laid end to end.
//!
//! A chunk that fills up in the middle of a phrase gives the phrase to the next chunk when
//! a comma is at most 20 tokens back (A1111's default "comma padding backtrack"), and
//! `BREAK` closes the chunk at once (even an empty one, as A1111 does).

use super::parse::Piece;

/// Tokens of the prompt per chunk.
pub const CHUNK_TOKENS: usize = 75;
/// How far back a comma may be for the phrase after it to move to the next chunk.
pub const COMMA_BACKTRACK: usize = 20;

/// One chunk: the text encoder's 77 ids and the weight of each.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    /// `<|startoftext|>`, up to 75 prompt tokens, `<|endoftext|>` to the end (or the
    /// tokenizer's padding token after the first one).
    pub ids: Vec<u32>,
    /// The emphasis weight of each id (1 for the special and padding tokens).
    pub weights: Vec<f32>,
    /// Textual-inversion embeddings: (first position in `ids`, name); their vectors replace
    /// the token embeddings there (the ids are placeholders, 0).
    pub embeddings: Vec<(usize, String)>,
}

/// What a piece of a prompt becomes: tokens, and embeddings where their names were.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// A token id.
    Token(u32),
    /// An embedding of `len` vectors; `first` is the first token of its name (where a
    /// chunk's comma rule looks, as A1111's does).
    Embedding {
        /// Its name.
        name: String,
        /// Its vectors.
        len: usize,
        /// The first token its name was written with.
        first: u32,
    },
}

/// The special tokens chunking needs.
#[derive(Clone, Copy, Debug)]
pub struct Specials {
    /// `<|startoftext|>`.
    pub bos: u32,
    /// `<|endoftext|>`.
    pub eos: u32,
    /// What follows the first `<|endoftext|>` (SDXL's second tokenizer: `!`).
    pub pad: u32,
    /// `,` as a word of its own.
    pub comma: u32,
}

/// Splits parsed pieces, each already tokenized (`items[i]` for `pieces[i]`, nothing for a
/// `BREAK`), into chunks.
pub fn chunk(pieces: &[Piece], items: &[Vec<Item>], sp: Specials) -> Vec<Chunk> {
    let mut b = Builder {
        sp,
        chunks: Vec::new(),
        ids: Vec::new(),
        weights: Vec::new(),
        embeddings: Vec::new(),
        last_comma: None,
    };
    for (piece, items) in pieces.iter().zip(items) {
        let weight = match piece {
            Piece::Break => {
                b.close();
                continue;
            }
            Piece::Text(_, w) => *w as f32,
        };
        for item in items {
            b.push(item, weight);
        }
    }
    if !b.ids.is_empty() || b.chunks.is_empty() {
        b.close();
    }
    b.chunks
}

/// The chunks so far and the one being filled.
struct Builder {
    sp: Specials,
    chunks: Vec<Chunk>,
    ids: Vec<u32>,
    weights: Vec<f32>,
    embeddings: Vec<(usize, String)>,
    /// Where the last comma of the chunk being filled is.
    last_comma: Option<usize>,
}

impl Builder {
    fn push(&mut self, item: &Item, weight: f32) {
        let t = match item {
            Item::Token(t) => *t,
            Item::Embedding { first, .. } => *first,
        };
        if t == self.sp.comma {
            self.last_comma = Some(self.ids.len());
        } else if let Some(comma) = self.last_comma
            && COMMA_BACKTRACK != 0
            && self.ids.len() == CHUNK_TOKENS
            && self.ids.len() - comma <= COMMA_BACKTRACK
        {
            // The phrase after the comma moves on whole.
            let at = comma + 1;
            let mut ids = self.ids.split_off(at);
            let mut weights = self.weights.split_off(at);
            let moved: Vec<(usize, String)> = self
                .embeddings
                .extract_if(.., |(p, _)| *p >= at)
                .map(|(p, n)| (p - at, n))
                .collect();
            self.close();
            self.ids.append(&mut ids);
            self.weights.append(&mut weights);
            self.embeddings = moved;
        }
        if self.ids.len() == CHUNK_TOKENS {
            self.close();
        }
        match item {
            Item::Token(t) => {
                self.ids.push(*t);
                self.weights.push(weight);
            }
            Item::Embedding { name, len, .. } => {
                if self.ids.len() + len > CHUNK_TOKENS {
                    self.close();
                }
                self.embeddings.push((self.ids.len(), name.clone()));
                self.ids.extend(std::iter::repeat_n(0, *len));
                self.weights.extend(std::iter::repeat_n(weight, *len));
            }
        }
    }

    /// Wraps the chunk being filled in start and end tokens, pads it to 77 and starts the
    /// next.
    fn close(&mut self) {
        let sp = self.sp;
        let mut ids = Vec::with_capacity(CHUNK_TOKENS + 2);
        ids.push(sp.bos);
        ids.append(&mut self.ids);
        ids.resize(CHUNK_TOKENS + 2, sp.eos);
        // After the first end token: the tokenizer's padding (A1111 and diffusers alike).
        let first_end = ids[1..]
            .iter()
            .position(|&t| t == sp.eos)
            .map_or(ids.len(), |i| i + 1);
        for t in ids.iter_mut().skip(first_end + 1) {
            *t = sp.pad;
        }
        let mut weights = Vec::with_capacity(CHUNK_TOKENS + 2);
        weights.push(1.0);
        weights.append(&mut self.weights);
        weights.resize(CHUNK_TOKENS + 2, 1.0);
        self.last_comma = None;
        // Positions in `ids`, after the start token.
        let embeddings = std::mem::take(&mut self.embeddings)
            .into_iter()
            .map(|(p, n)| (p + 1, n))
            .collect();
        self.chunks.push(Chunk {
            ids,
            weights,
            embeddings,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SP: Specials = Specials {
        bos: 900,
        eos: 901,
        pad: 0,
        comma: 5,
    };

    fn text(w: f64) -> Piece {
        Piece::Text(String::new(), w)
    }

    fn tokens(ids: &[u32]) -> Vec<Item> {
        ids.iter().map(|&t| Item::Token(t)).collect()
    }

    #[test]
    fn an_embedding_takes_its_vectors_positions_and_never_straddles_chunks() {
        let emb = |len| Item::Embedding {
            name: "neg".into(),
            len,
            first: 42,
        };
        let c = chunk(&[text(0.9)], &[vec![Item::Token(10), emb(3)]], SP);
        assert_eq!(&c[0].ids[..6], &[900, 10, 0, 0, 0, 901]);
        assert_eq!(c[0].embeddings, vec![(2, "neg".to_string())]);
        assert_eq!(&c[0].weights[1..5], &[0.9; 4]);
        // 74 tokens, then 3 vectors: they start the next chunk.
        let mut items = tokens(&(100..174).collect::<Vec<_>>());
        items.push(emb(3));
        let c = chunk(&[text(1.0)], &[items], SP);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].embeddings, vec![(1, "neg".to_string())]);
    }

    #[test]
    fn a_short_prompt_is_one_padded_chunk() {
        let c = chunk(&[text(1.5)], &[tokens(&[10, 11])], SP);
        assert_eq!(c.len(), 1);
        assert_eq!(&c[0].ids[..5], &[900, 10, 11, 901, 0]);
        assert_eq!(c[0].ids.len(), 77);
        assert_eq!(&c[0].weights[..4], &[1.0, 1.5, 1.5, 1.0]);
    }

    #[test]
    fn long_prompts_split_after_a_near_comma_and_at_break() {
        // 70 tokens, a comma, 10 more: the 4 tokens after the comma that fit move on.
        let mut toks: Vec<u32> = (100..170).collect();
        toks.push(5);
        toks.extend(200..210);
        let c = chunk(&[text(1.0)], &[tokens(&toks)], SP);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].ids[71], 5);
        assert_eq!(c[0].ids[72], 901);
        assert_eq!(&c[1].ids[..3], &[900, 200, 201]);
        let c = chunk(
            &[text(1.0), Piece::Break, text(1.0)],
            &[tokens(&[10]), vec![], tokens(&[11])],
            SP,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].ids[1], 11);
    }
}
