//! The checksums ext4 uses: crc32c (`metadata_csum`, jbd2 checksum v2/v3),
//! crc16 (`gdt_csum`/`uninit_bg` group descriptors) and the big-endian
//! crc32 of jbd2's checksum v1.
//!
//! ext4 stores the raw crc32c register: seeded, reflected, with no final
//! inversion (the kernel's `crc32c(seed, ...)`).

use crc::{Algorithm, Crc, Table};

/// crc32c with initial value 0 and no final xor, so any seed can be fed in
/// through `digest_with_initial`.
const CRC32C_RAW: Algorithm<u32> = Algorithm {
    width: 32,
    poly: 0x1edc6f41,
    init: 0,
    refin: true,
    refout: true,
    xorout: 0,
    check: 0,
    residue: 0,
};

/// crc16 (poly 0x8005, reflected) as e2fsprogs' `ext2fs_crc16`.
const CRC16_RAW: Algorithm<u16> = Algorithm {
    width: 16,
    poly: 0x8005,
    init: 0,
    refin: true,
    refout: true,
    xorout: 0,
    check: 0,
    residue: 0,
};

/// crc32 (poly 0x04c11db7) not reflected, initial value 0, no final xor:
/// the kernel's `crc32_be` register.
const CRC32_BE_RAW: Algorithm<u32> = Algorithm {
    width: 32,
    poly: 0x04c1_1db7,
    init: 0,
    refin: false,
    refout: false,
    xorout: 0,
    check: 0,
    residue: 0,
};

static CRC32C: Crc<u32, Table<16>> = Crc::<u32, Table<16>>::new(&CRC32C_RAW);
static CRC16: Crc<u16, Table<1>> = Crc::<u16, Table<1>>::new(&CRC16_RAW);
static CRC32_BE: Crc<u32, Table<1>> = Crc::<u32, Table<1>>::new(&CRC32_BE_RAW);

/// `crc32c(seed, data)` as the kernel computes it for ext4.
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    // The crc crate's reflected register runs bit-reversed; feed the seed in
    // reflected form (it reflects `init` for reflected algorithms).
    let mut d = CRC32C.digest_with_initial(seed.reverse_bits());
    d.update(data);
    d.finalize()
}

/// `crc16(seed, data)` as e2fsprogs computes it for group descriptors.
pub fn crc16(seed: u16, data: &[u8]) -> u16 {
    let mut d = CRC16.digest_with_initial(seed.reverse_bits());
    d.update(data);
    d.finalize()
}

/// `crc32_be(seed, data)` as the kernel's jbd2 computes checksum v1.
pub fn crc32_be(seed: u32, data: &[u8]) -> u32 {
    let mut d = CRC32_BE.digest_with_initial(seed);
    d.update(data);
    d.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The standard CRC-32C check: init !0, final xor !0, "123456789" -> 0xe3069283.
        assert_eq!(!crc32c(!0, b"123456789"), 0xe306_9283);
    }

    #[test]
    fn crc32c_chains() {
        let whole = crc32c(0x1234_5678, b"hello world");
        let part = crc32c(crc32c(0x1234_5678, b"hello "), b"world");
        assert_eq!(whole, part);
    }

    #[test]
    fn crc32_be_matches_the_mpeg2_check_value() {
        // CRC-32/MPEG-2 (init !0, not reflected, no final xor): 0x0376e6e7.
        assert_eq!(crc32_be(!0, b"123456789"), 0x0376_e6e7);
        assert_eq!(crc32_be(crc32_be(!0, b"1234"), b"56789"), 0x0376_e6e7);
    }

    #[test]
    fn crc16_matches_arc_check_value() {
        // CRC-16/ARC: init 0, "123456789" -> 0xbb3d.
        assert_eq!(crc16(0, b"123456789"), 0xbb3d);
        // CRC-16/MODBUS is the same polynomial with init 0xffff: 0x4b37.
        assert_eq!(crc16(0xffff, b"123456789"), 0x4b37);
    }
}
