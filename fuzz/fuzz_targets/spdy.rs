//! Fuzzes the SPDY/3.1 tap over both directions: the input's bytes alternate direction
//! by the control byte's bits.
#![no_main]

use gatehouse_agent::record::spdy::{Dir, Tap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let mut tap = Tap::new();
    let split = usize::from(control & 0x3f) + 1;
    for (i, piece) in rest.chunks(split).enumerate() {
        let dir = if (control >> 6) & 1 == 1 && i % 2 == 1 {
            Dir::ToClient
        } else {
            Dir::FromClient
        };
        if tap.feed(dir, piece, &mut |_| Ok(())).is_err() {
            return;
        }
    }
});
