//! Fuzzes one direction of the WebSocket tap parser: any bytes, split where the input says.
#![no_main]

use gatehouse_agent::record::websocket::{Dialect, Parser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let dialect = match control % 3 {
        0 => Dialect::Channel,
        1 => Dialect::Base64,
        _ => Dialect::Raw,
    };
    let mut parser = Parser::new(dialect, control & 0x80 != 0);
    // The low bits of the control byte pick the split size: frames cut anywhere.
    let split = usize::from(control >> 2 & 0x1f) + 1;
    let mut failed = false;
    for piece in rest.chunks(split) {
        let result = parser.feed(piece, &mut |_| Ok(()));
        // Once failed, a parser never accepts bytes again (no resynchronising on garbage).
        assert!(!(failed && result.is_ok()));
        failed |= result.is_err();
    }
});
