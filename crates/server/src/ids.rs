//! Random identifiers: server-assigned resource ids, request ids, Bundle ids.
//!
//! They are UUID v4s, as Azure's service assigns, drawn from the operating system's CSPRNG so that
//! ids cannot be guessed. Asking the kernel for 16 bytes per id would cost a system call on every
//! request, so each thread draws a 4 KiB block at a time and hands out 16 bytes per id.

use std::cell::RefCell;

const BLOCK: usize = 4096;

struct Pool {
    bytes: [u8; BLOCK],
    used: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const { RefCell::new(Pool { bytes: [0; BLOCK], used: BLOCK }) };
}

/// A new random UUID v4 in its hyphenated lowercase form.
pub(crate) fn new_id() -> String {
    let mut random = [0u8; 16];
    POOL.with_borrow_mut(|pool| {
        if pool.used + 16 > BLOCK {
            getrandom::fill(&mut pool.bytes).expect("the operating system's random source is available");
            pool.used = 0;
        }
        random.copy_from_slice(&pool.bytes[pool.used..pool.used + 16]);
        // Spent bytes are wiped so that a later id cannot be derived from memory.
        pool.bytes[pool.used..pool.used + 16].fill(0);
        pool.used += 16;
    });
    uuid::Builder::from_random_bytes(random).into_uuid().hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v4_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 1000);
        let id = new_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "version 4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "RFC 4122 variant");
    }
}
