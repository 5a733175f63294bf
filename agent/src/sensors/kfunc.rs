//! The programs' one kfunc call, `bpf_rdonly_cast`, resolved before aya
//! loads the object: aya 0.14 resolves no kfuncs, so the programs hold the
//! call as a raw instruction with a marker immediate
//! ([`vigil_common::CAST_MARKER`]), and here each marker in the object's
//! code becomes a call of the running kernel's kfunc, or `r0 = r1` where
//! the kernel has none (its typed reads are then switched off).

use object::{Object as _, ObjectSection as _, SectionKind};
use vigil_common::{CAST_FALLBACK, CAST_MARKER};

#[derive(Debug, thiserror::Error)]
pub enum KfuncError {
    #[error("parsing the eBPF object: {0}")]
    Parse(#[from] object::Error),
    #[error("eBPF object section {section}: has no file range")]
    NoRange { section: String },
}

/// An eBPF object with its casts resolved, 8-byte aligned for aya's parser.
pub struct Patched {
    words: Vec<u64>,
    len: usize,
    /// Casts replaced.
    pub casts: usize,
}

impl Patched {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes of the words, which hold the whole object.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }
}

/// `object` with every cast marker in its code replaced: by a call of the
/// kfunc with BTF id `kfunc`, or by `r0 = r1` when `None`.
pub fn resolve_casts(object: &[u8], kfunc: Option<u32>) -> Result<Patched, KfuncError> {
    let mut words = vec![0u64; object.len().div_ceil(8)];
    // SAFETY: the words have room for every byte of the object.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), object.len()) };
    bytes.copy_from_slice(object);
    let replacement = kfunc.map_or(CAST_FALLBACK, |id| {
        CAST_MARKER & 0xffff_ffff | u64::from(id) << 32
    });
    let mut code = Vec::new();
    {
        let file = object::File::parse(&*bytes)?;
        for section in file.sections() {
            if section.kind() != SectionKind::Text {
                continue;
            }
            let (start, size) = section.file_range().ok_or_else(|| KfuncError::NoRange {
                section: section.name().unwrap_or("?").to_owned(),
            })?;
            code.push((start, size));
        }
    }
    let mut casts = 0;
    for (start, size) in code {
        let (Ok(start), Ok(size)) = (usize::try_from(start), usize::try_from(size)) else {
            continue;
        };
        let Some(text) = bytes.get_mut(start..start + size) else {
            continue;
        };
        // Instructions are 8 bytes from the section's start; a wide
        // (16-byte) load's second half has opcode 0, never the marker's.
        for insn in text.chunks_exact_mut(8) {
            let word = u64::from_le_bytes(insn.try_into().expect("8 bytes"));
            if word == CAST_MARKER {
                insn.copy_from_slice(&replacement.to_le_bytes());
                casts += 1;
            }
        }
    }
    Ok(Patched {
        words,
        len: object.len(),
        casts,
    })
}

#[cfg(test)]
mod tests {
    use vigil_common::CAST_MARKER_IMM;

    use super::*;

    #[test]
    fn the_marker_is_a_kfunc_call() {
        let insn = CAST_MARKER.to_le_bytes();
        assert_eq!(insn[0], 0x85, "BPF_JMP | BPF_CALL");
        assert_eq!(insn[1] >> 4, 2, "source register BPF_PSEUDO_KFUNC_CALL");
        assert_eq!(insn[1] & 0xf, 0, "destination register 0");
        assert_eq!(
            u16::from_le_bytes([insn[2], insn[3]]),
            0,
            "offset 0: vmlinux"
        );
        assert_eq!(
            u32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]),
            CAST_MARKER_IMM
        );
        let mov = CAST_FALLBACK.to_le_bytes();
        assert_eq!(mov[0], 0xbf, "BPF_ALU64 | BPF_MOV | BPF_X");
        assert_eq!(mov[1], 0x10, "r0 = r1");
    }

    /// The shipped object holds casts, and all of them are replaced, with
    /// the kfunc's id or with the move; nothing else changes.
    #[test]
    fn every_cast_of_the_object_is_resolved() {
        let object = super::super::EBPF_OBJECT;
        assert!(!object.is_empty(), "built without its eBPF object");
        let called = resolve_casts(object, Some(0x1234)).unwrap();
        let moved = resolve_casts(object, None).unwrap();
        assert!(called.casts > 0, "the path programs cast pointers");
        assert_eq!(called.casts, moved.casts);
        let changed: Vec<usize> = object
            .iter()
            .zip(called.bytes())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i)
            .collect();
        assert!(changed.len() <= called.casts * 4, "only immediates change");
        let again = resolve_casts(called.bytes(), Some(0x1234)).unwrap();
        assert_eq!(again.casts, 0, "no marker is left");
    }
}
