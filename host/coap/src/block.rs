//! Block-wise transfer (RFC 7959): the Block1/Block2 option value and request-body reassembly.

/// A Block1/Block2 option value: block number, "more blocks follow", and size exponent
/// (block size = 2^(szx+4), 16…1024 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub num: u32,
    pub more: bool,
    pub szx: u8,
}

/// The largest block size CoAP allows (szx 6 = 1024 bytes); szx 7 is reserved (BERT, TCP only).
pub const MAX_SZX: u8 = 6;

impl Block {
    pub fn size(self) -> usize {
        1usize << (self.szx as usize + 4)
    }

    /// The size exponent of the largest block not bigger than `bytes`.
    pub fn szx_for(bytes: usize) -> u8 {
        let mut szx = MAX_SZX;
        while szx > 0 && (1usize << (szx as usize + 4)) > bytes {
            szx -= 1;
        }
        szx
    }

    /// Decodes an option value (0–3 bytes, big-endian); `None` for a reserved size or a value
    /// too long to be a block option.
    pub fn decode(value: &[u8]) -> Option<Block> {
        if value.len() > 3 {
            return None;
        }
        let v = value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        let szx = (v & 0x7) as u8;
        if szx > MAX_SZX {
            return None;
        }
        Some(Block {
            num: v >> 4,
            more: v & 0x8 != 0,
            szx,
        })
    }

    /// Encodes with the minimal number of bytes (zero is the empty value).
    pub fn encode(self) -> Vec<u8> {
        let v = (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx);
        let bytes = v.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        bytes[skip..].to_vec()
    }
}

/// Why a Block1 fragment was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum UploadError {
    /// The body would exceed the limit (answer 4.13 with Size1 = the limit).
    TooLarge { limit: usize },
    /// A block out of order, or the start of the body is missing (answer 4.08).
    Incomplete(String),
}

/// A request body arriving in Block1 fragments. Memory is bounded by the body limit.
#[derive(Debug)]
pub struct Upload {
    /// The request URI the fragments belong to; a fragment for another URI restarts the upload.
    pub path: String,
    body: Vec<u8>,
    szx: u8,
    next_num: u32,
}

impl Upload {
    /// Accepts block `block` for `path`. Returns the complete body on the last block.
    pub fn feed(
        slot: &mut Option<Upload>,
        path: &str,
        block: Block,
        payload: &[u8],
        limit: usize,
    ) -> Result<Option<Vec<u8>>, UploadError> {
        if block.num == 0 {
            // A new body: whatever was in progress for this peer is abandoned.
            *slot = Some(Upload {
                path: path.to_string(),
                body: Vec::new(),
                szx: block.szx,
                next_num: 0,
            });
        }
        let Some(upload) = slot.as_mut().filter(|u| u.path == path) else {
            return Err(UploadError::Incomplete(format!(
                "block {} of a body whose first block was not received: start again from block 0",
                block.num
            )));
        };
        // A client may lower the block size mid-transfer (RFC 7959 §2.5): renumber in the new size.
        let offset = block.num as usize * block.size();
        if offset != upload.body.len() {
            let expected = upload.body.len() / block.size();
            *slot = None;
            return Err(UploadError::Incomplete(format!(
                "block {} arrived out of order (expected block {expected}): start again from block 0",
                block.num
            )));
        }
        if block.more && payload.len() != block.size() {
            *slot = None;
            return Err(UploadError::Incomplete(format!(
                "block {} carries {} bytes but its size exponent says {}",
                block.num,
                payload.len(),
                block.size()
            )));
        }
        if upload.body.len() + payload.len() > limit {
            *slot = None;
            return Err(UploadError::TooLarge { limit });
        }
        upload.body.extend_from_slice(payload);
        upload.szx = block.szx;
        upload.next_num = block.num + 1;
        if block.more {
            Ok(None)
        } else {
            Ok(slot.take().map(|u| u.body))
        }
    }

    pub fn len(&self) -> usize {
        self.body.len()
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

/// A response too large for one datagram, kept so that the client can fetch its blocks.
#[derive(Debug)]
pub struct Download {
    pub path: String,
    pub body: Vec<u8>,
}

impl Download {
    /// Block `num` of the body in blocks of `szx`; `None` past the end.
    pub fn block(&self, num: u32, szx: u8) -> Option<(Block, &[u8])> {
        block_of(&self.body, num, szx)
    }
}

/// Block `num` of `body` in blocks of `szx`; `None` past the end.
pub fn block_of(body: &[u8], num: u32, szx: u8) -> Option<(Block, &[u8])> {
    let size = 1usize << (szx as usize + 4);
    let start = (num as usize).checked_mul(size)?;
    if start >= body.len() && !(start == 0 && body.is_empty()) {
        return None;
    }
    let end = (start + size).min(body.len());
    Some((
        Block {
            num,
            more: end < body.len(),
            szx,
        },
        &body[start..end],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_value_round_trips() {
        for b in [
            Block {
                num: 0,
                more: false,
                szx: 0,
            },
            Block {
                num: 0,
                more: true,
                szx: 6,
            },
            Block {
                num: 15,
                more: true,
                szx: 2,
            },
            Block {
                num: 4095,
                more: false,
                szx: 6,
            },
            Block {
                num: 1 << 19,
                more: true,
                szx: 1,
            },
        ] {
            assert_eq!(Block::decode(&b.encode()), Some(b), "{b:?}");
        }
        assert_eq!(
            Block::decode(&[]).unwrap(),
            Block {
                num: 0,
                more: false,
                szx: 0
            }
        );
        assert_eq!(Block::decode(&[0x07]), None, "szx 7 is reserved");
        assert_eq!(Block::decode(&[1, 2, 3, 4]), None);
    }

    #[test]
    fn szx_for_picks_the_largest_fitting_block() {
        assert_eq!(Block::szx_for(1024), 6);
        assert_eq!(Block::szx_for(5000), 6);
        assert_eq!(Block::szx_for(1000), 5);
        assert_eq!(Block::szx_for(16), 0);
        assert_eq!(Block::szx_for(1), 0);
    }

    #[test]
    fn reassembles_in_order_and_rejects_gaps_and_oversize() {
        let mut slot = None;
        let b = |num, more| Block { num, more, szx: 0 };
        assert_eq!(
            Upload::feed(&mut slot, "p", b(0, true), &[1; 16], 100),
            Ok(None)
        );
        assert_eq!(
            Upload::feed(&mut slot, "p", b(1, true), &[2; 16], 100),
            Ok(None)
        );
        let body = Upload::feed(&mut slot, "p", b(2, false), &[3; 5], 100)
            .unwrap()
            .unwrap();
        assert_eq!(body.len(), 37);
        assert!(slot.is_none());

        assert!(matches!(
            Upload::feed(&mut slot, "p", b(3, false), &[0; 5], 100),
            Err(UploadError::Incomplete(_))
        ));
        Upload::feed(&mut slot, "p", b(0, true), &[1; 16], 100).unwrap();
        assert!(matches!(
            Upload::feed(&mut slot, "p", b(2, true), &[1; 16], 100),
            Err(UploadError::Incomplete(_))
        ));
        Upload::feed(&mut slot, "p", b(0, true), &[1; 16], 20).unwrap();
        assert_eq!(
            Upload::feed(&mut slot, "p", b(1, true), &[1; 16], 20),
            Err(UploadError::TooLarge { limit: 20 })
        );
        Upload::feed(&mut slot, "p", b(0, true), &[1; 16], 100).unwrap();
        assert!(
            Upload::feed(&mut slot, "other", b(1, false), &[1; 3], 100).is_err(),
            "a fragment for another URI does not join the body"
        );
        Upload::feed(&mut slot, "p", b(0, true), &[1; 16], 100).unwrap();
        assert!(
            Upload::feed(&mut slot, "p", b(1, true), &[1; 3], 100).is_err(),
            "a short middle block is refused"
        );
    }

    #[test]
    fn download_blocks_cover_the_body() {
        let body: Vec<u8> = (0..40).collect();
        let (b0, d0) = block_of(&body, 0, 0).unwrap();
        assert!(b0.more);
        assert_eq!(d0, &body[..16]);
        let (b2, d2) = block_of(&body, 2, 0).unwrap();
        assert!(!b2.more);
        assert_eq!(d2, &body[32..]);
        assert!(block_of(&body, 3, 0).is_none());
        assert!(block_of(&body, u32::MAX, 6).is_none());
        assert_eq!(block_of(&[], 0, 6).unwrap().1, &[] as &[u8]);
    }
}
