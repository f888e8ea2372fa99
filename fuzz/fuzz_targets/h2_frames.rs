//! The frame parser on arbitrary bytes: never panics; every frame it accepts has its payload
//! within the input and a DATA payload within the frame.
#![no_main]

use coreplex_protocol::h2::frame::{parse, settings, Frame, FrameHeader, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while data.len() - at >= HEADER_LEN {
        let h = FrameHeader::read(data[at..at + HEADER_LEN].try_into().unwrap());
        let end = at + HEADER_LEN + h.len as usize;
        if end > data.len() {
            break;
        }
        let payload = &data[at + HEADER_LEN..end];
        match parse(&h, payload) {
            Ok(Frame::Data { data: d, flow_len, .. }) => {
                assert!(d.len() <= flow_len as usize);
                assert_eq!(flow_len, h.len);
            }
            Ok(Frame::Settings { payload: p, .. }) => {
                assert_eq!(settings(p).count(), p.len() / 6);
            }
            Ok(Frame::Headers { fragment, .. }) => assert!(fragment.len() <= payload.len()),
            _ => {}
        }
        at = end;
    }
});
