//! tracefs `format` text is read from a mount the collector does not own.
#![no_main]

use collector::sources::ebpf::tracefs::TracepointFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(format) = TracepointFormat::parse(text, "fuzz") {
        let _ = format.symbolic_names("reason");
        let _ = format.require("skbaddr");
        for field in &format.fields {
            let _ = format.symbolic_names(&field.name);
        }
    }
});
